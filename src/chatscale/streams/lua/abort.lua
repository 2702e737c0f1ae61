-- Request the abort of a running job: KEYS[1] job hash.
-- Returns the owning instance, or false when the job is gone or has ended. The flag is
-- durable: the owner learns it from its next append even if the notice on its control
-- channel is lost.
local h = redis.call('HMGET', KEYS[1], 'inst', 'status')
if not h[1] or h[2] ~= 'running' then return false end
redis.call('HSET', KEYS[1], 'abort', 1)
return h[1]
