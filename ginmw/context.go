package ginmw

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/gin-gonic/gin"
)

// stateKey is the unexported context key under which the per-request [state] lives.
type stateKey struct{}

// state is everything the middleware of this package learn about one request. It is created once
// per request (by the first middleware that needs it) and stored on the request's
// context.Context, so accessors need no string keys and the request is copied only once.
//
// Fields are written only by middleware, before they call c.Next, and read afterwards; the
// lazily built logger is the one field written later, hence atomic.
type state struct {
	context.Context // the request's original context: state is its child, saving a WithValue

	requestID string
	trace     Trace
	hasTrace  bool

	base   *slog.Logger                // access logger set by Logger; nil when Logger did not run
	logger atomic.Pointer[slog.Logger] // base.With(ids), built on first LoggerFrom

	authed  bool   // JWT verified a token
	issuer  string // the verified token's "iss"
	subject string // the verified token's "sub"
	payload []byte // the verified token's claims JSON

	// hdr backs the response header values RequestID sets: the request id and the traceparent.
	// Telemetry writes its span's traceparent to hdr[1][0], which also rewrites the header of a
	// RequestID that ran before it.
	hdr [2][1]string
}

// Value returns the state itself for stateKey and defers to the parent context otherwise.
func (s *state) Value(key any) any {
	if key == (stateKey{}) {
		return s
	}
	return s.Context.Value(key)
}

// requestContext returns the context a gin handler's values live on: for a *gin.Context its
// request's context (gin only falls back to it when ContextWithFallback is set).
func requestContext(ctx context.Context) context.Context {
	if gc, ok := ctx.(*gin.Context); ok {
		if gc.Request == nil {
			return context.Background()
		}
		return gc.Request.Context()
	}
	return ctx
}

// stateFrom returns the request state stored on ctx, or nil.
func stateFrom(ctx context.Context) *state {
	if ctx == nil {
		return nil
	}
	s, _ := requestContext(ctx).Value(stateKey{}).(*state)
	return s
}

// stateOf returns c's request state, creating it (and replacing c.Request with a copy carrying it)
// when no middleware of this package has run before.
func stateOf(c *gin.Context) *state {
	if s, ok := c.Request.Context().Value(stateKey{}).(*state); ok {
		return s
	}
	s := &state{Context: c.Request.Context()}
	c.Request = c.Request.WithContext(s)
	return s
}

// RequestIDFrom returns the request id [RequestID] accepted or generated for the request ctx
// belongs to, or "" when RequestID did not run. ctx may be the *gin.Context or its request's
// context (or any context derived from it). Safe for concurrent use.
func RequestIDFrom(ctx context.Context) string {
	if s := stateFrom(ctx); s != nil {
		return s.requestID
	}
	return ""
}

// TraceFrom returns the W3C trace context of the request ctx belongs to: the trace id and this
// request's span id, those of the span [Telemetry] opened when it ran with an SDK installed,
// else those [RequestID] made. ok is false when neither set one. Safe for concurrent use.
func TraceFrom(ctx context.Context) (t Trace, ok bool) {
	if s := stateFrom(ctx); s != nil && s.hasTrace {
		return s.trace, true
	}
	return Trace{}, false
}

// LoggerFrom returns a logger for the request ctx belongs to that carries its request_id (when
// [RequestID] ran), trace_id and span_id attributes (when RequestID ran, or [Telemetry] opened a
// span: then they are the span's, as [TraceFrom] gives them). The logger is the one given to
// [Logger], or slog.Default() when Logger did not run; it is built on the first call and reused.
// Never nil; safe for concurrent use.
func LoggerFrom(ctx context.Context) *slog.Logger {
	s := stateFrom(ctx)
	if s == nil {
		return slog.Default()
	}
	if l := s.logger.Load(); l != nil {
		return l
	}
	base := s.base
	if base == nil {
		base = slog.Default()
	}
	var l *slog.Logger
	switch {
	case s.hasTrace && s.requestID != "":
		l = base.With(slog.String("request_id", s.requestID),
			slog.String("trace_id", s.trace.TraceID), slog.String("span_id", s.trace.SpanID))
	case s.hasTrace:
		l = base.With(slog.String("trace_id", s.trace.TraceID), slog.String("span_id", s.trace.SpanID))
	case s.requestID != "":
		l = base.With(slog.String("request_id", s.requestID))
	default:
		l = base
	}
	if s.logger.CompareAndSwap(nil, l) {
		return l
	}
	return s.logger.Load()
}
