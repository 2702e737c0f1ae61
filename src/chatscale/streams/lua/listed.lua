-- Add a member to an index and refresh the index's expiry, in one step, so the key never
-- exists without its TTL: KEYS[1] the index (a user's jobs ZSET, or an instance's jobs SET).
-- ARGV: member, score ("" = a SET), ttl (s).
if ARGV[2] == '' then
  redis.call('SADD', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
