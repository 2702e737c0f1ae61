-- Take over a running job whose producing instance stopped: KEYS[1] job hash.
-- ARGV: expected instance, new instance, now (s), ttl (s), abort ("1" = also request abort).
-- Returns {new epoch, stored seq}, or {0, 0} when the job is gone, finished or moved.
local h = redis.call('HMGET', KEYS[1], 'inst', 'status', 'seq')
if not h[1] or h[1] ~= ARGV[1] or h[2] ~= 'running' then return {0, 0} end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'inst', ARGV[2], 'updated', ARGV[3])
if ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'abort', 1) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {epoch, tonumber(h[3])}
