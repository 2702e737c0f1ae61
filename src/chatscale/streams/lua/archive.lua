-- Append events to a job's archive, fenced by the producer's epoch.
-- KEYS[1] job hash, KEYS[2] archive.
-- ARGV: epoch, first seq, last seq, payload, tail id, final status ("" while running),
--       now (s), ttl (s).
-- Returns {code, archived seq}: code 1 written, 0 nothing new, -1 no job, -2 fenced
-- (another instance took the job over), -3 gap (resend from archived seq + 1).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {-1, 0} end
if epoch ~= ARGV[1] then return {-2, 0} end
local aseq = tonumber(redis.call('HGET', KEYS[1], 'aseq'))
local first = tonumber(ARGV[2])
local last = tonumber(ARGV[3])
if first > aseq + 1 then return {-3, aseq} end
local code = 0
if last > aseq then
  redis.call('XADD', KEYS[2], '0-' .. last, 's', ARGV[2], 'e', ARGV[4])
  redis.call('HSET', KEYS[1], 'aseq', last, 'tail', ARGV[5], 'updated', ARGV[7])
  aseq = last
  code = 1
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'status', ARGV[6], 'updated', ARGV[7])
end
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('EXPIRE', KEYS[2], ARGV[8])
return {code, aseq}
