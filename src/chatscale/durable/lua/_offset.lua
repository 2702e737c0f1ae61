-- Shared by read.lua and fork_source.lua (see LuaScript's ``uses``).
-- The record and byte a client's offset names in a stream of n records and b bytes whose
-- record ends are listed at ends_key: ARGV[1] its record ("" the tail), ARGV[2] its byte.
-- nil when it is no offset of this stream (past the tail, or not at a record's end).
local function offset_at(n, b, ends_key)
  if ARGV[1] == '' then return n, b end
  local r, rb = tonumber(ARGV[1]), tonumber(ARGV[2])
  if r > n then return nil end
  local e = 0
  if r > 0 then e = tonumber(redis.call('LINDEX', ends_key, r - 1)) end
  if e ~= rb then return nil end
  return r, rb
end
