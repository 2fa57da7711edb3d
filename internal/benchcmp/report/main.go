// Command report turns the output of the benchcmp benchmarks into BENCHMARKS.md: a table per
// package with each surge result, the peer it is measured against, the ratio and the issue's
// target, marked met or not met.
//
//	go test -run '^$' -bench . -benchmem | tee bench.txt
//	go run ./report -in bench.txt -out ../../BENCHMARKS.md -cmd "bash internal/benchcmp/run.sh"
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// result is one benchmark: its name without the -GOMAXPROCS suffix and its metrics by unit
// ("ns/op", "B/op", "allocs/op", and any b.ReportMetric units). With -count > 1 each metric is
// the median of the runs, so one disturbed run on a shared machine does not decide a row.
type result struct {
	name    string
	runs    int
	metrics map[string]float64
}

// suffix is the -GOMAXPROCS suffix go test appends to a benchmark's name, before the pass
// marker (oneCore, haltPoll) run.sh appends to a later pass's names.
var suffix = regexp.MustCompile(`-\d+(@[a-z0-9]+)?$`)

func parse(r io.Reader) (map[string]result, []string, error) {
	samples := map[string]map[string][]float64{} // name -> unit -> values
	var header []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		for _, p := range []string{"goos:", "goarch:", "cpu:"} {
			if strings.HasPrefix(line, p) && !slices.Contains(header, line) { // once, whatever the passes
				header = append(header, line)
			}
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := suffix.ReplaceAllString(f[0], "$1")
		if samples[name] == nil {
			samples[name] = map[string][]float64{}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			samples[name][f[i+1]] = append(samples[name][f[i+1]], v)
		}
	}
	out := map[string]result{}
	for name, units := range samples {
		res := result{name: name, metrics: map[string]float64{}}
		for unit, vs := range units {
			slices.Sort(vs)
			res.metrics[unit] = vs[len(vs)/2]
			res.runs = len(vs)
		}
		out[name] = res
	}
	return out, header, sc.Err()
}

// row is one line of a table: what is measured and how it is judged.
type row struct {
	what   string
	surge  string // benchmark name
	peer   string // benchmark name; "" for an absolute target
	unit   string // metric compared
	target string // in words, as the issue puts it
	// judge returns the ratio shown and whether the target is met, from surge's and the peer's values.
	judge func(s, p float64) (ratio string, met bool)
}

// lowerIsBetter: met when surge/peer <= max.
func lowerIsBetter(max float64) func(s, p float64) (string, bool) {
	return func(s, p float64) (string, bool) {
		r := s / p
		return fmt.Sprintf("%.2f×", r), r <= max
	}
}

// higherIsBetter: met when surge/peer >= min (throughput).
func higherIsBetter(min float64) func(s, p float64) (string, bool) {
	return func(s, p float64) (string, bool) {
		r := s / p
		return fmt.Sprintf("%.2f×", r), r >= min
	}
}

// fasterBy: met when peer/surge >= factor (surge is factor times faster).
func fasterBy(factor float64) func(s, p float64) (string, bool) {
	return func(s, p float64) (string, bool) {
		r := p / s
		return fmt.Sprintf("%.1f× faster", r), r >= factor
	}
}

// atMost: absolute target on surge's value alone.
func atMost(max float64) func(s, _ float64) (string, bool) {
	return func(s, _ float64) (string, bool) { return "", s <= max }
}

type section struct {
	title string
	rows  []row
}

