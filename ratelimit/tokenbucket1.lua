-- The token bucket of a limiter with ONE limit: tokenbucket.lua for a single key, without its
-- tables and loops and with a one-string reply (an array reply costs the server more to build and
-- the client more to read). Same keys, same stored format, same answers.
-- KEYS[1]  the bucket: a string "<tokens> <time of tokens in microseconds>". A missing key is a
--          full bucket; each write expires when the bucket would be full.
-- ARGV[1]  n, the tokens to take; 0 peeks (would one event pass?) and writes nothing
-- ARGV[2], ARGV[3]  rate (tokens per second) and burst
-- Returns the tokens after the charge as a string (Redis would truncate a Lua number to an
-- integer), prefixed with '-' when the call is denied (tokens are never negative).
if redis.replicate_commands and not redis.REDIS_VERSION_NUM then
  -- Redis < 5 replicates scripts verbatim and refuses writes after TIME without this; Redis >= 7
  -- (which has REDIS_VERSION_NUM) replicates effects anyway.
  pcall(redis.replicate_commands)
end
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local n = tonumber(ARGV[1])
local burst = tonumber(ARGV[3])
local tk = burst
local rewind = false
local v = redis.call('GET', KEYS[1])
if v then
  local sp = string.find(v, ' ', 1, true)
  if sp then
    local held = tonumber(string.sub(v, 1, sp - 1))
    local ts = tonumber(string.sub(v, sp + 1))
    if held and ts then
      if now > ts then
        tk = held + (now - ts) * tonumber(ARGV[2]) / 1000000
        if tk > burst then tk = burst end
      else
        -- now < ts: the server clock went back. No refill for the gap, and refilling restarts
        -- from now instead of waiting for the clock to catch up with the stored time.
        if held < burst then tk = held end
        rewind = now < ts
      end
    end
  end
end
local want = n
if want == 0 then want = 1 end
local allowed = tk + 1e-9 >= want
local charge = allowed and n > 0
if charge then
  tk = tk - n
  if tk < 0 then tk = 0 end
end
local tkstr = string.format('%.17g', tk)
if charge or rewind then
  local ttl = math.ceil((burst - tk) * 1000 / tonumber(ARGV[2]))
  if ttl < 1 then ttl = 1 end
  -- The time as the server gave it (exact µs, without float formatting); the TTL is a whole
  -- number, which redis.call sends as digits.
  redis.call('SET', KEYS[1], tkstr .. ' ' .. t[1] .. string.sub('00000' .. t[2], -6), 'PX', ttl)
end
if allowed then return tkstr end
return '-' .. tkstr
