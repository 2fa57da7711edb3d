package benchcmp

import (
	"context"
	"strconv"
	"sync"
	"testing"

	bb "github.com/bits-and-blooms/bloom/v3"

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
