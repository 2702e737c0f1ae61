-- Read a Durable Streams stream (GET, HEAD): metadata and records from an offset.
-- KEYS: meta, data, ends, prod. ARGV: 1 start record ("" the tail), 2 start byte,
-- 3 max bytes (at least one record is returned when there is one), 4 touch (1 restarts a
-- sliding TTL: reads do, HEAD does not).
-- Returns 404, 410, 400 (not an offset of this stream), or
-- {200, id, ct, ttl, exp, closed, n, b, start record, start byte, end record, end byte,
--  records...}.
local function s(v) if v then return v end return '' end
local m = redis.call('HMGET', KEYS[1], 'id', 'ct', 'ttl', 'exp', 'closed', 'n', 'b', 'deleted',
                     'expms')
if not m[1] then return {404} end
if m[8] == '1' then return {410} end
local n, b = tonumber(m[6]), tonumber(m[7])
local r, rb = offset_at(n, b, KEYS[3])
if not r then return {400} end
if ARGV[4] == '1' and m[3] then
  local t = redis.call('TIME')
  local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(m[3]) * 1000
  for i = 1, 4 do redis.call('PEXPIREAT', KEYS[i], at) end
end
local out = {200, m[1], m[2], s(m[3]), s(m[4]), m[5], n, b, r, rb}
if r >= n then
  table.insert(out, r); table.insert(out, rb)
  return out
end
local ends = redis.call('LRANGE', KEYS[3], r, math.min(n - 1, r + 999))
local limit = tonumber(ARGV[3])
local count = 1
for i = 2, #ends do
  if tonumber(ends[i]) - rb > limit then break end
  count = i
end
table.insert(out, r + count); table.insert(out, tonumber(ends[count]))
for _, record in ipairs(redis.call('LRANGE', KEYS[2], r, r + count - 1)) do
  table.insert(out, record)
end
return out
