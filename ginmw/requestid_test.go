package ginmw

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	generatedID    = regexp.MustCompile(`^[0-9a-f]{32}$`)
	validTraceResp = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)
)

// seen records what a handler could read from the request context.
type seen struct {
	id    string
	trace Trace
	ok    bool
}

func idEngine(t *testing.T, opt *RequestIDOptions) (*gin.Engine, *seen) {
	s := &seen{}
	r := newEngine(t, RequestID(opt))
	r.GET("/", func(c *gin.Context) {
		s.id = RequestIDFrom(c)
		s.trace, s.ok = TraceFrom(c.Request.Context())
		c.Status(http.StatusNoContent)
	})
	return r, s
}

func TestRequestIDAcceptsValidIncoming(t *testing.T) {
	r, s := idEngine(t, nil)
	for _, id := range []string{"abc-123", "A.b_c:d-9", strings.Repeat("x", 128)} {
		w := get(r, "/", "X-Request-ID", id)
		assert.Equal(t, id, w.Header().Get("X-Request-ID"))
		assert.Equal(t, id, s.id, "handler sees the id")
	}
}

func TestRequestIDReplacesInjection(t *testing.T) {
	r, s := idEngine(t, nil)
	bad := []string{
		"abc\r\nSet-Cookie: x=1", "abc\nx", strings.Repeat("a", 10<<10), strings.Repeat("a", 129),
		"ïd", "日本", "a b", "a/b", "<script>", "",
	}
	for _, id := range bad {
		w := get(r, "/", "X-Request-ID", id)
		got := w.Header().Get("X-Request-ID")
		assert.Regexp(t, generatedID, got, "incoming %.40q", id)
		assert.NotEqual(t, id, got)
		assert.Equal(t, got, s.id)
		assert.Empty(t, w.Header().Values("Set-Cookie"))
	}
	// Two headers: ambiguous, replaced.
	w := do(r, req{target: "/", header: http.Header{"X-Request-Id": {"a", "b"}}})
	assert.Regexp(t, generatedID, w.Header().Get("X-Request-ID"))
	// Without a header each request gets a fresh id.
	a, b := get(r, "/").Header().Get("X-Request-ID"), get(r, "/").Header().Get("X-Request-ID")
	assert.Regexp(t, generatedID, a)
	assert.NotEqual(t, a, b)
}

func TestRequestIDOptions(t *testing.T) {
	r, s := idEngine(t, &RequestIDOptions{Header: "x-correlation-id", Generate: func() string { return "gen-1" }, IgnoreIncoming: true})
	w := get(r, "/", "X-Correlation-ID", "client-chosen")
	assert.Equal(t, "gen-1", w.Header().Get("X-Correlation-ID"))
	assert.Equal(t, "gen-1", s.id)
	assert.Empty(t, w.Header().Get("X-Request-ID"))

	_, err := NewRequestID(&RequestIDOptions{Header: "bad header"})
	require.ErrorIs(t, err, ErrInvalidOptions)
	assert.Contains(t, err.Error(), "RequestIDOptions.Header")

	assert.Panics(t, func() { RequestID(&RequestIDOptions{Header: "a:b"}) }, "refused at wiring time")
}

