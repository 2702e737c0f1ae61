-- Count one rate-limit violation; ban the user when the count reaches the limit.
-- KEYS[1]  violation counter   KEYS[2]  ban key (one hash tag: same slot)
-- ARGV[1]  violations before a ban (0: never ban)   ARGV[2]  counting window in s
-- ARGV[3]  ban duration in s
-- Returns {violations, ban seconds (0 when not banned now)}.
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
local limit = tonumber(ARGV[1])
if limit > 0 and count >= limit then
  redis.call('SET', KEYS[2], count, 'EX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return {count, tonumber(ARGV[3])}
end
return {count, 0}
