package lock

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/surgekit/surge/internal/oteltest"
	"github.com/surgekit/surge/internal/redistest"
)

func otelOptions(sdk *oteltest.SDK) *Options {
	return &Options{TracerProvider: sdk.TracerProvider, MeterProvider: sdk.MeterProvider}
}

func resultIs(v string) attribute.KeyValue { return attribute.String("surge.lock.result", v) }

func spanAttr(sp sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range sp.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func TestTelemetryCountsAcquisitionsByResult(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	sdk := oteltest.New(t)
	c := New(rdb, otelOptions(sdk))

	l, err := c.Obtain(ctx, "k", time.Minute, nil)
	require.NoError(t, err)
	_, err = c.Obtain(ctx, "k", time.Minute, nil)
	require.ErrorIs(t, err, ErrNotObtained)
	require.NoError(t, c.Do(ctx, "other", time.Minute, nil, func(context.Context) error { return nil }))
	_, err = c.Obtain(ctx, "", time.Minute, nil)
	require.Error(t, err)
	require.NoError(t, l.Release(ctx))
	mr.SetError("LOADING")
	_, err = c.Obtain(ctx, "k", time.Minute, nil)
	require.ErrorContains(t, err, "LOADING")
	mr.SetError("")

	m, scope, ok := sdk.Metric(t, "surge.lock.acquisitions")
	require.True(t, ok)
	assert.Equal(t, "github.com/surgekit/surge/lock", scope)
	assert.Equal(t, "{acquisition}", m.Unit)
	assert.EqualValues(t, 2, sdk.Sum(t, "surge.lock.acquisitions", resultIs("obtained")))
	assert.EqualValues(t, 1, sdk.Sum(t, "surge.lock.acquisitions", resultIs("not_obtained")))
	assert.EqualValues(t, 2, sdk.Sum(t, "surge.lock.acquisitions", resultIs("error")))
	assert.EqualValues(t, 5, sdk.Sum(t, "surge.lock.acquisitions"))
	// No call waited: no wait span, no wait duration.
	assert.Empty(t, sdk.Ended())
	_, _, ok = sdk.Metric(t, "surge.lock.wait.duration")
	assert.False(t, ok)
}

// Invalid Options are reported by every Obtain, which is counted as an error by the providers the
// Options name.
func TestTelemetryCountsInvalidOptions(t *testing.T) {
	_, rdb := redistest.Mini(t)
	sdk := oteltest.New(t)
	opt := otelOptions(sdk)
	opt.Prefix = "a{"
	_, err := New(rdb, opt).Obtain(ctxT(t), "k", time.Minute, nil)
	require.ErrorIs(t, err, ErrInvalidOptions)
	_, err = NewRedlock(nil, otelOptions(sdk)).Obtain(ctxT(t), "k", time.Minute, nil)
	require.Error(t, err)
	assert.EqualValues(t, 2, sdk.Sum(t, "surge.lock.acquisitions", resultIs("error")))
}

// A wait opens one span, child of the caller's, covering the whole Obtain, and records its
// duration; an Obtain with Wait that gets the lock at its first try opens none.
func TestTelemetryWaitSpanAndDuration(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	sdk := oteltest.New(t)
	c := New(rdb, otelOptions(sdk))
	wait := &ObtainOptions{Wait: time.Hour, Backoff: func(int) time.Duration { return time.Hour }}

	free, err := c.Obtain(ctx, "k", time.Hour, wait) // free: no wait
	require.NoError(t, err)
	assert.Empty(t, sdk.SpansNamed("lock.wait"))
	require.NoError(t, free.Release(ctx))
	// Without Wait: it does not take the Client's gate, which the waiter below needs.
	holder, err := c.Obtain(ctx, "k", time.Hour, nil)
	require.NoError(t, err)

	// Obtained by hand-over: the holder releases after the waiter's failed first try.
	c.g.beforeSubscribe = func() { assert.NoError(t, holder.Release(ctx)) }
	pctx, parent := sdk.TracerProvider.Tracer("test").Start(ctx, "parent")
	before := time.Now()
	l, err := c.Obtain(pctx, "k", time.Minute, wait)
	require.NoError(t, err)
	parent.End()
	c.g.beforeSubscribe = nil

	// Not obtained: the wait runs out while l holds the lock.
	_, err = c.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: 20 * time.Millisecond})
	require.ErrorIs(t, err, ErrNotObtained)
	require.NoError(t, l.Release(ctx))

	spans := sdk.SpansNamed("lock.wait")
	require.Len(t, spans, 2)
	got := spans[0]
	assert.Equal(t, parent.SpanContext().TraceID(), got.SpanContext().TraceID())
	assert.Equal(t, parent.SpanContext().SpanID(), got.Parent().SpanID())
	assert.Equal(t, "github.com/surgekit/surge/lock", got.InstrumentationScope().Name)
	assert.False(t, got.StartTime().Before(before), "starts at the call")
	v, _ := spanAttr(got, "surge.lock.result")
	assert.Equal(t, "obtained", v.AsString())
	v, _ = spanAttr(got, "surge.lock.key")
	assert.Equal(t, "k", v.AsString())
	v, _ = spanAttr(got, "surge.lock.fence")
	assert.Equal(t, l.Fence(), v.AsInt64())
	assert.Equal(t, codes.Unset, got.Status().Code)

	v, _ = spanAttr(spans[1], "surge.lock.result")
	assert.Equal(t, "not_obtained", v.AsString())
	_, ok := spanAttr(spans[1], "surge.lock.fence")
	assert.False(t, ok)
	assert.False(t, spans[1].Parent().IsValid(), "the caller had no span")

	m, scope, ok := sdk.Metric(t, "surge.lock.wait.duration")
	require.True(t, ok)
	assert.Equal(t, "github.com/surgekit/surge/lock", scope)
	assert.Equal(t, "s", m.Unit)
	h, ok := m.Data.(metricdata.Histogram[float64])
	require.True(t, ok)
	require.NotEmpty(t, h.DataPoints)
	assert.Equal(t, waitBuckets, h.DataPoints[0].Bounds, "seconds, not the SDK's millisecond defaults")
	assert.EqualValues(t, 1, sdk.HistogramCount(t, "surge.lock.wait.duration", resultIs("obtained")))
	assert.EqualValues(t, 1, sdk.HistogramCount(t, "surge.lock.wait.duration", resultIs("not_obtained")))
	assert.EqualValues(t, 2, sdk.HistogramCount(t, "surge.lock.wait.duration"))
	assert.EqualValues(t, 3, sdk.Sum(t, "surge.lock.acquisitions", resultIs("obtained"))) // free, holder, l
	assert.EqualValues(t, 1, sdk.Sum(t, "surge.lock.acquisitions", resultIs("not_obtained")))
}

