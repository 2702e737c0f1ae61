-- Extend a running generation's lease.
-- KEYS[1]  ZSET of running generations   ARGV[1] lease id   ARGV[2] limit   ARGV[3] TTL ms
-- Returns 1 when renewed, 2 when the lease had expired and was taken again (there was
-- room), 0 when it had expired and the slots are all taken by others.
local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local status = 1
if redis.call('ZSCORE', key, ARGV[1]) == false then
  if redis.call('ZCARD', key) >= tonumber(ARGV[2]) then
    return 0
  end
  status = 2
end
redis.call('ZADD', key, now + tonumber(ARGV[3]), ARGV[1])
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', key, string.format('%d', tonumber(last[2])))
return status
