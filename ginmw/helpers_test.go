package ginmw

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	goleak.VerifyTestMain(m)
}

// newEngine returns a gin engine that trusts no proxy (RemoteAddr is the client) and recovers
// panics, plus the middleware given.
func newEngine(t testing.TB, mw ...gin.HandlerFunc) *gin.Engine {
	t.Helper()
	r := gin.New()
	if err := r.SetTrustedProxies(nil); err != nil {
		t.Fatal(err)
	}
	r.Use(gin.CustomRecoveryWithWriter(io.Discard, func(c *gin.Context, _ any) {
		c.AbortWithStatus(http.StatusInternalServerError)
	}))
	r.Use(mw...)
	return r
}

// req describes one test request.
type req struct {
	method, target, body string
	remote               string // RemoteAddr, default 192.0.2.10:1234
	header               http.Header
}

func do(h http.Handler, r req) *httptest.ResponseRecorder {
	if r.method == "" {
		r.method = http.MethodGet
	}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr := httptest.NewRequest(r.method, r.target, body)
	if r.remote != "" {
		hr.RemoteAddr = r.remote
	} else {
		hr.RemoteAddr = "192.0.2.10:1234"
	}
	for k, vs := range r.header {
		hr.Header[k] = vs
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, hr)
	return w
}

func get(h http.Handler, target string, kv ...string) *httptest.ResponseRecorder {
	hdr := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		hdr.Add(kv[i], kv[i+1])
	}
	return do(h, req{target: target, header: hdr})
}

// logBuffer is a concurrency-safe buffer for a JSON slog handler.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the non-empty log lines.
func (l *logBuffer) lines() []string {
	var out []string
	for _, s := range strings.Split(l.String(), "\n") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func newJSONLogger(level slog.Level) (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: level})), buf
}

// downRedis returns a client of a Redis that has gone away, without retries (which would only
// make the tests slow).
func downRedis(t testing.TB) redis.UniversalClient {
	m := miniredis.RunT(t)
	addr := m.Addr()
	m.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// doCancelled sends a request whose context has already ended.
func doCancelled(h http.Handler, method, target string, header http.Header) *httptest.ResponseRecorder {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	hr := httptest.NewRequest(method, target, strings.NewReader("x")).WithContext(ctx)
	hr.RemoteAddr = "192.0.2.10:1234"
	for k, vs := range header {
		hr.Header[k] = vs
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, hr)
	return w
}

// blocker returns a channel handlers wait on and the function that closes it (idempotent). It is
// also closed when the test ends, so that a failing test does not leave handlers blocked (and
// Close waiting for them): register it after the things whose cleanup waits for handlers.
func blocker(t testing.TB) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(ch) }) }
	t.Cleanup(unblock)
	return ch, unblock
}

// principalOf returns Principal's answer, "?" when it cannot tell the caller.
func principalOf(c *gin.Context) string {
	if p, ok := Principal(c); ok {
		return p
	}
	return "?"
}
