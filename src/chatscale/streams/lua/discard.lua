-- Remove a job whose create() failed half way, if nothing was produced into it yet:
-- KEYS[1] job hash, KEYS[2] log. ARGV: instance, epoch. Returns 1 when removed.
local h = redis.call('HMGET', KEYS[1], 'inst', 'epoch', 'seq')
if not h[1] then return 1 end
if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] or h[3] ~= '0' then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
