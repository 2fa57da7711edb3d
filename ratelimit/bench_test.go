package ratelimit

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

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

// BenchmarkLocalAllow measures Local.Allow over 100k keys, all kept (MaxKeys above the key count).
func BenchmarkLocalAllow(b *testing.B) {
	ctx := context.Background()
	for _, bc := range []struct {
		name   string
		limits []Limit
	}{
		{"100k-keys", []Limit{PerSecond(1000)}},
		{"100k-keys-two-limits", []Limit{PerSecond(1000), PerHour(1 << 20)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l, err := NewLocal(&LocalOptions{MaxKeys: 2 * benchKeys}, bc.limits...)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			for _, k := range benchKeyNames() { // warm: measure steady state, not first inserts
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
}

// BenchmarkXRateSyncMap is the baseline for BenchmarkLocalAllow: one x/time/rate Limiter per key
// behind a sync.Map (unbounded, no expiry, no Result).
func BenchmarkXRateSyncMap(b *testing.B) {
	b.Run("100k-keys", func(b *testing.B) {
		var m sync.Map
		get := func(key string) *rate.Limiter {
			if v, ok := m.Load(key); ok {
				return v.(*rate.Limiter)
			}
			v, _ := m.LoadOrStore(key, rate.NewLimiter(1000, 1000))
			return v.(*rate.Limiter)
		}
		for _, k := range benchKeyNames() {
			get(k).Allow()
		}
		b.ReportAllocs()
		parallelKeys(b, func(key string) { get(key).Allow() })
	})
}
