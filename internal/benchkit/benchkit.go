// Package benchkit holds what surge's own package benchmarks and the peer comparisons in
// internal/benchcmp share, so that both measure the same way: the event payload, the produce
// loop that reports events/s, and an HTTP harness that measures middleware, not recorders.
// Only benchmarks import it.
package benchkit

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
)

// Payload200 is a 200-byte JSON document with realistic entropy: zeros would compress to nothing
// and flatter whichever side sends fewer other bytes. Do not modify it.
var Payload200 = func() []byte {
	rnd := rand.New(rand.NewPCG(1, 2))
	b := []byte(`{"order":"`)
	for len(b) < 198 {
		b = append(b, "abcdefghijklmnopqrstuvwxyz0123456789"[rnd.IntN(36)])
	}
	return append(b, `"}`...)
}()

// Keys returns n keys "key-0" ... "key-<n-1>".
func Keys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	return keys
}

// Produce sends b.N records spread over 1000 keys with send (which calls done with each record's
// result), waits for flush, fails b if any record failed, and reports events/s.
func Produce(b *testing.B, flush func(context.Context) error, send func(ctx context.Context, key string, done func(error))) {
	ctx := context.Background()
	keys := Keys(1000)
	var failures atomic.Int64
	done := func(err error) {
		if err != nil {
			failures.Add(1)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		send(ctx, keys[i%len(keys)], done)
	}
	if err := flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if n := failures.Load(); n > 0 {
		b.Fatalf("%d of %d records failed", n, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// discardWriter is a reusable http.ResponseWriter that keeps only the status.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// Serve measures h answering GET target from 198.51.100.7, after checking once that it answers
// wantCode. The response writer is reused, so the figures are the handler's own.
func Serve(b *testing.B, h http.Handler, target string, wantCode int) {
	b.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	req.RemoteAddr = "198.51.100.7:4711"
	w := &discardWriter{h: http.Header{}}
	h.ServeHTTP(w, req)
	if w.code != wantCode {
		b.Fatalf("GET %s answered %d, want %d", target, w.code, wantCode)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}
