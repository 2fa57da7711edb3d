package lock

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/internal/oteltest"
	"github.com/surgekit/surge/internal/redistest"
)

// go test -run '^$' -bench . -benchmem ./lock/

func benchObtainRelease(b *testing.B, c interface {
	Obtain(context.Context, string, time.Duration, *ObtainOptions) (*Lock, error)
}) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l, err := c.Obtain(ctx, "bench", 10*time.Second, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// Uncontended Obtain+Release: two round trips.
func BenchmarkObtainRelease(b *testing.B) {
	s := redistest.Server(b)
	benchObtainRelease(b, New(s.NewClient(nil), nil))
}

// The same with an OpenTelemetry SDK installed (in-memory readers): the cost of recording
// surge.lock.acquisitions per operation, against BenchmarkObtainRelease.
func BenchmarkObtainReleaseOTel(b *testing.B) {
	s := redistest.Server(b)
	sdk := oteltest.New(b)
	benchObtainRelease(b, New(s.NewClient(nil), &Options{TracerProvider: sdk.TracerProvider, MeterProvider: sdk.MeterProvider}))
}

func BenchmarkObtainReleaseMiniredis(b *testing.B) {
	_, rdb := redistest.Mini(b)
	benchObtainRelease(b, New(rdb, nil))
}

func BenchmarkObtainReleaseRedlock3(b *testing.B) {
	var rdbs []redis.UniversalClient
	for range 3 {
		rdbs = append(rdbs, redistest.Server(b).NewClient(nil))
	}
	benchObtainRelease(b, NewRedlock(rdbs, nil))
}

// Uncontended Obtain+Release from many goroutines on distinct keys: throughput.
func BenchmarkObtainReleaseParallel(b *testing.B) {
	s := redistest.Server(b)
	c := New(s.NewClient(nil), nil)
	ctx := context.Background()
	var id atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		key := fmt.Sprint("bench:", id.Add(1))
		for pb.Next() {
			l, err := c.Obtain(ctx, key, 10*time.Second, nil)
			if err != nil {
				b.Error(err)
				return
			}
			if err := l.Release(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// Hand-off latency: 8 goroutines take turns on one key. Each sample is timed from the moment the
// holder calls Release to the moment another goroutine's Obtain returns the lock (a holder that
// takes the lock straight back is not a hand-off and is not sampled).
func BenchmarkHandoff8(b *testing.B) {
	s := redistest.Server(b)
	c := New(s.NewClient(&redis.Options{PoolSize: 16}), nil)
	ctx := context.Background()
	type release struct {
		by int
		at time.Time
	}
	var (
		last      atomic.Pointer[release] // written by the holder only
		remaining atomic.Int64
		mu        sync.Mutex
		lat       = make([]time.Duration, 0, b.N)
		self      atomic.Int64
	)
	remaining.Store(int64(b.N))
	opt := &ObtainOptions{Wait: time.Minute}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for remaining.Load() > 0 {
				l, err := c.Obtain(ctx, "handoff", 10*time.Second, opt)
				if err != nil {
					b.Error(err)
					return
				}
				now := time.Now()
				switch r := last.Load(); {
				case r == nil:
				case r.by == g:
					self.Add(1)
				default:
					mu.Lock()
					lat = append(lat, now.Sub(r.at))
					mu.Unlock()
				}
				remaining.Add(-1)
				last.Store(&release{by: g, at: time.Now()})
				if err := l.Release(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(self.Load())/float64(b.N), "reacquired/op")
}

// What the telemetry adds to every Obtain (counting it in surge.lock.acquisitions), measured
// alone: the Redis round trips of BenchmarkObtainRelease drown it.
func BenchmarkTelemetryPerObtain(b *testing.B) {
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		tel  *telemetry
	}{
		{"no-sdk", newTelemetry(nil, nil)},
		{"sdk", func() *telemetry { sdk := oteltest.New(b); return newTelemetry(sdk.TracerProvider, sdk.MeterProvider) }()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.tel.acquired(ctx, nil)
			}
		})
	}
}
