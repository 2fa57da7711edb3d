package benchcmp

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/surgekit/surge/cache"
)

// cacheTelemetryMiss numbers the keys of the miss+load runs, so no run (nor a later -count
// round) finds a key an earlier one loaded.
var cacheTelemetryMiss atomic.Int64

// BenchmarkCacheTelemetry measures what an installed OpenTelemetry SDK (in-memory reader, every
// span sampled) costs a local-tier hit, a Redis-tier hit and a miss with its load, beside the
// default (no SDK installed: the global no-op providers).
func BenchmarkCacheTelemetry(b *testing.B) {
	ctx := context.Background()
	rdb := newRedis(b)
	flush(b, rdb)
	v := sampleItem()
	load := func(context.Context, string) (item, error) { return v, nil }
	for _, variant := range []string{"surge", "surge-otel-sdk"} {
		opt := cache.Options{Prefix: "bc:otel:"}
		if variant == "surge-otel-sdk" {
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
			b.Cleanup(func() { _ = mp.Shutdown(ctx); _ = tp.Shutdown(ctx) })
			opt.MeterProvider, opt.TracerProvider = mp, tp
		}
		b.Run("local-hit/"+variant, func(b *testing.B) {
			o := opt
			o.Local = &cache.LocalOptions{TTL: time.Hour}
			c, err := cache.New[item](rdb, &o)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
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
		b.Run("redis-hit/"+variant, func(b *testing.B) {
			c, err := cache.New[item](rdb, &opt)
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
		b.Run("miss+load/"+variant, func(b *testing.B) {
			c, err := cache.New[item](rdb, &opt)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.ReportAllocs()
			for b.Loop() {
				key := "miss-" + strconv.FormatInt(cacheTelemetryMiss.Add(1), 10)
				if _, err := c.Fetch(ctx, key, load); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
