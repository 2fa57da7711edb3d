-- Claim an event for handling.
-- KEYS[1]: the event's dedupe key. ARGV[1]: claim token. ARGV[2]: lease in milliseconds.
-- Returns 1 when claimed, 0 when the event is already done, -1 when another claim holds it.
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == 'done' then
  return 0
end
return -1
