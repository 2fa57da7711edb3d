// Package cache is a cache-aside over Redis, with an optional in-process tier, that does not
// stampede, does not serve what a Delete removed, and keeps serving when Redis fails.
//
// A service calls [Cache.Fetch] with a loader; the value comes from the local tier, from Redis,
// or from the loader, and the three classic failures are handled:
//
//   - penetration (records that do not exist): negative entries ([Options].NegativeTTL) and an
//     optional [Guard] such as a Bloom filter;
//   - breakdown (a hot key expiring under load): one load per key per process (singleflight),
//     one per key across processes with [Options].Lease, stale-while-revalidate
//     ([Options].RefreshAfter) and probabilistic early refresh ([Options].EarlyRefreshBeta);
//   - avalanche (keys expiring together, Redis going away): jittered TTLs and the FailOpen
//     policy, which serves from the loader (still singleflighted) while Redis is down.
//
// Writes after a load are fenced by a lease token in Redis, so a [Cache.Delete] or [Cache.Set]
// during a slow load is never overwritten by the value that load read before the update. A stale
// value is reloaded once per RefreshAfter period (per process, or across processes with Lease),
// however the reads interleave: a refresh takes over only while the value is still the one it
// read. Values travel in a small versioned envelope; an entry that cannot be decoded is a miss,
// never a panic. They are encoded with MessagePack by default ([MsgpackCodec]; [Options].Codec
// picks another), and S2-compressed from [Options].CompressAbove bytes (1 KiB) up to 64 MiB.
//
// Concurrent Redis reads of different keys share round trips: a lone read goes out at once (so
// does a second caller's while reads go alone), and the reads that arrive while round trips are
// in flight go out together when one returns: one MGET on a *redis.Client, a pipeline of GETs
// on other clients. Once callers share round trips, one is in flight at a time, so N concurrent
// callers cost about one round trip per N reads instead of one each; once about ten or more keep
// the reads busy, two are in flight, each carrying about half of them, so Redis reads one
// group's keys while the other group decodes its values. No timer delays a lone caller. On Redis Cluster each master has its own queue, so a slow node holds up only its own
// keys. Concurrent reads of one key share one GET.
//
// The in-process tier ([LocalOptions]) is coherent: after a write returns, no instance serves the
// value it replaced for longer than the invalidation delay (a pub/sub hop, a few ms at p99 on
// one host), whichever surge instance wrote and, through server-assisted invalidation on a
// single server, a failover client or a cluster, whoever wrote at all, including expiry and
// eviction.
//
// Usage:
//
//	users, err := cache.New[User](rdb, &cache.Options{Prefix: "user:", TTL: 10 * time.Minute})
//	if err != nil { ... }
//	defer users.Close()
//	u, err := users.Fetch(ctx, id, func(ctx context.Context, id string) (User, error) {
//		u, err := db.User(ctx, id)
//		if errors.Is(err, sql.ErrNoRows) {
//			return User{}, cache.ErrNotFound // remembered for NegativeTTL
//		}
//		return u, err
//	})
//	// after updating the database:
//	err = users.Delete(ctx, id)
//
// Keys: the value of key k lives at Prefix+"{k}" and its lease at Prefix+"{k}:lease", one hash
// slot, so everything works on Redis Cluster.
package cache
