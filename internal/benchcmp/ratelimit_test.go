package benchcmp

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-redis/redis_rate/v10"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"golang.org/x/time/rate"

	"github.com/surgekit/surge/ratelimit"
)

// rateLimitPerSecond is high enough that every Redis call is allowed: both sides do the full work.
const rateLimitPerSecond = 1_000_000

// rateLimitRedisCallers is the concurrency of the parallel Redis rows.
const rateLimitRedisCallers = 16

// runCallers runs b.N calls of fn spread over n goroutines (independent of GOMAXPROCS).
func runCallers(b *testing.B, n int, fn func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	for g := 0; g < n; g++ {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := fn(int(i)); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRateLimitRedis: one Allow per op on Redis, one caller ("single") and 16 concurrent
// callers ("parallel16", keys spread over 1000 users), surge (token bucket and GCRA, each also with
// RedisOptions.Pipeline) beside redis_rate (GCRA).
func BenchmarkRateLimitRedis(b *testing.B) {
	ctx := context.Background()
	rdb := newRedis(b)
	users := make([]string, 1000)
	for i := range users {
		users[i] = "user:" + strconv.Itoa(i)
	}
	type allowFunc func(key string) error
	sides := []struct {
		name string
		make func() allowFunc
	}{
		{"surge", func() allowFunc {
			l, err := ratelimit.NewRedis(rdb, nil, ratelimit.PerSecond(rateLimitPerSecond))
			if err != nil {
				b.Fatal(err)
			}
			return func(key string) error { _, err := l.Allow(ctx, key); return err }
		}},
		{"surge-otel-sdk", func() allowFunc {
			l, err := ratelimit.NewRedis(rdb, &ratelimit.RedisOptions{MeterProvider: rateLimitSDK(b)}, ratelimit.PerSecond(rateLimitPerSecond))
			if err != nil {
				b.Fatal(err)
			}
			return func(key string) error { _, err := l.Allow(ctx, key); return err }
		}},
		{"surge-gcra", func() allowFunc {
			l, err := ratelimit.NewRedis(rdb, &ratelimit.RedisOptions{Algorithm: ratelimit.GCRA}, ratelimit.PerSecond(rateLimitPerSecond))
			if err != nil {
				b.Fatal(err)
			}
			return func(key string) error { _, err := l.Allow(ctx, key); return err }
		}},
		{"surge-pipeline", func() allowFunc {
			l, err := ratelimit.NewRedis(rdb, &ratelimit.RedisOptions{Pipeline: true}, ratelimit.PerSecond(rateLimitPerSecond))
			if err != nil {
				b.Fatal(err)
			}
			return func(key string) error { _, err := l.Allow(ctx, key); return err }
		}},
		{"surge-gcra-pipeline", func() allowFunc {
			l, err := ratelimit.NewRedis(rdb, &ratelimit.RedisOptions{Algorithm: ratelimit.GCRA, Pipeline: true}, ratelimit.PerSecond(rateLimitPerSecond))
			if err != nil {
				b.Fatal(err)
			}
			return func(key string) error { _, err := l.Allow(ctx, key); return err }
		}},
		{"redis_rate", func() allowFunc {
			l := redis_rate.NewLimiter(rdb)
			lim := redis_rate.PerSecond(rateLimitPerSecond)
			return func(key string) error { _, err := l.Allow(ctx, key, lim); return err }
		}},
	}
	for _, mode := range []string{"single", "parallel16"} {
		for _, s := range sides {
			b.Run(mode+"/"+s.name, func(b *testing.B) {
				flush(b, rdb)
				allow := s.make()
				for _, u := range users[:100] { // the script loaded, the first buckets written
					if err := allow(u); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				done := measureCost(b, rdb)
				if mode == "single" {
					for b.Loop() {
						if err := allow("user:42"); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					runCallers(b, rateLimitRedisCallers, func(i int) error { return allow(users[i%len(users)]) })
				}
				done()
			})
		}
	}
}

// rateLimitSDK is an OpenTelemetry SDK meter provider aggregating into a reader nobody reads:
// what counting surge.ratelimit.decisions costs with an SDK installed, without any exporter.
func rateLimitSDK(b *testing.B) *sdkmetric.MeterProvider {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return mp
}

// BenchmarkRateLimitLocal: one Allow per op over 1, 1,000 and 100,000 keys visited in turn
// (100/s, burst 100 per key), surge's Local beside one x/time/rate Limiter per key in a sync.Map.
// "surge" counts its decisions into the global meter provider with no SDK installed (the
// default); "surge-otel-sdk" (1 key) into an OpenTelemetry SDK.
func BenchmarkRateLimitLocal(b *testing.B) {
	ctx := context.Background()
	for _, nkeys := range []int{1, 1_000, 100_000} {
		keys := make([]string, nkeys)
		for i := range keys {
			keys[i] = "user:" + strconv.Itoa(i)
		}
		name := strconv.Itoa(nkeys) + "-keys"
		surge := func(b *testing.B, opt *ratelimit.LocalOptions) {
			l, err := ratelimit.NewLocal(opt, ratelimit.PerSecond(100))
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			for _, k := range keys { // steady state, not first inserts
				_, _ = l.Allow(ctx, k)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := l.Allow(ctx, keys[i%nkeys]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		}
		b.Run(name+"/surge", func(b *testing.B) { surge(b, &ratelimit.LocalOptions{MaxKeys: 2 * nkeys}) })
		if nkeys == 1 {
			b.Run(name+"/surge-otel-sdk", func(b *testing.B) {
				surge(b, &ratelimit.LocalOptions{MaxKeys: 2 * nkeys, MeterProvider: rateLimitSDK(b)})
			})
		}
		b.Run(name+"/xtime-syncmap", func(b *testing.B) {
			var m sync.Map
			for _, k := range keys {
				m.Store(k, rate.NewLimiter(100, 100))
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k := keys[i%nkeys]
				v, ok := m.Load(k)
				if !ok {
					v, _ = m.LoadOrStore(k, rate.NewLimiter(100, 100))
				}
				v.(*rate.Limiter).Allow()
				i++
			}
		})
	}
}
