package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// loadConfig drives one phase of the demo: Clients concurrent clients issuing
// GET /orders/:id, ids drawn from a Zipf distribution over 1..Orders plus a Missing fraction
// of ids that do not exist, each pausing about Think between its requests, as users or an
// upstream service would (with no pause, the latency measured is mostly the CPU queue of a
// saturated machine). They run for Warmup (without pauses) and then Duration; only Duration
// is measured.
type loadConfig struct {
	Name     string        // phase name shown in the progress line
	BaseURL  string        // e.g. http://127.0.0.1:41234
	Orders   int           // ids 1..Orders exist
	Missing  float64       // fraction of requests for ids that do not exist
	Clients  int           // concurrent clients
	Think    time.Duration // mean pause of a client between two requests (exponential); 0: none
	Warmup   time.Duration // run but not measured (a cache fills up)
	Duration time.Duration // measured
	Zipf     float64       // Zipf exponent s (> 1); higher is more skewed
	Seed     uint64        // makes the id sequence reproducible
	DB       *DB           // its counters give the hit rate and the rejected ids
	Progress io.Writer     // live progress line; nil for none
	Live     bool          // redraw the progress line in place (a terminal) instead of one line per second
}

// loadResult is what one phase measured over its measured window.
type loadResult struct {
	Name                            string
	Requests, OK, NotFound, Limited int64
	Errors                          int64
	FirstError                      string
	Elapsed                         time.Duration
	Mean, P50, P99                  time.Duration
	DBQueries                       int64 // queries the database served
	Rejected                        int64 // 404s answered without a database query
	Warm                            string
	CacheLine                       string
}

// RPS returns requests per second.
func (r loadResult) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// HitRate is the fraction of served (not rate-limited) requests answered without a
// database query.
func (r loadResult) HitRate() float64 {
	served := r.Requests - r.Limited
	if served <= 0 {
		return 0
	}
	return max(0, 1-float64(r.DBQueries)/float64(served))
}

// window counts the requests of one part of a phase (warm-up or measured).
type window struct {
	requests, ok, notFound, limited, errs, nanos atomic.Int64
	dbQueries, dbNotFound                        int64 // database counters when the window opened
}

// snapshot turns the window's counters, and the database's since it opened, into a result.
func (w *window) snapshot(name string, db *DB, elapsed time.Duration) loadResult {
	r := loadResult{
		Name: name, Requests: w.requests.Load(), OK: w.ok.Load(), NotFound: w.notFound.Load(),
		Limited: w.limited.Load(), Errors: w.errs.Load(), Elapsed: elapsed,
		DBQueries: db.Queries() - w.dbQueries,
	}
	r.Rejected = max(0, r.NotFound-(db.notFound.Load()-w.dbNotFound))
	if r.Requests > 0 {
		r.Mean = time.Duration(w.nanos.Load() / r.Requests)
	}
	return r
}

