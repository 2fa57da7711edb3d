// Package oteltest gives surge's tests an OpenTelemetry SDK with in-memory exporters: a tracer
// provider whose ended spans are recorded, a meter provider read on demand, and small lookups
// for asserting metric names and attributes. Only tests and examples import it (it imports the
// SDK, which the library packages never do).
package oteltest

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// SDK is one test's tracer and meter providers with in-memory readers.
type SDK struct {
	TracerProvider *sdktrace.TracerProvider
	MeterProvider  *sdkmetric.MeterProvider
	Spans          *tracetest.SpanRecorder
	Reader         *sdkmetric.ManualReader
	// Propagator is W3C trace context + baggage, for tests that carry a trace across a boundary.
	Propagator propagation.TextMapPropagator
}

// New returns providers that record everything; they are shut down when t ends. It does not
// touch the global providers: pass TracerProvider/MeterProvider in the options under test.
func New(t testing.TB) *SDK {
	t.Helper()
	spans := tracetest.NewSpanRecorder()
	reader := sdkmetric.NewManualReader()
	s := &SDK{
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans), sdktrace.WithSampler(sdktrace.AlwaysSample())),
		MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		Spans:          spans,
		Reader:         reader,
		Propagator:     propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}
	t.Cleanup(func() {
		_ = s.TracerProvider.Shutdown(context.Background())
		_ = s.MeterProvider.Shutdown(context.Background())
	})
	return s
}

// Ended returns the spans that have ended so far.
func (s *SDK) Ended() []sdktrace.ReadOnlySpan { return s.Spans.Ended() }

// SpansNamed returns the ended spans called name.
func (s *SDK) SpansNamed(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, sp := range s.Spans.Ended() {
		if sp.Name() == name {
			out = append(out, sp)
		}
	}
	return out
}

// Collect reads every metric recorded so far.
func (s *SDK) Collect(t testing.TB) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := s.Reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("oteltest: collect metrics: %v", err)
	}
	return rm
}

// Metric returns the metric called name and the scope that recorded it; ok is false when no
// scope recorded it.
func (s *SDK) Metric(t testing.TB, name string) (m metricdata.Metrics, scope string, ok bool) {
	t.Helper()
	rm := s.Collect(t)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, sm.Scope.Name, true
			}
		}
	}
	return metricdata.Metrics{}, "", false
}

// matches reports whether set holds every attribute of want (extra attributes are allowed).
func matches(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		v, ok := set.Value(kv.Key)
		if !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// Sum adds up the points of the counter (or up-down counter) name whose attributes include every
// one of want; 0 when there is none. Integer and float sums are both read.
func (s *SDK) Sum(t testing.TB, name string, want ...attribute.KeyValue) float64 {
	t.Helper()
	m, _, ok := s.Metric(t, name)
	if !ok {
		return 0
	}
	var total float64
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				total += float64(p.Value)
			}
		}
	case metricdata.Sum[float64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				total += p.Value
			}
		}
	default:
		t.Fatalf("oteltest: metric %s is a %T, not a sum", name, m.Data)
	}
	return total
}

// Gauge returns the last value of the gauge name whose attributes include every one of want,
// and whether one was found.
func (s *SDK) Gauge(t testing.TB, name string, want ...attribute.KeyValue) (float64, bool) {
	t.Helper()
	m, _, ok := s.Metric(t, name)
	if !ok {
		return 0, false
	}
	switch d := m.Data.(type) {
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				return float64(p.Value), true
			}
		}
	case metricdata.Gauge[float64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				return p.Value, true
			}
		}
	default:
		t.Fatalf("oteltest: metric %s is a %T, not a gauge", name, m.Data)
	}
	return 0, false
}

// HistogramCount returns how many values the histogram name recorded under attributes that
// include every one of want.
func (s *SDK) HistogramCount(t testing.TB, name string, want ...attribute.KeyValue) uint64 {
	t.Helper()
	m, _, ok := s.Metric(t, name)
	if !ok {
		return 0
	}
	var n uint64
	switch d := m.Data.(type) {
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				n += p.Count
			}
		}
	case metricdata.Histogram[int64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				n += p.Count
			}
		}
	default:
		t.Fatalf("oteltest: metric %s is a %T, not a histogram", name, m.Data)
	}
	return n
}
