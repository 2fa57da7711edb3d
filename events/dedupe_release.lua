-- Release a claim, only if it is still ours (the lease may have passed to another handler).
-- KEYS[1]: the event's dedupe key. ARGV[1]: claim token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
