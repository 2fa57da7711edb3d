-- KEYS[1] lock key; ARGV[1] token, ARGV[2] new ttl in ms
-- Extends the key when token owns it. Returns 1, else 0.
if owned(KEYS[1], ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
