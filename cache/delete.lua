-- Delete: drop the value and its lease, then announce it, in one atomic step on the key's node.
-- KEYS[1] value key, KEYS[2] lease key (one hash slot)
-- ARGV[1] pub/sub channel, ARGV[2] notice
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
