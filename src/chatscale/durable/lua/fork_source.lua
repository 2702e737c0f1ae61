-- Take a reference on a Durable Streams stream being forked, and its records up to the fork
-- point (plus the record a sub-offset cuts into). The caller releases the reference with
-- release.lua if the fork is not created.
-- KEYS: meta, data, ends. ARGV: 1 offset record ("" the tail), 2 offset byte, 3 sub-offset.
-- Returns 404, 4090 (deleted), 400 (not an offset), 4001 (sub-offset past the tail) or
-- {200, ct, ttl, exp, expms, records...} where records are 0..r-1 (and r with a sub-offset).
local function s(v) if v then return v end return '' end
local m = redis.call('HMGET', KEYS[1], 'ct', 'ttl', 'exp', 'expms', 'n', 'b', 'deleted')
if not m[1] then return {404} end
if m[7] == '1' then return {4090} end
local n, b = tonumber(m[5]), tonumber(m[6])
local r, rb = offset_at(n, b, KEYS[3])
if not r then return {400} end
local last = r - 1
if tonumber(ARGV[3]) > 0 then
  if r >= n then return {4001} end
  last = r
end
redis.call('HINCRBY', KEYS[1], 'refs', 1)
local out = {200, m[1], s(m[2]), s(m[3]), s(m[4])}
if last >= 0 then
  for _, record in ipairs(redis.call('LRANGE', KEYS[2], 0, last)) do
    table.insert(out, record)
  end
end
return out
