-- Take over a running job whose instance stopped: KEYS[1] job hash.
-- ARGV: expected instance, expected epoch ("" = any), new instance, now (s), ttl (s).
-- Returns the new epoch, or 0 when the job is gone, finished or already moved.
local inst = redis.call('HGET', KEYS[1], 'inst')
if not inst or inst ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return 0 end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'inst', ARGV[3], 'updated', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return epoch
