// Package bloom keeps keys that certainly do not exist away from a cache and its database: a
// Bloom filter answers "certainly not" or "maybe" for a key in a few bits per key.
//
// Two forms share the [Filter] interface (and satisfy cache.Guard):
//
//   - [Local]: in-process, lock-free, bit-compatible with github.com/bits-and-blooms/bloom/v3
//     (same m, k, positions and binary format: [Local.WriteTo] / [Local.ReadFrom]).
//   - [Redis]: a Redis bitmap shared by every process, one round trip per call, optionally split
//     over several keys ([RedisOptions.Shards]) for Redis Cluster. With one shard it is, bit for
//     bit, the Local of the same n and fp.
//
// Usage:
//
//	users, err := bloom.NewRedis(rdb, "users", 1_000_000, 0.01, nil)
//	// at start-up or in a job: load every existing id
//	n, err := bloom.Warm(ctx, users, allUserIDs(ctx))
//	// on every create, after writing the database
//	err = users.Add(ctx, id)
//	// in front of the cache / database
//	if ok, err := users.MightContain(ctx, id); err == nil && !ok {
//		return ErrNoSuchUser // certainly absent: no cache or database hit
//	}
//
// A Redis error from MightContain must be treated as "maybe" (go on to the cache), never as
// "absent". Keys cannot be removed; the filter only grows. When [Local.ApproximateCount] or
// [Redis.ApproximateCount] passes about 80% of the n it was sized for, rebuild a larger one
// under a new name with [Live] (dual-write, warm, switch, delete the old).
package bloom
