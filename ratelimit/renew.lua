-- Extends one holder's lease, if it still holds its slot.
-- KEYS[1]  sorted set of the key's holders, scored by the end of their lease (server ms)
-- ARGV[1]  the holder's member id
-- ARGV[2]  lease in milliseconds
-- Returns 1 when renewed, 0 when the holder's lease had ended or it was released.
if redis.replicate_commands then
  pcall(redis.replicate_commands)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
if tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
return 1
