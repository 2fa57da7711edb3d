-- KEYS[1] lock key; ARGV[1] token, ARGV[2] release channel
-- Deletes the key and announces the release when token owns it. Returns 1, else 0.
if owned(KEYS[1], ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], KEYS[1])
  return 1
end
return 0
