-- Create a Durable Streams stream unless one exists at its name (PUT).
-- KEYS: meta, data, ends, prod. ARGV: 1 id, 2 content type, 3 media type, 4 ttl (s or ""),
-- 5 expires-at text, 6 expires-at (ms or ""), 7 closed (0/1), 8 fork source, 9 fork offset,
-- 10 fork sub-offset, 11 referenced source ("" none), 12.. initial records.
-- Returns {1, id, ct, ttl, exp, closed, n, b} when created, or
-- {0, id, ct, ttl, exp, closed, n, b, deleted, media, expms, fsrc, foff, fsub} for the stream
-- already there (its configuration never changes, so the caller compares it safely).
local function s(v) if v then return v end return '' end
local fields = {'id', 'ct', 'ttl', 'exp', 'closed', 'n', 'b', 'deleted', 'media', 'expms',
                'fsrc', 'foff', 'fsub'}
if redis.call('EXISTS', KEYS[1]) == 1 then
  local m = redis.call('HMGET', KEYS[1], unpack(fields))
  local out = {0}
  for i = 1, #fields do out[i + 1] = s(m[i]) end
  return out
end
local set = {'id', ARGV[1], 'ct', ARGV[2], 'media', ARGV[3], 'closed', ARGV[7], 'refs', '0',
             'deleted', '0'}
local optional = {ttl = ARGV[4], exp = ARGV[5], expms = ARGV[6], fsrc = ARGV[8],
                  foff = ARGV[9], fsub = ARGV[10], src = ARGV[11]}
for k, v in pairs(optional) do
  if v ~= '' then table.insert(set, k); table.insert(set, v) end
end
local b = 0
for i = 12, #ARGV do
  b = b + #ARGV[i]
  redis.call('RPUSH', KEYS[2], ARGV[i])
  redis.call('RPUSH', KEYS[3], b)
end
local n = #ARGV - 11
table.insert(set, 'n'); table.insert(set, n)
table.insert(set, 'b'); table.insert(set, b)
redis.call('HSET', KEYS[1], unpack(set))
-- Expiry: a sliding TTL from now, or the absolute Stream-Expires-At.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = nil
if ARGV[4] ~= '' then at = now + tonumber(ARGV[4]) * 1000 end
if ARGV[6] ~= '' then at = tonumber(ARGV[6]) end
if at then
  for i = 1, 3 do redis.call('PEXPIREAT', KEYS[i], at) end
end
return {1, ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[7], n, b}
