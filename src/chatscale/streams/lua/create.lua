-- Create a job: KEYS[1] job hash, KEYS[2] log.
-- ARGV: owner, meta json, instance, created (s), ttl (s), epoch, now (s), and '1' when an
-- instance records the job's end (the hash says 'unrecorded' until it has: listings show
-- the ended job until then).
-- Returns 1, or 0 when the job exists. The same create sent again (a client retry after a
-- lost reply: same instance, creation time and epoch, nothing appended yet) returns 1: the
-- first attempt created it. A job re-created after Redis lost it starts with an
-- empty log (seq 0) under its producer's epoch; the producer then appends every event again
-- through append.lua, so the final status is set by the append of the final event, never
-- assumed here.
if redis.call('EXISTS', KEYS[1]) == 1 then
  local h = redis.call('HMGET', KEYS[1], 'inst', 'created', 'epoch', 'seq')
  if h[1] == ARGV[3] and h[2] == ARGV[4] and h[3] == ARGV[6] and h[4] == '0' then
    return 1
  end
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'meta', ARGV[2], 'inst', ARGV[3],
  'created', ARGV[4], 'updated', ARGV[7], 'status', 'running', 'epoch', ARGV[6], 'seq', 0)
if ARGV[8] == '1' then
  redis.call('HSET', KEYS[1], 'unrecorded', '1')
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
