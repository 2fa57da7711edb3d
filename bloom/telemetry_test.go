package bloom

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"

	"github.com/surgekit/surge/internal/oteltest"
	"github.com/surgekit/surge/internal/redistest"
)

func TestRedisCountsChecks(t *testing.T) {
	ctx := context.Background()
	m, rdb := redistest.Mini(t)
	sdk := oteltest.New(t)
	f, err := NewRedis(rdb, "users", 1000, 0.01, &RedisOptions{MeterProvider: sdk.MeterProvider})
	require.NoError(t, err)
	require.NoError(t, f.Add(ctx, "a", "b"))

	for _, k := range []string{"a", "b", "nope-1"} {
		_, err := f.MightContain(ctx, k)
		require.NoError(t, err)
	}
	got, err := f.MightContainMany(ctx, []string{"a", "nope-2", "nope-3"})
	require.NoError(t, err)
	require.Equal(t, []bool{true, false, false}, got)

	name := attribute.String("surge.bloom.name", "users")
	require.EqualValues(t, 3, sdk.Sum(t, "surge.bloom.checks", attribute.String("surge.bloom.result", "maybe"), name))
	require.EqualValues(t, 3, sdk.Sum(t, "surge.bloom.checks", attribute.String("surge.bloom.result", "absent"), name))
	_, scope, _ := sdk.Metric(t, "surge.bloom.checks")
	require.Equal(t, "github.com/surgekit/surge/bloom", scope)

	m.Close() // Redis gone: every key of a failed call counts as an error
	_, err = f.MightContain(ctx, "a")
	require.Error(t, err)
	_, err = f.MightContainMany(ctx, []string{"a", "b"})
	require.Error(t, err)
	require.EqualValues(t, 3, sdk.Sum(t, "surge.bloom.checks", attribute.String("surge.bloom.result", "error")))
}

// Local has no options: it records on the global MeterProvider, here replaced for the test.
func TestLocalCountsChecksOnGlobalProvider(t *testing.T) {
	sdk := oteltest.New(t)
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(sdk.MeterProvider)
	t.Cleanup(func() { otel.SetMeterProvider(prev) })

	ctx := context.Background()
	l, err := NewLocal(1000, 0.01)
	require.NoError(t, err)
	require.NoError(t, l.Add(ctx, "a"))
	ok, _ := l.MightContain(ctx, "a")
	require.True(t, ok)
	_, _ = l.MightContainMany(ctx, []string{"a", "x1", "x2"})
	require.EqualValues(t, 2, sdk.Sum(t, "surge.bloom.checks", attribute.String("surge.bloom.result", "maybe")))
	require.EqualValues(t, 2, sdk.Sum(t, "surge.bloom.checks", attribute.String("surge.bloom.result", "absent")))
}

// With no SDK installed, a local check allocates nothing.
func TestLocalCheckAllocatesNothingWithoutSDK(t *testing.T) {
	l, err := NewLocal(1000, 0.01)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, l.Add(ctx, "a"))
	require.Zero(t, testing.AllocsPerRun(200, func() { _, _ = l.MightContain(ctx, "a") }))
}
