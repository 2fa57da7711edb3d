package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// BenchmarkGetOrderHit serves GET /orders/:id for a cached order through the whole router
// (Telemetry, RequestID, Logger, RateLimit, cache local tier), with the OpenTelemetry SDK and
// /metrics the service installs and with no-op providers: what the telemetry costs per request.
//
//	go test -run '^$' -bench GetOrderHit -benchmem ./examples/orderservice/
func BenchmarkGetOrderHit(b *testing.B) {
	b.Setenv("REDIS_ADDR", "")
	b.Setenv("KAFKA_BROKERS", "")
	for _, bc := range []struct {
		name string
		tel  func() *telemetry
	}{
		{"otel-sdk", func() *telemetry {
			t, err := newTelemetry()
			if err != nil {
				b.Fatal(err)
			}
			return t
		}},
		{"no-sdk", func() *telemetry {
			return &telemetry{Tracers: tracenoop.NewTracerProvider(), Meters: metricnoop.NewMeterProvider(), Propagator: propagation.TraceContext{}}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg, err := parseFlags([]string{"-orders", "100", "-db-latency", "0", "-lag-every", "0", "-job-every", "0", "-rate", "1e9"})
			if err != nil {
				b.Fatal(err)
			}
			cfg.Telemetry = bc.tel()
			s, err := newService(context.Background(), cfg, io.Discard, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			h := s.router(slog.New(slog.DiscardHandler), false)
			req := httptest.NewRequest(http.MethodGet, "/orders/7", nil)
			req.Header.Set(apiKeyHeader, "bench")
			for range 2 { // load, then cached
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("HTTP %d", w.Code)
				}
			}
		})
	}
}