func TestTraceparentContinued(t *testing.T) {
	r, s := idEngine(t, nil)
	const in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	w := do(r, req{target: "/", header: http.Header{"Traceparent": {in}, "Tracestate": {"congo=t61rcWkgMzE"}}})
	out := w.Header().Get("Traceparent")
	require.Regexp(t, validTraceResp, out)
	assert.Equal(t, in[:36], out[:36], "same version and trace id")
	assert.NotEqual(t, "00f067aa0ba902b7", out[36:52], "a new span id")
	assert.Equal(t, "01", out[53:], "sampled flag kept")
	require.True(t, s.ok)
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", s.trace.TraceID)
	assert.Equal(t, "00f067aa0ba902b7", s.trace.ParentID)
	assert.Equal(t, out[36:52], s.trace.SpanID)
	assert.True(t, s.trace.Sampled())
	assert.Equal(t, "congo=t61rcWkgMzE", s.trace.State)
	assert.Equal(t, out, s.trace.Traceparent())

	// A future version with extra fields is read for its first four.
	w = get(r, "/", "Traceparent", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra")
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", w.Header().Get("Traceparent")[3:35])
	assert.False(t, s.trace.Sampled())
}

func TestTraceparentInvalidStartsNewTrace(t *testing.T) {
	r, s := idEngine(t, nil)
	const trace, span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	bad := []string{
		"00-" + strings.ToUpper(trace) + "-" + span + "-01", // uppercase hex
		"00-" + trace + "-" + strings.ToUpper(span) + "-01",
		"00-" + strings.Repeat("0", 32) + "-" + span + "-01",  // all-zero trace id
		"00-" + trace + "-" + strings.Repeat("0", 16) + "-01", // all-zero parent id
		"ff-" + trace + "-" + span + "-01",                    // forbidden version
		"00-" + trace + "-" + span + "-01-extra",              // version 00 is exactly 55
		"01-" + trace + "-" + span + "-01x",                   // later versions: '-' after 55
		"00-" + trace + "-" + span,                            // short
		"0g-" + trace + "-" + span + "-01",
		"00_" + trace + "-" + span + "-01",
		"00-" + trace + "-" + span + "-0z",
	}
	for _, tp := range bad {
		w := get(r, "/", "Traceparent", tp)
		out := w.Header().Get("Traceparent")
		require.Regexp(t, validTraceResp, out, tp)
		assert.NotEqual(t, trace, out[3:35], "restarted for %q", tp)
		assert.NotEqual(t, strings.ToLower(trace), s.trace.TraceID)
		assert.Empty(t, s.trace.ParentID)
		assert.Equal(t, "00", out[53:])
	}
	// Two traceparent headers are invalid.
	w := do(r, req{target: "/", header: http.Header{"Traceparent": {"00-" + trace + "-" + span + "-01", "00-" + trace + "-" + span + "-01"}}})
	assert.NotEqual(t, trace, w.Header().Get("Traceparent")[3:35])
}

func TestLoggerFromCarriesIDs(t *testing.T) {
	logger, logs := newJSONLogger(slog.LevelInfo)
	r := newEngine(t, RequestID(nil), Logger(&LoggerOptions{Logger: logger}))
	r.GET("/", func(c *gin.Context) {
		LoggerFrom(c).Info("in handler")
		LoggerFrom(c.Request.Context()).Info("again") // cached logger, same ids
		c.Status(200)
	})
	w := get(r, "/", "X-Request-ID", "rid-1")
	lines := logs.lines()
	require.Len(t, lines, 3)
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		assert.Equal(t, "rid-1", m["request_id"], l)
		assert.Equal(t, w.Header().Get("Traceparent")[3:35], m["trace_id"], l)
		assert.Equal(t, w.Header().Get("Traceparent")[36:52], m["span_id"], l)
	}
	// Without any middleware LoggerFrom falls back to slog.Default; with only RequestID the
	// default logger carries the ids.
	require.NotNil(t, LoggerFrom(t.Context()))
	assert.Empty(t, RequestIDFrom(t.Context()))
	_, ok := TraceFrom(t.Context())
	assert.False(t, ok)
}

func TestNewRequestIDErrorIsOptionError(t *testing.T) {
	_, err := NewRequestID(&RequestIDOptions{Header: "é"})
	assert.True(t, errors.Is(err, ErrInvalidOptions))
}

func FuzzParseTraceparent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
	f.Add("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Fuzz(func(t *testing.T, s string) {
		traceID, parentID, flags, ok := parseTraceparent([]string{s})
		if !ok {
			return
		}
		if !lowerHex(traceID) || len(traceID) != 32 || allZeroHex(traceID) ||
			!lowerHex(parentID) || len(parentID) != 16 || allZeroHex(parentID) || flags > 3 {
			t.Fatalf("accepted %q as %q %q %d", s, traceID, parentID, flags)
		}
		tr, tp := newTrace(traceID, parentID, flags)
		if !validTraceResp.MatchString(tp) || tr.TraceID != traceID || tr.Traceparent() != tp {
			t.Fatalf("continued %q as %q", s, tp)
		}
	})
}
