-- KEYS[1] lock key; ARGV[1] token
-- Returns the key's PTTL in ms when token owns it, else -3.
if owned(KEYS[1], ARGV[1]) then
  return redis.call('PTTL', KEYS[1])
end
return -3
