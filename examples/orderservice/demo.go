package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
)

// The published figures of a typical Go + Redis service, before and after it added a cache:
// the bar surge's row is set beside.
const (
	typicalHitBefore, typicalHitAfter   = 0.48, 0.92
	typicalMeanBefore, typicalMeanAfter = 128 * time.Millisecond, 8 * time.Millisecond
)

// The start-up warm-up: FetchMany asks for warmBatch orders at a time, warmParallel at once. A
// pass after the first loads only what the one before failed to cache (when a slow Redis let a
// batch's leases run out); the second always runs, and passes stop once one loads nothing,
// after warmPasses, or when a third would start after warmBudget.
const (
	warmBatch, warmParallel, warmPasses = 200, 4, 3
	warmBudget                          = 10 * time.Second
)

// runDemo starts the service on a random loopback port, runs the write tour, then drives
// GET /orders/:id twice with the same load (and the same stream of payments beside it), first
// with the cache bypassed and then through surge after warming it with FetchMany, runs the
// nightly job from two "instances" at once, and prints the comparison.
func runDemo(ctx context.Context, cfg config) error {
	out := os.Stdout
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	access := slog.New(slog.DiscardHandler) // one line per request would drown the table
	dist := fmt.Sprintf("Zipf-distributed (s=%.2f: a few orders are read far more than the rest)", cfg.Zipf)
	if cfg.Uniform {
		dist = "uniformly distributed"
	}
	fmt.Fprintf(out, "orderservice demo: %d orders, database latency %v; per phase %d clients, each pausing ~%v between reads;\n",
		cfg.Orders, cfg.DBLatency, cfg.Clients, cfg.Think)
	fmt.Fprintf(out, "  ids %s, plus %.1f%% ids that do not exist;\n", dist, 100*cfg.Missing)
	if cfg.Writes > 0 {
		fmt.Fprintf(out, "  beside the reads, %g orders/s paid (PUT /orders/:id/pay, which deletes the cached order), ids drawn alike;\n", cfg.Writes)
	} else {
		fmt.Fprintf(out, "  reads only (-writes 0);\n")
	}
	fmt.Fprintf(out, "  each phase runs a warm-up (until the hit rate settles, at most %v) and is then measured for %v;\n", cfg.Warmup, cfg.Duration)
	fmt.Fprintf(out, "  before surge's phase the cache is warmed with FetchMany over every order, as a service warms at start\n")
	cfg.JobEvery = 0 // the demo runs the job itself, once
	s, err := newService(ctx, cfg, out, log)
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(out, "rate limit: %s per %s\n", s.limName, apiKeyHeader)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var current atomic.Pointer[gin.Engine]
	current.Store(s.router(access, false))
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { current.Load().ServeHTTP(w, r) }),
		ReadHeaderTimeout: 5 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-served
	}()
	s.start()
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(out, "service on %s\n\n", base)

	if err := writeTour(ctx, s, base, out); err != nil {
		return fmt.Errorf("write tour: %w", err)
	}

	token, err := signToken("demo-payments", time.Hour)
	if err != nil {
		return err
	}
	pay := newPayable(s.db.Pending())
	zipf := cfg.Zipf
	if cfg.Uniform {
		zipf = 0
	}
	live := isTerminal(out)
	phase := func(name string, bypass bool) loadResult {
		current.Store(s.router(access, bypass))
		st := s.orders.Stats()
		r := runLoad(ctx, loadConfig{
			Name: name, BaseURL: base, Orders: cfg.Orders, Missing: cfg.Missing, Zipf: zipf,
			Clients: cfg.Clients, Think: cfg.Think, Warmup: cfg.Warmup, Duration: cfg.Duration,
			Writes: cfg.Writes, Payable: pay, Token: token, Seed: cfg.Seed, Queries: s.db.Queries,
			Progress: out, Live: live,
		})
		after := s.orders.Stats()
		r.CacheLine = fmt.Sprintf("local hits %d, redis hits %d, negative hits %d, misses %d, loads %d (shared %d), guard rejects %d",
			after.LocalHits-st.LocalHits, after.RedisHits-st.RedisHits, after.NegativeHits-st.NegativeHits,
			after.Misses-st.Misses, after.Loads-st.Loads, after.SharedLoads-st.SharedLoads, after.GuardRejects-st.GuardRejects)
		return r
	}
	fmt.Fprintln(out, "load: GET /orders/:id")
	noCache := phase("no cache", true)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	warm, err := warmCache(ctx, s)
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	fmt.Fprintf(out, "  surge    warm-up at start: %s\n", warm)
	withSurge := phase("surge", false)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	fmt.Fprintf(out, "  surge cache, whole phase: %s\n", withSurge.CacheLine)

	if err := nightlyJob(ctx, s, out); err != nil {
		return err
	}
	if r, err := s.lag.Check(ctx); err == nil {
		fmt.Fprintf(out, "lag monitor: group %s, %d members, total lag %d, status %s\n", r.Group, r.Members, r.TotalLag, r.Status)
	} else {
		fmt.Fprintf(out, "lag monitor: check failed: %v\n", err)
	}
	printTable(out, noCache, withSurge)
	if n := noCache.Errors + withSurge.Errors; n > 0 {
		first := noCache.FirstError
		if first == "" {
			first = withSurge.FirstError
		}
		return fmt.Errorf("%d request errors (first: %s)", n, first)
	}
	return nil
}

