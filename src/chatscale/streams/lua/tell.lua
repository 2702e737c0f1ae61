-- Tell a job's end that append.lua stored without publishing it (held until a replica had
-- it, or until the writer took it as stored without one): record in the job hash that it
-- was told, then publish it on the job's channel. Readers on any instance then tell the end
-- as the writer did, without waiting for a replica's copy themselves.
-- KEYS[1] job hash. ARGV[1] publish command (PUBLISH or SPUBLISH), ARGV[2] the message.
-- A job hash that is gone is not made again (it would be a key without a TTL).
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'told', '1')
end
return redis.call(ARGV[1], string.sub(KEYS[1], 1, -4) .. 'ev', ARGV[2])
