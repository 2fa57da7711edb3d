// Command lock shows surge's distributed lock on Redis:
//
//  1. three instances of a service race to run a scheduled job every 500 ms for -duration;
//     lock.Do lets exactly one run it each time (the others get ErrNotObtained);
//  2. a waiter blocked in Obtain wakes on the holder's release message, not on a poll;
//  3. fencing: a holder that paused past its TTL cannot overwrite the next holder's write,
//     because the resource rejects its older fence token;
//  4. telemetry: what the OpenTelemetry metrics and the wait spans recorded meanwhile.
//
// It uses REDIS_ADDR when set, else an embedded miniredis.
//
//	go run ./examples/lock
//	go run ./examples/lock -duration 10s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/surgekit/surge/examples/internal/backend"
	"github.com/surgekit/surge/lock"
)

func main() {
	duration := flag.Duration("duration", 2*time.Second, "how long the instances of step 1 keep scheduling the job")
	flag.Parse()
	backend.Main("lock", 0, func(ctx context.Context) error { return run(ctx, *duration) })
}

func run(ctx context.Context, duration time.Duration) error {
	rb, err := backend.StartRedis(ctx, os.Stdout)
	if err != nil {
		return err
	}
	defer rb.Close()
	// The locks record through these providers; a service passes its own SDK's (or leaves them
	// nil to use the global ones).
	metrics := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(metrics))
	defer mp.Shutdown(context.WithoutCancel(ctx))
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.WithoutCancel(ctx))
	locks := lock.New(rb.Client, &lock.Options{Prefix: "example:lock:", MeterProvider: mp, TracerProvider: tp})
	job := fmt.Sprintf("nightly-job:%d", time.Now().UnixNano())

	fmt.Printf("\n1. three instances schedule the same job every 500ms for %v:\n", duration)
	var (
		mu      sync.Mutex
		ran     = map[string]int{}
		skipped int
		wg      sync.WaitGroup
	)
	jctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	for _, inst := range []string{"instance-a", "instance-b", "instance-c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-jctx.Done():
					return
				case <-tick.C:
				}
				err := locks.Do(jctx, job, 5*time.Second, nil, func(ctx context.Context) error {
					fmt.Printf("   %s runs the job (fence %d)\n", inst, lock.FromContext(ctx).Fence())
					time.Sleep(100 * time.Millisecond) // the work; the lock is held meanwhile
					mu.Lock()
					ran[inst]++
					mu.Unlock()
					return nil
				})
				mu.Lock()
				if errors.Is(err, lock.ErrNotObtained) {
					skipped++
				} else if err != nil && jctx.Err() == nil {
					fmt.Printf("   %s: %v\n", inst, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	fmt.Printf("   runs per instance: %v; %d attempts found the job already running\n", ran, skipped)

	fmt.Println("\n2. a waiter wakes on release:")
	held, err := locks.Obtain(ctx, job+":wait", 10*time.Second, nil)
	if err != nil {
		return err
	}
	released := make(chan time.Time, 1)
	go func() {
		time.Sleep(300 * time.Millisecond) // the holder works, then releases
		released <- time.Now()
		_ = held.Release(context.WithoutCancel(ctx))
	}()
	start := time.Now()
	got, err := locks.Obtain(ctx, job+":wait", 10*time.Second, &lock.ObtainOptions{Wait: 5 * time.Second})
	if err != nil {
		return err
	}
	fmt.Printf("   waited %v; obtained %v after the release\n", time.Since(start).Round(time.Millisecond),
		time.Since(<-released).Round(100*time.Microsecond))
	_ = got.Release(ctx)

	fmt.Println("\n3. fencing: a paused holder's late write is rejected")
	store := &fencedStore{}
	slow, err := locks.Obtain(ctx, job+":fence", 200*time.Millisecond, nil) // no watchdog
	if err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond) // a GC pause or a slow call: the TTL runs out
	fast, err := locks.Obtain(ctx, job+":fence", 5*time.Second, &lock.ObtainOptions{Wait: 2 * time.Second})
	if err != nil {
		return err
	}
	fmt.Printf("   new holder (fence %d) writes: %v\n", fast.Fence(), store.Write(fast.Fence(), "new"))
	fmt.Printf("   old holder (fence %d) writes: %v\n", slow.Fence(), store.Write(slow.Fence(), "stale"))
	fmt.Printf("   old holder releases: %v\n", slow.Release(ctx))
	_ = fast.Release(ctx)

	fmt.Println("\n4. telemetry: the metrics and the spans of the waits")
	if err := printMetrics(ctx, metrics); err != nil {
		return err
	}
	for _, sp := range spans.Ended() {
		fmt.Printf("   span %s: %s, %v\n", sp.Name(), attrs(sp.Attributes()), sp.EndTime().Sub(sp.StartTime()).Round(time.Millisecond))
	}
	fmt.Println("\nlock example done")
	return nil
}

// printMetrics prints every point of the lock's metrics the reader holds, sorted.
func printMetrics(ctx context.Context, reader *sdkmetric.ManualReader) error {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		return err
	}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					lines = append(lines, fmt.Sprintf("   %s{%s} %d", m.Name, attrs(p.Attributes.ToSlice()), p.Value))
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					lines = append(lines, fmt.Sprintf("   %s{%s} count %d, sum %.3fs", m.Name, attrs(p.Attributes.ToSlice()), p.Count, p.Sum))
				}
			}
		}
	}
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	return nil
}

func attrs(kvs []attribute.KeyValue) string {
	var s string
	for i, kv := range kvs {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%s=%s", kv.Key, kv.Value.Emit())
	}
	return s
}

// fencedStore is the protected resource: it remembers the highest fence it accepted.
type fencedStore struct {
	mu    sync.Mutex
	fence int64
	value string
}

func (s *fencedStore) Write(fence int64, v string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fence < s.fence {
		return fmt.Errorf("rejected: fence %d is older than %d", fence, s.fence)
	}
	s.fence, s.value = fence, v
	return nil
}
