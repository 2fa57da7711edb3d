package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Warm-up of a phase: it runs the phase's own traffic, unmeasured, until the hit rate of one
// second differs from the second before by less than settleDelta, after at least minWarmup and
// at most loadConfig.Warmup.
const (
	minWarmup   = 2 * time.Second
	settleDelta = 0.005 // half a percentage point
)

// loadConfig drives one phase of the demo: Clients concurrent clients issuing
// GET /orders/:id, ids drawn from a Zipf distribution over 1..Orders (or a uniform one) plus a
// Missing fraction of ids that do not exist, each pausing about Think between its requests, as
// users or an upstream service would (with no pause, the latency measured is mostly the CPU
// queue of a saturated machine). Beside them a writer pays Writes pending orders per second
// (PUT /orders/:id/pay, which deletes the cached order), drawn from the same distribution. A
// warm-up (until the hit rate settles, at most Warmup) comes first; only Duration is measured.
type loadConfig struct {
	Name     string        // phase name shown in the progress line
	BaseURL  string        // e.g. http://127.0.0.1:41234
	Orders   int           // ids 1..Orders exist
	Missing  float64       // fraction of requests for ids that do not exist
	Zipf     float64       // Zipf exponent s (> 1; higher is more skewed); 0: uniform ids
	Clients  int           // concurrent clients
	Think    time.Duration // mean pause of a client between two requests (exponential); 0: none
	Warmup   time.Duration // at most this long unmeasured before Duration (0: no warm-up)
	Duration time.Duration // measured
	Writes   float64       // paid orders per second (0: no writes)
	Payable  *payable      // the pending orders the writer may pay; shared by the phases
	Token    string        // bearer token of the writer
	Seed     uint64        // makes the id sequence reproducible
	Queries  func() int64  // the database's query counter
	Progress io.Writer     // live progress line; nil for none
	Live     bool          // redraw the progress line in place (a terminal) instead of one line every 5 s
}

// latencies summarises a set of request latencies.
type latencies struct {
	N              int
	P50, P99, P999 time.Duration
}

func summarise(ds []time.Duration) latencies {
	slices.Sort(ds)
	n := len(ds)
	if n == 0 {
		return latencies{}
	}
	at := func(q float64) time.Duration { return ds[min(n-1, int(math.Ceil(q*float64(n)))-1)] }
	return latencies{N: n, P50: at(0.50), P99: at(0.99), P999: at(0.999)}
}

// loadResult is what one phase measured over its measured window.
type loadResult struct {
	Name                            string
	Requests, Hits, Misses, Limited int64 // GETs answered (Requests = Hits + Misses + Limited + unexpected)
	Rejected                        int64 // 404s answered without a database query
	Errors                          int64 // transport errors and unexpected statuses, warm-up included
	FirstError                      string
	Writes                          int64 // orders paid in the measured window
	Elapsed                         time.Duration
	Mean                            time.Duration // of every GET answered
	MeanServer                      time.Duration // of every GET answered, as the service timed it
	All, Hit, Miss                  latencies     // as the clients saw them
	HitServer, MissServer           latencies     // as the service timed them (Server-Timing)
	DBQueries                       int64         // queries the database served (reads and writes)
	CacheLine                       string
}

// RPS returns requests per second.
func (r loadResult) RPS() float64 { return perSecond(r.Requests, r.Elapsed) }

// QPS returns database queries per second.
func (r loadResult) QPS() float64 { return perSecond(r.DBQueries, r.Elapsed) }

// HitRate is the fraction of served (not rate-limited) requests answered without waiting for
// the database.
func (r loadResult) HitRate() float64 { return hitRate(r.Hits, r.Misses) }

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func hitRate(hits, misses int64) float64 {
	if hits+misses <= 0 {
		return 0
	}
	return float64(hits) / float64(hits+misses)
}

// window counts the requests of one part of a phase (warm-up or measured).
type window struct {
	requests, hits, misses, rejected, limited, errs, nanos, writes atomic.Int64
	timed, srvNanos                                                atomic.Int64 // answers with a Server-Timing, and its sum
	queries                                                        int64        // database queries when the window opened
}

