-- Fenced write of a loaded value: it lands only while the lease is still the writer's own, so a
-- Delete or Set (which drop the lease) during a slow load is never overwritten by the stale value.
-- KEYS[1] value key, KEYS[2] lease key (one hash slot)
-- ARGV[1] lease token, ARGV[2] envelope ('' = only release the lease), ARGV[3] TTL in ms,
-- ARGV[4] pub/sub channel ('' = no notice: no Lease, or Redis Cluster), ARGV[5] notice
-- Returns 1 when the lease was ours (value written / lease released), 0 when it was not.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
	return 0
end
redis.call('DEL', KEYS[2])
if ARGV[2] ~= '' then
	redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
if ARGV[4] ~= '' then
	redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return 1
