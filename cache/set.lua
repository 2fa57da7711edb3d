-- Set: drop the key's lease (so a load running for it cannot overwrite the new value), write the
-- value, and announce it to the local tiers of every process. The notice leaves the server after
-- the write, in the same atomic step, so it can never overtake it.
-- KEYS[1] value key, KEYS[2] lease key (one hash slot)
-- ARGV[1] envelope, ARGV[2] TTL in ms, ARGV[3] pub/sub channel ('' = no notice: Redis Cluster,
-- where readers learn of writes from server-assisted invalidation), ARGV[4] notice
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' then
	redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 1