// A wait that ends on a Redis error marks its span as failed.
func TestTelemetryWaitSpanRecordsError(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	sdk := oteltest.New(t)
	c := New(rdb, otelOptions(sdk))
	holder, err := c.Obtain(ctx, "k", time.Hour, nil)
	require.NoError(t, err)
	c.g.beforeSubscribe = func() { mr.SetError("LOADING") } // the next try fails
	_, err = c.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: time.Hour, Backoff: func(int) time.Duration { return time.Millisecond }})
	require.ErrorContains(t, err, "LOADING")
	mr.SetError("")
	require.NoError(t, holder.Release(ctx))

	spans := sdk.SpansNamed("lock.wait")
	require.Len(t, spans, 1)
	v, _ := spanAttr(spans[0], "surge.lock.result")
	assert.Equal(t, "error", v.AsString())
	assert.Equal(t, codes.Error, spans[0].Status().Code)
	assert.Contains(t, spans[0].Status().Description, "LOADING")
	assert.EqualValues(t, 1, sdk.HistogramCount(t, "surge.lock.wait.duration", resultIs("error")))
	assert.EqualValues(t, 1, sdk.Sum(t, "surge.lock.acquisitions", resultIs("error")))
}

func TestTelemetryRedlockWait(t *testing.T) {
	_, rdbs := miniNodes(t, 3)
	ctx := ctxT(t)
	sdk := oteltest.New(t)
	r := NewRedlock(rdbs, otelOptions(sdk))
	holder, err := r.Obtain(ctx, "k", time.Hour, nil)
	require.NoError(t, err)
	r.g.beforeSubscribe = func() { assert.NoError(t, holder.Release(ctx)) }
	// The backoff (a millisecond) wakes the waiter: Redlock waiters subscribe in the background.
	l, err := r.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: time.Hour, Backoff: func(int) time.Duration { return time.Millisecond }})
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))

	spans := sdk.SpansNamed("lock.wait")
	require.Len(t, spans, 1)
	v, _ := spanAttr(spans[0], "surge.lock.result")
	assert.Equal(t, "obtained", v.AsString())
	assert.EqualValues(t, 1, sdk.HistogramCount(t, "surge.lock.wait.duration", resultIs("obtained")))
	assert.EqualValues(t, 2, sdk.Sum(t, "surge.lock.acquisitions", resultIs("obtained")))
}

