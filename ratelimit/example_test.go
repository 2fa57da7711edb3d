package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/surgekit/surge/ratelimit"
)

func ExampleNewRedis() {
	srv := miniredis.NewMiniRedis() // any Redis; miniredis keeps the example self-contained
	if err := srv.Start(); err != nil {
		panic(err)
	}
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()

	// 3 requests at once, then one per 20 minutes; and no more than 100 a day.
	rl, err := ratelimit.NewRedis(rdb, &ratelimit.RedisOptions{Prefix: "api:rl:"},
		ratelimit.PerHour(3), ratelimit.Limit{Rate: 100.0 / 86400, Burst: 100, Name: "daily"})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		res, err := rl.Allow(ctx, "user:42")
		if err != nil {
			panic(err)
		}
		fmt.Printf("allowed=%v remaining=%d limit=%s retry in %dm\n",
			res.Allowed, res.Remaining, res.Limit, int(res.RetryAfter.Round(time.Minute).Minutes()))
	}
	// Output:
	// allowed=true remaining=2 limit=3/h retry in 0m
	// allowed=true remaining=1 limit=3/h retry in 0m
	// allowed=true remaining=0 limit=3/h retry in 0m
	// allowed=false remaining=0 limit=3/h retry in 20m
}

func ExampleFallback() {
	srv := miniredis.NewMiniRedis()
	if err := srv.Start(); err != nil {
		panic(err)
	}
	// Fail fast: no retries, one dial attempt, so a dead Redis costs little before the fallback answers.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialerRetries: 1})
	defer rdb.Close()

	// While Redis fails, each instance allows its own share: here a tenth of the global limit.
	local, err := ratelimit.NewLocal(nil, ratelimit.PerSecond(10))
	if err != nil {
		panic(err)
	}
	defer local.Close()
	rl, err := ratelimit.NewRedis(rdb, &ratelimit.RedisOptions{OnRedisError: ratelimit.Fallback(local)},
		ratelimit.PerSecond(100))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	res, _ := rl.Allow(ctx, "ip:10.0.0.1")
	fmt.Println("redis:", res.Limit, res.Remaining)
	srv.Close() // Redis goes away
	res, err = rl.Allow(ctx, "ip:10.0.0.1")
	fmt.Println("fallback:", res.Limit, res.Remaining, err, rl.Stats().Fallback)
	// Output:
	// redis: 100/s 99
	// fallback: 10/s 9 <nil> 1
}

func ExampleLocal_Wait() {
	rl, err := ratelimit.NewLocal(&ratelimit.LocalOptions{MaxKeys: 10_000}, ratelimit.Limit{Rate: 1000, Burst: 1})
	if err != nil {
		panic(err)
	}
	defer rl.Close()
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if err := rl.Wait(ctx, "job"); err != nil { // blocks about 1 ms between events
			panic(err)
		}
	}
	fmt.Println("done")
	// Output: done
}

func ExampleNewConcurrency() {
	srv := miniredis.NewMiniRedis()
	if err := srv.Start(); err != nil {
		panic(err)
	}
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()

	// At most 2 exports per tenant in flight, across every instance of the service.
	cl, err := ratelimit.NewConcurrency(rdb, 2, &ratelimit.ConcurrencyOptions{Lease: time.Minute})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	var held []*ratelimit.Permit
	for i := 0; i < 3; i++ {
		p, err := cl.Acquire(ctx, "tenant:7")
		var ce *ratelimit.ConcurrencyError
		switch {
		case errors.As(err, &ce):
			fmt.Printf("export %d: busy, retry in %v\n", i, ce.RetryAfter)
		case err != nil:
			panic(err)
		default:
			fmt.Printf("export %d: running\n", i)
			held = append(held, p)
		}
	}
	for _, p := range held {
		_ = p.Release(ctx) // when the export ends, in a defer
	}
	p, err := cl.Acquire(ctx, "tenant:7")
	fmt.Println("after release:", err == nil)
	_ = p.Release(ctx)
	// Output:
	// export 0: running
	// export 1: running
	// export 2: busy, retry in 1s
	// after release: true
}

func ExampleNewLocalConcurrency() {
	// At most 3 image conversions per user in this process.
	cl, err := ratelimit.NewLocalConcurrency(3, nil)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	convert := func(user string) error {
		p, err := cl.Acquire(ctx, user)
		if err != nil {
			return err // errors.Is(err, ratelimit.ErrConcurrencyLimited): answer 429
		}
		defer p.Release(ctx)
		fmt.Println("converting for", user, "- in flight:", cl.InFlight(user))
		return nil
	}
	_ = convert("user:1")
	fmt.Println("after:", cl.InFlight("user:1"))
	// Output:
	// converting for user:1 - in flight: 1
	// after: 0
}

func ExampleLimit_Window() {
	for _, l := range []ratelimit.Limit{ratelimit.PerMinute(11), ratelimit.PerHour(65), {Rate: 2, Burst: 5}} {
		w := l.Window()
		fmt.Printf("%s: window %v, RateLimit-Policy w=%d\n", l, w, (w+time.Second-1)/time.Second)
	}
	// Output:
	// 11/min: window 1m0s, RateLimit-Policy w=60
	// 65/h: window 1h0m0s, RateLimit-Policy w=3600
	// 2/s burst 5: window 2.5s, RateLimit-Policy w=3
}

// Decisions are counted in surge.ratelimit.decisions. A service passes the MeterProvider of its
// OpenTelemetry SDK (or installs it globally and leaves the option nil); here a manual reader
// shows what was counted.
func ExampleLocalOptions_meterProvider() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())

	l, err := ratelimit.NewLocal(&ratelimit.LocalOptions{MeterProvider: mp}, ratelimit.PerMinute(2))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for range 3 {
		_, _ = l.Allow(ctx, "user:42")
	}
	_, _ = l.Allow(ctx, "") // an error: empty key

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		panic(err)
	}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
				limit, _ := p.Attributes.Value("surge.ratelimit.limit")
				decision, _ := p.Attributes.Value("surge.ratelimit.decision")
				lines = append(lines, fmt.Sprintf("%s{limit=%q, decision=%q} %d", m.Name, limit.AsString(), decision.AsString(), p.Value))
			}
		}
	}
	slices.Sort(lines)
	for _, line := range lines {
		fmt.Println(line)
	}
	// Output:
	// surge.ratelimit.decisions{limit="2/min", decision="allowed"} 2
	// surge.ratelimit.decisions{limit="2/min", decision="denied"} 1
	// surge.ratelimit.decisions{limit="2/min", decision="error"} 1
}
