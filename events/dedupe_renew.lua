-- Extend a claim, only if it is still ours.
-- KEYS[1]: the event's dedupe key. ARGV[1]: claim token. ARGV[2]: lease in milliseconds.
-- Returns 1 when extended, 0 when the claim is no longer ours (expired, released or done).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
