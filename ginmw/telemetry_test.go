package ginmw

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	nooptrace "go.opentelemetry.io/otel/trace/noop"

	"github.com/surgekit/surge/internal/oteltest"
	"github.com/surgekit/surge/internal/redistest"
)

const (
	callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpan  = "00f067aa0ba902b7"
	callerTP    = "00-" + callerTrace + "-" + callerSpan + "-01"
)

func telemetryOpts(sdk *oteltest.SDK) *TelemetryOptions {
	return &TelemetryOptions{TracerProvider: sdk.TracerProvider, MeterProvider: sdk.MeterProvider, Propagator: sdk.Propagator}
}

// onlySpan returns the one ended span called name.
func onlySpan(t *testing.T, sdk *oteltest.SDK, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	spans := sdk.SpansNamed(name)
	require.Len(t, spans, 1, "spans named %q among %d ended", name, len(sdk.Ended()))
	return spans[0]
}

func spanAttrs(sp sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range sp.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// TestTelemetryContinuesIncomingTrace: one trace id from the caller's traceparent through the
// server span, the response traceparent, TraceFrom, the access log and the handler's logger.
func TestTelemetryContinuesIncomingTrace(t *testing.T) {
	sdk := oteltest.New(t)
	logger, logs := newJSONLogger(slog.LevelInfo)
	r := newEngine(t, Telemetry(telemetryOpts(sdk)), RequestID(nil), Logger(&LoggerOptions{Logger: logger}))
	var seenTrace Trace
	var childParent trace.SpanContext
	r.GET("/users/:id", func(c *gin.Context) {
		seenTrace, _ = TraceFrom(c)
		LoggerFrom(c).Info("inner")
		_, child := sdk.TracerProvider.Tracer("handler").Start(c.Request.Context(), "load user")
		childParent = trace.SpanContextFromContext(c.Request.Context())
		child.End()
		c.String(http.StatusOK, "hi")
	})

	w := get(r, "/users/42", "Traceparent", callerTP, "Tracestate", "vendor=x", "User-Agent", "tester/1")
	require.Equal(t, http.StatusOK, w.Code)

	sp := onlySpan(t, sdk, "GET /users/:id")
	assert.Equal(t, trace.SpanKindServer, sp.SpanKind())
	assert.Equal(t, TelemetryScope, sp.InstrumentationScope().Name)
	assert.Equal(t, callerTrace, sp.SpanContext().TraceID().String())
	assert.Equal(t, callerSpan, sp.Parent().SpanID().String())
	assert.True(t, sp.Parent().IsRemote())
	spanID := sp.SpanContext().SpanID().String()
	a := spanAttrs(sp)
	assert.Equal(t, "GET", a["http.request.method"].AsString())
	assert.Equal(t, "/users/:id", a["http.route"].AsString())
	assert.Equal(t, "/users/42", a["url.path"].AsString())
	assert.Equal(t, "http", a["url.scheme"].AsString())
	assert.Equal(t, "192.0.2.10", a["client.address"].AsString())
	assert.Equal(t, "tester/1", a["user_agent.original"].AsString())
	assert.EqualValues(t, 200, a["http.response.status_code"].AsInt64())
	assert.NotContains(t, a, attribute.Key("error.type"))
	assert.Equal(t, codes.Unset, sp.Status().Code)

	child := onlySpan(t, sdk, "load user")
	assert.Equal(t, sp.SpanContext().SpanID(), child.Parent().SpanID(), "handlers' spans are children of the server span")
	assert.Equal(t, sp.SpanContext().SpanID(), childParent.SpanID())

	assert.Equal(t, "00-"+callerTrace+"-"+spanID+"-01", w.Header().Get("Traceparent"), "response names the server span")
	assert.Equal(t, Trace{TraceID: callerTrace, SpanID: spanID, ParentID: callerSpan, Flags: 1, State: "vendor=x"}, seenTrace)
	lines := logs.lines()
	require.Len(t, lines, 2)
	for _, l := range lines {
		m := decodeLine(t, l)
		assert.Equal(t, callerTrace, m["trace_id"], l)
		assert.Equal(t, spanID, m["span_id"], l)
		assert.NotEmpty(t, m["request_id"], l)
	}
}

func TestTelemetryStartsTraceWithoutCaller(t *testing.T) {
	sdk := oteltest.New(t)
	r := newEngine(t, Telemetry(telemetryOpts(sdk)), RequestID(nil))
	r.GET("/", func(c *gin.Context) { c.Status(http.StatusNoContent) })
	w := get(r, "/", "Traceparent", "00-zz-not-valid")
	sp := onlySpan(t, sdk, "GET /")
	assert.False(t, sp.Parent().IsValid(), "a root span")
	sc := sp.SpanContext()
	assert.Equal(t, "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-01", w.Header().Get("Traceparent"))
}

// TestTelemetryMetricRequestDuration asserts the histogram's name, unit, scope and attributes,
// including error.type on 5xx, a request that matched no route and an unknown method.
func TestTelemetryMetricRequestDuration(t *testing.T) {
	sdk := oteltest.New(t)
	r := newEngine(t, Telemetry(telemetryOpts(sdk)))
	r.GET("/users/:id", func(c *gin.Context) { c.Status(http.StatusOK) })
	r.POST("/users", func(c *gin.Context) { c.Status(http.StatusServiceUnavailable) })
	r.Handle("PURGE", "/cache", func(c *gin.Context) { c.Status(http.StatusAccepted) })
	for range 3 {
		get(r, "/users/1")
	}
	do(r, req{method: http.MethodPost, target: "/users"})
	get(r, "/nowhere")
	do(r, req{method: "PURGE", target: "/cache"})

	m, scope, ok := sdk.Metric(t, MetricRequestDuration)
	require.True(t, ok)
	assert.Equal(t, TelemetryScope, scope)
	assert.Equal(t, "s", m.Unit)
	method, route := attribute.Key("http.request.method"), attribute.Key("http.route")
	status, errType := attribute.Key("http.response.status_code"), attribute.Key("error.type")
	h := MetricRequestDuration
	assert.EqualValues(t, 3, sdk.HistogramCount(t, h, method.String("GET"), route.String("/users/:id"), status.Int(200)))
	assert.EqualValues(t, 1, sdk.HistogramCount(t, h, method.String("POST"), route.String("/users"), status.Int(503), errType.String("503")))
	assert.EqualValues(t, 1, sdk.HistogramCount(t, h, method.String("GET"), status.Int(404)))
	assert.EqualValues(t, 1, sdk.HistogramCount(t, h, method.String("_OTHER"), route.String("/cache"), status.Int(202)))
	assert.EqualValues(t, 6, sdk.HistogramCount(t, h))
	assert.EqualValues(t, 0, sdk.HistogramCount(t, h, status.Int(200), errType.String("200")), "error.type only on 5xx")
	assert.EqualValues(t, 0, sdk.HistogramCount(t, h, method.String("PURGE")), "unknown methods are _OTHER")
	assert.EqualValues(t, 0, sdk.HistogramCount(t, h, status.Int(404), route.String("")), "no route attribute without a route")

	notFound := onlySpan(t, sdk, "GET")
	assert.NotContains(t, spanAttrs(notFound), route)
	purge := onlySpan(t, sdk, "HTTP /cache")
	assert.Equal(t, "PURGE", spanAttrs(purge)["http.request.method_original"].AsString())
	failed := onlySpan(t, sdk, "POST /users")
	assert.Equal(t, codes.Error, failed.Status().Code)
	assert.Equal(t, "503", spanAttrs(failed)["error.type"].AsString())
}

func TestTelemetryPanicPassingThrough(t *testing.T) {
	sdk := oteltest.New(t)
	r := newEngine(t, Telemetry(telemetryOpts(sdk))) // recovery is outside
	r.GET("/boom", func(c *gin.Context) {
		_ = c.Error(assert.AnError)
		panic("boom")
	})
	assert.Equal(t, http.StatusInternalServerError, get(r, "/boom").Code, "the panic still reaches the recovery")
	sp := onlySpan(t, sdk, "GET /boom")
	assert.Equal(t, codes.Error, sp.Status().Code)
	assert.EqualValues(t, 500, spanAttrs(sp)["http.response.status_code"].AsInt64())
	require.Len(t, sp.Events(), 1, "the handler's c.Error")
	assert.Equal(t, "exception", sp.Events()[0].Name)
	assert.EqualValues(t, 1, sdk.HistogramCount(t, MetricRequestDuration,
		attribute.Int("http.response.status_code", 500), attribute.String("error.type", "500")))
}

// TestTelemetryAfterRequestID: a RequestID that ran first has its trace (and the response
// traceparent it set) replaced by the span's before the handlers run.
func TestTelemetryAfterRequestID(t *testing.T) {
	sdk := oteltest.New(t)
	logger, logs := newJSONLogger(slog.LevelInfo)
	r := newEngine(t, RequestID(nil), Logger(&LoggerOptions{Logger: logger}), Telemetry(telemetryOpts(sdk)))
	var seen Trace
	r.GET("/", func(c *gin.Context) { seen, _ = TraceFrom(c); c.Status(http.StatusOK) })
	w := get(r, "/", "Traceparent", callerTP)
	sc := onlySpan(t, sdk, "GET /").SpanContext()
	assert.Equal(t, "00-"+callerTrace+"-"+sc.SpanID().String()+"-01", w.Header().Get("Traceparent"))
	assert.Equal(t, sc.SpanID().String(), seen.SpanID)
	assert.Equal(t, callerSpan, seen.ParentID)
	lines := logs.lines()
	require.Len(t, lines, 1)
	assert.Equal(t, sc.SpanID().String(), decodeLine(t, lines[0])["span_id"])
}

// TestTelemetryWithoutRequestID: the access log and LoggerFrom carry the span's ids.
func TestTelemetryWithoutRequestID(t *testing.T) {
	sdk := oteltest.New(t)
	logger, logs := newJSONLogger(slog.LevelInfo)
	r := newEngine(t, Telemetry(telemetryOpts(sdk)), Logger(&LoggerOptions{Logger: logger}))
	r.GET("/", func(c *gin.Context) { LoggerFrom(c).Info("inner"); c.Status(http.StatusOK) })
	w := get(r, "/")
	assert.Empty(t, w.Header().Get("Traceparent"), "only RequestID writes the response header")
	sc := onlySpan(t, sdk, "GET /").SpanContext()
	lines := logs.lines()
	require.Len(t, lines, 2)
	for _, l := range lines {
		m := decodeLine(t, l)
		assert.Equal(t, sc.TraceID().String(), m["trace_id"], l)
		assert.Equal(t, sc.SpanID().String(), m["span_id"], l)
		assert.NotContains(t, m, "request_id", l)
	}
}

// TestTelemetryWithoutSDK: with no-op providers and a W3C propagator, the caller's context reaches
// the handlers for outgoing calls, but RequestID still makes this request's own span id (the
// no-op span carries the caller's, which must not be echoed as ours).
func TestTelemetryWithoutSDK(t *testing.T) {
	opt := &TelemetryOptions{TracerProvider: nooptrace.NewTracerProvider(), MeterProvider: noopmetric.NewMeterProvider(),
		Propagator: propagation.TraceContext{}}
	r := newEngine(t, Telemetry(opt), RequestID(nil))
	var seen Trace
	var onCtx trace.SpanContext
	r.GET("/", func(c *gin.Context) {
		seen, _ = TraceFrom(c)
		onCtx = trace.SpanContextFromContext(c.Request.Context())
		c.Status(http.StatusOK)
	})
	w := get(r, "/", "Traceparent", callerTP)
	require.Equal(t, http.StatusOK, w.Code)
	assert.Equal(t, callerTrace, seen.TraceID)
	assert.Equal(t, callerSpan, seen.ParentID)
	assert.NotEqual(t, callerSpan, seen.SpanID)
	assert.Equal(t, seen.Traceparent(), w.Header().Get("Traceparent"))
	assert.Equal(t, callerSpan, onCtx.SpanID().String(), "the caller's context is on the request")

	w = get(r, "/") // no caller, no SDK: RequestID's own trace
	assert.Regexp(t, validTraceResp, w.Header().Get("Traceparent"))
	assert.False(t, onCtx.IsValid())
}

func TestTelemetryDefaultsAndSkip(t *testing.T) {
	r := newEngine(t, Telemetry(nil)) // the global providers: no SDK in this test binary
	r.GET("/", func(c *gin.Context) { c.Status(http.StatusOK) })
	assert.Equal(t, http.StatusOK, get(r, "/").Code)

	sdk := oteltest.New(t)
	opt := telemetryOpts(sdk)
	opt.Skip = func(c *gin.Context) bool { return c.Request.URL.Path == "/health" }
	mw, err := NewTelemetry(opt)
	require.NoError(t, err)
	r = newEngine(t, mw)
	r.GET("/health", func(c *gin.Context) { c.Status(http.StatusOK) })
	r.GET("/", func(c *gin.Context) { c.Status(http.StatusOK) })
	get(r, "/health")
	get(r, "/")
	assert.Empty(t, sdk.SpansNamed("GET /health"))
	assert.Len(t, sdk.SpansNamed("GET /"), 1)
	assert.EqualValues(t, 1, sdk.HistogramCount(t, MetricRequestDuration))
}

// TestTelemetryOtherSpanOnContext: RequestID adopts a span another OpenTelemetry middleware put
// on the request context.
func TestTelemetryOtherSpanOnContext(t *testing.T) {
	sdk := oteltest.New(t)
	other := func(c *gin.Context) {
		ctx, sp := sdk.TracerProvider.Tracer("other").Start(c.Request.Context(), "other")
		defer sp.End()
		c.Request = c.Request.WithContext(ctx)
		c.Next()
	}
	r := newEngine(t, other, RequestID(nil))
	r.GET("/", func(c *gin.Context) { c.Status(http.StatusOK) })
	w := get(r, "/")
	sc := onlySpan(t, sdk, "other").SpanContext()
	assert.Equal(t, "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-01", w.Header().Get("Traceparent"))
}

// TestTelemetryConcurrentRoutes: the per-route and per-status attribute caches are built while
// requests run in parallel (run with -race); every request is counted once under its own set.
func TestTelemetryConcurrentRoutes(t *testing.T) {
	sdk := oteltest.New(t)
	r := newEngine(t, Telemetry(telemetryOpts(sdk)))
	r.GET("/a/:code", func(c *gin.Context) {
		code, _ := strconv.Atoi(c.Param("code"))
		c.Status(code)
	})
	r.GET("/b", func(c *gin.Context) { c.Status(http.StatusOK) })
	const workers, each = 8, 40
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if (w+i)%2 == 0 {
					get(r, "/b")
				} else {
					get(r, "/a/"+strconv.Itoa(200+i%5))
				}
			}
		}()
	}
	wg.Wait()
	h := MetricRequestDuration
	assert.EqualValues(t, workers*each, sdk.HistogramCount(t, h))
	assert.EqualValues(t, workers*each/2, sdk.HistogramCount(t, h, attribute.String("http.route", "/b")))
	var perStatus uint64
	for code := 200; code < 205; code++ {
		n := sdk.HistogramCount(t, h, attribute.String("http.route", "/a/:code"), attribute.Int("http.response.status_code", code))
		assert.Positive(t, n, code)
		perStatus += n
	}
	assert.EqualValues(t, workers*each/2, perStatus)
}

