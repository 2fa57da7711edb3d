package cache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/s2"

	"github.com/surgekit/surge/cache"
	"github.com/surgekit/surge/internal/redistest"
)

// product encodes to about 200 bytes of JSON.
type product struct {
	ID          int64    `json:"id"`
	SKU         string   `json:"sku"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	PriceCents  int64    `json:"price_cents"`
	Stock       int      `json:"stock"`
	Tags        []string `json:"tags"`
}

var benchProduct = product{
	ID: 123456789, SKU: "SKU-0001-ABCD", Name: "Stainless steel water bottle",
	Description: "Double-walled, keeps drinks cold for 24 hours.",
	PriceCents:  2499, Stock: 1200, Tags: []string{"outdoor", "kitchen", "gift"},
}

func loadProduct(ctx context.Context, key string) (product, error) { return benchProduct, nil }

// BenchmarkRedisHit compares a Redis-tier hit of Fetch with the raw go-redis GET +
// json.Unmarshal of the same value, on one real redis-server and one client.
func BenchmarkRedisHit(b *testing.B) {
	if n, _ := json.Marshal(benchProduct); len(n) < 180 || len(n) > 220 {
		b.Fatalf("value is %d bytes of JSON, want about 200", len(n))
	}
	s := redistest.Server(b)
	rdb := s.Client()
	ctx := context.Background()
	c, err := cache.New[product](rdb, &cache.Options{Prefix: "bench:"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Fetch(ctx, "p", loadProduct); err != nil {
		b.Fatal(err)
	}
	raw, _ := json.Marshal(benchProduct)
	if err := rdb.Set(ctx, "raw:p", raw, 0).Err(); err != nil {
		b.Fatal(err)
	}

	// Warm the server and the connection first: whichever sub-benchmark ran first on a fresh
	// server measured up to twice as slow.
	for range 5000 {
		if err := rdb.Get(ctx, "raw:p").Err(); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("surge-Fetch", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Fetch(ctx, "p", loadProduct); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go-redis-GET+json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			data, err := rdb.Get(ctx, "raw:p").Bytes()
			if err != nil {
				b.Fatal(err)
			}
			var p product
			if err := json.Unmarshal(data, &p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkLocalHit measures a local-tier hit: no Redis, no decoding.
func BenchmarkLocalHit(b *testing.B) {
	_, rdb := redistest.Mini(b)
	c, err := cache.New[product](rdb, &cache.Options{Local: &cache.LocalOptions{}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Fetch(ctx, "p", loadProduct); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Fetch(ctx, "p", loadProduct); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Fetch(ctx, "p", loadProduct); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// BenchmarkStampede reports loader calls per 1000 concurrent Fetches of one cold key.
func BenchmarkStampede(b *testing.B) {
	s := redistest.Server(b)
	c, err := cache.New[product](s.Client(), &cache.Options{Prefix: "stampede:"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	var calls atomic.Int64
	load := func(ctx context.Context, key string) (product, error) {
		calls.Add(1)
		return benchProduct, nil
	}
	round := 0
	for b.Loop() {
		round++
		key := fmt.Sprint("cold-", round)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 1000 {
			wg.Go(func() {
				<-start
				if _, err := c.Fetch(ctx, key, load); err != nil {
					b.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
	}
	b.ReportMetric(float64(calls.Load())/float64(round), "loads/1000req")
}

// BenchmarkCodec decodes benchProduct (about 200 bytes as JSON) with each codec, and with the
// MessagePack bytes S2-compressed as a CompressAbove small enough would store them; bytes is
// the payload stored per entry (the envelope adds a 22-byte header).
func BenchmarkCodec(b *testing.B) {
	mp, err := cache.MsgpackCodec{}.Marshal(benchProduct)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		codec  cache.Codec
		s2     bool
		stored []byte
	}{
		{"json", cache.JSONCodec{}, false, nil},
		{"msgpack", cache.MsgpackCodec{}, false, nil},
		{"msgpack+s2", cache.MsgpackCodec{}, true, s2.Encode(nil, mp)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			data, err := tc.codec.Marshal(benchProduct)
			if err != nil {
				b.Fatal(err)
			}
			if tc.s2 {
				data = tc.stored
			}
			b.ReportAllocs()
			for b.Loop() {
				payload := data
				if tc.s2 {
					if payload, err = s2.Decode(nil, data); err != nil {
						b.Fatal(err)
					}
				}
				var p product
				if err := tc.codec.Unmarshal(payload, &p); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "bytes")
		})
	}
}
