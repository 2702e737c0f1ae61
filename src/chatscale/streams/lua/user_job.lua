-- List a job under its user: KEYS[1] the user's jobs ZSET. ARGV: job id, created (s), ttl (s).
-- One script, so the key never exists without its expiry.
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