var sections = []section{
	{"cache", []row{
		{"Redis-tier hit, 200-byte struct", "BenchmarkCacheRedisHit/surge", "BenchmarkCacheRedisHit/raw-go-redis", "ns/op", "≤ 1.15× raw GET + json.Unmarshal", lowerIsBetter(1.15)},
		{"Redis-tier hit vs go-redis/cache", "BenchmarkCacheRedisHit/surge", "BenchmarkCacheRedisHit/go-redis-cache", "ns/op", "(information)", nil},
		{"Redis-tier hit over 1,000 warm keys, one caller, vs go-redis/cache (msgpack + s2)", "BenchmarkCacheRedisHitKeys/surge/callers=1", "BenchmarkCacheRedisHitKeys/go-redis-cache/callers=1", "ns/op", "≤ 1.0× go-redis/cache", lowerIsBetter(1.0)},
		{"the same vs raw go-redis GET + json.Unmarshal (single-caller latency)", "BenchmarkCacheRedisHitKeys/surge/callers=1", "BenchmarkCacheRedisHitKeys/raw-go-redis/callers=1", "ns/op", "(information)", nil},
		{"the same vs go-zero cache node Get", "BenchmarkCacheRedisHitKeys/surge/callers=1", "BenchmarkCacheRedisHitKeys/go-zero/callers=1", "ns/op", "(information)", nil},
		{"Redis-tier hits, 16 concurrent callers, 1,000 keys: throughput vs raw go-redis GET + json (pipelined reads)", "BenchmarkCacheRedisHitKeys/surge/callers=16", "BenchmarkCacheRedisHitKeys/raw-go-redis/callers=16", "ops/s", "≥ 3× raw GET + json", higherIsBetter(3)},
		{"the same vs go-redis/cache", "BenchmarkCacheRedisHitKeys/surge/callers=16", "BenchmarkCacheRedisHitKeys/go-redis-cache/callers=16", "ops/s", "(information)", nil},
		{"the same vs go-zero", "BenchmarkCacheRedisHitKeys/surge/callers=16", "BenchmarkCacheRedisHitKeys/go-zero/callers=16", "ops/s", "(information)", nil},
		{"the same: client CPU per read (this process's getrusage) vs raw GET + json", "BenchmarkCacheRedisHitKeys/surge/callers=16", "BenchmarkCacheRedisHitKeys/raw-go-redis/callers=16", "client-us/op", "(information: load distorts it far less than ops/s)", nil},
		{"the same: redis-server CPU per read (INFO cpu) vs raw GET + json", "BenchmarkCacheRedisHitKeys/surge/callers=16", "BenchmarkCacheRedisHitKeys/raw-go-redis/callers=16", "server-us/op", "(information)", nil},
		{"the same: round trips per read (server read events) vs raw GET + json", "BenchmarkCacheRedisHitKeys/surge/callers=16", "BenchmarkCacheRedisHitKeys/raw-go-redis/callers=16", "reads/op", "(information)", nil},
		{"local-tier hit", "BenchmarkCacheLocalHit/surge", "", "ns/op", "≤ 100 ns/op", atMost(100)},
		{"local-tier hit allocations", "BenchmarkCacheLocalHit/surge", "", "allocs/op", "0 allocs/op", atMost(0)},
		{"local-tier hit vs go-redis/cache LocalCache", "BenchmarkCacheLocalHit/surge", "BenchmarkCacheLocalHit/go-redis-cache", "ns/op", "≥ 10× faster", fasterBy(10)},
		{"stampede: loads per 1000 cold requests vs go-zero Take", "BenchmarkCacheStampede/surge", "BenchmarkCacheStampede/go-zero", "loads", "1 load", atMost(1)},
		{"stampede: loads per 1000 cold requests vs go-redis/cache Once", "BenchmarkCacheStampede/surge", "BenchmarkCacheStampede/go-redis-cache", "loads", "1 load", atMost(1)},
		{"stampede: time for 1000 cold requests (5 ms loader) vs go-redis/cache Once", "BenchmarkCacheStampede/surge", "BenchmarkCacheStampede/go-redis-cache", "ns/op", "(information)", nil},
		{"stampede: the same vs go-zero Take", "BenchmarkCacheStampede/surge", "BenchmarkCacheStampede/go-zero", "ns/op", "(information)", nil},
		{"Redis-tier Fetch throughput vs redis-benchmark GET (same server, 64 clients, 10k keys)", "BenchmarkCacheThroughput/surge", "BenchmarkPhysicalLimit", "ops/s", "(fraction of the physical limit)", nil},
		{"the same on one hot key (concurrent reads share a GET)", "BenchmarkCacheThroughput/surge-hot-key", "BenchmarkPhysicalLimit", "ops/s", "(information)", nil},
		{"invalidation delay p50: another instance's Set until a local tier serves the new value", "BenchmarkCacheInvalidationDelay/surge-Set", "", "p50-ms", "(report)", nil},
		{"invalidation delay p99 after another instance's Set", "BenchmarkCacheInvalidationDelay/surge-Set", "", "p99-ms", "≤ 5 ms", atMost(5)},
		{"invalidation delay p50 after a raw go-redis SET (server-assisted invalidation)", "BenchmarkCacheInvalidationDelay/surge-raw-SET", "", "p50-ms", "(report)", nil},
		{"invalidation delay p99 after a raw go-redis SET", "BenchmarkCacheInvalidationDelay/surge-raw-SET", "", "p99-ms", "≤ 5 ms", atMost(5)},
		{"local-tier hit rate while another instance Sets 10 of 1,000 keys (1 write per 20 reads)", "BenchmarkCacheLocalHitRateUnderWrites/surge", "", "local-hit-%", "(report: does not collapse)", nil},
		{"the same: time per read", "BenchmarkCacheLocalHitRateUnderWrites/surge", "", "ns/op", "(information)", nil},
		{"local-tier hit with an OpenTelemetry SDK installed vs without", "BenchmarkCacheTelemetry/local-hit/surge-otel-sdk", "BenchmarkCacheTelemetry/local-hit/surge", "ns/op", "(report: the SDK's cost)", nil},
		{"local-tier hit allocations with an OpenTelemetry SDK installed", "BenchmarkCacheTelemetry/local-hit/surge-otel-sdk", "", "allocs/op", "0 allocs/op", atMost(0)},
		{"Redis-tier hit with an OpenTelemetry SDK installed vs without", "BenchmarkCacheTelemetry/redis-hit/surge-otel-sdk", "BenchmarkCacheTelemetry/redis-hit/surge", "ns/op", "(report: the SDK's cost)", nil},
		{"miss + load (sampled cache.load span, load histogram) with an OpenTelemetry SDK installed vs without", "BenchmarkCacheTelemetry/miss+load/surge-otel-sdk", "BenchmarkCacheTelemetry/miss+load/surge", "ns/op", "(report: the SDK's cost)", nil},
	}},
	{"lock", []row{
		{"uncontended Obtain+Release vs bsm/redislock", "BenchmarkLockUncontended/surge", "BenchmarkLockUncontended/bsm-redislock", "ns/op", "≤ 1.1×", lowerIsBetter(1.1)},
		{"uncontended Obtain+Release vs redsync", "BenchmarkLockUncontended/surge", "BenchmarkLockUncontended/redsync", "ns/op", "≤ 1.0×", lowerIsBetter(1.0)},
		{"uncontended Obtain+Release with an OpenTelemetry SDK installed vs without", "BenchmarkLockUncontended/surge-otel-sdk", "BenchmarkLockUncontended/surge", "ns/op", "(report: the SDK's cost)", nil},
		{"hand-off median, 8 goroutines, one key (vs bsm LinearBackoff 10ms)", "BenchmarkLockHandoff/surge", "BenchmarkLockHandoff/bsm-redislock-linear10ms", "median-ms", "median ≤ 2 ms", atMost(2)},
		{"hand-off p99 (vs bsm LinearBackoff 10ms)", "BenchmarkLockHandoff/surge", "BenchmarkLockHandoff/bsm-redislock-linear10ms", "p99-ms", "(report)", nil},
		{"contended acquisitions/s, 8 goroutines, one key, 50µs held (vs bsm LinearBackoff 1ms)", "BenchmarkLockContended/surge", "BenchmarkLockContended/bsm-redislock-linear1ms", "acq/s", "≥ 1.0×", higherIsBetter(1.0)},
		{"contended acquisitions/s (vs redsync, 1ms retry delay)", "BenchmarkLockContended/surge", "BenchmarkLockContended/redsync-1ms", "acq/s", "(information)", nil},
		{"contended: client CPU per acquisition, the 50µs held included (vs bsm LinearBackoff 1ms)", "BenchmarkLockContended/surge", "BenchmarkLockContended/bsm-redislock-linear1ms", "client-cpu-µs", "(information)", nil},
		{"contended: redis-server CPU per acquisition (vs bsm LinearBackoff 1ms)", "BenchmarkLockContended/surge", "BenchmarkLockContended/bsm-redislock-linear1ms", "redis-cpu-µs", "(information)", nil},
		{"contended: client thread sleeps per acquisition, each an idle vCPU to wake (vs bsm LinearBackoff 1ms)", "BenchmarkLockContended/surge", "BenchmarkLockContended/bsm-redislock-linear1ms", "client-sleeps", "(information)", nil},
		{"contended: redis-server thread sleeps per acquisition (vs bsm LinearBackoff 1ms)", "BenchmarkLockContended/surge", "BenchmarkLockContended/bsm-redislock-linear1ms", "redis-sleeps", "(information)", nil},
	}},
	{"ratelimit", []row{
		{"Redis Allow (token bucket) vs redis_rate Allow, one caller", "BenchmarkRateLimitRedis/single/surge", "BenchmarkRateLimitRedis/single/redis_rate", "ns/op", "≤ 1.0×", lowerIsBetter(1.0)},
		{"Redis Allow (token bucket) vs redis_rate, 16 concurrent callers", "BenchmarkRateLimitRedis/parallel16/surge", "BenchmarkRateLimitRedis/parallel16/redis_rate", "ns/op", "≤ 1.0×", lowerIsBetter(1.0)},
		{"Redis Allow (GCRA) vs redis_rate Allow, one caller", "BenchmarkRateLimitRedis/single/surge-gcra", "BenchmarkRateLimitRedis/single/redis_rate", "ns/op", "≤ 1.0×", lowerIsBetter(1.0)},
		{"Redis Allow (GCRA) vs redis_rate, 16 concurrent callers", "BenchmarkRateLimitRedis/parallel16/surge-gcra", "BenchmarkRateLimitRedis/parallel16/redis_rate", "ns/op", "≤ 1.0×", lowerIsBetter(1.0)},
		{"Redis Allow (token bucket, Pipeline) vs redis_rate, 16 concurrent callers", "BenchmarkRateLimitRedis/parallel16/surge-pipeline", "BenchmarkRateLimitRedis/parallel16/redis_rate", "ns/op", "≤ 1.0×", lowerIsBetter(1.0)},
		{"Redis Allow (GCRA, Pipeline) vs redis_rate, 16 concurrent callers", "BenchmarkRateLimitRedis/parallel16/surge-gcra-pipeline", "BenchmarkRateLimitRedis/parallel16/redis_rate", "ns/op", "≤ 1.0×", lowerIsBetter(1.0)},
		{"Redis Allow (token bucket, Pipeline) vs redis_rate, one caller", "BenchmarkRateLimitRedis/single/surge-pipeline", "BenchmarkRateLimitRedis/single/redis_rate", "ns/op", "≤ 1.0×", lowerIsBetter(1.0)},
		{"Local Allow, 1 key, vs x/time/rate in a sync.Map", "BenchmarkRateLimitLocal/1-keys/surge", "BenchmarkRateLimitLocal/1-keys/xtime-syncmap", "ns/op", "≤ 1.5×", lowerIsBetter(1.5)},
		{"Local Allow over 1,000 keys vs x/time/rate in a sync.Map", "BenchmarkRateLimitLocal/1000-keys/surge", "BenchmarkRateLimitLocal/1000-keys/xtime-syncmap", "ns/op", "≤ 1.5×", lowerIsBetter(1.5)},
		{"Local Allow over 100,000 keys vs x/time/rate in a sync.Map", "BenchmarkRateLimitLocal/100000-keys/surge", "BenchmarkRateLimitLocal/100000-keys/xtime-syncmap", "ns/op", "≤ 1.5×", lowerIsBetter(1.5)},
		{"Local Allow allocations (1 key)", "BenchmarkRateLimitLocal/1-keys/surge", "", "allocs/op", "0 allocs/op", atMost(0)},
		{"Local Allow allocations (100,000 keys)", "BenchmarkRateLimitLocal/100000-keys/surge", "", "allocs/op", "0 allocs/op", atMost(0)},
		{"Local Allow, 1 key, counting decisions into an OTel SDK vs the default (no SDK installed)", "BenchmarkRateLimitLocal/1-keys/surge-otel-sdk", "BenchmarkRateLimitLocal/1-keys/surge", "ns/op", "(overhead per call with an SDK)", nil},
		{"Local Allow allocations with an OTel SDK installed (1 key)", "BenchmarkRateLimitLocal/1-keys/surge-otel-sdk", "", "allocs/op", "0 allocs/op", atMost(0)},
		{"Redis Allow (token bucket), one caller, counting into an OTel SDK vs the default", "BenchmarkRateLimitRedis/single/surge-otel-sdk", "BenchmarkRateLimitRedis/single/surge", "ns/op", "(overhead per call with an SDK)", nil},
		{"Redis Allow (token bucket), one caller: server time inside the script vs redis_rate's", "BenchmarkRateLimitRedis/single/surge", "BenchmarkRateLimitRedis/single/redis_rate", "script-us/op", "≤ 1.0×", lowerIsBetter(1.0)},
		{"Redis Allow (GCRA), one caller: server time inside the script vs redis_rate's", "BenchmarkRateLimitRedis/single/surge-gcra", "BenchmarkRateLimitRedis/single/redis_rate", "script-us/op", "≤ 1.0×", lowerIsBetter(1.0)},
		{"Redis Allow (token bucket), one caller: redis-server CPU per call vs redis_rate", "BenchmarkRateLimitRedis/single/surge", "BenchmarkRateLimitRedis/single/redis_rate", "srv-cpu-us/op", "(information)", nil},
		{"Redis Allow (token bucket), one caller: client CPU per call vs redis_rate", "BenchmarkRateLimitRedis/single/surge", "BenchmarkRateLimitRedis/single/redis_rate", "cpu-us/op", "(information)", nil},
	}},
	{"bloom", []row{
		{"local MightContain vs bits-and-blooms Test behind an RWMutex", "BenchmarkBloomLocal/surge", "BenchmarkBloomLocal/bits-and-blooms-rwmutex", "ns/op", "≤ 1.2×", lowerIsBetter(1.2)},
		{"Redis MightContain vs one GETBIT round trip", "BenchmarkBloomRedis/surge", "BenchmarkBloomRedis/getbit", "ns/op", "close to 1 round trip (≤ 1.5×)", lowerIsBetter(1.5)},
		{"Redis MightContain, 16 callers: Pipeline vs without", "BenchmarkBloomRedisCallers/parallel16/contains/surge-pipeline", "BenchmarkBloomRedisCallers/parallel16/contains/surge", "ns/op", "faster (< 1.0×)", lowerIsBetter(0.999)},
		{"Redis MightContain, 16 callers: Pipeline vs one GETBIT round trip per check", "BenchmarkBloomRedisCallers/parallel16/contains/surge-pipeline", "BenchmarkBloomRedisCallers/parallel16/contains/getbit", "ns/op", "(information)", nil},
		{"Redis Add of one key, 16 callers: Pipeline vs without", "BenchmarkBloomRedisCallers/parallel16/add/surge-pipeline", "BenchmarkBloomRedisCallers/parallel16/add/surge", "ns/op", "faster (< 1.0×)", lowerIsBetter(0.999)},
		{"Redis MightContain, one caller: Pipeline vs without", "BenchmarkBloomRedisCallers/single/contains/surge-pipeline", "BenchmarkBloomRedisCallers/single/contains/surge", "ns/op", "a lone caller pays nothing (≤ 1.05×)", lowerIsBetter(1.05)},
		{"Redis Add of one key, one caller: Pipeline vs without", "BenchmarkBloomRedisCallers/single/add/surge-pipeline", "BenchmarkBloomRedisCallers/single/add/surge", "ns/op", "a lone caller pays nothing (≤ 1.05×)", lowerIsBetter(1.05)},
	}},
	{"events", []row{
		{"PublishAsync+Flush of 200-byte events vs raw kgo Produce+Flush (no headers)", "BenchmarkEventsPublish/surge", "BenchmarkEventsPublish/kgo", "events/s", "≥ 0.95×", higherIsBetter(0.95)},
		{"the same vs raw kgo sending the same three event headers", "BenchmarkEventsPublish/surge", "BenchmarkEventsPublish/kgo-same-headers", "events/s", "≥ 0.95× (like for like)", higherIsBetter(0.95)},
		{"consumer, 1 ms handler, 3 partitions: Concurrency 16 vs 1", "BenchmarkEventsConsume/surge-c16", "BenchmarkEventsConsume/surge-c1", "events/s", "≥ 8×", higherIsBetter(8)},
		{"consumer: Concurrency 4 vs 1", "BenchmarkEventsConsume/surge-c4", "BenchmarkEventsConsume/surge-c1", "events/s", "(report)", nil},
		{"consumer: Concurrency 16 vs one in flight per partition (watermill-kafka style)", "BenchmarkEventsConsume/surge-c16", "BenchmarkEventsConsume/one-per-partition", "events/s", "(report)", nil},
		{"synchronous Publish of one 200-byte event vs kgo ProduceSync of the same record and headers", "BenchmarkEventsPublishSync/surge", "BenchmarkEventsPublishSync/kgo-same-headers", "ns/op", "≤ 1.2×", lowerIsBetter(1.2)},
		{"consumer overhead: no-op handler, 100k 200-byte events, Concurrency 8 vs a bare franz-go group consumer", "BenchmarkEventsConsumeOverhead/surge-c8", "BenchmarkEventsConsumeOverhead/kgo-group", "events/s", "≥ 0.8×", higherIsBetter(0.8)},
		{"the same vs franz-go reading what an Event carries (key, event-id, event-type, event-time parsed) from each record", "BenchmarkEventsConsumeOverhead/surge-c8", "BenchmarkEventsConsumeOverhead/kgo-group-decode", "events/s", "(report; like for like)", nil},
		{"consumer overhead in CPU per event (the whole process, kfake included) vs the bare franz-go group consumer", "BenchmarkEventsConsumeOverhead/surge-c8", "BenchmarkEventsConsumeOverhead/kgo-group", "cpu-ns/event", "(report)", nil},
		{"the same CPU per event vs franz-go reading what an Event carries", "BenchmarkEventsConsumeOverhead/surge-c8", "BenchmarkEventsConsumeOverhead/kgo-group-decode", "cpu-ns/event", "(report; like for like)", nil},
		{"PublishAsync with an OpenTelemetry SDK installed (producer span sampled, traceparent header, sent counter) vs without", "BenchmarkEventsPublish/surge-otel-sdk", "BenchmarkEventsPublish/surge", "events/s", "(report)", nil},
		{"consumer overhead with an OpenTelemetry SDK installed (a sampled consumer span and the metrics per event) vs without", "BenchmarkEventsConsumeOverhead/surge-c8-otel-sdk", "BenchmarkEventsConsumeOverhead/surge-c8", "events/s", "(report)", nil},
	}},
	{"ginmw", []row{
		{"RequestID+Logger+RateLimit(local) vs bare engine", "BenchmarkGinOverhead/surge-stack", "BenchmarkGinOverhead/bare", "ns/op", "(overhead per request)", nil},
		{"Redis-backed RateLimit vs ulule/limiter Gin middleware + Redis store", "BenchmarkGinRateLimitRedis/surge", "BenchmarkGinRateLimitRedis/ulule", "ns/op", "faster (< 1.0×)", lowerIsBetter(0.999)},
		{"Redis-backed RateLimit (GCRA) vs ulule/limiter Gin middleware + Redis store", "BenchmarkGinRateLimitRedis/surge-gcra", "BenchmarkGinRateLimitRedis/ulule", "ns/op", "faster (< 1.0×)", lowerIsBetter(0.999)},
		{"Telemetry, no SDK installed, vs otelgin (span + http.server.request.duration)", "BenchmarkGinTelemetry/surge-no-sdk", "BenchmarkGinTelemetry/otelgin-no-sdk", "ns/op", "≤ 1.0×", lowerIsBetter(1.0)},
		{"Telemetry, no SDK installed: allocations", "BenchmarkGinTelemetry/surge-no-sdk", "BenchmarkGinTelemetry/otelgin-no-sdk", "allocs/op", "≤ 1.0×", lowerIsBetter(1.0)},
		{"Telemetry with an SDK (every span sampled, histogram aggregated) vs otelgin", "BenchmarkGinTelemetry/surge-sdk", "BenchmarkGinTelemetry/otelgin-sdk", "ns/op", "≤ 1.0×", lowerIsBetter(1.0)},
		{"Telemetry with an SDK: allocations", "BenchmarkGinTelemetry/surge-sdk", "BenchmarkGinTelemetry/otelgin-sdk", "allocs/op", "≤ 1.0×", lowerIsBetter(1.0)},
		{"Telemetry, no SDK installed, vs bare engine", "BenchmarkGinTelemetry/surge-no-sdk", "BenchmarkGinTelemetry/bare", "ns/op", "(overhead per request)", nil},
		{"Telemetry with an SDK vs bare engine", "BenchmarkGinTelemetry/surge-sdk", "BenchmarkGinTelemetry/bare", "ns/op", "(overhead per request)", nil},
	}},
	{"outbox", []row{
		{"relay throughput, SQLite (WAL, synchronous=NORMAL), 200-byte events, default options", "BenchmarkOutboxRelay/surge-sqlite", "", "events/s", "≥ 20,000 events/s (go-outbox publishes ~7,300 msg/s with broker confirms)", func(s, _ float64) (string, bool) { return "", s >= 20000 }},
		{"relay throughput, PostgreSQL (fsync on)", "BenchmarkOutboxRelay/surge-postgres", "", "events/s", "≥ 20,000 events/s", func(s, _ float64) (string, bool) { return "", s >= 20000 }},
		{"relay throughput, PostgreSQL, vs watermill-sql + Forwarder (to Kafka with kgo, acks=all)", "BenchmarkOutboxRelay/surge-postgres", "BenchmarkOutboxRelayWatermill/watermill-forwarder-postgres", "events/s", "(report)", nil},
		{"commit-to-publish p99 at 1,000 events/s with Notify, SQLite", "BenchmarkOutboxLatency/surge-sqlite", "", "p99-ms", "p99 < 50 ms", func(s, _ float64) (string, bool) { return "", s < 50 }},
		{"commit-to-publish p50, SQLite", "BenchmarkOutboxLatency/surge-sqlite", "", "p50-ms", "(report)", nil},
		{"commit-to-publish p99 at 1,000 events/s with Notify, PostgreSQL", "BenchmarkOutboxLatency/surge-postgres", "", "p99-ms", "p99 < 50 ms", func(s, _ float64) (string, bool) { return "", s < 50 }},
		{"commit-to-publish p50, PostgreSQL", "BenchmarkOutboxLatency/surge-postgres", "", "p50-ms", "(report)", nil},
	}},
}

