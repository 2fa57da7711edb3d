package ginmw

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/surgekit/surge/internal/otelx"
)

// TelemetryScope is the instrumentation scope (the meter's and tracer's name) of [Telemetry].
const TelemetryScope = otelx.ScopePrefix + "ginmw"

// MetricRequestDuration is the histogram [Telemetry] records every request's duration in, in
// seconds, with the attributes http.request.method, http.route (when the request matched a
// route), http.response.status_code and, for 5xx answers, error.type (the status code).
const MetricRequestDuration = "http.server.request.duration"

// durationBuckets are the bucket boundaries the HTTP semantic conventions advise for
// http.server.request.duration, in seconds.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// knownMethods are the methods recorded as they are; any other is recorded as "_OTHER" (with the
// original on the span as http.request.method_original), so clients cannot grow the metric's
// cardinality with made-up methods.
var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodDelete: true, http.MethodConnect: true, http.MethodOptions: true, http.MethodTrace: true,
	http.MethodPatch: true,
}

// telemetry is one Telemetry middleware: the resolved providers and instrument, and the
// attribute options of every route, method and status seen so far (built once each: the
// variadic Record would otherwise allocate per request).
type telemetry struct {
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	duration metric.Float64Histogram

	mu     sync.Mutex // serialises writers of routes and of every entry's statuses
	routes atomic.Pointer[map[routeKey]*routeEntry]
}

// routeKey names a route entry: the recorded method ("_OTHER" for unknown ones) and the route
// pattern (c.FullPath(), "" when no route matched). Both sets are bounded by the engine's
// routes, so the cache is too.
type routeKey struct{ method, route string }

type routeEntry struct {
	spanName  string
	startOpts []trace.SpanStartOption
	attrs     []attribute.KeyValue // method and route
	statuses  atomic.Pointer[map[int][]metric.RecordOption]
}

// NewTelemetry is [Telemetry] returning an error wrapping [ErrInvalidOptions] instead of
// panicking when opt is invalid.
func NewTelemetry(opt *TelemetryOptions) (gin.HandlerFunc, error) {
	cfg, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	meter := otelx.Meter(cfg.meterProvider, TelemetryScope)
	t := &telemetry{
		tracer: otelx.Tracer(cfg.tracerProvider, TelemetryScope),
		prop:   otelx.Propagator(cfg.propagator),
		duration: otelx.Must(meter.Float64Histogram(MetricRequestDuration,
			metric.WithUnit("s"),
			metric.WithDescription("Duration of HTTP server requests."),
			metric.WithExplicitBucketBoundaries(durationBuckets...))),
	}
	t.routes.Store(&map[routeKey]*routeEntry{})
	skip := cfg.skip
	return func(c *gin.Context) {
		if skip != nil && skip(c) {
			c.Next()
			return
		}
		t.serve(c)
	}, nil
}

// Telemetry returns middleware that traces each request with OpenTelemetry and records its
// duration: put it first in the chain (before [RequestID] and [Logger]), so that it times the
// whole request and they carry its trace.
//
// It opens a server span named "METHOD route" (route is the matched pattern, c.FullPath(), so
// "GET /users/:id"; just "METHOD" when no route matched) that continues the trace of an incoming
// traceparent (through opt.Propagator) and ends when the handlers return. The span carries the
// method, route, path, scheme, client address, user agent and status code; a 5xx answer (or a
// panic passing through, counted as 500) sets its status to Error, and the errors handlers added
// with c.Error are recorded on it. The handlers' context (c.Request.Context()) carries the span,
// so spans they open, and calls they make through instrumented clients (an events publish, a
// Redis call), join the trace: pass c.Request.Context() to them, not c itself, unless the engine
// sets ContextWithFallback (without it a *gin.Context does not reach the request's values).
//
// Every request is recorded in the histogram [MetricRequestDuration] (seconds), with
// http.request.method ("_OTHER" for unknown methods), http.route (omitted when no route matched),
// http.response.status_code and, for 5xx answers, error.type.
//
// When the span has a trace id (an SDK is installed), [RequestID] (after Telemetry) takes its
// trace id and span id for the response traceparent and [TraceFrom], and [Logger] and
// [LoggerFrom] log them; a RequestID before Telemetry has its trace replaced by the span's
// before the handlers run. With no SDK installed and no incoming trace, Telemetry leaves the
// request as it is.
//
// opt may be nil: the global tracer and meter providers and text-map propagator. The handler
// blocks only for the providers it was given; it is safe for concurrent use. Telemetry panics at
// wiring time when [NewTelemetry] would return an error.
func Telemetry(opt *TelemetryOptions) gin.HandlerFunc {
	return must(NewTelemetry(opt))
}