// TestTelemetryUnsampledCaller: a caller that did not sample the trace gets no recorded span,
// but the request still has a span id of its own in the same trace, with the caller's flags.
func TestTelemetryUnsampledCaller(t *testing.T) {
	sdk := oteltest.New(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	r := newEngine(t, Telemetry(&TelemetryOptions{TracerProvider: tp, MeterProvider: sdk.MeterProvider, Propagator: sdk.Propagator}), RequestID(nil))
	var seen Trace
	r.GET("/", func(c *gin.Context) { seen, _ = TraceFrom(c); c.Status(http.StatusOK) })
	w := get(r, "/", "Traceparent", "00-"+callerTrace+"-"+callerSpan+"-00")
	assert.Empty(t, rec.Ended(), "not sampled")
	assert.Equal(t, callerTrace, seen.TraceID)
	assert.Equal(t, callerSpan, seen.ParentID)
	assert.NotEqual(t, callerSpan, seen.SpanID)
	assert.False(t, seen.Sampled())
	assert.Equal(t, "00-"+callerTrace+"-"+seen.SpanID+"-00", w.Header().Get("Traceparent"))
	assert.EqualValues(t, 1, sdk.HistogramCount(t, MetricRequestDuration), "metrics do not depend on sampling")
}

// TestCacheTelemetry: CacheOptions hands its providers to the cache behind the middleware; a miss
// runs the handler under a cache.load span inside the request's server span, a hit opens none.
func TestCacheTelemetry(t *testing.T) {
	sdk := oteltest.New(t)
	_, rdb := redistest.Mini(t)
	h := newHTTPCache(t, rdb, &CacheOptions{Prefix: "tel:", TracerProvider: sdk.TracerProvider, MeterProvider: sdk.MeterProvider})
	r := newEngine(t, Telemetry(telemetryOpts(sdk)), h.Handler())
	r.GET("/items", func(c *gin.Context) { c.String(http.StatusOK, "items") })
	assert.Contains(t, get(r, "/items").Header().Get("Cache-Status"), "fwd=miss")
	assert.Contains(t, get(r, "/items").Header().Get("Cache-Status"), "hit")

	load := onlySpan(t, sdk, "cache.load")
	servers := sdk.SpansNamed("GET /items")
	require.Len(t, servers, 2)
	assert.Equal(t, servers[0].SpanContext().SpanID(), load.Parent().SpanID(), "the load runs inside the first request's span")
	assert.Equal(t, servers[0].SpanContext().TraceID(), load.SpanContext().TraceID())
	name := attribute.String("surge.cache.name", "tel:r:")
	assert.EqualValues(t, 1, sdk.Sum(t, "surge.cache.requests", name, attribute.String("surge.cache.result", "redis_hit")))
	assert.EqualValues(t, 1, sdk.HistogramCount(t, "surge.cache.load.duration", name))
}