// snapshot turns the window's counters, and the database's since it opened, into a result.
func (w *window) snapshot(name string, queries func() int64, elapsed time.Duration) loadResult {
	r := loadResult{
		Name: name, Requests: w.requests.Load(), Hits: w.hits.Load(), Misses: w.misses.Load(),
		Rejected: w.rejected.Load(), Limited: w.limited.Load(), Errors: w.errs.Load(), Writes: w.writes.Load(),
		Elapsed: elapsed, DBQueries: queries() - w.queries,
	}
	if r.Requests > 0 {
		r.Mean = time.Duration(w.nanos.Load() / r.Requests)
	}
	if n := w.timed.Load(); n > 0 {
		r.MeanServer = time.Duration(w.srvNanos.Load() / n)
	}
	return r
}

// idSource draws order ids as the demo's traffic asks for them. Not safe for concurrent use.
type idSource struct {
	r       *rand.Rand
	zipf    *rand.Zipf // nil: uniform
	orders  int
	missing float64
}

func newIDSource(cfg loadConfig, stream uint64) *idSource {
	r := rand.New(rand.NewPCG(cfg.Seed, stream))
	s := &idSource{r: r, orders: cfg.Orders, missing: cfg.Missing}
	if cfg.Zipf > 0 {
		s.zipf = rand.NewZipf(r, cfg.Zipf, 1, uint64(cfg.Orders-1))
	}
	return s
}

// existing draws an id among 1..orders.
func (s *idSource) existing() string {
	if s.zipf == nil {
		return strconv.Itoa(1 + s.r.IntN(s.orders))
	}
	return strconv.FormatUint(1+s.zipf.Uint64(), 10)
}

// next draws the id of one request: an existing one, or with probability missing one that
// does not exist.
func (s *idSource) next() string {
	if s.missing > 0 && s.r.Float64() < s.missing {
		return strconv.Itoa(s.orders + 1_000_000 + s.r.IntN(1_000_000_000))
	}
	return s.existing()
}

// payable is the set of pending orders the demo's writer may pay. Safe for concurrent use.
type payable struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

func newPayable(ids func(yield func(string) bool)) *payable {
	p := &payable{ids: map[string]struct{}{}}
	for id := range ids {
		p.ids[id] = struct{}{}
	}
	return p
}

// take draws ids until one is still payable, removes it and returns it; false after 1000
// draws without one.
func (p *payable) take(draw func() string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range 1000 {
		id := draw()
		if _, ok := p.ids[id]; ok {
			delete(p.ids, id)
			return id, true
		}
	}
	return "", false
}

