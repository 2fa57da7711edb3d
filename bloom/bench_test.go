package bloom

import (
	"context"
	"fmt"
	"sync"
	"testing"

	bbloom "github.com/bits-and-blooms/bloom/v3"
	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/internal/redistest"
)

// Benchmarks. Local vs raw bits-and-blooms behind a sync.RWMutex (the usual way to share it),
// serial and parallel, on a filter holding its full n; Redis MightContain vs a plain GETBIT
// round trip on the same real server and client.
//
//	go test -run '^$' -bench . -benchmem ./bloom/

const benchN = 100_000

var (
	benchOnce sync.Once
	benchIn   []string // added keys
	benchMix  []string // probes: half added, half not
)

func benchKeys() {
	benchOnce.Do(func() {
		benchIn = randomKeys(90, benchN, "user:")
		out := randomKeys(91, benchN, "nobody:")
		benchMix = make([]string, 0, 2*benchN)
		for i := range benchN {
			benchMix = append(benchMix, benchIn[i], out[i])
		}
	})
}

// lockedRaw is bits-and-blooms shared the common way.
type lockedRaw struct {
	mu sync.RWMutex
	f  *bbloom.BloomFilter
}

func (l *lockedRaw) test(key string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.f.TestString(key)
}

func (l *lockedRaw) add(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.AddString(key)
}

func BenchmarkLocalMightContain(b *testing.B) {
	benchKeys()
	ctx := context.Background()
	l, _ := NewLocal(benchN, 0.01)
	_ = l.Add(ctx, benchIn...)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			_, _ = l.MightContain(ctx, benchMix[i%len(benchMix)])
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				_, _ = l.MightContain(ctx, benchMix[i%len(benchMix)])
			}
		})
	})
}

func BenchmarkRawRWMutexTest(b *testing.B) {
	benchKeys()
	raw := &lockedRaw{f: bbloom.NewWithEstimates(benchN, 0.01)}
	for _, k := range benchIn {
		raw.add(k)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			_ = raw.test(benchMix[i%len(benchMix)])
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				_ = raw.test(benchMix[i%len(benchMix)])
			}
		})
	})
}

func BenchmarkLocalAdd(b *testing.B) {
	benchKeys()
	ctx := context.Background()
	l, _ := NewLocal(benchN, 0.01)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			_ = l.Add(ctx, benchIn[i%benchN])
		}
	})
}

func BenchmarkRawRWMutexAdd(b *testing.B) {
	benchKeys()
	raw := &lockedRaw{f: bbloom.NewWithEstimates(benchN, 0.01)}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			raw.add(benchIn[i%benchN])
		}
	})
}

// benchRedisFilter returns a filter sized for n keys with the first added ones of the probe
// mix added (the answer mix is what matters, not the fill).
func benchRedisFilter(b *testing.B, rdb redis.UniversalClient, n uint, shards int) *Redis {
	benchKeys()
	r, err := NewRedis(rdb, fmt.Sprintf("bench:%d:%d", n, shards), n, 0.01, &RedisOptions{Shards: shards})
	if err != nil {
		b.Fatal(err)
	}
	for at := 0; at < int(n) && at < benchProbes/2; at += WarmBatch {
		if err := r.Add(context.Background(), benchIn[at:min(at+WarmBatch, benchN)]...); err != nil {
			b.Fatal(err)
		}
	}
	return r
}

// benchProbes is the span of benchMix the Redis benchmarks cycle through.
const benchProbes = 40_000

func benchMightContain(b *testing.B, r *Redis) {
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		// Probes alternate an added key and an absent one.
		key := benchMix[(2*i)%benchProbes+i%2]
		if _, err := r.MightContain(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRedisMightContain(b *testing.B) {
	srv := redistest.Server(b)
	b.Run("server", func(b *testing.B) { benchMightContain(b, benchRedisFilter(b, srv.Client(), benchN, 1)) })
	b.Run("server-8-shards", func(b *testing.B) { benchMightContain(b, benchRedisFilter(b, srv.Client(), benchN, 8)) })
	b.Run("miniredis", func(b *testing.B) {
		_, rdb := redistest.Mini(b)
		// miniredis copies the whole string on SETBIT: a small filter.
		benchMightContain(b, benchRedisFilter(b, rdb, 2000, 1))
	})
}

// BenchmarkRedisGETBIT is the floor for BenchmarkRedisMightContain: one plain GETBIT round trip
// on the same kind of server and client.
func BenchmarkRedisGETBIT(b *testing.B) {
	rdb := redistest.Server(b).Client()
	ctx := context.Background()
	if err := rdb.SetBit(ctx, "bits", 1<<20, 1).Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := rdb.GetBit(ctx, "bits", int64(i&(1<<20-1))).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRedisAdd(b *testing.B) {
	srv := redistest.Server(b)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		batch  int
		shards int
	}{{"1-key", 1, 1}, {"1000-keys", 1000, 1}, {"1000-keys-8-shards", 1000, 8}} {
		b.Run(tc.name, func(b *testing.B) {
			r := benchRedisFilter(b, srv.Client(), benchN, tc.shards)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				at := (i * tc.batch) % (benchN - tc.batch)
				if err := r.Add(ctx, benchIn[at:at+tc.batch]...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
