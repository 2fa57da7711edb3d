-- Idempotency: store the response of the request holding the lease.
-- KEYS[1]  the record
-- ARGV[1]  lease token
-- ARGV[2]  encoded response
-- ARGV[3]  retention in milliseconds
-- Returns 1, or 0 when the lease is no longer this request's (it expired and another took it).
if redis.call('HGET', KEYS[1], 'tok') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'st', 'c', 'resp', ARGV[2])
redis.call('HDEL', KEYS[1], 'tok')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
