-- Token buckets of several limits of one key, checked and charged atomically (all or none).
-- KEYS[i]  bucket of limit i: a string "<tokens> <time of tokens in microseconds>"; all KEYS share
--          one hash tag. A missing key is a full bucket; each write expires when it would be full.
-- ARGV[1]  n, the tokens to take from every bucket; 0 peeks (would one event pass?) and writes nothing
-- ARGV[2i], ARGV[2i+1]  rate (tokens per second) and burst of limit i
-- Returns {allowed (1 or 0), tokens of bucket 1, tokens of bucket 2, ...} with the tokens after the
-- charge, as strings (Redis would truncate Lua numbers to integers).
if redis.replicate_commands then
  -- Redis < 5 replicates scripts verbatim and refuses writes after TIME without this;
  -- Redis >= 7 replicates effects anyway and keeps the call as a no-op.
  pcall(redis.replicate_commands)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local want = n
if want == 0 then want = 1 end
local eps = 1e-9
local allowed = 1
local tokens = {}
local rewind = nil
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local tk, ts
  local v = redis.call('GET', KEYS[i])
  if v then
    local sp = string.find(v, ' ', 1, true)
    if sp then
      tk = tonumber(string.sub(v, 1, sp - 1))
      ts = tonumber(string.sub(v, sp + 1))
    end
  end
  if tk == nil or ts == nil then
    tk = burst
  elseif now > ts then
    tk = tk + (now - ts) * rate / 1000000
  elseif now < ts then
    -- The server clock went back: no refill for the gap, and refilling restarts from now
    -- instead of waiting for the clock to catch up with the stored time.
    rewind = rewind or {}
    rewind[i] = true
  end
  if tk > burst then tk = burst end
  tokens[i] = tk
  if tk + eps < want then allowed = 0 end
end
local charge = allowed == 1 and n > 0
local out = {allowed}
for i = 1, #KEYS do
  local tk = tokens[i]
  if charge then tk = math.max(tk - n, 0) end
  local tkstr = string.format('%.17g', tk)
  if charge or (rewind and rewind[i]) then
    local rate = tonumber(ARGV[2 * i])
    local burst = tonumber(ARGV[2 * i + 1])
    local ttl = math.ceil((burst - tk) * 1000 / rate)
    if ttl < 1 then ttl = 1 end
    -- The time as the server gave it (exact µs, without float formatting).
    local nowstr = t[1] .. string.sub('00000' .. t[2], -6)
    redis.call('SET', KEYS[i], tkstr .. ' ' .. nowstr, 'PX', string.format('%d', ttl))
  end
  out[i + 1] = tkstr
end
return out
