-- Claim the right to load a key: take its lease, unless (on a miss) the value has arrived since
-- the caller read it, in which case the value is returned instead.
-- KEYS[1] value key, KEYS[2] lease key (one hash slot)
-- ARGV[1] lease token, ARGV[2] lease TTL in ms,
-- ARGV[3] '1' = exclusive (SET NX: another holder keeps it), else overwrite (a plain fence token),
-- ARGV[4] '1' = return the value if there is one (a miss), else claim regardless (a refresh)
-- Returns the envelope, 1 when the lease is now ours, 0 when someone else holds it.
if ARGV[4] == '1' then
	local v = redis.call('GET', KEYS[1])
	if v then
		return v
	end
end
if ARGV[3] == '1' then
	if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
		return 0
	end
else
	redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
return 1
