-- Delete: drop the value and its lease, then announce it, in one atomic step.
-- KEYS[1] value key, KEYS[2] lease key (one hash slot)
-- ARGV[1] pub/sub channel ('' = no notice: Redis Cluster), ARGV[2] notice
redis.call('DEL', KEYS[1], KEYS[2])
if ARGV[1] ~= '' then
	redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return 1
