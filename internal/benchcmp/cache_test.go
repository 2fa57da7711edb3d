package benchcmp

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gocache "github.com/go-redis/cache/v9"
	zcache "github.com/zeromicro/go-zero/core/stores/cache"
	zredis "github.com/zeromicro/go-zero/core/stores/redis"
	"github.com/zeromicro/go-zero/core/syncx"

	"github.com/surgekit/surge/cache"
)

// item is the 200-byte (as JSON) record the cache benchmarks move.
type item struct {
	ID      int64    `json:"id"`
	Name    string   `json:"name"`
	Email   string   `json:"email"`
	Tags    []string `json:"tags"`
	Score   float64  `json:"score"`
	Active  bool     `json:"active"`
	Created string   `json:"created"`
	Note    string   `json:"note"`
}

func sampleItem() item {
	return item{ID: 42, Name: "Ada Lovelace", Email: "ada@example.com", Tags: []string{"vip", "eu", "beta"},
		Score: 97.5, Active: true, Created: "2026-11-24T09:00:00Z", Note: "prefers invoices by post, net 30 days"}
}

func noLoad(context.Context, string) (item, error) {
	return item{}, errors.New("benchmark: loader called on a hit")
}

func BenchmarkCacheRedisHit(b *testing.B) {
	ctx := context.Background()
	rdb := newRedis(b)
	flush(b, rdb)
	v := sampleItem()
	raw, _ := json.Marshal(v)
	if len(raw) < 190 || len(raw) > 210 {
		b.Fatalf("sample item is %d bytes as JSON, want about 200", len(raw))
	}

	b.Run("surge", func(b *testing.B) {
		c, err := cache.New[item](rdb, &cache.Options{Prefix: "bc:surge:"})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if err := c.Set(ctx, "k", v); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Fetch(ctx, "k", noLoad); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-go-redis", func(b *testing.B) {
		if err := rdb.Set(ctx, "bc:raw:k", raw, time.Hour).Err(); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			data, err := rdb.Get(ctx, "bc:raw:k").Bytes()
			if err != nil {
				b.Fatal(err)
			}
			var got item
			if err := json.Unmarshal(data, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go-redis-cache", func(b *testing.B) {
		c := gocache.New(&gocache.Options{Redis: rdb})
		if err := c.Set(&gocache.Item{Ctx: ctx, Key: "bc:grc:k", Value: v, TTL: time.Hour}); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			var got item
			if err := c.Get(ctx, "bc:grc:k", &got); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkCacheLocalHit(b *testing.B) {
	ctx := context.Background()
	rdb := newRedis(b)
	v := sampleItem()

	b.Run("surge", func(b *testing.B) {
		c, err := cache.New[item](rdb, &cache.Options{Prefix: "bc:local:", Local: &cache.LocalOptions{TTL: time.Hour}})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		load := func(context.Context, string) (item, error) { return v, nil }
		if _, err := c.Fetch(ctx, "k", load); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Fetch(ctx, "k", noLoad); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go-redis-cache", func(b *testing.B) {
		c := gocache.New(&gocache.Options{Redis: rdb, LocalCache: gocache.NewTinyLFU(1000, time.Hour)})
		if err := c.Set(&gocache.Item{Ctx: ctx, Key: "bc:grc-local:k", Value: v, TTL: time.Hour}); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			var got item
			if err := c.Get(ctx, "bc:grc-local:k", &got); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// stampedeRun numbers the keys of every stampede run, so no run (nor a later -count round) finds
// a key warmed by an earlier one.
var stampedeRun atomic.Int64

// stampede sends 1000 concurrent requests for one cold key per iteration and reports how many
// times the loader ran per iteration.
func stampede(b *testing.B, fetch func(key string, load func() (item, error)) error) {
	const requests = 1000
	var loads atomic.Int64
	load := func() (item, error) {
		loads.Add(1)
		time.Sleep(5 * time.Millisecond) // a database query
		return sampleItem(), nil
	}
	i := 0
	for b.Loop() {
		i++
		key := "cold-" + strconv.FormatInt(stampedeRun.Add(1), 10)
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, requests)
		for range requests {
			wg.Go(func() {
				<-start
				if err := fetch(key, load); err != nil {
					errs <- err
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(loads.Load())/float64(i), "loads")
}

func BenchmarkCacheStampede(b *testing.B) {
	ctx := context.Background()
	rdb := newRedis(b)
	flush(b, rdb)

	b.Run("surge", func(b *testing.B) {
		c, err := cache.New[item](rdb, &cache.Options{Prefix: "bc:st:surge:"})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		stampede(b, func(key string, load func() (item, error)) error {
			_, err := c.Fetch(ctx, key, func(context.Context, string) (item, error) { return load() })
			return err
		})
	})
	b.Run("go-zero", func(b *testing.B) {
		node := zcache.NewNode(zredis.MustNewRedis(zredis.RedisConf{Host: redisAddr, Type: zredis.NodeType}),
			syncx.NewSingleFlight(), zcache.NewStat("bench"), errors.New("not found"))
		stampede(b, func(key string, load func() (item, error)) error {
			var got item
			return node.Take(&got, "bc:st:zero:"+key, func(v any) error {
				it, err := load()
				*(v.(*item)) = it
				return err
			})
		})
	})
	b.Run("go-redis-cache", func(b *testing.B) {
		c := gocache.New(&gocache.Options{Redis: rdb})
		stampede(b, func(key string, load func() (item, error)) error {
			var got item
			return c.Once(&gocache.Item{Ctx: ctx, Key: "bc:st:grc:" + key, Value: &got, TTL: time.Hour,
				Do: func(*gocache.Item) (any, error) { return load() }})
		})
	})
}

// BenchmarkCacheThroughput measures Redis-tier hits from `clients` goroutines over 10,000 keys,
// to set beside BenchmarkPhysicalLimit (redis-benchmark GET at the same concurrency and key
// spread). surge-hot-key reads one key: concurrent reads of one key share a GET, so it can pass
// the server's GET rate.
func BenchmarkCacheThroughput(b *testing.B) {
	ctx := context.Background()
	rdb := newRedis(b)
	c, err := cache.New[item](rdb, &cache.Options{Prefix: "bc:tp:"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = strconv.Itoa(i)
		if err := c.Set(ctx, keys[i], sampleItem()); err != nil {
			b.Fatal(err)
		}
	}
	run := func(b *testing.B, spread int) {
		var worker atomic.Int64
		b.SetParallelism(max(1, clients/gomaxprocs()))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(worker.Add(1)) * 7919
			for pb.Next() {
				i++
				if _, err := c.Fetch(ctx, keys[i%spread], noLoad); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	}
	b.Run("surge", func(b *testing.B) { run(b, len(keys)) })
	b.Run("surge-hot-key", func(b *testing.B) { run(b, 1) })
}
