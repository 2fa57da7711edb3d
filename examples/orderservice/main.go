// Command orderservice is an order API on Gin built from every surge package, the program to
// run first to see what surge does for a service:
//
//   - GET /orders/:id: ginmw.RateLimit per client, then cache.Fetch (in-process tier, Redis,
//     Bloom guard over existing ids, negative caching, jittered TTLs, stale-while-revalidate,
//     one load per key) in front of an SQLite database (modernc.org/sqlite, pure Go, embedded)
//     behind a simulated network latency (-db-latency, default 100ms);
//   - POST /orders (ginmw.JWT + ginmw.Idempotency) and PUT /orders/:id/pay (ginmw.JWT): write
//     the order and its OrderCreated / OrderPaid event (keyed by id) into the events/outbox
//     table in one transaction, delete the cached order; an outbox.Relay publishes the events;
//   - in-process consumers: inventory (keyed, concurrent, deduplicated through Redis) and
//     cache invalidation (durable: every committed write's event reaches it), with a LagMonitor logging alerts about the inventory group;
//   - a nightly-style job (expire unpaid orders) that lock.Do lets one instance run at a time;
//   - ginmw.RequestID and ginmw.Logger on every route.
//
// Redis and Kafka come from REDIS_ADDR / KAFKA_BROKERS, else an embedded miniredis and an
// in-process kfake cluster, and the database is a new SQLite file (-db to name one): nothing
// to install.
//
//	go run ./examples/orderservice              # serve on :8080 until Ctrl-C; prints URLs to try
//	go run ./examples/orderservice -demo        # load test: no cache vs surge, then a table (~60 s)
//	go run ./examples/orderservice -demo -duration 60s      # a longer measured phase
//	go run ./examples/orderservice -demo -uniform -writes 0 # uniform ids, reads only
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// config is every flag.
type config struct {
	Addr      string
	Timeout   time.Duration // server mode: stop after this long (0: until Ctrl-C)
	Orders    int
	DBPath    string
	DBLatency time.Duration
	Rate      float64
	Limiter   string
	JobEvery  time.Duration
	LagEvery  time.Duration
	Seed      uint64

	Demo     bool
	Clients  int
	Think    time.Duration
	Warmup   time.Duration
	Duration time.Duration
	Missing  float64
	Zipf     float64
	Uniform  bool
	Writes   float64

	// Telemetry, when set (tests), replaces the OpenTelemetry SDK newService installs.
	Telemetry *telemetry
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("orderservice", flag.ContinueOnError)
	fs.StringVar(&c.Addr, "addr", ":8080", "listen address (server mode)")
	fs.DurationVar(&c.Timeout, "timeout", 0, "server mode: shut down after this long (0: run until Ctrl-C)")
	fs.IntVar(&c.Orders, "orders", 10_000, "orders in the database when it is empty (ids 1..orders)")
	fs.StringVar(&c.DBPath, "db", "", "SQLite file of the orders and the outbox, filled with -orders orders when empty (default: a new file in a temporary directory, removed on exit)")
	fs.DurationVar(&c.DBLatency, "db-latency", 100*time.Millisecond, "simulated network latency added to every database query")
	fs.Float64Var(&c.Rate, "rate", 200, "GET /orders/:id requests per second allowed per client (burst the same)")
	fs.StringVar(&c.Limiter, "limiter", "auto", "rate limiter: redis, local, or auto (redis with REDIS_ADDR, else local)")
	fs.DurationVar(&c.JobEvery, "job-every", time.Minute, "how often the expire-unpaid job is scheduled (0: never; not in -demo)")
	fs.DurationVar(&c.LagEvery, "lag-every", 10*time.Second, "how often the lag monitor checks the inventory consumer (0: never)")
	fs.Uint64Var(&c.Seed, "seed", 1, "random number seed of the data and of the load generator")
	fs.BoolVar(&c.Demo, "demo", false, "run the load-test demo on a random port, print the table, exit")
	fs.IntVar(&c.Clients, "clients", 200, "demo: concurrent clients")
	fs.DurationVar(&c.Think, "think", 50*time.Millisecond, "demo: mean pause of each client between requests (0: back to back, a saturation test)")
	fs.DurationVar(&c.Warmup, "warmup", 10*time.Second, "demo: longest warm-up of each phase, which ends once the hit rate has settled (0: none)")
	fs.DurationVar(&c.Duration, "duration", 20*time.Second, "demo: measured length of each phase (no cache, surge)")
	fs.Float64Var(&c.Missing, "missing", 0.01, "demo: fraction of requests for ids that do not exist")
	fs.Float64Var(&c.Zipf, "zipf", 1.1, "demo: Zipf exponent of the id popularity (> 1)")
	fs.BoolVar(&c.Uniform, "uniform", false, "demo: draw ids uniformly instead of from the Zipf distribution")
	fs.Float64Var(&c.Writes, "writes", 5, "demo: orders paid per second during each phase, each deleting the cached order (0: none)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case c.Orders < 2:
		return c, errors.New("-orders must be at least 2")
	case c.DBLatency < 0:
		return c, errors.New("-db-latency must not be negative")
	case c.Rate <= 0:
		return c, errors.New("-rate must be positive")
	case c.Clients < 1:
		return c, errors.New("-clients must be at least 1")
	case c.Duration <= 0:
		return c, errors.New("-duration must be positive")
	case c.Warmup < 0:
		return c, errors.New("-warmup must not be negative")
	case c.Think < 0:
		return c, errors.New("-think must not be negative")
	case c.Missing < 0 || c.Missing > 1:
		return c, errors.New("-missing must be in [0, 1]")
	case c.Zipf <= 1:
		return c, errors.New("-zipf must be above 1")
	case c.Writes < 0:
		return c, errors.New("-writes must not be negative")
	}
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "orderservice:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.Demo {
		err = runDemo(ctx, cfg)
	} else {
		err = runServer(ctx, cfg)
	}
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			err = errors.New("interrupted")
		}
		fmt.Fprintln(os.Stderr, "orderservice:", err)
		stop()
		os.Exit(1)
	}
}

