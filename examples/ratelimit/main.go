// Command ratelimit shows surge's rate and concurrency limiters on Redis:
//
//  1. a burst from one user against two limits at once (5/s with burst 10, and 100/min),
//     answered by two "instances" of a service that share the budget through Redis;
//  2. Wait pacing a worker at the limit's rate for -duration;
//  3. the Fallback policy: a limiter whose Redis is unreachable keeps answering from its
//     local twin instead of failing every request;
//  4. a concurrency limiter: at most 2 exports per tenant in flight across instances, with a
//     lease so that a crashed holder frees its slot;
//  5. what the limiters counted in the OpenTelemetry counter surge.ratelimit.decisions (an SDK
//     with a manual reader stands for the service's exporter).
//
// It uses REDIS_ADDR when set, else an embedded miniredis.
//
//	go run ./examples/ratelimit
//	REDIS_ADDR=localhost:6379 go run ./examples/ratelimit -duration 5s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/surgekit/surge/examples/internal/backend"
	"github.com/surgekit/surge/ratelimit"
)

func main() {
	duration := flag.Duration("duration", 2*time.Second, "how long the paced worker of step 2 runs")
	flag.Parse()
	backend.Main("ratelimit", 0, func(ctx context.Context) error { return run(ctx, *duration) })
}

func run(ctx context.Context, duration time.Duration) error {
	rb, err := backend.StartRedis(ctx, os.Stdout)
	if err != nil {
		return err
	}
	defer rb.Close()

	// Every limiter counts its decisions through this meter provider; a service passes its own
	// SDK's (or leaves MeterProvider nil to use the global one).
	metrics := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(metrics))
	defer mp.Shutdown(context.WithoutCancel(ctx))

	limits := []ratelimit.Limit{{Rate: 5, Burst: 10, Name: "burst"}, ratelimit.PerMinute(100)}
	opt := &ratelimit.RedisOptions{Prefix: "example:rl:", MeterProvider: mp}
	// Two limiters over one Redis stand for two instances of a service: one shared budget.
	a, err := ratelimit.NewRedis(rb.Client, opt, limits...)
	if err != nil {
		return err
	}
	b, err := ratelimit.NewRedis(rb.Client, opt, limits...)
	if err != nil {
		return err
	}
	user := fmt.Sprintf("user:%d", time.Now().UnixNano()) // a fresh bucket on every run
	defer func() { _ = a.Reset(context.WithoutCancel(ctx), user) }()

	fmt.Println("\n1. 15 requests at once from one user, alternating between two instances:")
	for i := 1; i <= 15; i++ {
		l := a
		if i%2 == 0 {
			l = b
		}
		res, err := l.Allow(ctx, user)
		if err != nil {
			return err
		}
		verdict := "allowed"
		if !res.Allowed {
			verdict = fmt.Sprintf("denied, retry after %v", res.RetryAfter.Round(time.Millisecond))
		}
		fmt.Printf("   request %2d: %-28s remaining %2d (binding limit %s)\n", i, verdict, res.Remaining, res.Limit)
	}

	fmt.Printf("\n2. Wait paces a worker at the 5/s rate for %v:\n", duration)
	if err := a.Reset(ctx, user); err != nil {
		return err
	}
	start, done := time.Now(), 0
	wctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	for {
		if err := a.Wait(wctx, user); err != nil {
			break // the deadline: Wait says so before sleeping past it
		}
		done++
	}
	el := time.Since(start)
	fmt.Printf("   %d events in %v: the burst of 10, then %.1f/s\n", done, el.Round(time.Millisecond),
		float64(max(0, done-10))/el.Seconds())

	fmt.Println("\n3. Redis unreachable, Fallback policy: answers come from a local twin")
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer dead.Close()
	local, err := ratelimit.NewLocal(nil, ratelimit.Limit{Rate: 1, Burst: 3, Name: "per-instance"})
	if err != nil {
		return err
	}
	defer local.Close()
	fb, err := ratelimit.NewRedis(dead, &ratelimit.RedisOptions{OnRedisError: ratelimit.Fallback(local), MeterProvider: mp}, limits...)
	if err != nil {
		return err
	}
	for i := 1; i <= 5; i++ {
		res, err := fb.Allow(ctx, user)
		if err != nil {
			return err
		}
		fmt.Printf("   request %d: allowed=%v (limit %s)\n", i, res.Allowed, res.Limit)
	}
	st := fb.Stats()
	fmt.Printf("   stats: %d allowed, %d denied, %d answered by the fallback, %d Redis errors\n",
		st.Allowed, st.Denied, st.Fallback, st.RedisErrors)

	fmt.Println("\n4. At most 2 exports per tenant in flight, across instances (leases of 30s):")
	cl, err := ratelimit.NewConcurrency(rb.Client, 2, &ratelimit.ConcurrencyOptions{Prefix: "example:cl:", Name: "exports", MeterProvider: mp})
	if err != nil {
		return err
	}
	tenant := fmt.Sprintf("tenant:%d", time.Now().UnixNano())
	var held []*ratelimit.Permit
	for i := 1; i <= 3; i++ {
		p, err := cl.Acquire(ctx, tenant)
		var busy *ratelimit.ConcurrencyError
		switch {
		case errors.As(err, &busy):
			fmt.Printf("   export %d: busy (all %d slots held), retry after %v\n", i, busy.Max, busy.RetryAfter)
		case err != nil:
			return err
		default:
			fmt.Printf("   export %d: running\n", i)
			held = append(held, p)
		}
	}
	for _, p := range held {
		if err := p.Release(ctx); err != nil { // in a service: defer p.Release(ctx) right after Acquire
			return err
		}
	}
	p, err := cl.Acquire(ctx, tenant)
	if err != nil {
		return err
	}
	fmt.Println("   after the releases: export 3 running")
	if err := p.Release(ctx); err != nil {
		return err
	}

	fmt.Println("\n5. surge.ratelimit.decisions, by binding limit and decision:")
	if err := printDecisions(ctx, metrics); err != nil {
		return err
	}
	fmt.Println("\nratelimit example done")
	return nil
}

// printDecisions prints every point of surge.ratelimit.decisions the reader holds, sorted.
func printDecisions(ctx context.Context, reader *sdkmetric.ManualReader) error {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		return err
	}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if m.Name != "surge.ratelimit.decisions" || !ok {
				continue
			}
			for _, p := range sum.DataPoints {
				limit, _ := p.Attributes.Value("surge.ratelimit.limit")
				decision, _ := p.Attributes.Value("surge.ratelimit.decision")
				lines = append(lines, fmt.Sprintf("   %-14s %-9s %4d", limit.AsString(), decision.AsString(), p.Value))
			}
		}
	}
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	return nil
}