// runLoad runs one phase and returns its measurements. It returns early, with what it
// measured so far, when ctx ends.
func runLoad(ctx context.Context, cfg loadConfig) loadResult {
	tr := &http.Transport{MaxIdleConns: cfg.Clients + 8, MaxIdleConnsPerHost: cfg.Clients + 8, IdleConnTimeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	var (
		warm, meas window
		cur        atomic.Pointer[window] // the window requests starting now count in
		endAt      atomic.Int64           // when the measured window ends (Unix ns); 0 until it opens
		firstErr   atomic.Pointer[string]
		hitLats    = make([][]time.Duration, cfg.Clients) // measured latencies, per client
		missLats   = make([][]time.Duration, cfg.Clients)
		hitSrv     = make([][]time.Duration, cfg.Clients) // the service's own time, per client
		missSrv    = make([][]time.Duration, cfg.Clients)
		wg, wwg    sync.WaitGroup // clients, writer
		stopWrites = make(chan struct{})
	)
	var opened time.Time // when the current window opened; only the loop below uses it
	open := func(w *window) {
		w.queries = cfg.Queries()
		opened = time.Now()
		if w == &meas {
			endAt.Store(opened.Add(cfg.Duration).UnixNano())
		}
		cur.Store(w)
	}
	over := func() bool { e := endAt.Load(); return e != 0 && time.Now().UnixNano() >= e }
	setErr := func(msg string) { firstErr.CompareAndSwap(nil, &msg) }
	start := time.Now()
	if cfg.Warmup > 0 {
		open(&warm)
	} else {
		open(&meas)
	}
	for i := range cfg.Clients {
		wg.Go(func() {
			ids := newIDSource(cfg, uint64(i))
			apiKey := "loadgen-" + strconv.Itoa(i)
			hits, misses := make([]time.Duration, 0, 4096), make([]time.Duration, 0, 64)
			hitsS, missesS := make([]time.Duration, 0, 4096), make([]time.Duration, 0, 64)
			defer func() { hitLats[i], missLats[i], hitSrv[i], missSrv[i] = hits, misses, hitsS, missesS }()
			pause := time.NewTimer(0)
			defer pause.Stop()
			for ctx.Err() == nil && !over() {
				if cfg.Think > 0 {
					pause.Reset(time.Duration(ids.r.ExpFloat64() * float64(cfg.Think)))
					select {
					case <-pause.C:
					case <-ctx.Done():
						return
					}
					if over() {
						return
					}
				}
				id := ids.next()
				w := cur.Load()
				status, cached, took, srv, err := get(ctx, hc, cfg.BaseURL+"/orders/"+id, apiKey)
				if err != nil {
					if ctx.Err() == nil {
						w.errs.Add(1)
						setErr(err.Error())
					}
					continue
				}
				w.requests.Add(1)
				w.nanos.Add(int64(took))
				if srv >= 0 {
					w.timed.Add(1)
					w.srvNanos.Add(int64(srv))
				}
				switch {
				case status == http.StatusTooManyRequests:
					w.limited.Add(1)
					continue
				case status != http.StatusOK && status != http.StatusNotFound:
					w.errs.Add(1)
					setErr(fmt.Sprintf("GET /orders/%s: HTTP %d", id, status))
					continue
				}
				hit := cached == "hit"
				if hit {
					w.hits.Add(1)
					if status == http.StatusNotFound {
						w.rejected.Add(1)
					}
				} else {
					w.misses.Add(1)
				}
				if w != &meas {
					continue
				}
				if hit {
					hits = append(hits, took)
				} else {
					misses = append(misses, took)
				}
				if srv >= 0 && hit {
					hitsS = append(hitsS, srv)
				} else if srv >= 0 {
					missesS = append(missesS, srv)
				}
			}
		})
	}
	if cfg.Writes > 0 && cfg.Payable != nil {
		wwg.Go(func() { writer(ctx, stopWrites, cfg, hc, &cur, &meas, setErr) })
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(stopWrites); wwg.Wait(); close(done) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var (
		warmLine         string
		ticks            int
		lastHits, lastMs int64   // warm-up counters at the previous tick
		lastRate         float64 // warm-up hit rate of the previous second; -1: none yet
	)
	lastRate = -1
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		case <-tick.C:
			ticks++
		}
		now := time.Now()
		if cur.Load() == &warm && !finished {
			h, m := warm.hits.Load(), warm.misses.Load()
			rate := hitRate(h-lastHits, m-lastMs)
			lastHits, lastMs = h, m
			el := now.Sub(start)
			settled := lastRate >= 0 && math.Abs(rate-lastRate) < settleDelta && el >= minWarmup
			if settled || el >= cfg.Warmup {
				why := fmt.Sprintf("settled: hit rate %.1f%% then %.1f%% in its last two seconds", 100*lastRate, 100*rate)
				if !settled {
					why = fmt.Sprintf("stopped at the -warmup bound; hit rate of its last second %.1f%%", 100*rate)
				}
				r := warm.snapshot("warm-up", cfg.Queries, el)
				warmLine = fmt.Sprintf("%s (%d requests, %s)", el.Round(100*time.Millisecond), r.Requests, why)
				if cfg.Progress != nil {
					fmt.Fprintf(cfg.Progress, "  %-8s warm-up %s\n", cfg.Name, warmLine)
				}
				open(&meas)
				ticks = 0
			}
			lastRate = rate
			continue
		}
		el := min(now.Sub(opened), cfg.Duration)
		// A terminal gets a line redrawn every second; a log, one line every 5 s and the last.
		if cfg.Progress == nil || el < 500*time.Millisecond || (!cfg.Live && !finished && (ticks%5 != 0 || el > cfg.Duration-time.Second)) {
			continue
		}
		line := progressLine(meas.snapshot(cfg.Name, cfg.Queries, el))
		switch {
		case cfg.Live && finished:
			fmt.Fprintf(cfg.Progress, "\r%s\n", line)
		case cfg.Live:
			fmt.Fprintf(cfg.Progress, "\r%s", line)
		default:
			fmt.Fprintln(cfg.Progress, line)
		}
	}

	res := meas.snapshot(cfg.Name, cfg.Queries, min(time.Since(opened), cfg.Duration))
	if p := firstErr.Load(); p != nil {
		res.FirstError = *p
	}
	res.Errors += warm.errs.Load()
	hitAll, missAll := slices.Concat(hitLats...), slices.Concat(missLats...)
	res.All = summarise(slices.Concat(hitAll, missAll))
	res.Hit = summarise(hitAll)
	res.Miss = summarise(missAll)
	res.HitServer = summarise(slices.Concat(hitSrv...))
	res.MissServer = summarise(slices.Concat(missSrv...))
	return res
}

