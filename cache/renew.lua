-- Renew a lease while its load runs, so a load slower than Options.Lease still lands.
-- KEYS[1] lease key; ARGV[1] lease token, ARGV[2] lease TTL in ms
-- Returns 1 when renewed, 0 when the lease is no longer ours (a Set or Delete took it).
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
