-- Idempotency: give up the lease (the handler failed), so a retry may run at once.
-- KEYS[1]  the record
-- ARGV[1]  lease token
-- Returns 1 when the record was deleted, 0 when the lease was not this request's.
if redis.call('HGET', KEYS[1], 'tok') == ARGV[1] and redis.call('HGET', KEYS[1], 'st') == 'p' then
  return redis.call('DEL', KEYS[1])
end
return 0
