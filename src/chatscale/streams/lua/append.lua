-- Append batches of events, each to its job's log, fenced by the job producer's epoch, and
-- publish each: one call carries every batch of a coalescing window (outside Cluster, where
-- the keys of many jobs may meet in one script), or one batch (on Cluster, one slot a call).
-- KEYS: per batch i (from 0), KEYS[2i+1] job hash, KEYS[2i+2] log.
-- ARGV[1] now (s), ARGV[2] publish command (PUBLISH or SPUBLISH), then ARGV[3+i] batch i:
--   "<epoch> <first seq> <last seq> <ttl> <publish 0/1>[ <final status>]\n<items json>"
-- (one argument a batch: packing a command costs the client per argument). ttl "0" leaves
-- the TTLs alone: the writer sets them with a job's first batch and its final one and
-- refreshes them now and then, not at every window. publish 0 holds the publication back:
-- the writer publishes a job's end itself once a replica has it. A job's channel is its
-- hash's name with "ev" for "job" (chatscale.redis.keys).
-- Batches of one job come in order; each is checked against what the batches before it
-- stored.
-- Storing and publishing happen in one script: whatever a subscriber receives live is
-- already in the log, and nothing a fenced producer writes is stored or published.
-- Returns, per batch, 3 integers: code, stored seq, abort requested (0/1). Code 1 appended,
-- 0 already stored (a retried batch), -1 no job (Redis lost it: re-create and resend),
-- -2 fenced (another producer owns the job now), -3 gap (resend from stored seq + 1),
-- -4 the job has ended.
local out = {}
local now = ARGV[1]
local publish = ARGV[2]
for i = 0, #KEYS / 2 - 1 do
  local job = KEYS[2 * i + 1]
  local log = KEYS[2 * i + 2]
  local arg = ARGV[3 + i]
  local nl = string.find(arg, '\n', 1, true)
  local epoch, sfirst, slast, ttl, tell, status =
    string.match(string.sub(arg, 1, nl - 1), '^(%d+) (%d+) (%d+) (%d+) ([01]) ?(%a*)$')
  local first, last = tonumber(sfirst), tonumber(slast)
  local code, seq, abort = 1, last, 0
  local h = redis.call('HMGET', job, 'epoch', 'seq', 'status', 'abort')
  if not h[1] then
    code, seq = -1, 0
  elseif h[1] ~= epoch then
    code, seq = -2, 0
  else
    seq = tonumber(h[2])
    abort = h[4] and 1 or 0
    if last <= seq then
      code = 0
    elseif first ~= seq + 1 then
      code = -3
    elseif h[3] ~= 'running' then
      code = -4
    else
      local items = string.sub(arg, nl + 1)
      redis.call('XADD', log, '0-' .. slast, 's', sfirst, 'e', items)
      if status ~= '' then
        redis.call('HSET', job, 'seq', slast, 'updated', now, 'status', status)
      else
        redis.call('HSET', job, 'seq', slast, 'updated', now)
      end
      if ttl ~= '0' then
        redis.call('EXPIRE', job, ttl)
        redis.call('EXPIRE', log, ttl)
      end
      if tell == '1' then
        redis.call(publish, string.sub(job, 1, -4) .. 'ev',
          '[' .. epoch .. ',' .. sfirst .. ',' .. items .. ']')
      end
      seq = last
    end
  end
  out[3 * i + 1] = code
  out[3 * i + 2] = seq
  out[3 * i + 3] = abort
end
return out
