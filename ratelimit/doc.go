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
//
// # Telemetry
//
// Every limiter counts its answers in the OpenTelemetry counter surge.ratelimit.decisions
// (instrumentation scope github.com/surgekit/surge/ratelimit), through the MeterProvider of its
// options or, when that is nil, the global one; with no SDK installed counting costs an atomic
// load and allocates nothing. Each AllowN call (Allow, and every try of Wait, peeks included) and
// each Acquire is counted once, with two attributes:
//
//   - surge.ratelimit.decision: "allowed" or "denied" when the limiter answered; "fallback" when
//     Redis failed and the ErrorPolicy answered instead ([FailOpen], or the [Fallback] limiter,
//     whether it allowed or denied); "error" when the call returned an error (Redis failing with
//     [FailClosed], the context ending, a bad argument).
//   - surge.ratelimit.limit: the binding limit's [Limit.String] (its Name, or "rate/s burst b"
//     when it has none), the one [Result].Limit reports; with "fallback" from a Fallback limiter,
//     that limiter's binding limit. With "error" no limit binds: it is the String of every limit
//     of the limiter joined by "," (the one limit's, for a limiter with one). For the concurrency
//     limiters it is [ConcurrencyOptions.Name] (default "concurrency"), allowed meaning a permit
//     was given and denied a [ConcurrencyError].
//
// A [Local] used as a Fallback counts only the calls made on it directly: a call that a [Redis]
// limiter hands to it is counted once, by the Redis limiter, as "fallback".
package ratelimit
