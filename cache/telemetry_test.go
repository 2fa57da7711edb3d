package cache

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/surgekit/surge/internal/oteltest"
	"github.com/surgekit/surge/internal/redistest"
)

// requests returns surge.cache.requests of the cache named name, by result.
func requests(t *testing.T, sdk *oteltest.SDK, name string) map[string]float64 {
	t.Helper()
	out := make(map[string]float64)
	for _, r := range resultNames {
		if n := sdk.Sum(t, metricRequests, attribute.String(attrName, name), attribute.String(attrResult, r)); n != 0 {
			out[r] = n
		}
	}
	return out
}

func withSDK(sdk *oteltest.SDK, o Options) *Options {
	o.TracerProvider, o.MeterProvider = sdk.TracerProvider, sdk.MeterProvider
	return &o
}

func TestTelemetryRequests(t *testing.T) {
	sdk := oteltest.New(t)
	ctx := context.Background()
	ok := func(ctx context.Context, key string) (user, error) { return user{ID: key}, nil }
	notFound := func(ctx context.Context, key string) (user, error) { return user{}, ErrNotFound }

	// Redis tier, with stale-while-revalidate on a movable clock.
	c, m, rdb := newCache(t, withSDK(sdk, Options{Prefix: "users:", RefreshAfter: time.Minute}))
	var clk clock
	c.now = clk.now
	_, err := c.Fetch(ctx, "a", ok) // miss
	require.NoError(t, err)
	_, err = c.Fetch(ctx, "a", ok) // redis_hit
	require.NoError(t, err)
	_, err = c.Fetch(ctx, "n", notFound) // miss
	require.ErrorIs(t, err, ErrNotFound)
	_, err = c.Fetch(ctx, "n", notFound) // negative_hit
	require.ErrorIs(t, err, ErrNotFound)
	_, err = c.Get(ctx, "a") // redis_hit
	require.NoError(t, err)
	_, err = c.Get(ctx, "x") // miss
	require.ErrorIs(t, err, ErrMiss)
	_, err = c.Get(ctx, "") // error
	require.ErrorIs(t, err, ErrEmptyKey)
	require.NoError(t, c.Set(ctx, "b", user{ID: "b"}))
	got, err := c.FetchMany(ctx, []string{"m", "n", "b", "b"}, func(ctx context.Context, keys []string) (map[string]user, error) {
		return map[string]user{"m": {ID: "m"}}, nil
	}) // miss, negative_hit, redis_hit (the duplicate counts once)
	require.NoError(t, err)
	require.Len(t, got, 2)
	clk.advance(2 * time.Minute)
	refreshed := make(chan struct{})
	_, err = c.Fetch(ctx, "a", func(ctx context.Context, key string) (user, error) {
		close(refreshed)
		return user{ID: key}, nil
	}) // stale
	require.NoError(t, err)
	<-refreshed
	require.Equal(t, map[string]float64{"miss": 4, "redis_hit": 3, "negative_hit": 2, "stale": 1, "error": 1},
		requests(t, sdk, "users:"))
	_, scope, found := sdk.Metric(t, metricRequests)
	require.True(t, found)
	require.Equal(t, "github.com/surgekit/surge/cache", scope)

	// Local tier: Fetch, Get and FetchMany hits all count as local_hit.
	l, err := New[user](rdb, withSDK(sdk, Options{Prefix: "local:", Local: &LocalOptions{}}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	_, err = l.Fetch(ctx, "a", ok) // miss
	require.NoError(t, err)
	_, err = l.Fetch(ctx, "a", ok)
	require.NoError(t, err)
	_, err = l.Get(ctx, "a")
	require.NoError(t, err)
	_, err = l.FetchMany(ctx, []string{"a"}, func(ctx context.Context, keys []string) (map[string]user, error) {
		return nil, errors.New("must not load")
	})
	require.NoError(t, err)
	require.Equal(t, map[string]float64{"miss": 1, "local_hit": 3}, requests(t, sdk, "local:"))

	// Redis errors returned under FailClosed: one error per key requested.
	d, dm := newOutageCache(t, withSDK(sdk, Options{Prefix: "down:", OnRedisError: FailClosed}))
	dm.Close()
	_, err = d.Fetch(ctx, "k", ok)
	require.Error(t, err)
	_, err = d.FetchMany(ctx, []string{"a", "b"}, func(ctx context.Context, keys []string) (map[string]user, error) {
		return nil, errors.New("must not load")
	})
	require.Error(t, err)
	require.Equal(t, map[string]float64{"error": 3}, requests(t, sdk, "down:"))

	// Close unregisters the counter: the provider no longer reads (or holds) the Cache.
	require.NoError(t, c.Close())
	require.Empty(t, requests(t, sdk, "users:"))
	require.NotEmpty(t, requests(t, sdk, "local:"))
	_ = m
}

func TestTelemetryLoadDurationAndSpans(t *testing.T) {
	sdk := oteltest.New(t)
	c, _, _ := newCache(t, withSDK(sdk, Options{Prefix: "users:"}))
	ctx, parent := sdk.TracerProvider.Tracer("test").Start(context.Background(), "request")
	defer parent.End()

	_, err := c.Fetch(ctx, "ok", func(ctx context.Context, key string) (user, error) { return user{ID: key}, nil })
	require.NoError(t, err)
	_, err = c.Fetch(ctx, "absent", func(ctx context.Context, key string) (user, error) { return user{}, ErrNotFound })
	require.ErrorIs(t, err, ErrNotFound)
	_, err = c.Fetch(ctx, "fails", func(ctx context.Context, key string) (user, error) { return user{}, errors.New("db down") })
	require.Error(t, err)
	_, err = c.Fetch(ctx, "panics", func(ctx context.Context, key string) (user, error) { panic("boom") })
	require.ErrorIs(t, err, ErrLoaderPanic)
	_, err = c.Fetch(ctx, "slow", func(ctx context.Context, key string) (user, error) {
		return user{}, fmt.Errorf("query: %w", context.DeadlineExceeded) // as when LoadTimeout runs out
	})
	require.ErrorIs(t, err, context.DeadlineExceeded)

	name := attribute.String(attrName, "users:")
	require.EqualValues(t, 5, sdk.HistogramCount(t, metricLoadDuration, name))
	for typ, want := range map[string]uint64{"_OTHER": 1, "panic": 1, "timeout": 1, "canceled": 0} {
		require.Equal(t, want, sdk.HistogramCount(t, metricLoadDuration, name, attribute.String(attrErrorType, typ)), typ)
	}
	met, scope, _ := sdk.Metric(t, metricLoadDuration)
	require.Equal(t, "github.com/surgekit/surge/cache", scope)
	require.Equal(t, "s", met.Unit)
	var clean uint64 // successes (a value, or not found) carry no error.type
	for _, p := range met.Data.(metricdata.Histogram[float64]).DataPoints {
		if _, has := p.Attributes.Value(attrErrorType); !has {
			clean += p.Count
		}
	}
	require.EqualValues(t, 2, clean)

	spans := sdk.SpansNamed(spanLoad)
	require.Len(t, spans, 5)
	failed := 0
	for _, s := range spans {
		require.Equal(t, parent.SpanContext().TraceID(), s.SpanContext().TraceID())
		require.Equal(t, parent.SpanContext().SpanID(), s.Parent().SpanID(), "the load continues the caller's trace")
		require.Equal(t, "github.com/surgekit/surge/cache", s.InstrumentationScope().Name)
		require.Contains(t, s.Attributes(), name)
		require.Contains(t, s.Attributes(), attribute.Int(attrLoadKeys, 1))
		if s.Status().Code == codes.Error {
			failed++
			require.NotEmpty(t, s.Events(), "the error is recorded")
		}
	}
	require.Equal(t, 3, failed)

	// Hits open no span: Redis hits, a negative hit, Get, FetchMany, and local hits.
	_, err = c.Fetch(ctx, "ok", func(ctx context.Context, key string) (user, error) { return user{}, errors.New("must not load") })
	require.NoError(t, err)
	_, err = c.Fetch(ctx, "absent", func(ctx context.Context, key string) (user, error) { return user{}, errors.New("must not load") })
	require.ErrorIs(t, err, ErrNotFound)
	_, err = c.Get(ctx, "ok")
	require.NoError(t, err)
	_, err = c.FetchMany(ctx, []string{"ok", "absent"}, func(ctx context.Context, keys []string) (map[string]user, error) {
		return nil, errors.New("must not load")
	})
	require.NoError(t, err)
	l, err := New[user](c.rdb, withSDK(sdk, Options{Prefix: "users:", Local: &LocalOptions{}}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	for range 2 { // a Redis hit that fills the tier, then a local hit
		_, err = l.Fetch(ctx, "ok", func(ctx context.Context, key string) (user, error) { return user{}, errors.New("must not load") })
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, l.Stats().LocalHits)
	require.Len(t, sdk.SpansNamed(spanLoad), 5, "no span for a hit")
	require.Len(t, sdk.Ended(), 5)
	require.EqualValues(t, 5, sdk.HistogramCount(t, metricLoadDuration, name))
}

// With nil providers the Cache records through the global ones.
func TestTelemetryGlobalProviders(t *testing.T) {
	sdk := oteltest.New(t)
	otel.SetTracerProvider(sdk.TracerProvider)
	otel.SetMeterProvider(sdk.MeterProvider)
	t.Cleanup(func() {
		otel.SetTracerProvider(tracenoop.NewTracerProvider())
		otel.SetMeterProvider(noop.NewMeterProvider())
	})
	c, _, _ := newCache(t, &Options{Prefix: "global:"})
	ctx := context.Background()
	for range 2 {
		_, err := c.Fetch(ctx, "a", func(ctx context.Context, key string) (user, error) { return user{ID: key}, nil })
		require.NoError(t, err)
	}
	require.Equal(t, map[string]float64{"miss": 1, "redis_hit": 1}, requests(t, sdk, "global:"))
	require.Len(t, sdk.SpansNamed(spanLoad), 1)
}

// BenchmarkTelemetry reports what an installed SDK (oteltest: in-memory, every span sampled)
// adds per operation to a local hit, a Redis hit (real redis-server) and a miss with its load.
func BenchmarkTelemetry(b *testing.B) {
	s := redistest.Server(b)
	ctx := context.Background()
	load := func(ctx context.Context, key string) (user, error) { return user{ID: key, Name: "n"}, nil }
	seq := 0 // miss keys never repeat, also when -count reruns a sub-benchmark
	for _, sdkOn := range []bool{false, true} {
		opt := Options{Prefix: "bench:"}
		suffix := "no-sdk"
		if sdkOn {
			sdk := oteltest.New(b)
			opt.TracerProvider, opt.MeterProvider = sdk.TracerProvider, sdk.MeterProvider
			suffix = "sdk"
		}
		local := opt
		local.Local = &LocalOptions{}
		lc, err := New[user](s.Client(), &local)
		if err != nil {
			b.Fatal(err)
		}
		rc, err := New[user](s.Client(), &opt)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := lc.Fetch(ctx, "p", load); err != nil {
			b.Fatal(err)
		}
		b.Run("local-hit/"+suffix, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := lc.Fetch(ctx, "p", load); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("redis-hit/"+suffix, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := rc.Fetch(ctx, "p", load); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("miss+load/"+suffix, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				seq++
				if _, err := rc.Fetch(ctx, fmt.Sprint("miss-", seq), load); err != nil {
					b.Fatal(err)
				}
			}
		})
		_ = lc.Close()
		_ = rc.Close()
	}
}
