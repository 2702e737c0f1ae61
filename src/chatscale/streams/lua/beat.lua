-- One heartbeat: KEYS[1] the instances ZSET. ARGV: instance id ("" = only read the clock),
-- score override ("" = now; "0" = this instance hands its jobs over).
-- Heartbeats use Redis's clock, so instances with skewed clocks judge each other alike.
-- Returns Redis's time in milliseconds.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] ~= '' then
  local score = now
  if ARGV[2] ~= '' then score = tonumber(ARGV[2]) end
  redis.call('ZADD', KEYS[1], score, ARGV[1])
end
return now
