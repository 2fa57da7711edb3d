package benchcmp

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gocache "github.com/go-redis/cache/v9"
	"github.com/redis/go-redis/v9"
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

// BenchmarkCacheInvalidationDelay measures the coherence bound of the local tier: the time from
// a write's return to the moment another instance's local tier stops serving the old value.
// Each iteration caches the key in the reader's local tier, writes a new version, and spins on
// the reader's Get (a local hit until the invalidation lands, then a Redis read of the new
// value). The writer is a surge instance without a local tier (Set: the notice published from
// the write's script) or a plain go-redis client (raw-SET: only server-assisted invalidation
// can tell). p50-ms and p99-ms are over all iterations; ns/op includes the re-caching reads.
func BenchmarkCacheInvalidationDelay(b *testing.B) {
	ctx := context.Background()
	rdb := newRedis(b)
	for _, via := range []string{"Set", "raw-SET"} {
		b.Run("surge-"+via, func(b *testing.B) {
			prefix := "bc:inv:" + via + ":"
			reader, err := cache.New[item](newRedis(b), &cache.Options{Prefix: prefix, Local: &cache.LocalOptions{TTL: time.Hour}})
			if err != nil {
				b.Fatal(err)
			}
			defer reader.Close()
			writer, err := cache.New[item](newRedis(b), &cache.Options{Prefix: prefix})
			if err != nil {
				b.Fatal(err)
			}
			defer writer.Close()
			// A raw writer stores the envelopes a surge writer would: copy two versions.
			envs := [2][]byte{}
			for i := range envs {
				v := sampleItem()
				v.ID = int64(i)
				if err := writer.Set(ctx, "template", v); err != nil {
					b.Fatal(err)
				}
				if envs[i], err = rdb.Get(ctx, prefix+"{template}").Bytes(); err != nil {
					b.Fatal(err)
				}
			}
			if err := writer.Set(ctx, "k", sampleItem()); err != nil {
				b.Fatal(err)
			}
			var delays []time.Duration
			version := int64(0)
			for b.Loop() {
				// Cache the current version locally (a local hit moves LocalHits).
				for hits := reader.Stats().LocalHits; reader.Stats().LocalHits == hits; {
					if _, err := reader.Get(ctx, "k"); err != nil && !errors.Is(err, cache.ErrMiss) {
						b.Fatal(err)
					}
				}
				version = 1 - version
				if via == "Set" {
					v := sampleItem()
					v.ID = version
					err = writer.Set(ctx, "k", v)
				} else {
					err = rdb.Set(ctx, prefix+"{k}", envs[version], time.Hour).Err()
				}
				if err != nil {
					b.Fatal(err)
				}
				written := time.Now()
				for {
					got, err := reader.Get(ctx, "k")
					if err == nil && got.ID == version {
						break
					}
					runtime.Gosched()
				}
				delays = append(delays, time.Since(written))
			}
			slices.Sort(delays)
			ms := func(q float64) float64 {
				return float64(delays[min(len(delays)-1, int(q*float64(len(delays))))]) / 1e6
			}
			b.ReportMetric(ms(0.5), "p50-ms")
			b.ReportMetric(ms(0.99), "p99-ms")
		})
	}
}

// BenchmarkCacheLocalHitRateUnderWrites reads 1,000 keys uniformly through an instance with a
// local tier while another instance keeps Setting 10 of them (a remote write load of about one
// write per 20 reads): local-hit-% is the share of reads the local tier served. An invalidation
// keeps only its own key (and the reads in flight of 1/256 of the keys) out of the local tier.
func BenchmarkCacheLocalHitRateUnderWrites(b *testing.B) {
	ctx := context.Background()
	const keys, hot = 1000, 10
	b.Run("surge", func(b *testing.B) {
		prefix := "bc:hitrate:"
		reader, err := cache.New[item](newRedis(b), &cache.Options{Prefix: prefix, Local: &cache.LocalOptions{TTL: time.Hour}})
		if err != nil {
			b.Fatal(err)
		}
		defer reader.Close()
		writer, err := cache.New[item](newRedis(b), &cache.Options{Prefix: prefix})
		if err != nil {
			b.Fatal(err)
		}
		defer writer.Close()
		names := make([]string, keys)
		for i := range names {
			names[i] = "k" + strconv.Itoa(i)
			if err := writer.Set(ctx, names[i], sampleItem()); err != nil {
				b.Fatal(err)
			}
		}
		var reads atomic.Int64
		stop, done := make(chan struct{}), make(chan struct{})
		go func() { // the remote write load: one Set per 20 reads
			defer close(done)
			next := int64(20)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if reads.Load() < next {
					runtime.Gosched()
					continue
				}
				next += 20
				if err := writer.Set(ctx, names[i%hot], sampleItem()); err != nil {
					b.Error(err)
					return
				}
			}
		}()
		before := reader.Stats()
		i := 0
		for b.Loop() {
			i = (i + 7919) % keys
			if _, err := reader.Fetch(ctx, names[i], noLoad); err != nil {
				b.Fatal(err)
			}
			reads.Add(1)
		}
		close(stop)
		<-done
		after := reader.Stats()
		b.ReportMetric(100*float64(after.LocalHits-before.LocalHits)/float64(reads.Load()), "local-hit-%")
	})
}

// hitKeys is how many warm keys BenchmarkCacheRedisHitKeys spreads its reads over.
const hitKeys = 1000

