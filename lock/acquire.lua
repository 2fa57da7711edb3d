-- KEYS[1] lock key, KEYS[2] fence counter (never expires), KEYS[3] waiter queue (list of tokens),
-- KEYS[4] waiters (hash: token -> "<expiry ms> <ttl ms> <hub> <metadata>"); one hash slot.
-- ARGV[1] token, ARGV[2] ttl in ms, ARGV[3] metadata, ARGV[4] queue lease in ms (0: do not queue),
-- ARGV[5] the waiter's hub: the id (no spaces) of the Client it waits in, '' for none
-- Returns the fence (an integer) when the token holds the lock: taken now, or handed over to it
-- by the holder's release (its ttl then restarts from now). Otherwise {holder's PTTL in ms (0
-- when unknown), fence counter}, after queueing the token (or renewing its place) until
-- now + lease.
local lease = tonumber(ARGV[4])
local v = redis.call('GET', KEYS[1])
if not v then
  local fence = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%d', fence) .. ':' .. ARGV[3], 'PX', ARGV[2])
  if lease > 0 and redis.call('HDEL', KEYS[4], ARGV[1]) == 1 then
    redis.call('LREM', KEYS[3], 1, ARGV[1])
  end
  return fence
end
if ARGV[1] ~= '' and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.match(v, '^[^:]*:(%d+)'))
end
if lease > 0 then
  local t = redis.call('TIME')
  local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + lease
  if redis.call('HSET', KEYS[4], ARGV[1], string.format('%d %d ', expiry, tonumber(ARGV[2])) .. ARGV[5] .. ' ' .. ARGV[3]) == 1 then
    redis.call('RPUSH', KEYS[3], ARGV[1])
  end
  if redis.call('PTTL', KEYS[3]) < lease then
    redis.call('PEXPIRE', KEYS[3], lease)
    redis.call('PEXPIRE', KEYS[4], lease)
  end
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl < 0 then
  pttl = 0
elseif pttl == 0 then
  pttl = 1 -- expires within 1ms: not "unknown"
end
return {pttl, tonumber(redis.call('GET', KEYS[2]) or '0')}