// warmCache fills the cache with every order the way a service warms its working set at
// start: cache.FetchMany in batches of warmBatch ids, warmParallel at a time, each batch one
// database query for the ids not cached yet; then passes again until a pass loads nothing (see
// warmPasses). It returns a line saying what it did.
func warmCache(ctx context.Context, s *service) (string, error) {
	ids := slices.Collect(s.db.IDs())
	q0, t0 := s.db.Queries(), time.Now()
	var loaded []int64 // ids loaded from the database, per pass
	for pass := 1; pass <= warmPasses; pass++ {
		if pass > 1 && loaded[len(loaded)-1] == 0 || pass > 2 && time.Since(t0) >= warmBudget {
			break
		}
		var (
			wg       sync.WaitGroup
			slots    = make(chan struct{}, warmParallel)
			n        atomic.Int64
			firstErr atomic.Pointer[error]
		)
		load := func(ctx context.Context, ids []string) (map[string]Order, error) {
			n.Add(int64(len(ids)))
			return s.loadMany(ctx, ids)
		}
		for batch := range slices.Chunk(ids, warmBatch) {
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				if _, err := s.orders.FetchMany(ctx, batch, load); err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
			})
		}
		wg.Wait()
		if p := firstErr.Load(); p != nil {
			return "", *p
		}
		loaded = append(loaded, n.Load())
	}
	line := fmt.Sprintf("cache.FetchMany of all %d orders in batches of %d, %d at a time: %d database queries, %v",
		len(ids), warmBatch, warmParallel, s.db.Queries()-q0, time.Since(t0).Round(10*time.Millisecond))
	switch last := loaded[len(loaded)-1]; {
	case len(loaded) == 2 && last == 0:
		line += "; a second pass found every order cached"
	case last == 0:
		line += fmt.Sprintf("; its passes loaded %v orders, the last none", loaded)
	default:
		line += fmt.Sprintf("; its passes loaded %v orders (the last still found %d uncached)", loaded, last)
	}
	return line, nil
}

