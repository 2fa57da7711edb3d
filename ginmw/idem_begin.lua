-- Idempotency: begin a request, or tell the caller what became of an earlier one with its key.
-- KEYS[1]  the record (a hash: st = p(rocessing) | c(ompleted), fp, tok, resp)
-- ARGV[1]  request fingerprint
-- ARGV[2]  lease token of this request
-- ARGV[3]  lease in milliseconds
-- Returns {"new"} when this request now holds the lease, {"mismatch"} when the key was used for a
-- different request, {"busy", pttl} while another request holds it, {"done", resp} once completed.
local st = redis.call('HGET', KEYS[1], 'st')
if not st then
  redis.call('HSET', KEYS[1], 'st', 'p', 'fp', ARGV[1], 'tok', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'new'}
end
if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[1] then
  return {'mismatch'}
end
if st == 'p' then
  return {'busy', redis.call('PTTL', KEYS[1])}
end
return {'done', redis.call('HGET', KEYS[1], 'resp')}
