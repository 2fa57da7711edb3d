package cache

// OpenTelemetry: the request counter, the load histogram and the load span (DESIGN §6). Only the
// OTel API is used; with no SDK installed every instrument is a no-op.
//
// surge.cache.requests is an asynchronous (observable) counter: the read paths only bump atomic
// counters the Cache keeps anyway (a local hit bumps the one Stats.LocalHits reads, and nothing
// else), and the SDK reads them when it collects. A hit therefore costs the same with or without
// an SDK, and no more than before telemetry existed.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/surgekit/surge/internal/otelx"
)

// Telemetry names: the OpenTelemetry contract of the package.
const (
	scopeName = otelx.ScopePrefix + "cache"

	metricRequests     = "surge.cache.requests"
	metricLoadDuration = "surge.cache.load.duration"

	attrName      = "surge.cache.name"   // Options.Prefix
	attrResult    = "surge.cache.result" // one of resultNames
	attrErrorType = "error.type"         // a failed load: one of loadErrNames
	attrLoadKeys  = "surge.cache.load.keys"

	spanLoad = "cache.load"
)

// reqResult is how one requested key was answered.
type reqResult uint8

const (
	resLocalHit    reqResult = iota // the local tier (a value or a negative entry)
	resRedisHit                     // a fresh value from Redis
	resNegativeHit                  // a negative entry from Redis, or the Guard ruled the key out
	resStale                        // a value past RefreshAfter, served while a refresh runs
	resMiss                         // nothing cached: the key waited for a load (Get: ErrMiss)
	resError                        // no answer: a Redis error returned, ctx ended during the read, closed, bad key or loader
	numResults
)

var resultNames = [numResults]string{"local_hit", "redis_hit", "negative_hit", "stale", "miss", "error"}

// loadErr is the error.type of a failed load (a fixed set, so attribute sets are built once).
type loadErr uint8

const (
	loadErrPanic    loadErr = iota // the loader panicked
	loadErrTimeout                 // LoadTimeout ran out
	loadErrCanceled                // the load's context was cancelled (Close)
	loadErrOther                   // any other loader error
	numLoadErrs
)

var loadErrNames = [numLoadErrs]string{"panic", "timeout", "canceled", "_OTHER"}

func loadErrOf(err error) loadErr {
	switch {
	case errors.Is(err, ErrLoaderPanic):
		return loadErrPanic
	case errors.Is(err, context.DeadlineExceeded):
		return loadErrTimeout
	case errors.Is(err, context.Canceled):
		return loadErrCanceled
	}
	return loadErrOther
}

// loadBuckets are the explicit bounds (seconds) of surge.cache.load.duration: the OTel HTTP
// duration advice with 1 ms and 2.5 ms below it, loads being database reads.
var loadBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// telemetry is a Cache's instruments, resolved once by New, and the counts the request counter
// reports.
type telemetry struct {
	tracer   trace.Tracer
	requests metric.Int64ObservableCounter
	loadDur  metric.Float64Histogram
	reg      metric.Registration // nil when registration failed
	unreg    sync.Once

	counts    [numResults]atomic.Uint64 // every result but resLocalHit, read from localHits
	localHits *atomic.Uint64            // the Stats counter

	observeOpts [numResults][]metric.ObserveOption
	loadOK      []metric.RecordOption
	loadFailed  [numLoadErrs][]metric.RecordOption
	spanOpts    []trace.SpanStartOption
}

// init resolves the instruments of a Cache named name (its Prefix) from tp and mp (nil: the
// global providers) and registers the callback of the request counter; localHits is the counter
// of local-tier hits.
func (t *telemetry) init(tp trace.TracerProvider, mp metric.MeterProvider, name string, localHits *atomic.Uint64) {
	t.localHits = localHits
	t.tracer = otelx.Tracer(tp, scopeName)
	meter := otelx.Meter(mp, scopeName)
	t.requests = otelx.Must(meter.Int64ObservableCounter(metricRequests,
		metric.WithDescription("Keys requested through Fetch, FetchMany and Get, by how they were answered."),
		metric.WithUnit("{request}")))
	t.loadDur = otelx.Must(meter.Float64Histogram(metricLoadDuration,
		metric.WithDescription("Duration of loader calls (one per Loader or BatchLoader call)."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(loadBuckets...)))
	nameKV := attribute.String(attrName, name)
	for r := range numResults {
		t.observeOpts[r] = []metric.ObserveOption{metric.WithAttributeSet(attribute.NewSet(nameKV, attribute.String(attrResult, resultNames[r])))}
	}
	t.loadOK = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(nameKV))}
	for e := range numLoadErrs {
		t.loadFailed[e] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(nameKV, attribute.String(attrErrorType, loadErrNames[e])))}
	}
	t.spanOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(nameKV)}
	if reg, err := meter.RegisterCallback(t.observe, t.requests); err == nil {
		t.reg = reg
	}
}

// observe reports the request counts.
func (t *telemetry) observe(_ context.Context, o metric.Observer) error {
	for r := range numResults {
		var n uint64
		if r == resLocalHit {
			n = t.localHits.Load()
		} else {
			n = t.counts[r].Load()
		}
		o.ObserveInt64(t.requests, int64(n), t.observeOpts[r]...)
	}
	return nil
}

// count records n keys answered with r.
func (t *telemetry) count(r reqResult, n int) {
	if n > 0 {
		t.counts[r].Add(uint64(n))
	}
}

// close unregisters the request counter's callback (so the provider drops its reference to the
// Cache); idempotent.
func (t *telemetry) close() {
	t.unreg.Do(func() {
		if t.reg != nil {
			_ = t.reg.Unregister()
		}
	})
}

// startLoad opens the span of one loader call over n keys.
func (t *telemetry) startLoad(ctx context.Context, n int) (context.Context, trace.Span) {
	ctx, span := t.tracer.Start(ctx, spanLoad, t.spanOpts...)
	if span.IsRecording() {
		span.SetAttributes(attribute.Int(attrLoadKeys, n))
	}
	return ctx, span
}

// endLoad records a loader call that took d and failed with err (nil: success, including "not
// found") and ends its span.
func (t *telemetry) endLoad(ctx context.Context, span trace.Span, d time.Duration, err error) {
	if err == nil {
		t.loadDur.Record(ctx, d.Seconds(), t.loadOK...)
		span.End()
		return
	}
	e := loadErrOf(err)
	t.loadDur.Record(ctx, d.Seconds(), t.loadFailed[e]...)
	if span.IsRecording() {
		span.SetAttributes(attribute.String(attrErrorType, loadErrNames[e]))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
