-- Create (or re-create after a Redis data loss) a job: KEYS[1] job hash, KEYS[2] archive.
-- ARGV: owner, meta json, instance, created (s), ttl (s), epoch, archived seq,
--       archive payload ("" = none), first seq of payload, tail id (instance log id from
--       which the unarchived events can be found), updated (s), status.
-- Returns 1, or 0 when the job exists.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'meta', ARGV[2], 'inst', ARGV[3],
  'created', ARGV[4], 'updated', ARGV[11], 'status', ARGV[12], 'epoch', ARGV[6],
  'aseq', ARGV[7], 'tail', ARGV[10])
if ARGV[8] ~= '' then
  redis.call('DEL', KEYS[2])
  redis.call('XADD', KEYS[2], '0-' .. ARGV[7], 's', ARGV[9], 'e', ARGV[8])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