// surge.lock.lost counts each lock once when it is known lost, not when it is released.
func TestTelemetryCountsLostLocks(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	sdk := oteltest.New(t)
	c := New(rdb, otelOptions(sdk))

	kept, err := c.Obtain(ctx, "kept", time.Minute, nil)
	require.NoError(t, err)
	require.NoError(t, kept.Release(ctx))

	l, err := c.Obtain(ctx, "k", time.Minute, nil)
	require.NoError(t, err)
	mr.Del("surge:lock:{k}")
	require.ErrorIs(t, l.Refresh(ctx, time.Minute), ErrNotHeld)
	_, err = l.TTL(ctx) // finds it gone again: still one loss
	require.ErrorIs(t, err, ErrNotHeld)
	<-l.Lost()

	// Lost by its validity running out while renewals fail: Do's context ends with the loss.
	defer mr.SetError("")
	err = c.Do(ctx, "d", 30*time.Millisecond, nil, func(ctx context.Context) error {
		mr.SetError("LOADING")
		<-ctx.Done()
		return context.Cause(ctx)
	})
	require.ErrorIs(t, err, ErrLost)

	m, scope, ok := sdk.Metric(t, "surge.lock.lost")
	require.True(t, ok)
	assert.Equal(t, "github.com/surgekit/surge/lock", scope)
	assert.Equal(t, "{lock}", m.Unit)
	assert.EqualValues(t, 2, sdk.Sum(t, "surge.lock.lost"))
}

// With no SDK installed (the global no-op providers) recording allocates nothing.
func TestTelemetryWithoutSDKAllocatesNothing(t *testing.T) {
	tel := newTelemetry(nil, nil)
	ctx := context.Background()
	errs := []error{nil, notObtained("k", nil, nil), context.Canceled}
	allocs := testing.AllocsPerRun(100, func() {
		for _, err := range errs {
			tel.acquired(ctx, err)
		}
		tel.markedLost()
	})
	assert.Zero(t, allocs)
}

// A goroutine that waited only at its Client's gate, and got the lock from the release of the
// goroutine before it, records its wait as obtained, with the fence, like a wait in Redis.
func TestTelemetryWaitAtTheGate(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	sdk := oteltest.New(t)
	c := New(rdb, otelOptions(sdk))
	wait := &ObtainOptions{Wait: time.Hour, Backoff: func(int) time.Duration { return time.Hour }}
	holder, err := c.Obtain(ctx, "k", time.Hour, wait)
	require.NoError(t, err)
	got := make(chan *Lock, 1)
	obtainAsync(t, ctx, c, "k", time.Minute, wait, got)
	waitGateQueue(t, c, "k", 1)
	require.NoError(t, holder.Release(ctx))
	l := <-got
	require.NotNil(t, l)
	require.Equal(t, holder.Fence()+1, l.Fence(), "handed over at the gate")
	require.NoError(t, l.Release(ctx))

	spans := sdk.SpansNamed("lock.wait")
	require.Len(t, spans, 1)
	v, _ := spanAttr(spans[0], "surge.lock.result")
	assert.Equal(t, "obtained", v.AsString())
	v, _ = spanAttr(spans[0], "surge.lock.fence")
	assert.Equal(t, l.Fence(), v.AsInt64())
	assert.EqualValues(t, 1, sdk.HistogramCount(t, "surge.lock.wait.duration", resultIs("obtained")))
	assert.EqualValues(t, 2, sdk.Sum(t, "surge.lock.acquisitions", resultIs("obtained")))
}
