-- Delete a Durable Streams stream (DELETE): removed, or kept as an unreadable tombstone
-- while forks hold references. KEYS: meta, data, ends, prod. ARGV: 1 channel, 2 publish
-- command. Returns {404}, {410} or {204, the stream it referenced if removed, else ""}.
local m = redis.call('HMGET', KEYS[1], 'id', 'deleted', 'refs', 'src')
if not m[1] then return {404} end
if m[2] == '1' then return {410} end
redis.call(ARGV[2], ARGV[1], '[0,0,[]]')
if tonumber(m[3] or '0') > 0 then
  redis.call('HSET', KEYS[1], 'deleted', '1')
  return {204, ''}
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return {204, m[4] or ''}
