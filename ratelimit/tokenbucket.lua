-- Token buckets of several limits of one key, checked and charged atomically (all or none).
-- KEYS[i]  bucket of limit i: a hash {t = tokens, s = time of t in microseconds}; all share one hash tag
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
local stamps = {}
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local st = redis.call('HMGET', KEYS[i], 't', 's')
  local tk = tonumber(st[1])
  local ts = tonumber(st[2])
  if tk == nil or ts == nil then
    tk = burst
  elseif now > ts then
    tk = math.min(tk + (now - ts) * rate / 1000000, burst)
  elseif now < ts then
    -- The server clock went back: no refill for the gap, and refilling restarts from now
    -- instead of waiting for the clock to catch up with the stored time.
    stamps[i] = true
  end
  if tk > burst then tk = burst end
  tokens[i] = tk
  if tk + eps < want then allowed = 0 end
end
local out = {allowed}
for i = 1, #KEYS do
  local tk = tokens[i]
  if allowed == 1 and n > 0 then
    tk = math.max(tk - n, 0)
    local rate = tonumber(ARGV[2 * i])
    local burst = tonumber(ARGV[2 * i + 1])
    local ttl = math.ceil((burst - tk) * 1000 / rate)
    if ttl < 1 then ttl = 1 end
    redis.call('HSET', KEYS[i], 't', string.format('%.17g', tk), 's', string.format('%.17g', now))
    redis.call('PEXPIRE', KEYS[i], string.format('%d', ttl))
  elseif stamps[i] then
    redis.call('HSET', KEYS[i], 's', string.format('%.17g', now))
  end
  out[i + 1] = string.format('%.17g', tk)
end
return out
