-- Take one of a user's N generation slots, atomically.
-- KEYS[1]  ZSET of running generations: member = lease id, score = expiry (ms, Redis clock)
-- ARGV[1]  lease id   ARGV[2]  limit N   ARGV[3]  lease TTL in ms
-- Returns {1, running} when taken, {0, running, ms until the oldest lease expires} when full.
-- Expired members (holders that died without releasing) are pruned first, so a crashed
-- process frees its slots after one TTL (LibreChat's PENDING_REQ, without its leaks).
local key = KEYS[1]
local limit = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local running = redis.call('ZCARD', key)
if redis.call('ZSCORE', key, ARGV[1]) == false then
  if running >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return {0, running, math.max(0, tonumber(oldest[2]) - now)}
  end
  running = running + 1
end
redis.call('ZADD', key, now + ttl, ARGV[1])
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', key, string.format('%d', tonumber(last[2])))
return {1, running}
