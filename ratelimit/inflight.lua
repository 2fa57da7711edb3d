-- Counts the holders of a concurrency limit whose lease has not ended, by this server's clock.
-- KEYS[1]  sorted set of the key's holders, scored by the end of their lease (server ms)
-- Returns the count.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
