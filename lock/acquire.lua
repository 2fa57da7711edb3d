-- KEYS[1] lock key, KEYS[2] fence counter (same hash slot, never expires)
-- ARGV[1] token, ARGV[2] ttl in ms, ARGV[3] metadata
-- Returns the new fence (> 0) when acquired, else -(holder's PTTL in ms), 0 when unknown.
local fence = tonumber(redis.call('GET', KEYS[2]) or '0') + 1
local value = ARGV[1] .. ':' .. string.format('%d', fence) .. ':' .. ARGV[3]
if redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl < 0 then
  return 0
end
return -pttl
