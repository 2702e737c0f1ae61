-- Append a batch of one job's events, fenced by the producer's epoch, and publish it.
-- KEYS[1] job hash, KEYS[2] log. ARGV: epoch, first seq, last seq, items json, final
-- status ("" while running), now (s), ttl (s), channel, publish command (PUBLISH or
-- SPUBLISH; "" holds the publication back: the writer publishes a job's end itself once a
-- replica has it).
-- Storing and publishing happen in one script: whatever a subscriber receives live is
-- already in the log, and nothing a fenced producer writes is stored or published.
-- Returns {code, stored seq, abort requested (0/1)}: code 1 appended, 0 already stored
-- (a retried batch), -1 no job (Redis lost it: re-create and resend), -2 fenced (another
-- producer owns the job now), -3 gap (resend from stored seq + 1), -4 the job has ended.
local h = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'status', 'abort')
if not h[1] then return {-1, 0, 0} end
if h[1] ~= ARGV[1] then return {-2, 0, 0} end
local seq = tonumber(h[2])
local first = tonumber(ARGV[2])
local last = tonumber(ARGV[3])
local abort = h[4] and 1 or 0
if last <= seq then return {0, seq, abort} end
if first ~= seq + 1 then return {-3, seq, abort} end
if h[3] ~= 'running' then return {-4, seq, abort} end
redis.call('XADD', KEYS[2], '0-' .. ARGV[3], 's', ARGV[2], 'e', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'seq', ARGV[3], 'updated', ARGV[6], 'status', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'seq', ARGV[3], 'updated', ARGV[6])
end
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[7])
if ARGV[9] ~= '' then
  redis.call(ARGV[9], ARGV[8], '[' .. ARGV[1] .. ',' .. ARGV[2] .. ',' .. ARGV[4] .. ']')
end
return {1, last, abort}
