package lock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/surgekit/surge/lock"
)

func Example() {
	mr, rdb := startRedis() // your *redis.Client, *redis.ClusterClient...
	defer mr.Close()
	defer rdb.Close()
	ctx := context.Background()
	locks := lock.New(rdb, nil)

	// Do: obtain (waiting up to 5s), run with a watchdog, release.
	err := locks.Do(ctx, "invoice:42", 10*time.Second, &lock.ObtainOptions{Wait: 5 * time.Second},
		func(ctx context.Context) error {
			l := lock.FromContext(ctx)
			fmt.Println("holding", l.Key(), "with fence", l.Fence())
			return nil // ctx is cancelled if the lock is lost
		})
	fmt.Println("do:", err)

	// By hand: a second holder is refused while the first holds the lock.
	first, _ := locks.Obtain(ctx, "invoice:42", 10*time.Second, nil)
	_, err = locks.Obtain(ctx, "invoice:42", 10*time.Second, nil)
	fmt.Println("second holder refused:", errors.Is(err, lock.ErrNotObtained))
	fmt.Println("fence:", first.Fence())
	fmt.Println("release:", first.Release(ctx))
	fmt.Println("release again:", errors.Is(first.Release(ctx), lock.ErrNotHeld))
	// Output:
	// holding invoice:42 with fence 1
	// do: <nil>
	// second holder refused: true
	// fence: 2
	// release: <nil>
	// release again: true
}

// A resource protected by fencing tokens rejects writes from a holder whose lock has expired
// and been taken by someone else meanwhile.
func ExampleLock_Fence() {
	mr, rdb := startRedis() // your *redis.Client, *redis.ClusterClient...
	defer mr.Close()
	defer rdb.Close()
	ctx := context.Background()
	locks := lock.New(rdb, nil)

	var highest int64 // kept by the resource, e.g. a column next to the data
	write := func(fence int64, what string) {
		if fence < highest {
			fmt.Printf("%s rejected: fence %d < %d\n", what, fence, highest)
			return
		}
		highest = fence
		fmt.Printf("%s accepted with fence %d\n", what, fence)
	}

	a, _ := locks.Obtain(ctx, "report", time.Second, nil)
	mr.FastForward(2 * time.Second) // A stalls past its TTL
	b, _ := locks.Obtain(ctx, "report", time.Second, nil)
	write(b.Fence(), "B")
	write(a.Fence(), "A") // A wakes up and tries to write
	// Output:
	// B accepted with fence 2
	// A rejected: fence 1 < 2
}

// startRedis starts an in-process miniredis for the examples.
func startRedis() (*miniredis.Miniredis, *redis.Client) {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	return mr, redis.NewClient(&redis.Options{Addr: mr.Addr()})
}

// Telemetry: the lock's metrics on an OpenTelemetry SDK (here a manual reader; in a service the
// Prometheus or OTLP exporter). Options.MeterProvider nil would mean the global provider.
func ExampleOptions_telemetry() {
	mr, rdb := startRedis() // your *redis.Client, *redis.ClusterClient...
	defer mr.Close()
	defer rdb.Close()
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	locks := lock.New(rdb, &lock.Options{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})

	first, _ := locks.Obtain(ctx, "invoice:42", 10*time.Second, nil)
	_, _ = locks.Obtain(ctx, "invoice:42", 10*time.Second, &lock.ObtainOptions{Wait: 10 * time.Millisecond})
	_ = first.Release(ctx)

	var rm metricdata.ResourceMetrics
	_ = reader.Collect(ctx, &rm)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			for _, p := range d.DataPoints {
				v, _ := p.Attributes.Value("surge.lock.result")
				fmt.Printf("%s{result=%s} %d\n", m.Name, v.AsString(), p.Value)
			}
		case metricdata.Histogram[float64]:
			for _, p := range d.DataPoints {
				v, _ := p.Attributes.Value("surge.lock.result")
				fmt.Printf("%s{result=%s} count %d\n", m.Name, v.AsString(), p.Count)
			}
		}
	}
	// Unordered output:
	// surge.lock.acquisitions{result=obtained} 1
	// surge.lock.acquisitions{result=not_obtained} 1
	// surge.lock.wait.duration{result=not_obtained} count 1
}