// notes explain rows whose target is not met, or whose reading needs care.
var notes = map[string]string{
	"events": "An Event always carries its ID, type and time as headers (about 100 bytes a record), so " +
		"against kgo sending no headers the producer moves more bytes; against kgo sending the same " +
		"headers it is at parity. The wrapper itself costs 1 allocation per event (kgo: 3).",
	"ginmw": "ulule/limiter counts a fixed window (INCRBY + PTTL, about 4.6 µs of server time per call " +
		"here), which lets a client send 2× its limit across a window edge; surge's default is a token " +
		"bucket on the server's clock (TIME + GET + SET, about 12 µs), and its GCRA option keeps one " +
		"number per key. Both surge rows include the middleware's RateLimit/RateLimit-Policy headers, " +
		"which ulule's middleware also sets (X-RateLimit-*).",
	"cache": "Concurrent reads of one key share one GET, so a cold stampede costs one GET and one " +
		"load, and one hot key can be read faster than the server answers GETs. The invalidation " +
		"delay is one pub/sub hop from Redis to the reading process plus its scheduling: its p99 " +
		"moves with the machine's load far more than with the code.",
}

func fmtVal(v float64, unit string) string {
	switch {
	case unit == "ns/op" && v >= 1e6:
		return fmt.Sprintf("%.2f ms", v/1e6)
	case unit == "ns/op" && v >= 1e4:
		return fmt.Sprintf("%.1f µs", v/1e3)
	case unit == "ns/op":
		return fmt.Sprintf("%.0f ns", v)
	case unit == "allocs/op" || unit == "loads":
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 1000:
		return fmt.Sprintf("%.0f %s", v, unit)
	default:
		return fmt.Sprintf("%.2f %s", v, unit)
	}
}

