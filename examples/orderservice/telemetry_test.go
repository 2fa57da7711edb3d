package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/surgekit/surge/internal/oteltest"
)

// TestOneTraceFromRequestToConsumers sends POST /orders with a traceparent and follows its trace
// id: the server span continues it, the event the order's transaction wrote into the outbox
// carries it, and after the relay published the event through Kafka, the span of each
// consumer's handler (inventory and cache invalidation) belongs to the same trace.
func TestOneTraceFromRequestToConsumers(t *testing.T) {
	sdk := oteltest.New(t)
	s := newTestService(t, "", &telemetry{Tracers: sdk.TracerProvider, Meters: sdk.MeterProvider, Propagator: sdk.Propagator})
	s.start()
	srv := httptest.NewServer(s.router(slog.New(slog.DiscardHandler), false))
	defer srv.Close()
	token, err := signToken("tester", time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader(`{"item":"webcam","quantity":1,"amount_cents":5900}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", "trace-1")
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /orders: HTTP %d %s", resp.StatusCode, body)
	}
	if tp := resp.Header.Get("traceparent"); !strings.Contains(tp, traceID) {
		t.Errorf("response traceparent %q, want trace id %s", tp, traceID)
	}

	inTrace := func(name string) []string { // kinds of the ended spans called name in the trace
		var kinds []string
		for _, sp := range sdk.SpansNamed(name) {
			if sp.SpanContext().TraceID().String() == traceID {
				kinds = append(kinds, sp.SpanKind().String())
			}
		}
		return kinds
	}
	for i := 0; len(inTrace("process "+ordersTopic)) < 2; i++ {
		if i == 1000 {
			var names []string
			for _, sp := range sdk.Ended() {
				names = append(names, sp.Name()+"@"+sp.SpanContext().TraceID().String())
			}
			t.Fatalf("after 10s, %d of 2 consumer spans in trace %s; ended spans: %v", len(inTrace("process "+ordersTopic)), traceID, names)
		}
		time.Sleep(10 * time.Millisecond) // polling the span recorder: spans end after the handlers return
	}
	if k := inTrace("POST /orders"); len(k) != 1 || k[0] != trace.SpanKindServer.String() {
		t.Errorf("server spans of POST /orders in the trace: %v, want one of kind server", k)
	}
	for _, k := range inTrace("process " + ordersTopic) {
		if k != trace.SpanKindConsumer.String() {
			t.Errorf("consumer span of kind %s, want consumer", k)
		}
	}
}