// BenchmarkCacheRedisHitKeys compares Redis-tier hits over 1,000 warm keys (the 200-byte item)
// with one caller and with 16 concurrent callers: surge's Fetch, go-redis/cache's Get, go-zero's
// cache node Get and a plain go-redis GET + json.Unmarshal. With 16 callers ns/op is wall time
// per read (the inverse of throughput, also reported as ops/s); surge batches the reads that
// arrive while one is in flight into one pipelined round trip.
func BenchmarkCacheRedisHitKeys(b *testing.B) {
	ctx := context.Background()
	rdb := newRedis(b)
	v := sampleItem()
	raw, _ := json.Marshal(v)
	keys := make([]string, hitKeys)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	sc, err := cache.New[item](rdb, &cache.Options{Prefix: "bc:hk:surge:"})
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Close()
	grc := gocache.New(&gocache.Options{Redis: rdb})
	zn := zcache.NewNode(zredis.MustNewRedis(zredis.RedisConf{Host: redisAddr, Type: zredis.NodeType}),
		syncx.NewSingleFlight(), zcache.NewStat("bench-hit"), errors.New("not found"))
	for _, k := range keys {
		if err := sc.Set(ctx, k, v); err != nil {
			b.Fatal(err)
		}
		if err := grc.Set(&gocache.Item{Ctx: ctx, Key: "bc:hk:grc:" + k, Value: v, TTL: time.Hour}); err != nil {
			b.Fatal(err)
		}
		if err := zn.Set("bc:hk:zero:"+k, v); err != nil {
			b.Fatal(err)
		}
		if err := rdb.Set(ctx, "bc:hk:raw:"+k, raw, time.Hour).Err(); err != nil {
			b.Fatal(err)
		}
	}
	for _, k := range []string{"bc:hk:surge:{k1}", "bc:hk:grc:k1", "bc:hk:zero:k1", "bc:hk:raw:k1"} {
		n, err := rdb.StrLen(ctx, k).Result()
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("%s: %d bytes stored", k, n)
	}
	// Warm the server and the connections first: whichever sub-benchmark ran first measured up
	// to twice as slow.
	for i := range 5000 {
		if err := rdb.Get(ctx, "bc:hk:raw:"+keys[i%hitKeys]).Err(); err != nil {
			b.Fatal(err)
		}
	}
	reads := map[string]func(i int) error{
		"surge": func(i int) error {
			_, err := sc.Fetch(ctx, keys[i%hitKeys], noLoad)
			return err
		},
		"go-redis-cache": func(i int) error {
			var got item
			return grc.Get(ctx, "bc:hk:grc:"+keys[i%hitKeys], &got)
		},
		"go-zero": func(i int) error {
			var got item
			return zn.Get("bc:hk:zero:"+keys[i%hitKeys], &got)
		},
		"raw-go-redis": func(i int) error {
			data, err := rdb.Get(ctx, "bc:hk:raw:"+keys[i%hitKeys]).Bytes()
			if err != nil {
				return err
			}
			var got item
			return json.Unmarshal(data, &got)
		},
	}
	for _, callers := range []int{1, 16} {
		for _, name := range []string{"surge", "go-redis-cache", "go-zero", "raw-go-redis"} {
			read := reads[name]
			b.Run(name+"/callers="+strconv.Itoa(callers), func(b *testing.B) {
				b.ReportAllocs()
				cpu := startCacheCPU(b, rdb)
				var next, failed atomic.Int64
				var wg sync.WaitGroup
				for w := range callers {
					wg.Go(func() {
						for i := int(next.Add(1)); i <= b.N; i = int(next.Add(1)) {
							if err := read(i*7919 + w); err != nil {
								// A peer's own refusal (go-zero's breaker opens now and then
								// under 16 callers) is counted, not fatal: the run goes on
								// and the report shows it. surge's errors fail the benchmark.
								if name != "surge" {
									failed.Add(1)
									continue
								}
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				cpu.report(b)
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
				b.ReportMetric(float64(failed.Load()), "errors")
			})
		}
	}
}

// cacheCPUMeter measures what a benchmark spends per operation (cpu_test.go): CPU in this
// process and in the shared redis-server, and the server's read events (INFO stats
// total_reads_processed: about one per round trip, so reads/op below 1 shows reads sharing
// round trips).
type cacheCPUMeter struct {
	rdb            *redis.Client
	client, server time.Duration
	reads          float64
}

func startCacheCPU(b *testing.B, rdb *redis.Client) *cacheCPUMeter {
	return &cacheCPUMeter{rdb: rdb, client: processCPU(), server: serverCPU(b, rdb),
		reads: infoField(b, rdb, "stats", "total_reads_processed", "")}
}

// report adds client-us/op, server-us/op (CPU microseconds per operation) and reads/op (server
// read events per operation) to b's results.
func (m *cacheCPUMeter) report(b *testing.B) {
	client, server := processCPU()-m.client, serverCPU(b, m.rdb)-m.server
	reads := infoField(b, m.rdb, "stats", "total_reads_processed", "") - m.reads
	b.ReportMetric(float64(client.Microseconds())/float64(b.N), "client-us/op")
	b.ReportMetric(float64(server.Microseconds())/float64(b.N), "server-us/op")
	b.ReportMetric(reads/float64(b.N), "reads/op")
}
