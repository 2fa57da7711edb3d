-- GCRA (generic cell rate algorithm) for several limits of one key, checked and charged
-- atomically (all or none). Each limit keeps one number, its theoretical arrival time (TAT): the
-- server time when its bucket will be full again, in microseconds since 2020-01-01 (small enough
-- that a double keeps it to 1/32 µs). It is the token bucket stated differently:
-- tokens at now = burst - (TAT - now) / per.
-- KEYS[i]  TAT of limit i; all KEYS share one hash tag. A missing key is a full bucket; each
--          write expires when the bucket would be full again.
-- ARGV[1]  n, the tokens to take from every bucket; 0 peeks (would one event pass?) and writes nothing
-- ARGV[2i], ARGV[2i+1]  per (microseconds per token, 1e6/rate) and tau (burst * per) of limit i
-- Returns {allowed (1 or 0), debt 1, debt 2, ...}: debt i is TAT - now of limit i after the
-- charge, in nanoseconds (an integer >= 0); the caller derives the tokens from it.
local t = redis.call('TIME')
local now = (t[1] - 1577836800) * 1000000 + t[2]
local n = tonumber(ARGV[1])
local want = n
if want == 0 then want = 1 end
local allowed = 1
local tats = {}
local rewind = {}
for i = 1, #KEYS do
  local per = tonumber(ARGV[2 * i])
  local tau = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat == nil or tat < now then
    tat = now
  elseif tat > now + tau then
    -- The server clock went back: the bucket counts as empty, never emptier, and refills from
    -- now on (written below even when the call is denied).
    tat = now + tau
    rewind[i] = true
  end
  tats[i] = tat
  -- Allowed when the bucket holds want tokens; the slack (a millionth of a token, and the
  -- resolution of TAT) keeps float rounding from denying a call that is exactly on time.
  if tat - now + want * per > tau + per * 1e-6 + 0.05 then allowed = 0 end
end
local out = {allowed}
for i = 1, #KEYS do
  local tat = tats[i]
  local charge = allowed == 1 and n > 0
  if charge then
    tat = tat + n * tonumber(ARGV[2 * i])
  end
  if charge or rewind[i] then
    local ttl = math.ceil((tat - now) / 1000)
    if ttl < 1 then ttl = 1 end
    redis.call('SET', KEYS[i], string.format('%.17g', tat), 'PX', ttl)
  end
  out[i + 1] = math.floor((tat - now) * 1000 + 0.5)
end
return out
