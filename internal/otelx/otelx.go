// Package otelx is what surge's packages share to speak OpenTelemetry through the API only:
// the provider an option names, or the global one when it is nil, and the instrumentation scope
// (the package import path). It imports no SDK: with none installed every call is a no-op.
package otelx

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ScopePrefix starts every instrumentation scope: the scope of package cache is ScopePrefix+"cache".
const ScopePrefix = "github.com/surgekit/surge/"

// Tracer returns the tracer of scope from tp, or from the global provider when tp is nil.
func Tracer(tp trace.TracerProvider, scope string) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(scope)
}

// Meter returns the meter of scope from mp, or from the global provider when mp is nil.
func Meter(mp metric.MeterProvider, scope string) metric.Meter {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return mp.Meter(scope)
}

// Propagator returns p, or the global text-map propagator when p is nil.
func Propagator(p propagation.TextMapPropagator) propagation.TextMapPropagator {
	if p == nil {
		return otel.GetTextMapPropagator()
	}
	return p
}

// Must returns the instrument and drops the error: the OTel API returns a usable (no-op)
// instrument together with any error, and a bad instrument must not stop a cache or a limiter.
func Must[T any](inst T, _ error) T { return inst }
