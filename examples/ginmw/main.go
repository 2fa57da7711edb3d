// Command ginmw shows surge's Gin middleware on a small API that the program then calls
// itself, printing what each middleware did:
//
//   - Telemetry: an OpenTelemetry server span per request, continuing the caller's traceparent,
//     and the http.server.request.duration histogram per route (printed at the end);
//   - RequestID + Logger: a request id and the span's W3C traceparent, one access-log line per
//     request;
//   - Cache: GET /report takes 200 ms, a second call is a cache hit (Cache-Status header);
//   - RateLimit: GET /quote allows 3 per second per client, then 429 with Retry-After;
//   - Concurrency: GET /export runs one at a time per client; others get 429 with Retry-After;
//   - JWT + Idempotency: POST /charges needs a bearer token; a retry with the same
//     Idempotency-Key replays the first response instead of charging twice.
//
// It uses REDIS_ADDR when set, else an embedded miniredis. With -serve it keeps serving after
// the tour, until Ctrl-C or -duration.
//
//	go run ./examples/ginmw
//	go run ./examples/ginmw -serve -duration 1m
package main

import (
	"context"
	"flag"
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
	"github.com/golang-jwt/jwt/v5"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/surgekit/surge/examples/internal/backend"
	"github.com/surgekit/surge/ginmw"
	"github.com/surgekit/surge/ratelimit"
)

var key = []byte("ginmw-example-hs256-key-32-bytes!!") // demo only

func main() {
	serve := flag.Bool("serve", false, "keep serving after the tour")
	duration := flag.Duration("duration", 0, "with -serve: stop after this long (0: until Ctrl-C)")
	flag.Parse()
	backend.Main("ginmw", 0, func(ctx context.Context) error { return run(ctx, *serve, *duration) })
}

