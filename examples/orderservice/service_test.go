package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
)

// quietServiceFlags are the flags of a test service: a small database without simulated latency
// and no background lag checks or nightly job.
var quietServiceFlags = []string{"-orders", "10", "-db-latency", "0", "-lag-every", "0", "-job-every", "0"}

// newTestService builds (but does not start) the whole service on embedded miniredis and on
// brokers (in-process kfake when empty), parsing args (quietServiceFlags when none), recording
// into tel when not nil. It is closed when t ends.
func newTestService(t *testing.T, brokers string, tel *telemetry, args ...string) *service {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the whole service")
	}
	if len(args) == 0 {
		args = quietServiceFlags
	}
	t.Setenv("REDIS_ADDR", "")
	t.Setenv("KAFKA_BROKERS", brokers)
	cfg, err := parseFlags(args)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Telemetry = tel
	s, err := newService(context.Background(), cfg, io.Discard, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
