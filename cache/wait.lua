-- One poll of a process waiting for another's lease: the value if it is there, else take the
-- lease if it has gone (its holder failed, or a Delete dropped it).
-- KEYS[1] value key, KEYS[2] lease key (one hash slot)
-- ARGV[1] lease token, ARGV[2] lease TTL in ms
-- Returns the envelope, 1 when the lease is now ours, 0 when someone else still holds it.
local v = redis.call('GET', KEYS[1])
if v then
	return v
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
	return 1
end
return 0
