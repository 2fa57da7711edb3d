package benchcmp

import (
	"context"
	"strconv"
	"sync"
	"testing"

	bb "github.com/bits-and-blooms/bloom/v3"
	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/bloom"
)

func bloomKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "order:" + strconv.Itoa(i)
	}
	return keys
}

// lookUp adds keys to a new filter (err is its constructor's) and measures MightContain over them.
func lookUp(b *testing.B, f bloom.Filter, err error, keys []string) {
	ctx := context.Background()
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Add(ctx, keys...); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := f.MightContain(ctx, keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkBloomLocal(b *testing.B) {
	const n = 1_000_000
	keys := bloomKeys(100_000)

	b.Run("surge", func(b *testing.B) {
		f, err := bloom.NewLocal(n, 0.01)
		lookUp(b, f, err, keys)
	})
	b.Run("bits-and-blooms-rwmutex", func(b *testing.B) {
		f := bb.NewWithEstimates(n, 0.01)
		var mu sync.RWMutex
		for _, k := range keys {
			f.AddString(k)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			mu.RLock()
			f.TestString(keys[i%len(keys)])
			mu.RUnlock()
			i++
		}
	})
}

func BenchmarkBloomRedis(b *testing.B) {
	ctx := context.Background()
	rdb := newRedis(b)
	keys := bloomKeys(10_000)

	b.Run("surge", func(b *testing.B) {
		f, err := bloom.NewRedis(rdb, "bb:surge", 1_000_000, 0.01, nil)
		lookUp(b, f, err, keys)
	})
	b.Run("getbit", func(b *testing.B) {
		if err := rdb.SetBit(ctx, "bb:getbit", 9_585_058, 1).Err(); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		i := int64(0)
		for b.Loop() {
			if err := rdb.GetBit(ctx, "bb:getbit", (i*7919)%9_585_058).Err(); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkBloomRedisCallers: one MightContain or one single-key Add per op on Redis, from one
// caller ("single") and from 16 concurrent callers ("parallel16"), surge without and with
// RedisOptions.Pipeline, beside one plain GETBIT (contains) or SETBIT (add) round trip per op:
// the floor of any check that is not pipelined. 10,000 keys added first (1M-key filter, 1%).
func BenchmarkBloomRedisCallers(b *testing.B) {
	ctx := context.Background()
	rdb := newRedis(b)
	keys := bloomKeys(10_000)
	const bits = 9_585_058 // the filter's m: the plain bit ops address as many bits
	type opFunc func(i int) error
	for _, mode := range []string{"single", "parallel16"} {
		for _, op := range []string{"contains", "add"} {
			sides := []struct {
				name string
				make func(b *testing.B) opFunc
			}{
				{"surge", func(b *testing.B) opFunc { return bloomOp(b, rdb, op, keys, nil) }},
				{"surge-pipeline", func(b *testing.B) opFunc {
					return bloomOp(b, rdb, op, keys, &bloom.RedisOptions{Pipeline: true})
				}},
				{map[string]string{"contains": "getbit", "add": "setbit"}[op], func(b *testing.B) opFunc {
					if err := rdb.SetBit(ctx, "bb:plain", bits-1, 1).Err(); err != nil {
						b.Fatal(err)
					}
					return func(i int) error {
						off := (int64(i) * 7919) % bits
						if op == "add" {
							return rdb.SetBit(ctx, "bb:plain", off, 1).Err()
						}
						return rdb.GetBit(ctx, "bb:plain", off).Err()
					}
				}},
			}
			for _, s := range sides {
				b.Run(mode+"/"+op+"/"+s.name, func(b *testing.B) {
					flush(b, rdb)
					do := s.make(b)
					for i := range 100 { // connections open, script loaded
						if err := do(i); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportAllocs()
					done := measureCost(b, rdb)
					if mode == "single" {
						i := 0
						for b.Loop() {
							if err := do(i); err != nil {
								b.Fatal(err)
							}
							i++
						}
					} else {
						runCallers(b, rateLimitRedisCallers, do)
					}
					done()
				})
			}
		}
	}
}

// bloomOp builds a surge Redis filter holding keys and returns one MightContain or one Add of a
// key per call.
func bloomOp(b *testing.B, rdb *redis.Client, op string, keys []string, opt *bloom.RedisOptions) func(i int) error {
	ctx := context.Background()
	f, err := bloom.NewRedis(rdb, "bb:callers", 1_000_000, 0.01, opt)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Add(ctx, keys...); err != nil {
		b.Fatal(err)
	}
	return func(i int) error {
		k := keys[i%len(keys)]
		if op == "add" {
			return f.Add(ctx, k)
		}
		_, err := f.MightContain(ctx, k)
		return err
	}
}