// writeTour exercises the write path over HTTP: JWT, Idempotency, events and consumers.
func writeTour(ctx context.Context, s *service, base string, out io.Writer) error {
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	var traceparent string // of the last answer
	call := func(method, path, token, idemKey, body string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		if err != nil {
			return 0, "", err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if idemKey != "" {
			req.Header.Set("Idempotency-Key", idemKey)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		traceparent = resp.Header.Get("traceparent")
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(bytes.TrimSpace(b)), err
	}

	code, _, err := call(http.MethodPost, "/orders", "", "", `{"item":"mouse","quantity":1,"amount_cents":2500}`)
	if err != nil {
		return err
	}
	if code != http.StatusUnauthorized {
		return fmt.Errorf("POST /orders without a token: HTTP %d, want 401", code)
	}
	code, token, err := call(http.MethodGet, "/token?sub=demo-customer", "", "", "")
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("GET /token: HTTP %d: %v", code, err)
	}

	const created, paid = 5, 3
	var (
		ids        []string
		firstTrace string // the trace id of the first POST /orders
	)
	for i := range created {
		body := fmt.Sprintf(`{"item":"keyboard","quantity":%d,"amount_cents":%d}`, 1+i%2, 4900+100*i)
		code, resp, err := call(http.MethodPost, "/orders", token, fmt.Sprintf("tour-%d-%d", time.Now().UnixNano(), i), body)
		if err != nil || code != http.StatusCreated {
			return fmt.Errorf("POST /orders: HTTP %d %s: %v", code, resp, err)
		}
		ids = append(ids, jsonField(resp, "id"))
		if i == 0 {
			if parts := strings.Split(traceparent, "-"); len(parts) == 4 {
				firstTrace = parts[1]
			}
		}
	}
	// A client retry after a lost response, same Idempotency-Key: replayed, no second order.
	retryKey := fmt.Sprintf("tour-retry-%d", time.Now().UnixNano())
	var replayed []string
	for range 2 {
		code, resp, err := call(http.MethodPost, "/orders", token, retryKey, `{"item":"webcam","quantity":1,"amount_cents":5900}`)
		if err != nil || code != http.StatusCreated {
			return fmt.Errorf("POST /orders (retried): HTTP %d %s: %v", code, resp, err)
		}
		replayed = append(replayed, jsonField(resp, "id"))
	}
	for _, id := range ids[:paid] {
		if code, resp, err := call(http.MethodPut, "/orders/"+id+"/pay", token, "", ""); err != nil || code != http.StatusOK {
			return fmt.Errorf("PUT /orders/%s/pay: HTTP %d %s: %v", id, code, resp, err)
		}
	}
	code, _, err = call(http.MethodPut, "/orders/"+ids[0]+"/pay", token, "", "")
	if err != nil || code != http.StatusConflict {
		return fmt.Errorf("paying order %s twice: HTTP %d, want 409: %v", ids[0], code, err)
	}

	// Wait for both consumers to see every event (the write path published created+1+paid).
	want := int64(created + 1 + paid)
	deadline := time.Now().Add(15 * time.Second)
	for s.inv.applied.Load() < want || s.invals.Load() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("consumers saw %d (inventory) and %d (cache) of %d events after 15s", s.inv.applied.Load(), s.invals.Load(), want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	fmt.Fprintf(out, "writes: POST without a token -> 401; %d orders created with a JWT (%s..%s); a retried POST with one Idempotency-Key\n",
		created, ids[0], ids[len(ids)-1])
	fmt.Fprintf(out, "        -> same order twice (%s, %s); %d paid, paying again -> 409\n", replayed[0], replayed[1], paid)
	rs := s.relay.Stats()
	fmt.Fprintf(out, "events: written to the outbox in each order's transaction; the relay published %d in %d batches (%d failed rounds);\n",
		rs.Published, rs.Batches, rs.Failures)
	fmt.Fprintf(out, "        inventory consumer applied %d, cache-invalidation consumer dropped %d keys\n",
		s.inv.applied.Load(), s.invals.Load())
	fmt.Fprintf(out, "trace: POST /orders for order %s ran in trace %s (its traceparent response header and the access log say so);\n",
		ids[0], firstTrace)
	fmt.Fprintf(out, "       through the outbox and Kafka, the inventory consumer's span for its OrderCreated ran in trace %s\n",
		s.inv.traceOf(OrderCreated, ids[0]))
	return rateLimitBurst(ctx, s, base, out)
}

// rateLimitBurst shows the per-client limit at work: one API key sends three bursts' worth of
// requests as fast as 32 connections allow.
func rateLimitBurst(ctx context.Context, s *service, base string, out io.Writer) error {
	n := 3 * max(1, int(s.cfg.Rate))
	tr := &http.Transport{MaxIdleConnsPerHost: 32}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var (
		next, allowed, limited atomic.Int64
		firstErr               atomic.Pointer[error]
		wg                     sync.WaitGroup
	)
	start := time.Now()
	for range 32 {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				status, _, _, _, err := get(ctx, hc, base+"/orders/1", "tour-burst")
				switch {
				case err != nil:
					firstErr.CompareAndSwap(nil, &err)
				case status == http.StatusTooManyRequests:
					limited.Add(1)
				case status == http.StatusOK:
					allowed.Add(1)
				default:
					err := fmt.Errorf("GET /orders/1: HTTP %d", status)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return fmt.Errorf("rate-limit burst: %w", *p)
	}
	fmt.Fprintf(out, "rate limit: one API key sent %d requests in %v: %d allowed, %d answered 429 (limit %g/s per key)\n\n",
		n, time.Since(start).Round(time.Millisecond), allowed.Load(), limited.Load(), s.cfg.Rate)
	return nil
}

// nightlyJob runs the expire-unpaid job from two "instances" at the same moment: lock.Do lets
// one of them run it.
func nightlyJob(ctx context.Context, s *service, out io.Writer) error {
	type outcome struct {
		ran     bool
		expired int
		err     error
	}
	var (
		wg  sync.WaitGroup
		res [2]outcome
	)
	for i, who := range []string{"instance A", "instance B"} {
		wg.Go(func() {
			ran, n, err := s.expireUnpaid(ctx, who)
			res[i] = outcome{ran, n, err}
		})
	}
	wg.Wait()
	line := "nightly job, started by instances A and B at once:"
	for i, r := range res {
		who := string(rune('A' + i))
		switch {
		case r.err != nil:
			return fmt.Errorf("nightly job on instance %s: %w", who, r.err)
		case r.ran:
			line += fmt.Sprintf(" %s held the lock and expired %d unpaid orders;", who, r.expired)
		default:
			line += fmt.Sprintf(" %s found the lock held and skipped;", who)
		}
	}
	fmt.Fprintln(out, strings.TrimSuffix(line, ";"))
	return nil
}

// printTable prints the comparison, with the published figures of a typical Go + Redis
// service as the bar.
func printTable(out io.Writer, a, b loadResult) {
	pct := func(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }
	num := func(n int64) string { return fmt.Sprintf("%d", n) }
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }
	lat := func(l latencies) string {
		if l.N == 0 {
			return "-"
		}
		return ms(l.P50) + "/" + ms(l.P99) + "/" + ms(l.P999)
	}
	rows := [][4]string{
		{"", a.Name, b.Name, "typical Go + Redis service, before -> after its cache (published)"},
		{"requests/s", fmt.Sprintf("%.0f", a.RPS()), fmt.Sprintf("%.0f", b.RPS()), ""},
		{"hit rate", pct(a.HitRate()), pct(b.HitRate()), fmt.Sprintf("%.0f%% -> %.0f%%", 100*typicalHitBefore, 100*typicalHitAfter)},
		{"mean latency", fmtMs(a.Mean), fmtMs(b.Mean), fmt.Sprintf("%v -> %v", fmtDur(typicalMeanBefore), fmtDur(typicalMeanAfter))},
		{"  in the service", fmtMs(a.MeanServer), fmtMs(b.MeanServer), ""},
		{"all p50/p99/p999 ms", lat(a.All), lat(b.All), ""},
		{"hits", num(a.Hits), num(b.Hits), ""},
		{"hits p50/p99/p999 ms", lat(a.Hit), lat(b.Hit), "as the clients saw them"},
		{"  in the service", lat(a.HitServer), lat(b.HitServer), "from its Server-Timing header"},
		{"misses", num(a.Misses), num(b.Misses), ""},
		{"misses p50/p99/p999 ms", lat(a.Miss), lat(b.Miss), ""},
		{"  in the service", lat(a.MissServer), lat(b.MissServer), ""},
		{"database queries/s", fmt.Sprintf("%.1f", a.QPS()), fmt.Sprintf("%.1f", b.QPS()), ""},
		{"rejected non-existent ids", num(a.Rejected), num(b.Rejected), ""},
		{"orders paid meanwhile", num(a.Writes), num(b.Writes), ""},
		{"rate-limited requests", num(a.Limited), num(b.Limited), ""},
		{"request errors", num(a.Errors), num(b.Errors), ""},
	}
	fmt.Fprintln(out)
	for _, r := range rows {
		fmt.Fprintf(out, "%-26s %20s %20s   %s\n", r[0], r[1], r[2], r[3])
	}
	fmt.Fprintf(out, "(%d and %d requests measured over %v and %v, after the warm-ups; a hit is answered without waiting\n",
		a.Requests, b.Requests, a.Elapsed.Round(100*time.Millisecond), b.Elapsed.Round(100*time.Millisecond))
	fmt.Fprintf(out, " for the database (local tier, Redis, a negative entry, the Bloom guard), a miss waited for a database\n")
	fmt.Fprintf(out, " load, its own or one it joined; database queries include the payments)\n")
	verdict := "surge clears the published bar of a typical Go + Redis service with its cache"
	if !(b.HitRate() > typicalHitAfter && b.Mean < typicalMeanAfter) {
		verdict = "surge does NOT clear the published bar of a typical Go + Redis service with its cache on this run"
	}
	fmt.Fprintf(out, "%s: hit rate %s vs %.0f%%, mean %s vs %s\n", verdict, pct(b.HitRate()), 100*typicalHitAfter, fmtMs(b.Mean), fmtDur(typicalMeanAfter))
}

// fmtDur formats a whole number of milliseconds as "8 ms".
func fmtDur(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

// jsonField pulls a top-level string field out of a small JSON object without a struct.
func jsonField(body, field string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		return ""
	}
	v, _ := m[field].(string)
	return v
}

// isTerminal reports whether f is a character device, where the progress line can redraw.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
