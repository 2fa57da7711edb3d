-- Takes one slot of a concurrency limit, if one is free.
-- KEYS[1]  sorted set of the key's holders, each scored by the end of its lease (server ms)
-- ARGV[1]  the new holder's member id
-- ARGV[2]  max holders
-- ARGV[3]  lease in milliseconds
-- Holders whose lease ended are pruned first, so a crashed holder frees its slot by itself.
-- Returns {1, holders} when taken (holders including the new one), {0, holders} when all are held.
if redis.replicate_commands then
  -- Redis < 5 replicates scripts verbatim and refuses writes after TIME without this.
  pcall(redis.replicate_commands)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= max then
  return {0, n}
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
-- Every lease ends by now + lease (renewals too), so the set can go then.
redis.call('PEXPIRE', KEYS[1], lease)
return {1, n + 1}
