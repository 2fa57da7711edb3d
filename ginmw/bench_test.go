package ginmw

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/surgekit/surge/internal/benchkit"
	"github.com/surgekit/surge/internal/redistest"
	"github.com/surgekit/surge/ratelimit"
)

func benchEngine(b *testing.B, mw ...gin.HandlerFunc) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	require.NoError(b, r.SetTrustedProxies(nil))
	r.Use(mw...)
	r.GET("/users/:id", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	return r
}

func benchLocal(b *testing.B) *ratelimit.Local {
	l, err := ratelimit.NewLocal(nil, ratelimit.Limit{Rate: 1e9, Burst: 1e9, Name: "bench"})
	require.NoError(b, err)
	b.Cleanup(func() { _ = l.Close() })
	return l
}

var benchLogger = slog.New(slog.NewJSONHandler(io.Discard, nil))

// BenchmarkOverhead compares a bare engine with RequestID, Logger (JSON to io.Discard) and
// RateLimit on a local limiter, alone and together.
func BenchmarkOverhead(b *testing.B) {
	b.Run("bare", func(b *testing.B) { benchkit.Serve(b, benchEngine(b), "/users/1", 200) })
	b.Run("RequestID", func(b *testing.B) { benchkit.Serve(b, benchEngine(b, RequestID(nil)), "/users/1", 200) })
	b.Run("Logger", func(b *testing.B) {
		benchkit.Serve(b, benchEngine(b, Logger(&LoggerOptions{Logger: benchLogger})), "/users/1", 200)
	})
	b.Run("RateLimit-local", func(b *testing.B) {
		benchkit.Serve(b, benchEngine(b, RateLimit(benchLocal(b), nil)), "/users/1", 200)
	})
	b.Run("RequestID+Logger+RateLimit-local", func(b *testing.B) {
		benchkit.Serve(b, benchEngine(b, RequestID(nil), Logger(&LoggerOptions{Logger: benchLogger}), RateLimit(benchLocal(b), nil)), "/users/1", 200)
	})
}

// BenchmarkRedis measures the Redis-backed middleware against a real redis-server on loopback.
func BenchmarkRedis(b *testing.B) {
	srv := redistest.Server(b)
	rdb := srv.Client()
	b.Run("RateLimit-redis", func(b *testing.B) {
		l, err := ratelimit.NewRedis(rdb, nil, ratelimit.Limit{Rate: 1e9, Burst: 1e9, Name: "bench"})
		require.NoError(b, err)
		benchkit.Serve(b, benchEngine(b, RateLimit(l, nil)), "/users/1", 200)
	})
	b.Run("Cache-hit", func(b *testing.B) {
		h, err := NewHTTPCache(rdb, nil)
		require.NoError(b, err)
		b.Cleanup(func() { _ = h.Close() })
		benchkit.Serve(b, benchEngine(b, h.Handler()), "/users/1?b=2&a=1", 200)
	})
}

// BenchmarkClientIPKey is the default rate-limit key: a direct client, a client behind a
// configured proxy (one extra ClientIP probe), and a forged X-Forwarded-For on an engine that
// trusts every proxy (two probes: the peer is used).
func BenchmarkClientIPKey(b *testing.B) {
	for _, bc := range []struct {
		name    string
		trusted []string
		all     bool
		xff     string
	}{
		{"direct", nil, false, ""},
		{"behind-trusted-proxy", []string{"10.0.0.0/8"}, false, "198.51.100.7"},
		{"trust-all-forged", nil, true, "198.51.100.7"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := gin.New()
			if !bc.all {
				require.NoError(b, r.SetTrustedProxies(bc.trusted))
			}
			c := gin.CreateTestContextOnly(nil, r)
			c.Request, _ = http.NewRequest(http.MethodGet, "/", nil)
			c.Request.RemoteAddr = "10.1.2.3:4000"
			if bc.xff != "" {
				c.Request.Header.Set("X-Forwarded-For", bc.xff)
			}
			b.ReportAllocs()
			for b.Loop() {
				if ClientIPKey(c) == "" {
					b.Fatal("no key")
				}
			}
		})
	}
}

// BenchmarkTelemetry is the cost of Telemetry per request: with the global providers and no SDK
// installed (what a service that never configures OpenTelemetry pays), and with an SDK recording
// every span and the duration histogram in memory; each alone and in front of RequestID + Logger.
func BenchmarkTelemetry(b *testing.B) {
	logger := func() gin.HandlerFunc { return Logger(&LoggerOptions{Logger: benchLogger}) }
	b.Run("no-sdk", func(b *testing.B) { benchkit.Serve(b, benchEngine(b, Telemetry(nil)), "/users/1", 200) })
	b.Run("no-sdk+RequestID+Logger", func(b *testing.B) {
		benchkit.Serve(b, benchEngine(b, Telemetry(nil), RequestID(nil), logger()), "/users/1", 200)
	})
	// An SDK that samples every span and aggregates the histogram; spans end in a processor that
	// drops them, so the figures are the instrumentation's, not an exporter's (and memory stays
	// flat over b.N, which a recorder would not).
	sdkOpts := func(b *testing.B) *TelemetryOptions {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(dropSpans{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
		return &TelemetryOptions{TracerProvider: tp, MeterProvider: mp, Propagator: propagation.TraceContext{}}
	}
	b.Run("sdk", func(b *testing.B) { benchkit.Serve(b, benchEngine(b, Telemetry(sdkOpts(b))), "/users/1", 200) })
	b.Run("sdk+RequestID+Logger", func(b *testing.B) {
		benchkit.Serve(b, benchEngine(b, Telemetry(sdkOpts(b)), RequestID(nil), logger()), "/users/1", 200)
	})
}

// dropSpans is a span processor that keeps nothing.
type dropSpans struct{}

func (dropSpans) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (dropSpans) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (dropSpans) Shutdown(context.Context) error                  { return nil }
func (dropSpans) ForceFlush(context.Context) error                { return nil }
