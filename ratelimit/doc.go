// Package ratelimit limits how often a key (a user, an IP, an API token) may do something, with
// token buckets: each [Limit] holds up to Burst tokens, starts full and refills at Rate per second.
//
// Two limiters share one API and one [Result]:
//   - [Local] keeps the buckets in process memory (bounded, dropped once full again), with no
//     goroutine and no allocation per call;
//   - [Redis] keeps them in Redis, one Lua script and one round trip per call, timed by the Redis
//     server's clock, so every instance of a service shares the budget; as a token bucket (the
//     default) or with [GCRA] ([RedisOptions.Algorithm]). When Redis fails it fails closed, fails
//     open, or falls back to a [Local] and probes Redis to come back ([RedisOptions.OnRedisError]).
//
// A [ConcurrencyLimiter] bounds how many operations per key run at once instead:
// [LocalConcurrency] in one process, [Concurrency] across every instance sharing a Redis, with
// leases so that a crashed holder frees its slot.
//
// Several limits on one limiter (e.g. 10/s with burst 20, and 1000/h) are checked and charged
// atomically: a call takes tokens from all buckets or from none, and the Result describes the
// binding limit.
//
//	rl, err := ratelimit.NewRedis(rdb, &ratelimit.RedisOptions{Prefix: "api:rl:"},
//		ratelimit.Limit{Rate: 10, Burst: 20, Name: "burst"}, ratelimit.PerHour(1000))
//	if err != nil { ... }
//	res, err := rl.Allow(ctx, "user:42")
//	if err != nil { ... }
//	if !res.Allowed {
//		// reply 429 with Retry-After: res.RetryAfter
//	}
package ratelimit
