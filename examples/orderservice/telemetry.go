package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// telemetry is what the service hands every surge component: the tracer and meter providers
// and the propagator (W3C traceparent/tracestate and baggage) that carries a trace from an
// incoming request through Kafka to the consumers.
type telemetry struct {
	Tracers    trace.TracerProvider
	Meters     metric.MeterProvider
	Propagator propagation.TextMapPropagator
	// Metrics serves the Prometheus exposition of Meters at /metrics; nil: no /metrics route.
	Metrics http.Handler
	// Shutdown flushes and stops the providers; nil when the caller owns them.
	Shutdown func(context.Context) error
}

// newTelemetry installs the OpenTelemetry SDK: a tracer provider sampling every trace
// (parent-based: a caller's unsampled traceparent stays unsampled) and a meter provider read
// by the OpenTelemetry Prometheus exporter into a registry of its own, served at /metrics.
// Spans are not exported anywhere: their trace ids reach the access log (ginmw.Logger), the
// traceparent response header and the consumers' spans; add an OTLP exporter
// (sdktrace.WithBatcher) to ship them to a tracing backend.
func newTelemetry() (*telemetry, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	return &telemetry{
		Tracers:    tp,
		Meters:     mp,
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Metrics:    promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Shutdown: func(ctx context.Context) error {
			return errors.Join(tp.Shutdown(ctx), mp.Shutdown(ctx))
		},
	}, nil
}