// runLoad runs one phase and returns its measurements. It returns early, with what it
// measured so far, when ctx ends.
func runLoad(ctx context.Context, cfg loadConfig) loadResult {
	tr := &http.Transport{MaxIdleConns: cfg.Clients, MaxIdleConnsPerHost: cfg.Clients, IdleConnTimeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	var (
		warm, meas window
		cur        atomic.Pointer[window] // the window requests starting now count in
		firstErr   atomic.Pointer[string]
		lats       = make([][]time.Duration, cfg.Clients) // measured latencies, per client
		wg         sync.WaitGroup
	)
	var opened time.Time // when the current window opened; only the loop below uses it
	open := func(w *window) {
		w.dbQueries, w.dbNotFound = cfg.DB.Queries(), cfg.DB.notFound.Load()
		opened = time.Now()
		cur.Store(w)
	}
	setErr := func(msg string) { firstErr.CompareAndSwap(nil, &msg) }
	start := time.Now()
	stopAt := start.Add(cfg.Warmup + cfg.Duration)
	warmDone := time.After(cfg.Warmup)
	if cfg.Warmup > 0 {
		open(&warm)
	} else {
		open(&meas)
		warmDone = nil
	}

	for i := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(cfg.Seed, uint64(i)))
			z := rand.NewZipf(r, cfg.Zipf, 1, uint64(cfg.Orders-1))
			apiKey := "loadgen-" + strconv.Itoa(i)
			own := make([]time.Duration, 0, 4096)
			defer func() { lats[i] = own }()
			pause := time.NewTimer(0)
			defer pause.Stop()
			for ctx.Err() == nil && time.Now().Before(stopAt) {
				// The warm-up runs back to back: it stands for the traffic a running service
				// has already served, and more of it in less time fills the cache sooner.
				if cfg.Think > 0 && cur.Load() == &meas {
					pause.Reset(time.Duration(r.ExpFloat64() * float64(cfg.Think)))
					select {
					case <-pause.C:
					case <-ctx.Done():
						return
					}
				}
				id := strconv.FormatUint(1+z.Uint64(), 10)
				if r.Float64() < cfg.Missing {
					id = strconv.Itoa(cfg.Orders + 1_000_000 + r.IntN(1_000_000_000))
				}
				w := cur.Load()
				status, took, err := get(ctx, hc, cfg.BaseURL+"/orders/"+id, apiKey)
				if err != nil {
					if ctx.Err() == nil {
						w.errs.Add(1)
						setErr(err.Error())
					}
					continue
				}
				w.requests.Add(1)
				w.nanos.Add(int64(took))
				if w == &meas {
					own = append(own, took)
				}
				switch status {
				case http.StatusOK:
					w.ok.Add(1)
				case http.StatusNotFound:
					w.notFound.Add(1)
				case http.StatusTooManyRequests:
					w.limited.Add(1)
				default:
					w.errs.Add(1)
					setErr(fmt.Sprintf("GET /orders/%s: HTTP %d", id, status))
				}
			}
		}()
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var warmLine string
	ticks := 0
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		case <-warmDone:
			warmDone = nil
			warmLine = progressLine(warm.snapshot("warm-up", cfg.DB, time.Since(start)))
			open(&meas)
			continue
		case <-tick.C:
			ticks++
		}
		name := cfg.Name
		if cur.Load() == &warm {
			name = "warm-up"
		}
		el := time.Since(opened)
		// A terminal gets a line redrawn every second; a log, one line every 5 s and the last.
		if cfg.Progress == nil || el < 500*time.Millisecond || (!cfg.Live && !finished && ticks%5 != 0) {
			continue
		}
		line := progressLine(cur.Load().snapshot(name, cfg.DB, el))
		switch {
		case cfg.Live && finished:
			fmt.Fprintf(cfg.Progress, "\r%s\n", line)
		case cfg.Live:
			fmt.Fprintf(cfg.Progress, "\r%s", line)
		default:
			fmt.Fprintln(cfg.Progress, line)
		}
	}

	res := meas.snapshot(cfg.Name, cfg.DB, time.Since(opened))
	res.Warm = warmLine
	if p := firstErr.Load(); p != nil {
		res.FirstError = *p
	}
	res.Errors += warm.errs.Load()
	all := slices.Concat(lats...)
	slices.Sort(all)
	if n := len(all); n > 0 {
		res.P50 = all[n/2]
		res.P99 = all[min(n-1, n*99/100)]
	}
	return res
}

// get issues one GET and returns its status and latency; the body is read and dropped.
func get(ctx context.Context, hc *http.Client, url, apiKey string) (int, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set(apiKeyHeader, apiKey)
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, time.Since(t0), err
}

// progressLine is the live line of a running phase.
func progressLine(r loadResult) string {
	return fmt.Sprintf("  %-8s %3.0fs %9d req %8.0f req/s  hit %5.1f%%  mean %9s  errors %d",
		r.Name, r.Elapsed.Seconds(), r.Requests, r.RPS(), 100*r.HitRate(), fmtMs(r.Mean), r.Errors)
}

// fmtMs formats d in milliseconds with two decimals.
func fmtMs(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}
