-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] waiter queue, KEYS[4] waiters (see acquire.lua)
-- ARGV[1] token, ARGV[2] release channel, ARGV[3] 'publish' or 'spublish' (Redis Cluster),
-- ARGV[4] the releaser's hub ('' for none), ARGV[5] the token of the next goroutine of the
-- releaser's Client waiting for the key in process ('' for none), ARGV[6] its ttl in ms,
-- ARGV[7] its metadata
-- Takes the token out of the queue (a waiter that gives up). When the token holds the lock, hands
-- it to the first queued waiter whose lease has not run out: the lock key gets that waiter's
-- token, a new fence and its ttl, and the waiter learns, with no further call, that it holds the
-- lock: from "<token>:<fence>", returned when it waits in the releaser's hub (the releaser tells
-- it), else published. With no live waiter queued, the lock goes to ARGV[5] when given, which
-- learns it from "<ARGV[5]>:<fence>"; else the script deletes the key and publishes "" (anyone
-- may try). Returns 1 when the token held the lock (or "<token>:<fence>"), else 0.
if not owned(KEYS[1], ARGV[1]) then
  -- A holder is never queued (acquire.lua takes it out, a hand-over pops it): only a waiter
  -- that gives up is.
  if redis.call('HDEL', KEYS[4], ARGV[1]) == 1 then
    redis.call('LREM', KEYS[3], 1, ARGV[1])
  end
  return 0
end
local now
while true do
  local w = redis.call('LPOP', KEYS[3])
  if not w then
    break
  end
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  local e = redis.call('HGET', KEYS[4], w)
  redis.call('HDEL', KEYS[4], w)
  if e then
    local expiry, ttl, hub, meta = string.match(e, '^(%d+) (%d+) (%S*) (.*)$')
    if not expiry then -- queued by an earlier version: "<expiry> <ttl> <metadata>"
      expiry, ttl, meta = string.match(e, '^(%d+) (%d+) (.*)$')
      hub = ''
    end
    if expiry and tonumber(expiry) > now then
      local fence = string.format('%d', redis.call('INCR', KEYS[2]))
      redis.call('SET', KEYS[1], w .. ':' .. fence .. ':' .. meta, 'PX', ttl)
      if hub ~= '' and hub == ARGV[4] then
        return w .. ':' .. fence
      end
      redis.call(ARGV[3], ARGV[2], w .. ':' .. fence)
      return 1
    end
  end
end
if ARGV[5] ~= '' then
  local fence = string.format('%d', redis.call('INCR', KEYS[2]))
  redis.call('SET', KEYS[1], ARGV[5] .. ':' .. fence .. ':' .. ARGV[7], 'PX', ARGV[6])
  return ARGV[5] .. ':' .. fence
end
redis.call('DEL', KEYS[1])
redis.call(ARGV[3], ARGV[2], '')
return 1
