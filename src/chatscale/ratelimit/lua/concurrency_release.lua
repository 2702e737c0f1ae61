-- Give a generation slot back (finish, abort or error).
-- KEYS[1]  ZSET of running generations   ARGV[1] lease id
-- Returns the number of generations still running.
local key = KEYS[1]
redis.call('ZREM', key, ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local running = redis.call('ZCARD', key)
if running == 0 then
  redis.call('DEL', key)
end
return running
