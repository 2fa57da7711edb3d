package benchcmp

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/ulule/limiter/v3"
	mgin "github.com/ulule/limiter/v3/drivers/middleware/gin"
	sredis "github.com/ulule/limiter/v3/drivers/store/redis"
	"go.opentelemetry.io/contrib/instrumentation/github.com/gin-gonic/gin/otelgin"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/surgekit/surge/ginmw"
	"github.com/surgekit/surge/internal/benchkit"
	"github.com/surgekit/surge/ratelimit"
)

// serve measures a gin engine with mw in front of a plain handler.
func serve(b *testing.B, mw ...gin.HandlerFunc) {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	if err := r.SetTrustedProxies(nil); err != nil {
		b.Fatal(err)
	}
	r.Use(mw...)
	r.GET("/orders/:id", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	benchkit.Serve(b, r, "/orders/42", http.StatusOK)
}

// BenchmarkGinOverhead is what RequestID + Logger (slog JSON to io.Discard) + RateLimit on a
// local limiter add to a request, against a bare engine.
func BenchmarkGinOverhead(b *testing.B) {
	b.Run("bare", func(b *testing.B) { serve(b) })
	b.Run("surge-stack", func(b *testing.B) {
		l, err := ratelimit.NewLocal(nil, ratelimit.Limit{Rate: 1e9, Burst: 1e9, Name: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		serve(b, ginmw.RequestID(nil), ginmw.Logger(&ginmw.LoggerOptions{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}), ginmw.RateLimit(l, nil))
	})
}

// BenchmarkGinRateLimitRedis compares the Redis-backed rate-limit middlewares on one server, all
// with a limit high enough that every request passes and all keyed by client IP: surge with its
// default token bucket and with GCRA (one key, like redis_rate), and ulule/limiter's fixed window.
func BenchmarkGinRateLimitRedis(b *testing.B) {
	rdb := newRedis(b)
	b.Run("surge", func(b *testing.B) {
		l, err := ratelimit.NewRedis(rdb, &ratelimit.RedisOptions{Prefix: "bg:surge:"}, ratelimit.Limit{Rate: 1e9, Burst: 1e9, Name: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		serve(b, ginmw.RateLimit(l, nil))
	})
	b.Run("surge-gcra", func(b *testing.B) {
		l, err := ratelimit.NewRedis(rdb, &ratelimit.RedisOptions{Prefix: "bg:gcra:", Algorithm: ratelimit.GCRA},
			ratelimit.Limit{Rate: ratelimit.MaxGCRARate, Burst: 1e9, Name: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		serve(b, ginmw.RateLimit(l, nil))
	})
	b.Run("ulule", func(b *testing.B) {
		store, err := sredis.NewStoreWithOptions(rdb, limiter.StoreOptions{Prefix: "bg:ulule"})
		if err != nil {
			b.Fatal(err)
		}
		serve(b, mgin.NewMiddleware(limiter.New(store, limiter.Rate{Period: 1e9, Limit: 1e9})))
	})
}

// BenchmarkGinTelemetry compares ginmw.Telemetry with otelgin (OpenTelemetry's own Gin
// middleware), both opening a server span and recording http.server.request.duration: with no
// SDK installed (the global no-op providers), and with an SDK that samples every span (ended
// into a processor that drops them, so no exporter is measured) and aggregates the histogram.
func BenchmarkGinTelemetry(b *testing.B) {
	sdk := func(b *testing.B) (*sdktrace.TracerProvider, *sdkmetric.MeterProvider) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(dropSpans{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
		return tp, mp
	}
	w3c := propagation.TraceContext{}
	b.Run("bare", func(b *testing.B) { serve(b) })
	b.Run("surge-no-sdk", func(b *testing.B) { serve(b, ginmw.Telemetry(nil)) })
	b.Run("otelgin-no-sdk", func(b *testing.B) { serve(b, otelgin.Middleware("bench")) })
	b.Run("surge-sdk", func(b *testing.B) {
		tp, mp := sdk(b)
		serve(b, ginmw.Telemetry(&ginmw.TelemetryOptions{TracerProvider: tp, MeterProvider: mp, Propagator: w3c}))
	})
	b.Run("otelgin-sdk", func(b *testing.B) {
		tp, mp := sdk(b)
		serve(b, otelgin.Middleware("bench", otelgin.WithTracerProvider(tp), otelgin.WithMeterProvider(mp), otelgin.WithPropagators(w3c)))
	})
}

// dropSpans is a span processor that keeps nothing.
type dropSpans struct{}

func (dropSpans) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (dropSpans) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (dropSpans) Shutdown(context.Context) error                  { return nil }
func (dropSpans) ForceFlush(context.Context) error                { return nil }
