package oteltest_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/surgekit/surge/internal/oteltest"
	"github.com/surgekit/surge/internal/otelx"
)

func TestSDKRecordsWhatTheAPIReports(t *testing.T) {
	sdk := oteltest.New(t)
	ctx := context.Background()
	m := otelx.Meter(sdk.MeterProvider, otelx.ScopePrefix+"x")
	c := otelx.Must(m.Int64Counter("surge.x.requests"))
	hit := metric.WithAttributeSet(attribute.NewSet(attribute.String("r", "hit"), attribute.String("n", "a")))
	c.Add(ctx, 2, hit)
	c.Add(ctx, 1, metric.WithAttributes(attribute.String("r", "miss")))
	h := otelx.Must(m.Float64Histogram("surge.x.duration", metric.WithUnit("s")))
	h.Record(ctx, 0.5, metric.WithAttributes(attribute.String("r", "hit")))
	g := otelx.Must(m.Int64Gauge("surge.x.lag"))
	g.Record(ctx, 7, metric.WithAttributes(attribute.String("topic", "t")))

	require.EqualValues(t, 3, sdk.Sum(t, "surge.x.requests"))
	require.EqualValues(t, 2, sdk.Sum(t, "surge.x.requests", attribute.String("r", "hit")))
	require.EqualValues(t, 0, sdk.Sum(t, "surge.x.requests", attribute.String("r", "stale")))
	require.EqualValues(t, 1, sdk.HistogramCount(t, "surge.x.duration", attribute.String("r", "hit")))
	v, ok := sdk.Gauge(t, "surge.x.lag", attribute.String("topic", "t"))
	require.True(t, ok)
	require.EqualValues(t, 7, v)
	_, scope, ok := sdk.Metric(t, "surge.x.requests")
	require.True(t, ok)
	require.Equal(t, "github.com/surgekit/surge/x", scope)

	_, span := otelx.Tracer(sdk.TracerProvider, "t").Start(ctx, "load")
	span.End()
	require.Len(t, sdk.SpansNamed("load"), 1)
	require.Empty(t, sdk.SpansNamed("other"))
}

// With no SDK installed the global providers are no-ops: recording allocates nothing when the
// attribute options are built once.
func TestGlobalNoopAllocatesNothing(t *testing.T) {
	m := otelx.Meter(nil, otelx.ScopePrefix+"x")
	c := otelx.Must(m.Int64Counter("surge.x.requests"))
	// The options slice is built once, as instrumented code keeps it per result: passing a
	// single option to the variadic Add would build (and heap-allocate) a slice per call.
	opts := []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("r", "hit")))}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() { c.Add(ctx, 1, opts...) })
	require.Zero(t, allocs)
}
