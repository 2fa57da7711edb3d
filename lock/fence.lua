-- KEYS[1] lock key, KEYS[2] fence counter; ARGV[1] token, ARGV[2] fence
-- Redlock: raises the counter to at least ARGV[2] while token owns the lock, so that every later
-- quorum, which shares a node with this one, draws a larger fence. Returns 1, else 0.
if owned(KEYS[1], ARGV[1]) then
  local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
  if cur < tonumber(ARGV[2]) then
    redis.call('SET', KEYS[2], ARGV[2])
  end
  return 1
end
return 0