func render(w io.Writer, res map[string]result, header []string, cmd, machine string) {
	fmt.Fprintln(w, "# Benchmarks")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "surge against the libraries its users would pick instead, side by side in one process,")
	fmt.Fprintln(w, "on one private `redis-server`; Kafka benchmarks on in-process kfake brokers. Written by")
	fmt.Fprintf(w, "`internal/benchcmp/report`; produced with:\n\n```sh\n%s\n```\n\n", cmd)
	fmt.Fprintln(w, "Machine:")
	fmt.Fprintln(w)
	for _, h := range append(header, strings.Split(machine, "\n")...) {
		if strings.TrimSpace(h) != "" {
			fmt.Fprintf(w, "- %s\n", strings.TrimSpace(h))
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Each figure is the median of the runs (`-count`). Ratios are surge ÷ peer for times (lower")
	fmt.Fprintln(w, "is better) and for throughputs (higher is better),")
	fmt.Fprintln(w, "unless the row says otherwise. A 2-core machine shared with the servers is noisy: rerun")
	fmt.Fprintln(w, "before drawing conclusions from a few percent.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Rows marked \"pinned to one core\" come from run.sh's second pass, which reruns the")
	fmt.Fprintln(w, "single-caller benchmarks, the contended lock and the 16-caller cache reads under")
	fmt.Fprintln(w, "`taskset -c 0` (client and redis-server on one core). On this VM a single caller's round")
	fmt.Fprintln(w, "trip on two cores lands, run by run, in one of two modes (about 25 or 55 µs, for surge and")
	fmt.Fprintln(w, "peers alike) depending on whether a wake-up crosses to an idle vCPU, so medians of a few runs")
	fmt.Fprintln(w, "flip with it. Work that alternates between client and server (a lock hand-over; a shared")
	fmt.Fprintln(w, "round trip, then its callers decoding) pays that wake-up on every cycle while the other core")
	fmt.Fprintln(w, "idles. On one core each cycle costs what both sides spend, and runs agree within about 2%.")
	fmt.Fprintln(w, "Both measurements are shown.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Rows marked \"guest halt polling\" come from run.sh's third pass: the same benchmarks on two")
	fmt.Fprintln(w, "cores with the guest kernel's halt polling at 200 µs, Linux's default")
	fmt.Fprintln(w, "(`/sys/module/haltpoll/parameters/guest_halt_poll_ns`). This VM boots with it at 0, so an")
	fmt.Fprintln(w, "idle vCPU halts at once and the next wake-up pays a trip through the hypervisor; with")
	fmt.Fprintln(w, "polling, a vCPU idle for less than 200 µs wakes without one, as a bare-metal core or a")
	fmt.Fprintln(w, "default KVM guest does. The pass runs only where that file exists and reads 0, and")
	fmt.Fprintln(w, "run.sh puts 0 back when it ends.")
	for _, s := range sections {
		fmt.Fprintf(w, "\n## %s\n\n", s.title)
		if n := notes[s.title]; n != "" {
			fmt.Fprintf(w, "%s\n\n", n)
		}
		fmt.Fprintln(w, "| what | surge | peer | ratio | target | met |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|")
		for _, r := range s.rows {
			renderRow(w, res, r)
			for _, pass := range laterPasses {
				if _, ok := res[r.surge+pass.marker]; !ok {
					continue
				}
				twin := r
				twin.what = "↳ the same, " + pass.what
				twin.surge += pass.marker
				if twin.peer != "" {
					twin.peer += pass.marker
				}
				renderRow(w, res, twin)
			}
		}
	}
	fmt.Fprintln(w, "\n## All results\n\n```")
	names := make([]string, 0, len(res))
	for n := range res {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(w, "%-60s", n)
		units := make([]string, 0, len(res[n].metrics))
		for u := range res[n].metrics {
			units = append(units, u)
		}
		slices.Sort(units)
		for _, u := range units {
			fmt.Fprintf(w, "  %s", fmtVal(res[n].metrics[u], u))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "```")
}

func main() {
	in := flag.String("in", "", "benchmark output (default stdin)")
	out := flag.String("out", "", "markdown file to write (default stdout)")
	cmd := flag.String("cmd", "bash internal/benchcmp/run.sh", "the command that produced the results")
	machine := flag.String("machine", "", "lines describing the machine (cores, Go, Redis versions)")
	flag.Parse()

	r := io.Reader(os.Stdin)
	if *in != "" {
		f, err := os.Open(*in)
		if err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(1)
		}
		defer f.Close()
		r = f
	}
	res, header, err := parse(r)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	w := io.Writer(os.Stdout)
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(1)
		}
		defer f.Close()
		w = f
	}
	render(w, res, header, *cmd, *machine)
}