func run(ctx context.Context, serve bool, duration time.Duration) error {
	rb, err := backend.StartRedis(ctx, os.Stdout)
	if err != nil {
		return err
	}
	defer rb.Close()
	limiter, err := ratelimit.NewLocal(nil, ratelimit.Limit{Rate: 3, Burst: 3, Name: "quote"})
	if err != nil {
		return err
	}
	defer limiter.Close()
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	_ = r.SetTrustedProxies(nil)
	access := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: dropTime}))
	// An OpenTelemetry SDK kept in memory for the tour; a service would export to its collector
	// (or serve /metrics through the Prometheus exporter) and usually install the providers
	// globally, letting Telemetry(nil) find them.
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.WithoutCancel(ctx)) }()
	metrics := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(metrics))
	defer func() { _ = mp.Shutdown(context.WithoutCancel(ctx)) }()
	r.Use(ginmw.Telemetry(&ginmw.TelemetryOptions{TracerProvider: tp, MeterProvider: mp, Propagator: propagation.TraceContext{}}),
		ginmw.RequestID(nil), ginmw.Logger(&ginmw.LoggerOptions{Logger: access}))
	prefix := fmt.Sprintf("example:%d:", time.Now().UnixNano())
	r.GET("/report", ginmw.Cache(rb.Client, &ginmw.CacheOptions{TTL: time.Minute, Prefix: prefix + "http:"}), func(c *gin.Context) {
		time.Sleep(200 * time.Millisecond) // an expensive query
		c.JSON(http.StatusOK, gin.H{"revenue": 12345})
	})
	r.GET("/hello", func(c *gin.Context) {
		ginmw.LoggerFrom(c).Info("hello") // carries the request id, the trace id and the span id
		c.String(http.StatusOK, "hello")
	})
	r.GET("/quote", ginmw.RateLimit(limiter, nil), func(c *gin.Context) { c.String(http.StatusOK, "42.17") })
	exports, err := ratelimit.NewLocalConcurrency(1, nil) // ratelimit.NewConcurrency(rdb, ...) across instances
	if err != nil {
		return err
	}
	r.GET("/export", ginmw.Concurrency(exports, nil), func(c *gin.Context) {
		time.Sleep(100 * time.Millisecond) // a long export
		c.String(http.StatusOK, "export ready")
	})
	var charges atomic.Int64
	auth := ginmw.JWT(ginmw.JWTOptions{Key: key, ValidMethods: []string{"HS256"}})
	idem := ginmw.Idempotency(rb.Client, &ginmw.IdempotencyOptions{Prefix: prefix + "idem:"})
	r.POST("/charges", auth, idem, func(c *gin.Context) {
		claims, _ := ginmw.Claims[*jwt.RegisteredClaims](c)
		c.JSON(http.StatusCreated, gin.H{"charge": charges.Add(1), "customer": claims.Subject})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	fmt.Println("serving on", base)
	claims := jwt.RegisteredClaims{Subject: "alice", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	if err != nil {
		return err
	}
	call := func(method, path string, hdr ...string) { // prints status, body and telling headers
		req, _ := http.NewRequestWithContext(ctx, method, base+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println("  error:", err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		var line strings.Builder // one Println per call: calls may run concurrently
		fmt.Fprintf(&line, "  -> %s %s: %d in %v %s", method, path, resp.StatusCode, time.Since(start).Round(100*time.Microsecond), strings.TrimSpace(string(body)))
		for _, h := range []string{"Cache-Status", "Ratelimit", "Retry-After", "Idempotent-Replayed", "Traceparent"} {
			if v := resp.Header.Get(h); v != "" && (h != "Traceparent" || len(hdr) > 0 && hdr[0] == "Traceparent") {
				fmt.Fprintf(&line, " [%s: %s]", h, v)
			}
		}
		fmt.Println(line.String())
	}
	fmt.Println("\nTelemetry: a call that carries its caller's traceparent; the answer names this server's span in the same trace")
	call("GET", "/hello", "Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	fmt.Println("\nCache: the same report twice")
	call("GET", "/report")
	call("GET", "/report")
	fmt.Println("\nRateLimit: five quotes at once (3 per second allowed)")
	for range 5 {
		call("GET", "/quote")
	}
	fmt.Println("\nConcurrency: three exports at once (one in flight per client)")
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); call("GET", "/export") }()
	}
	wg.Wait()
	fmt.Println("\nJWT + Idempotency: no token, then one charge sent twice with one key")
	call("POST", "/charges")
	for range 2 {
		call("POST", "/charges", "Authorization", "Bearer "+tok, "Idempotency-Key", "charge-"+prefix)
	}
	fmt.Printf("charges made: %d (the retry was replayed)\n", charges.Load())
	printDurations(ctx, metrics)
	if serve {
		fmt.Printf("\nserving until Ctrl-C (or -duration %v)\n", duration)
		wait := ctx
		if duration > 0 {
			var cancel context.CancelFunc
			wait, cancel = context.WithTimeout(ctx, duration)
			defer cancel()
		}
		<-wait.Done()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-served
	fmt.Println("ginmw example done")
	return err
}

// printDurations prints what Telemetry recorded in http.server.request.duration: requests and
// mean duration per method, route and status.
func printDurations(ctx context.Context, reader *sdkmetric.ManualReader) {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		fmt.Println("collect metrics:", err)
		return
	}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			h, ok := m.Data.(metricdata.Histogram[float64])
			if m.Name != ginmw.MetricRequestDuration || !ok {
				continue
			}
			for _, p := range h.DataPoints {
				method, _ := p.Attributes.Value("http.request.method")
				route, _ := p.Attributes.Value("http.route")
				status, _ := p.Attributes.Value("http.response.status_code")
				lines = append(lines, fmt.Sprintf("  %-4s %-8s %d: count %d, mean %v", method.AsString(), route.AsString(),
					status.AsInt64(), p.Count, time.Duration(p.Sum/float64(p.Count)*float64(time.Second)).Round(time.Microsecond)))
			}
		}
	}
	slices.Sort(lines)
	fmt.Printf("\n%s (method, route, status):\n%s\n", ginmw.MetricRequestDuration, strings.Join(lines, "\n"))
}

// dropTime keeps the example's log lines short: no time, no span id (the trace id stays: it is
// what to look up in a tracing backend).
func dropTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey || a.Key == "span_id" {
		return slog.Attr{}
	}
	return a
}
