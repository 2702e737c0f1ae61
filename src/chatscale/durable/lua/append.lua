-- Append to a Durable Streams stream and/or close it (POST), atomically with its checks:
-- the same rules, in the same order, as chatscale/durable/rules.py and memory.py.
-- KEYS: meta, data, ends, prod. ARGV: 1 media type of the request ("" none), 2 has record
-- (0/1), 3 record, 4 Stream-Seq ("" none), 5 producer id ("" none), 6 producer epoch,
-- 7 producer seq, 8 close (0/1), 9 channel, 10 publish command.
-- Returns {code, ...}: 404, 410; 409 {media} content type; 403 {epoch} stale epoch;
-- 400 new epoch not at seq 0; 4092 {expected, received} sequence gap; 4093 closed;
-- 4094 {last seq} Stream-Seq regression; 204/200 written and 2040 producer duplicate, both
-- followed by {id, ct, ttl, exp, closed, n, b, epoch, seq}.
local function s(v) if v then return v end return '' end
-- Byte-wise a <= b (Lua's < follows the server's locale).
local function bytes_le(a, b)
  local la, lb = #a, #b
  for i = 1, math.min(la, lb) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return la <= lb
end
local m = redis.call('HMGET', KEYS[1], 'id', 'ct', 'ttl', 'exp', 'closed', 'n', 'b', 'deleted',
                     'media', 'seq', 'expms')
if not m[1] then return {404} end
if m[8] == '1' then return {410} end
local has_record = ARGV[2] == '1'
if has_record and ARGV[1] ~= '' and ARGV[1] ~= m[9] then return {409, m[2]} end
local function answer(code, epoch, seq)
  local h = redis.call('HMGET', KEYS[1], 'closed', 'n', 'b')
  return {code, m[1], m[2], s(m[3]), s(m[4]), h[1], h[2], h[3], epoch, seq}
end
local pid = ARGV[5]
local epoch, pseq = tonumber(ARGV[6]), tonumber(ARGV[7])
if pid ~= '' then
  local st = redis.call('HGET', KEYS[4], pid)
  if not st then
    if pseq ~= 0 then return {4092, 0, pseq} end
  else
    local sep = string.find(st, ':', 1, true)
    local e, last = tonumber(string.sub(st, 1, sep - 1)), tonumber(string.sub(st, sep + 1))
    if epoch < e then return {403, e} end
    if epoch > e then
      if pseq ~= 0 then return {400} end
    elseif pseq <= last then
      return answer(2040, epoch, last)
    elseif pseq ~= last + 1 then
      return {4092, last + 1, pseq}
    end
  end
end
if m[5] == '1' then
  if not has_record and pid == '' then return answer(204, '', '') end
  return {4093, m[6], m[7]}
end
if ARGV[4] ~= '' and m[10] and bytes_le(ARGV[4], m[10]) then return {4094, m[10]} end
if has_record then
  local b = tonumber(m[7]) + #ARGV[3]
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('RPUSH', KEYS[3], b)
  redis.call('HSET', KEYS[1], 'n', tonumber(m[6]) + 1, 'b', b)
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'seq', ARGV[4]) end
if ARGV[8] == '1' then redis.call('HSET', KEYS[1], 'closed', '1') end
local code = 204
if pid ~= '' then
  redis.call('HSET', KEYS[4], pid, epoch .. ':' .. pseq)
  if has_record then code = 200 end
end
-- A write restarts a sliding TTL (and new keys get the stream's expiry).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = nil
if m[3] then at = now + tonumber(m[3]) * 1000 end
if m[11] then at = tonumber(m[11]) end
if at then
  for i = 1, 4 do redis.call('PEXPIREAT', KEYS[i], at) end
end
redis.call(ARGV[10], ARGV[9], '[0,0,[]]')
if pid ~= '' then return answer(code, epoch, pseq) end
return answer(code, '', '')
