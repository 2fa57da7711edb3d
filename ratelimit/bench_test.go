package ratelimit

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/internal/oteltest"
	"github.com/surgekit/surge/internal/redistest"
)

// Run: go test -run '^$' -bench . -benchmem ./ratelimit

const benchKeys = 100_000

var benchKeyNames = sync.OnceValue(func() []string {
	ks := make([]string, benchKeys)
	for i := range ks {
		ks[i] = "user:" + strconv.Itoa(i)
	}
	return ks
})

// parallelKeys runs fn over the keys, each goroutine starting at its own offset.
func parallelKeys(b *testing.B, fn func(key string)) {
	ks := benchKeyNames()
	var seq atomic.Uint64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(7919)) // spread the starting points
		for pb.Next() {
			fn(ks[i%len(ks)])
			i++
		}
	})
}

func benchRedis(b *testing.B, rdb redis.UniversalClient) {
	ctx := context.Background()
	for _, bc := range []struct {
		name   string
		limits []Limit
		keys   bool
	}{
		{"one-key", []Limit{{Rate: 1e9, Burst: 1 << 40}}, false},
		{"100k-keys", []Limit{PerSecond(1000)}, true},
		{"two-limits", []Limit{PerSecond(1000), PerHour(1 << 20)}, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r, err := NewRedis(rdb, &RedisOptions{Prefix: "bench:" + bc.name + ":"}, bc.limits...)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			allow := func(key string) {
				if _, err := r.Allow(ctx, key); err != nil {
					b.Fatal(err)
				}
			}
			if !bc.keys {
				parallelKeys(b, func(string) { allow("hot") })
				return
			}
			parallelKeys(b, allow)
		})
	}
}

// BenchmarkRedisAllow measures Redis.Allow (one EVALSHA round trip) on a real redis-server.
func BenchmarkRedisAllow(b *testing.B) { benchRedis(b, redistest.Server(b).Client()) }

// BenchmarkRedisPing is the floor for BenchmarkRedisAllow: one PING round trip on the same setup.
func BenchmarkRedisPing(b *testing.B) {
	rdb := redistest.Server(b).Client()
	ctx := context.Background()
	b.ReportAllocs()
	parallelKeys(b, func(string) {
		if err := rdb.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkRedisAllowMini runs Redis.Allow on miniredis (no real network or Lua VM: a smoke figure).
func BenchmarkRedisAllowMini(b *testing.B) {
	_, rdb := redistest.Mini(b)
	benchRedis(b, rdb)
}

// BenchmarkLocalAllow measures Local.Allow over 1, 1,000 and 100,000 keys visited in turn (all
// kept: MaxKeys above the key count), one goroutine, and over 100k keys in parallel. The
// comparison with x/time/rate is in internal/benchcmp.
func BenchmarkLocalAllow(b *testing.B) {
	ctx := context.Background()
	for _, nkeys := range []int{1, 1_000, benchKeys} {
		for _, bc := range []struct {
			name   string
			limits []Limit
		}{
			{"", []Limit{PerSecond(100)}},
			{"-two-limits", []Limit{PerSecond(100), PerHour(1 << 20)}},
		} {
			b.Run(strconv.Itoa(nkeys)+"-keys"+bc.name, func(b *testing.B) {
				l, err := NewLocal(&LocalOptions{MaxKeys: 2 * benchKeys}, bc.limits...)
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				ks := benchKeyNames()[:nkeys]
				for _, k := range ks { // warm: measure steady state, not first inserts
					_, _ = l.Allow(ctx, k)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if _, err := l.Allow(ctx, ks[i%nkeys]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
	b.Run("100k-keys-parallel", func(b *testing.B) {
		l, err := NewLocal(&LocalOptions{MaxKeys: 2 * benchKeys}, PerSecond(100))
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		for _, k := range benchKeyNames() {
			_, _ = l.Allow(ctx, k)
		}
		b.ReportAllocs()
		parallelKeys(b, func(key string) {
			if _, err := l.Allow(ctx, key); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// BenchmarkConcurrency measures Acquire+Release over 100k keys: in process, and on a real
// redis-server (two round trips).
func BenchmarkConcurrency(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, l ConcurrencyLimiter) {
		b.ReportAllocs()
		parallelKeys(b, func(key string) {
			p, err := l.Acquire(ctx, key)
			if err != nil {
				return // all slots of the key held by other goroutines: a refusal is a result too
			}
			if err := p.Release(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
	b.Run("local", func(b *testing.B) {
		l, err := NewLocalConcurrency(4, nil)
		if err != nil {
			b.Fatal(err)
		}
		run(b, l)
	})
	b.Run("redis", func(b *testing.B) {
		c, err := NewConcurrency(redistest.Server(b).Client(), 4, nil)
		if err != nil {
			b.Fatal(err)
		}
		run(b, c)
	})
}

// BenchmarkLocalAllowTelemetry measures what counting surge.ratelimit.decisions adds to
// Local.Allow on one key (two limits): "noop" counts into a no-op instrument, "no-sdk" is the
// default (the global provider with no SDK installed), "sdk" an OpenTelemetry SDK with a reader.
func BenchmarkLocalAllowTelemetry(b *testing.B) {
	ctx := context.Background()
	limits := []Limit{PerSecond(100), PerHour(1 << 20)}
	build := func(b *testing.B, opt *LocalOptions) *Local {
		l, err := NewLocal(opt, limits...)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = l.Allow(ctx, "k")
		b.ReportAllocs()
		return l
	}
	b.Run("noop", func(b *testing.B) {
		l := build(b, nil).quiet()
		for b.Loop() {
			if _, err := l.Allow(ctx, "k"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("no-sdk", func(b *testing.B) {
		l := build(b, nil)
		for b.Loop() {
			if _, err := l.Allow(ctx, "k"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk", func(b *testing.B) {
		l := build(b, &LocalOptions{MeterProvider: oteltest.New(b).MeterProvider})
		for b.Loop() {
			if _, err := l.Allow(ctx, "k"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
