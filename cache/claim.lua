-- Claim the right to load a key: take its lease, unless a value the caller has not seen is
-- there, in which case that value is returned instead.
-- KEYS[1] value key, KEYS[2] lease key (one hash slot)
-- ARGV[1] lease token, ARGV[2] lease TTL in ms,
-- ARGV[3] '1' = exclusive (SET NX: another holder keeps it), else overwrite (a plain fence token),
-- ARGV[4] '1' = look at the value first, else claim regardless (an undecodable value is in the way),
-- ARGV[5] the envelope header of the stale value a refresh read ('' for a miss): a value with
--         another header is a newer one, returned instead of claiming.
-- Returns the envelope, 1 when the lease is now ours, 0 when someone else holds it.
if ARGV[4] == '1' then
	local v = redis.call('GET', KEYS[1])
	if v and (ARGV[5] == '' or string.sub(v, 1, #ARGV[5]) ~= ARGV[5]) then
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