// writer pays cfg.Writes orders per second until stop is closed or ctx ends, each in its own
// goroutine (a payment takes a database query), at most 16 at a time; it returns when the
// payments it started have been answered.
func writer(ctx context.Context, stop <-chan struct{}, cfg loadConfig, hc *http.Client, cur *atomic.Pointer[window], meas *window, setErr func(string)) {
	ids := newIDSource(cfg, math.MaxUint64)
	tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.Writes))
	defer tick.Stop()
	slots := make(chan struct{}, 16)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-tick.C:
		}
		id, ok := cfg.Payable.take(ids.existing)
		if !ok {
			continue // nothing left to pay among the ids drawn
		}
		select {
		case slots <- struct{}{}:
		default:
			continue // the database is behind: skip this tick
		}
		w := cur.Load()
		wg.Go(func() {
			defer func() { <-slots }()
			status, err := put(ctx, hc, cfg.BaseURL+"/orders/"+id+"/pay", cfg.Token)
			switch {
			case ctx.Err() != nil:
			case err != nil:
				w.errs.Add(1)
				setErr(err.Error())
			case status != http.StatusOK:
				w.errs.Add(1)
				setErr(fmt.Sprintf("PUT /orders/%s/pay: HTTP %d", id, status))
			case w == meas:
				w.writes.Add(1)
			}
		})
	}
}

// get issues one GET and returns its status, its X-Cache header, its latency and the service's
// own time from its Server-Timing header (-1 without one); the body is read and dropped.
func get(ctx context.Context, hc *http.Client, url, apiKey string) (status int, cached string, took, srv time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", 0, -1, err
	}
	req.Header.Set(apiKeyHeader, apiKey)
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", 0, -1, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header.Get(cacheHeader), time.Since(t0), appDuration(resp.Header.Get("Server-Timing")), err
}

// appDuration reads dur of the "app" metric of a Server-Timing header ("app;dur=0.042", in
// milliseconds); -1 when there is none.
func appDuration(h string) time.Duration {
	for m := range strings.SplitSeq(h, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(m), ";")
		if name != "app" {
			continue
		}
		for p := range strings.SplitSeq(params, ";") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(p), "dur="); ok {
				if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 {
					return time.Duration(ms * float64(time.Millisecond))
				}
			}
		}
	}
	return -1
}

// put issues one authenticated PUT without a body and returns its status.
func put(ctx context.Context, hc *http.Client, url, token string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, strings.NewReader(""))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, err
}

// progressLine is the live line of a running phase.
func progressLine(r loadResult) string {
	return fmt.Sprintf("  %-8s %3.0fs %9d req %8.0f req/s  hit %5.1f%%  mean %9s  db %6.0f q/s  errors %d",
		r.Name, r.Elapsed.Seconds(), r.Requests, r.RPS(), 100*r.HitRate(), fmtMs(r.Mean), r.QPS(), r.Errors)
}

// fmtMs formats d in milliseconds with two decimals.
func fmtMs(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}