// oneCore marks the results of run.sh's second pass: the single-caller benchmarks rerun with the
// process and its redis-server pinned to one core (see the header text in render).
const oneCore = "@1cpu"

// haltPoll marks the results of run.sh's third pass: the same benchmarks on two cores with the
// guest kernel's halt polling at 200 µs (see the header text in render).
const haltPoll = "@haltpoll"

// laterPasses are run.sh's passes after the first, in order: a row measured again in one gets
// a twin row under it.
var laterPasses = []struct{ marker, what string }{
	{oneCore, "client and redis-server pinned to one core"},
	{haltPoll, "two cores, guest halt polling 200 µs"},
}

// renderRow writes r's table line.
func renderRow(w io.Writer, res map[string]result, r row) {
	sr, sok := res[r.surge]
	sv, svok := sr.metrics[r.unit]
	if !sok || !svok {
		fmt.Fprintf(w, "| %s | not measured (`%s`) | | | %s | not measured |\n", r.what, r.surge, r.target)
		return
	}
	peerCell, ratio, met := "", "", "n/a"
	var pv float64
	if r.peer != "" {
		pr, pok := res[r.peer]
		v, vok := pr.metrics[r.unit]
		if !pok || !vok {
			fmt.Fprintf(w, "| %s | %s | not measured (`%s`) | | %s | not measured |\n", r.what, fmtVal(sv, r.unit), r.peer, r.target)
			return
		}
		pv = v
		peerCell = fmtVal(pv, r.unit)
		if r.judge == nil {
			ratio = fmt.Sprintf("%.2f×", sv/pv)
		}
	}
	if r.judge != nil {
		var ok bool
		ratio, ok = r.judge(sv, pv)
		met = map[bool]string{true: "**met**", false: "not met"}[ok]
	}
	extra := ""
	if a, ok := sr.metrics["allocs/op"]; ok && r.unit == "ns/op" {
		extra = fmt.Sprintf(" (%.0f allocs)", a)
	}
	fmt.Fprintf(w, "| %s | %s%s | %s | %s | %s | %s |\n", r.what, fmtVal(sv, r.unit), extra, peerCell, ratio, r.target, met)
}
