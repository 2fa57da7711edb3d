package benchcmp

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/go-redis/redis_rate/v10"
	"golang.org/x/time/rate"

	"github.com/surgekit/surge/ratelimit"
)

func BenchmarkRateLimitRedis(b *testing.B) {
	ctx := context.Background()
	rdb := newRedis(b)
	const perSecond = 1_000_000 // high enough that every call is allowed: both do the full work

	b.Run("surge", func(b *testing.B) {
		l, err := ratelimit.NewRedis(rdb, nil, ratelimit.PerSecond(perSecond))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.Allow(ctx, "user:42"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("redis_rate", func(b *testing.B) {
		l := redis_rate.NewLimiter(rdb)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.Allow(ctx, "user:42", redis_rate.PerSecond(perSecond)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkRateLimitLocal(b *testing.B) {
	ctx := context.Background()
	const nkeys = 100_000
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
	}

	b.Run("surge", func(b *testing.B) {
		l, err := ratelimit.NewLocal(&ratelimit.LocalOptions{MaxKeys: 2 * nkeys}, ratelimit.PerSecond(100))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := l.Allow(ctx, keys[i%nkeys]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("xtime-syncmap", func(b *testing.B) {
		var m sync.Map
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
