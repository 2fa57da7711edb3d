package lock

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/surgekit/surge/internal/otelx"
)

// Telemetry names: the OpenTelemetry contract of the package (see the package documentation).
const (
	scopeName          = otelx.ScopePrefix + "lock"
	metricAcquisitions = "surge.lock.acquisitions"
	metricWaitDuration = "surge.lock.wait.duration"
	metricLost         = "surge.lock.lost"
	attrResult         = "surge.lock.result"
	spanWait           = "lock.wait"
	attrKey            = "surge.lock.key"   // span only: a key is too many values for a metric
	attrFence          = "surge.lock.fence" // span only, when obtained
)

// waitBuckets are the default bucket boundaries (seconds) of surge.lock.wait.duration: the SDK's
// own defaults (0, 5, 10, 25... up to 10000) are made for milliseconds. A hand-over takes about a
// millisecond; a wait may last as long as ObtainOptions.Wait. A View in the SDK overrides them.
var waitBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// result is the value of surge.lock.result: how an Obtain (or Do's acquisition) ended.
type result uint8

const (
	resObtained    result = iota // the caller holds the lock
	resNotObtained               // someone else kept it (the error wraps ErrNotObtained)
	resError                     // any other error: Redis, ErrNotReplicated, invalid options
	numResults
)

var resultNames = [numResults]string{"obtained", "not_obtained", "error"}

// resultOf classifies the error an Obtain returns.
func resultOf(err error) result {
	switch {
	case err == nil:
		return resObtained
	case errors.Is(err, ErrNotObtained):
		return resNotObtained
	default:
		return resError
	}
}

// telemetry is a Client's or Redlock's instruments, resolved once by Options.resolve. The option
// slices are built once per result, so recording allocates nothing and, with no SDK installed,
// costs an atomic load per instrument.
type telemetry struct {
	tracer       trace.Tracer
	acquisitions metric.Int64Counter
	waits        metric.Float64Histogram
	lost         metric.Int64Counter
	add          [numResults][]metric.AddOption
	rec          [numResults][]metric.RecordOption
	attr         [numResults]attribute.KeyValue
}

// newTelemetry resolves the instruments from tp and mp (nil: the global providers).
func newTelemetry(tp trace.TracerProvider, mp metric.MeterProvider) *telemetry {
	m := otelx.Meter(mp, scopeName)
	t := &telemetry{
		tracer: otelx.Tracer(tp, scopeName),
		acquisitions: otelx.Must(m.Int64Counter(metricAcquisitions,
			metric.WithDescription("Lock acquisitions (Obtain and Do), by result"),
			metric.WithUnit("{acquisition}"))),
		waits: otelx.Must(m.Float64Histogram(metricWaitDuration,
			metric.WithDescription("Time an Obtain or Do that waited for the lock took, from its call to its return, by result"),
			metric.WithUnit("s"),
			metric.WithExplicitBucketBoundaries(waitBuckets...))),
		lost: otelx.Must(m.Int64Counter(metricLost,
			metric.WithDescription("Locks known lost by their holder (Lock.Lost closed)"),
			metric.WithUnit("{lock}"))),
	}
	for r := range numResults {
		t.attr[r] = attribute.String(attrResult, resultNames[r])
		set := attribute.NewSet(t.attr[r])
		t.add[r] = []metric.AddOption{metric.WithAttributeSet(set)}
		t.rec[r] = []metric.RecordOption{metric.WithAttributeSet(set)}
	}
	return t
}

// acquired counts one Obtain or Do acquisition that returned err.
func (t *telemetry) acquired(ctx context.Context, err error) {
	t.acquisitions.Add(ctx, 1, t.add[resultOf(err)]...)
}

// startWait opens the span of a wait, backdated to begin (the call of Obtain).
func (t *telemetry) startWait(ctx context.Context, key string, begin time.Time) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, spanWait, trace.WithTimestamp(begin),
		trace.WithAttributes(attribute.String(attrKey, key)))
}

// waited records the outcome of a wait that began at begin and ends its span.
func (t *telemetry) waited(ctx context.Context, span trace.Span, begin time.Time, l *Lock, att attempt) {
	r := resObtained
	if !att.ok {
		r = resultOf(att.err)
	}
	t.waits.Record(ctx, time.Since(begin).Seconds(), t.rec[r]...)
	span.SetAttributes(t.attr[r])
	switch r {
	case resObtained:
		span.SetAttributes(attribute.Int64(attrFence, l.fence))
	case resError:
		span.RecordError(att.err)
		span.SetStatus(codes.Error, att.err.Error())
	}
	span.End()
}

// markedLost counts one lock known lost.
func (t *telemetry) markedLost() { t.lost.Add(context.Background(), 1) }