func (t *telemetry) serve(c *gin.Context) {
	start := time.Now()
	r := c.Request
	method := r.Method
	if !knownMethods[method] {
		method = "_OTHER"
	}
	e := t.route(method, c.FullPath())

	parent := t.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := t.tracer.Start(parent, e.spanName, e.startOpts...)
	recording := span.IsRecording()
	if recording {
		span.SetAttributes(t.requestAttrs(c, method)...)
	}
	if sc := span.SpanContext(); sc.IsValid() {
		t.attach(c, ctx, sc, trace.SpanContextFromContext(parent))
	}

	finished := false
	defer func() {
		status := c.Writer.Status()
		if !finished { // a panic is passing through: record it as a 500, do not stop it
			status = http.StatusInternalServerError
		}
		if t.duration.Enabled(ctx) {
			t.duration.Record(ctx, time.Since(start).Seconds(), t.statusOpts(e, status)...)
		}
		if recording {
			span.SetAttributes(attribute.Int("http.response.status_code", status))
			for _, err := range c.Errors {
				span.RecordError(err.Err)
			}
			switch {
			case !finished:
				span.SetAttributes(attribute.String("error.type", strconv.Itoa(status)))
				span.SetStatus(codes.Error, "panic")
			case status >= 500:
				span.SetAttributes(attribute.String("error.type", strconv.Itoa(status)))
				span.SetStatus(codes.Error, "")
			}
		}
		span.End()
	}()
	c.Next()
	finished = true
}

// requestAttrs are the span attributes known before the handlers run, beyond method and route.
func (t *telemetry) requestAttrs(c *gin.Context, method string) []attribute.KeyValue {
	r := c.Request
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	attrs := make([]attribute.KeyValue, 0, 6)
	attrs = append(attrs, attribute.String("url.path", r.URL.Path), attribute.String("url.scheme", scheme))
	if method == "_OTHER" {
		attrs = append(attrs, attribute.String("http.request.method_original", r.Method))
	}
	if ip := c.ClientIP(); ip != "" {
		attrs = append(attrs, attribute.String("client.address", ip))
	}
	if ip := c.RemoteIP(); ip != "" {
		attrs = append(attrs, attribute.String("network.peer.address", ip))
	}
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, attribute.String("user_agent.original", ua))
	}
	return attrs
}

// attach puts the span's context on the request. When the span is local (started here by an
// SDK, not a no-op tracer passing the caller's context through), its ids become the request's
// trace, which RequestID, Logger and LoggerFrom use; a traceparent RequestID already put on the
// response is rewritten to name the span.
func (t *telemetry) attach(c *gin.Context, ctx context.Context, sc, parent trace.SpanContext) {
	if sc.IsRemote() {
		c.Request = c.Request.WithContext(ctx)
		return
	}
	parentID := ""
	if parent.IsValid() && parent.TraceID() == sc.TraceID() {
		parentID = parent.SpanID().String()
	}
	tr, tp := spanTrace(sc, parentID, c.Request.Header)
	s, ok := c.Request.Context().Value(stateKey{}).(*state)
	if !ok { // the first middleware of this package: the span's context is the state's parent
		s = &state{Context: ctx, trace: tr, hasTrace: true}
		s.hdr[1][0] = tp
		c.Request = c.Request.WithContext(s)
		return
	}
	s.trace, s.hasTrace = tr, true
	s.hdr[1][0] = tp    // a RequestID that ran before has this slot as its response traceparent
	s.logger.Store(nil) // a logger built before carries the old ids
	c.Request = c.Request.WithContext(ctx)
}

// route returns the entry of method and route, building it on first use.
func (t *telemetry) route(method, route string) *routeEntry {
	k := routeKey{method, route}
	if e, ok := (*t.routes.Load())[k]; ok {
		return e
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.routes.Load()
	if e, ok := old[k]; ok {
		return e
	}
	name := method
	if method == "_OTHER" {
		name = "HTTP"
	}
	attrs := []attribute.KeyValue{attribute.String("http.request.method", method)}
	if route != "" {
		name += " " + route
		attrs = append(attrs, attribute.String("http.route", route))
	}
	e := &routeEntry{
		spanName:  name,
		startOpts: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...)},
		attrs:     attrs,
	}
	e.statuses.Store(&map[int][]metric.RecordOption{})
	next := make(map[routeKey]*routeEntry, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[k] = e
	t.routes.Store(&next)
	return e
}

// statusOpts returns the record options of e answered with status, building them on first use.
func (t *telemetry) statusOpts(e *routeEntry, status int) []metric.RecordOption {
	if o, ok := (*e.statuses.Load())[status]; ok {
		return o
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *e.statuses.Load()
	if o, ok := old[status]; ok {
		return o
	}
	attrs := append(append(make([]attribute.KeyValue, 0, len(e.attrs)+2), e.attrs...),
		attribute.Int("http.response.status_code", status))
	if status >= 500 {
		attrs = append(attrs, attribute.String("error.type", strconv.Itoa(status)))
	}
	o := []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))}
	next := make(map[int][]metric.RecordOption, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[status] = o
	e.statuses.Store(&next)
	return o
}
