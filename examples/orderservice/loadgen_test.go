package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestSummarise(t *testing.T) {
	var ds []time.Duration
	for i := 1000; i >= 1; i-- { // unsorted on purpose
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := summarise(ds)
	want := latencies{N: 1000, P50: 500 * time.Millisecond, P99: 990 * time.Millisecond, P999: 999 * time.Millisecond}
	if got != want {
		t.Errorf("summarise(1..1000 ms) = %+v, want %+v", got, want)
	}
	if got := summarise([]time.Duration{7}); got != (latencies{N: 1, P50: 7, P99: 7, P999: 7}) {
		t.Errorf("summarise of one = %+v", got)
	}
	if got := summarise(nil); got != (latencies{}) {
		t.Errorf("summarise(nil) = %+v, want zero", got)
	}
}

func TestAppDuration(t *testing.T) {
	for _, tc := range []struct {
		h    string
		want time.Duration
	}{
		{"app;dur=0.042", 42 * time.Microsecond},
		{"cache;desc=\"local\", app;dur=1.5", 1500 * time.Microsecond},
		{"app;desc=x;dur=2", 2 * time.Millisecond},
		{"", -1},
		{"app", -1},
		{"db;dur=3", -1},
		{"app;dur=-1", -1},
		{"app;dur=abc", -1},
	} {
		if got := appDuration(tc.h); got != tc.want {
			t.Errorf("appDuration(%q) = %v, want %v", tc.h, got, tc.want)
		}
	}
}

func TestPayableTakesEachIDOnce(t *testing.T) {
	p := newPayable(func(yield func(string) bool) {
		for _, id := range []string{"1", "2"} {
			if !yield(id) {
				return
			}
		}
	})
	draws := []string{"3", "1", "1", "2"}
	next := func() string { d := draws[0]; draws = append(draws[1:], "9"); return d }
	if id, ok := p.take(next); !ok || id != "1" {
		t.Fatalf("take = %q, %v; want 1 (3 is not payable)", id, ok)
	}
	if id, ok := p.take(next); !ok || id != "2" {
		t.Fatalf("take = %q, %v; want 2 (1 was taken)", id, ok)
	}
	if id, ok := p.take(next); ok {
		t.Fatalf("take = %q after both were taken, want none", id)
	}
}

// gatedStore holds Get of one id until release is closed.
type gatedStore struct {
	store
	id      string
	release chan struct{}
}

func (g gatedStore) Get(ctx context.Context, id string) (Order, error) {
	if id == g.id {
		<-g.release
	}
	return g.store.Get(ctx, id)
}

// TestCacheHeader checks the X-Cache and Server-Timing headers the demo's table is built on:
// the first read of an order waits for the database (miss), the next is a hit, an id the Bloom
// guard rules out is a hit, and reads that join a load already running are misses too.
func TestCacheHeader(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, "", nil, "-orders", "100", "-db-latency", "50ms", "-lag-every", "0")
	gate := gatedStore{store: s.db, id: "8", release: make(chan struct{})}
	s.db = gate
	srv := httptest.NewServer(s.router(slog.New(slog.DiscardHandler), false))
	defer srv.Close()
	hc := srv.Client()

	read := func(id string) (cached string, srvTime time.Duration) {
		t.Helper()
		status, cached, _, srvTime, err := get(ctx, hc, srv.URL+"/orders/"+id, "test")
		if err != nil || (status != http.StatusOK && status != http.StatusNotFound) {
			t.Fatalf("GET /orders/%s: HTTP %d, %v", id, status, err)
		}
		return cached, srvTime
	}
	if c, d := read("7"); c != "miss" || d < 50*time.Millisecond {
		t.Errorf("first read: X-Cache %q, service time %v; want miss, at least the 50ms query", c, d)
	}
	if c, d := read("7"); c != "hit" || d < 0 {
		t.Errorf("second read: X-Cache %q, service time %v; want hit, with a Server-Timing", c, d)
	}
	if c, _ := read("123456789"); c != "hit" {
		t.Errorf("unknown id: X-Cache %q, want hit (the Bloom guard answers)", c)
	}

	// Ten concurrent first reads of order 8, whose query is held until all ten wait: one load,
	// nine joined it, and all ten waited for the database.
	st := s.orders.Stats()
	results := make(chan string, 10)
	for range 10 {
		go func() {
			_, cached, _, _, err := get(ctx, hc, srv.URL+"/orders/8", "test")
			if err != nil {
				cached = err.Error()
			}
			results <- cached
		}()
	}
	for i := 0; s.orders.Stats().SharedLoads-st.SharedLoads < 9; i++ {
		if i == 1000 {
			t.Fatalf("after 10s, %d of 9 readers joined the load", s.orders.Stats().SharedLoads-st.SharedLoads)
		}
		time.Sleep(10 * time.Millisecond) // polling a counter: the cache has no hook for "joined"
	}
	close(gate.release)
	for range 10 {
		if c := <-results; c != "miss" {
			t.Errorf("read that waited for the load: X-Cache %q, want miss", c)
		}
	}
	if c, _ := read("8"); c != "hit" {
		t.Errorf("read after the load: X-Cache %q, want hit", c)
	}
}
