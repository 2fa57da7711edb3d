package ginmw

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func decodeLine(t *testing.T, line string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(line), &m), line)
	return m
}

func TestLoggerOneLinePerRequest(t *testing.T) {
	logger, logs := newJSONLogger(slog.LevelDebug)
	r := newEngine(t, RequestID(nil), Logger(&LoggerOptions{Logger: logger}))
	r.GET("/users/:id", func(c *gin.Context) {
		c.SetCookie("session", "cookie-secret", 60, "/", "", true, true)
		c.String(http.StatusOK, "hello")
	})
	r.GET("/boom", func(c *gin.Context) { c.Status(http.StatusBadGateway) })
	r.GET("/gone", func(c *gin.Context) { c.Status(http.StatusNotFound) })

	w := do(r, req{target: "/users/42?token=query-secret", remote: "198.51.100.4:999", header: http.Header{
		"Authorization": {"Bearer auth-secret"}, "Cookie": {"sid=cookie-in-secret"}, "X-Request-Id": {"rid-7"},
	}})
	require.Equal(t, http.StatusOK, w.Code)
	lines := logs.lines()
	require.Len(t, lines, 1)
	m := decodeLine(t, lines[0])
	assert.Equal(t, "INFO", m["level"])
	assert.Equal(t, "GET", m["method"])
	assert.Equal(t, "/users/:id", m["route"])
	assert.Equal(t, "/users/42", m["path"])
	assert.EqualValues(t, 200, m["status"])
	assert.EqualValues(t, 5, m["bytes"])
	assert.Equal(t, "198.51.100.4", m["client_ip"])
	assert.Equal(t, "rid-7", m["request_id"])
	assert.Equal(t, w.Header().Get("Traceparent")[3:35], m["trace_id"])
	assert.Contains(t, m, "latency")
	for _, secret := range []string{"auth-secret", "cookie-secret", "cookie-in-secret", "query-secret"} {
		assert.NotContains(t, lines[0], secret)
	}

	get(r, "/boom")
	get(r, "/gone")
	lines = logs.lines()
	require.Len(t, lines, 3)
	assert.Equal(t, "ERROR", decodeLine(t, lines[1])["level"])
	assert.Equal(t, "WARN", decodeLine(t, lines[2])["level"])
}

func TestLoggerPanicPassingThrough(t *testing.T) {
	logger, logs := newJSONLogger(slog.LevelInfo)
	r := newEngine(t, Logger(&LoggerOptions{Logger: logger})) // recovery is outside the logger
	r.GET("/", func(c *gin.Context) { panic("boom") })
	assert.Equal(t, http.StatusInternalServerError, get(r, "/").Code)
	lines := logs.lines()
	require.Len(t, lines, 1)
	m := decodeLine(t, lines[0])
	assert.Equal(t, "ERROR", m["level"])
	assert.Equal(t, true, m["panic"])
	assert.EqualValues(t, 500, m["status"])
}

func TestNewLoggerHeadersAndSkip(t *testing.T) {
	for _, h := range []string{"Authorization", "cookie", "Set-Cookie", "proxy-authorization", "bad name"} {
		_, err := NewLogger(&LoggerOptions{Headers: []string{h}})
		require.ErrorIs(t, err, ErrInvalidOptions, h)
	}
	logger, logs := newJSONLogger(slog.LevelInfo)
	mw, err := NewLogger(&LoggerOptions{Logger: logger, Headers: []string{"user-agent"},
		Skip: func(c *gin.Context) bool { return c.Request.URL.Path == "/health" }})
	require.NoError(t, err)
	r := newEngine(t, mw)
	r.GET("/health", func(c *gin.Context) { c.Status(200) })
	r.GET("/", func(c *gin.Context) { LoggerFrom(c).Info("inner"); c.Status(200) })
	get(r, "/health")
	get(r, "/", "User-Agent", "tester/1")
	lines := logs.lines()
	require.Len(t, lines, 2, "health check skipped, handler line and access line kept")
	assert.Equal(t, "tester/1", decodeLine(t, lines[1])["header.user-agent"])
}
