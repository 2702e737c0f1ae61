-- Drop one fork's reference on a Durable Streams stream; a deleted stream goes with its
-- last reference. KEYS: meta, data, ends, prod.
-- Returns the stream this one referenced when it was removed (to release in turn), or "".
if redis.call('EXISTS', KEYS[1]) == 0 then return '' end
local refs = redis.call('HINCRBY', KEYS[1], 'refs', -1)
local m = redis.call('HMGET', KEYS[1], 'deleted', 'src')
if refs <= 0 and m[1] == '1' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  return m[2] or ''
end
return ''