// runServer serves the API on cfg.Addr until ctx ends (Ctrl-C) or -timeout passes, then shuts
// down gracefully: HTTP drained, relay and consumers stopped, producer flushed.
func runServer(ctx context.Context, cfg config) error {
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := newService(ctx, cfg, os.Stdout, log)
	if err != nil {
		return err
	}
	defer s.Close()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.router(log, false), ReadHeaderTimeout: 5 * time.Second}
	s.start()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	printBanner(s, baseURL(ln.Addr()))

	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Println("shutting down: draining HTTP, stopping consumers, flushing events...")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-served // http.ErrServerClosed
	err = errors.Join(err, s.Close())
	if err == nil {
		fmt.Println("orderservice: shut down cleanly")
	}
	return err
}

// baseURL turns a listener address into a URL a browser or curl can use.
func baseURL(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "http://" + a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func printBanner(s *service, base string) {
	var b strings.Builder
	fmt.Fprintf(&b, "orderservice listening on %s (%d orders, database latency %v)\n", base, s.db.Len(), s.cfg.DBLatency)
	fmt.Fprintf(&b, "rate limit: %s per %s (or client IP)\n", s.limName, apiKeyHeader)
	fmt.Fprintf(&b, "\nTry:\n")
	fmt.Fprintf(&b, "  curl -i %s/orders/42            # first read ~%v from the database (X-Cache: miss), then from the cache (hit)\n", base, s.cfg.DBLatency)
	fmt.Fprintf(&b, "  curl -i %s/orders/99999999      # 404 from the Bloom guard, no database query\n", base)
	fmt.Fprintf(&b, "  TOKEN=$(curl -s '%s/token?sub=alice')\n", base)
	fmt.Fprintf(&b, "  curl -i -X POST -H \"Authorization: Bearer $TOKEN\" -H 'Idempotency-Key: order-1' \\\n")
	fmt.Fprintf(&b, "       -d '{\"item\":\"mouse\",\"quantity\":1,\"amount_cents\":2500}' %s/orders   # twice: one order\n", base)
	fmt.Fprintf(&b, "  curl -i -X PUT -H \"Authorization: Bearer $TOKEN\" %s/orders/%d/pay\n", base, s.cfg.Orders+1)
	fmt.Fprintf(&b, "  curl -s %s/stats                # cache, database, outbox relay, consumer and producer counters\n", base)
	fmt.Fprintf(&b, "  curl -s %s/metrics              # the same and more for Prometheus (OpenTelemetry); each answer's traceparent names its trace\n", base)
	fmt.Fprintf(&b, "\nCtrl-C stops it gracefully.\n")
	fmt.Print(b.String())
}
