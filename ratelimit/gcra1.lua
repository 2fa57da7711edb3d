-- GCRA for a limiter with ONE limit: gcra.lua for a single key, without its tables and loops and
-- with a one-integer reply (an array reply costs the server more to build and the client more to
-- read). Same keys, same stored value, same answers.
-- KEYS[1]  the TAT: the server time when the bucket is full again, in microseconds since
--          2020-01-01. A missing key is a full bucket; each write expires when it would be full.
-- ARGV[1]  n, the tokens to take; 0 peeks (would one event pass?) and writes nothing
-- ARGV[2], ARGV[3]  per (microseconds per token, 1e6/rate) and tau (burst * per)
-- Returns the debt (TAT - now after the charge, in nanoseconds, an integer >= 0) when the call
-- is allowed, and -1 - debt when it is denied.
local t = redis.call('TIME')
local now = (t[1] - 1577836800) * 1000000 + t[2]
local n = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
local tau = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
local rewind = false
if tat == nil or tat < now then
  tat = now
elseif tat > now + tau then
  -- The server clock went back: the bucket counts as empty, never emptier, and refills from now
  -- on (written below even when the call is denied).
  tat = now + tau
  rewind = true
end
local want = n
if want == 0 then want = 1 end
-- The slack (a millionth of a token, and the resolution of TAT) keeps float rounding from
-- denying a call that is exactly on time.
local allowed = tat - now + want * per <= tau + per * 1e-6 + 0.05
local charge = allowed and n > 0
if charge then tat = tat + n * per end
if charge or rewind then
  local ttl = math.ceil((tat - now) / 1000)
  if ttl < 1 then ttl = 1 end
  -- redis.call sends a number as its shortest exact decimal form (%.17g before Redis 7.2).
  redis.call('SET', KEYS[1], tat, 'PX', ttl)
end
local debt = math.floor((tat - now) * 1000 + 0.5)
if allowed then return debt end
return -1 - debt
