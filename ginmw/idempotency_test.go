package ginmw

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// orderAPI is an engine with Idempotency in front of POST /orders, whose handler echoes the body
// and counts its runs; hook, when set, runs first.
type orderAPI struct {
	*gin.Engine
	mr   *miniredis.Miniredis
	runs atomic.Int64
	hook func(c *gin.Context, run int64)
}

func newOrderAPI(t *testing.T, opt *IdempotencyOptions) *orderAPI {
	t.Helper()
	mr, rdb := redistest.Mini(t)
	return newOrderAPIOn(t, mr, rdb, opt)
}

func newOrderAPIOn(t *testing.T, mr *miniredis.Miniredis, rdb redis.UniversalClient, opt *IdempotencyOptions) *orderAPI {
	t.Helper()
	a := &orderAPI{mr: mr}
	mw, err := NewIdempotency(rdb, opt)
	require.NoError(t, err)
	a.Engine = newEngine(t, RequestID(nil), mw)
	h := func(c *gin.Context) {
		n := a.runs.Add(1)
		if a.hook != nil {
			a.hook(c, n)
			if c.IsAborted() {
				return
			}
		}
		body, _ := io.ReadAll(c.Request.Body)
		c.Header("Location", "/orders/"+strconv.FormatInt(n, 10))
		c.String(http.StatusCreated, "order %d: %s", n, body)
	}
	a.POST("/orders", h)
	a.POST("/other", h)
	a.PATCH("/orders", h)
	a.GET("/orders", h)
	return a
}

func (a *orderAPI) post(key, body string, kv ...string) *httptest.ResponseRecorder {
	return a.send(http.MethodPost, "/orders", key, body, kv...)
}

func (a *orderAPI) send(method, target, key, body string, kv ...string) *httptest.ResponseRecorder {
	h := http.Header{}
	if key != "" {
		h.Set("Idempotency-Key", key)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return do(a, req{method: method, target: target, body: body, header: h})
}

func TestIdempotencyReplay(t *testing.T) {
	a := newOrderAPI(t, nil)
	w1 := a.post(`"k-1"`, `{"qty":1}`)
	require.Equal(t, http.StatusCreated, w1.Code)
	assert.Equal(t, `order 1: {"qty":1}`, w1.Body.String(), "the handler read the buffered body")
	assert.Empty(t, w1.Header().Get("Idempotent-Replayed"))

	w2 := a.post("k-1", `{"qty":1}`) // bare form of the same key
	assert.Equal(t, http.StatusCreated, w2.Code)
	assert.Equal(t, w1.Body.String(), w2.Body.String())
	assert.Equal(t, "/orders/1", w2.Header().Get("Location"))
	assert.Equal(t, w1.Header().Get("Content-Type"), w2.Header().Get("Content-Type"))
	assert.Equal(t, "true", w2.Header().Get("Idempotent-Replayed"))
	assert.NotEqual(t, w1.Header().Get("X-Request-ID"), w2.Header().Get("X-Request-ID"), "per-request headers are not replayed")
	assert.EqualValues(t, 1, a.runs.Load())

	w3 := a.post("k-2", `{"qty":1}`)
	assert.Equal(t, "order 2: {\"qty\":1}", w3.Body.String(), "another key runs")
}

func TestIdempotencyMismatch(t *testing.T) {
	a := newOrderAPI(t, nil)
	require.Equal(t, http.StatusCreated, a.post("k", "one").Code)
	for name, w := range map[string]*httptest.ResponseRecorder{
		"body":   a.post("k", "two"),
		"path":   a.send(http.MethodPost, "/other", "k", "one"),
		"query":  a.send(http.MethodPost, "/orders?x=1", "k", "one"),
		"method": a.send(http.MethodPatch, "/orders", "k", "one"),
	} {
		assert.Equal(t, http.StatusUnprocessableEntity, w.Code, name)
		assert.Equal(t, problemJSON, w.Header().Get("Content-Type"), name)
	}
	assert.EqualValues(t, 1, a.runs.Load())
}

func TestIdempotencyConflictWhileInFlight(t *testing.T) {
	a := newOrderAPI(t, &IdempotencyOptions{Lease: 30 * time.Second})
	started := make(chan struct{})
	release, unblock := blocker(t)
	a.hook = func(c *gin.Context, run int64) {
		if run == 1 {
			close(started)
			<-release
		}
	}
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() { first <- a.post("k", "x") }()
	<-started
	w := a.post("k", "x")
	assert.Equal(t, http.StatusConflict, w.Code)
	ra, err := strconv.Atoi(w.Header().Get("Retry-After"))
	require.NoError(t, err)
	assert.InDelta(t, 30, ra, 1)
	assert.Equal(t, http.StatusUnprocessableEntity, a.post("k", "y").Code, "different body: 422 even in flight")
	unblock()
	assert.Equal(t, http.StatusCreated, (<-first).Code)
	assert.Equal(t, "true", a.post("k", "x").Header().Get("Idempotent-Replayed"))
	assert.EqualValues(t, 1, a.runs.Load())
}

func TestIdempotencyPanicReleasesLease(t *testing.T) {
	a := newOrderAPI(t, nil)
	a.hook = func(c *gin.Context, run int64) {
		if run == 1 {
			panic("handler crashed")
		}
	}
	assert.Equal(t, http.StatusInternalServerError, a.post("k", "x").Code)
	w := a.post("k", "x")
	assert.Equal(t, http.StatusCreated, w.Code, "the retry runs at once")
	assert.Equal(t, "order 2: x", w.Body.String())
	assert.Equal(t, "true", a.post("k", "x").Header().Get("Idempotent-Replayed"))
}

func TestIdempotencyCrashedLeaseExpires(t *testing.T) {
	logger, logs := newJSONLogger(slog.LevelWarn)
	a := newOrderAPI(t, &IdempotencyOptions{Lease: 10 * time.Second, Logger: logger})
	started := make(chan struct{})
	release, unblock := blocker(t)
	a.hook = func(c *gin.Context, run int64) {
		if run == 1 { // a process that hangs (or died) holding the lease
			close(started)
			<-release
		}
	}
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() { first <- a.post("k", "x") }()
	<-started
	assert.Equal(t, http.StatusConflict, a.post("k", "x").Code)
	a.mr.FastForward(10*time.Second + time.Millisecond)
	w := a.post("k", "x")
	assert.Equal(t, http.StatusCreated, w.Code, "the lease expired: the retry runs")
	assert.Equal(t, "order 2: x", w.Body.String())

	unblock() // the first finishes late: its lease is gone, it must not overwrite
	<-first
	assert.Contains(t, logs.String(), "lease expired")
	r := a.post("k", "x")
	assert.Equal(t, "order 2: x", r.Body.String(), "the retry's response is the one replayed")
	assert.EqualValues(t, 2, a.runs.Load())
}

func TestIdempotencyServerErrorNotStored(t *testing.T) {
	a := newOrderAPI(t, nil)
	a.hook = func(c *gin.Context, run int64) {
		if run == 1 {
			c.AbortWithStatus(http.StatusServiceUnavailable)
		}
	}
	assert.Equal(t, http.StatusServiceUnavailable, a.post("k", "x").Code)
	assert.Equal(t, http.StatusCreated, a.post("k", "x").Code, "a 5xx can be retried")
	a.hook = func(c *gin.Context, run int64) {
		if run == 3 {
			c.AbortWithStatus(http.StatusTooManyRequests) // e.g. a limiter placed after Idempotency
		}
	}
	assert.Equal(t, http.StatusTooManyRequests, a.post("k429", "x").Code)
	assert.Equal(t, http.StatusCreated, a.post("k429", "x").Code, "a 429 can be retried")
	// A 4xx is an answer and is replayed.
	a.hook = func(c *gin.Context, run int64) { c.AbortWithStatus(http.StatusBadRequest) }
	assert.Equal(t, http.StatusBadRequest, a.post("k2", "x").Code)
	w := a.post("k2", "x")
	assert.Equal(t, http.StatusBadRequest, w.Code)
	assert.Equal(t, "true", w.Header().Get("Idempotent-Replayed"))
	assert.EqualValues(t, 5, a.runs.Load())
}

func TestIdempotencyBodyBound(t *testing.T) {
	a := newOrderAPI(t, &IdempotencyOptions{MaxBody: 16})
	assert.Equal(t, http.StatusCreated, a.post("k1", strings.Repeat("a", 16)).Code)
	assert.Equal(t, http.StatusRequestEntityTooLarge, a.post("k2", strings.Repeat("a", 17)).Code)
	// Without Content-Length (chunked), the bound holds while reading.
	hr := httptest.NewRequest(http.MethodPost, "/orders", io.MultiReader(strings.NewReader(strings.Repeat("b", 1<<20))))
	hr.ContentLength = -1
	hr.Header.Set("Idempotency-Key", "k3")
	w := httptest.NewRecorder()
	a.ServeHTTP(w, hr)
	assert.Equal(t, http.StatusRequestEntityTooLarge, w.Code)
	assert.EqualValues(t, 1, a.runs.Load())
}

func TestIdempotencyLargeResponse(t *testing.T) {
	a := newOrderAPI(t, &IdempotencyOptions{MaxResponse: 8})
	w1 := a.post("k", "this body is long")
	require.Equal(t, http.StatusCreated, w1.Code)
	assert.Contains(t, w1.Body.String(), "this body is long", "the first request gets it all")
	w2 := a.post("k", "this body is long")
	assert.Equal(t, http.StatusCreated, w2.Code)
	assert.Equal(t, problemJSON, w2.Header().Get("Content-Type"))
	assert.Contains(t, w2.Body.String(), "too large")
	assert.Equal(t, "/orders/1", w2.Header().Get("Location"))
	assert.EqualValues(t, 1, a.runs.Load())
}

func TestIdempotencyKeyValidation(t *testing.T) {
	a := newOrderAPI(t, &IdempotencyOptions{Required: true})
	for name, key := range map[string]string{
		"too long":     strings.Repeat("k", 256),
		"non-ASCII":    "clé",
		"control":      "a\x01b",
		"unterminated": `"abc`,
		"trailing":     `"abc"x`,
		"bad escape":   `"a\b"`,
		"empty quoted": `""`,
	} {
		w := a.post(key, "x")
		assert.Equal(t, http.StatusBadRequest, w.Code, name)
	}
	w := do(a, req{method: http.MethodPost, target: "/orders", body: "x", header: http.Header{"Idempotency-Key": {"a", "b"}}})
	assert.Equal(t, http.StatusBadRequest, w.Code, "two headers")
	assert.Equal(t, http.StatusBadRequest, a.post("", "x").Code, "Required")
	assert.Equal(t, http.StatusCreated, a.post(strings.Repeat("k", 255), "x").Code)
	assert.Equal(t, http.StatusCreated, a.post(`"a\"b\\c"`, "x").Code)
	assert.Equal(t, "true", a.post(`a"b\c`, "x").Header().Get("Idempotent-Replayed"), "escapes decoded")
	assert.Equal(t, http.StatusCreated, a.send(http.MethodGet, "/orders", "", "").Code, "GET is not ours")
	assert.EqualValues(t, 3, a.runs.Load())

	for _, key := range []string{"x", `"x"`, `"x y"`} {
		_, ok := parseIdempotencyKey([]string{key})
		assert.True(t, ok, key)
	}
}

func TestIdempotencyScopedByPrincipal(t *testing.T) {
	a := newOrderAPI(t, nil)
	h := http.Header{"Idempotency-Key": {"same"}}
	w1 := do(a, req{method: http.MethodPost, target: "/orders", body: "x", remote: "198.51.100.1:1", header: h})
	w2 := do(a, req{method: http.MethodPost, target: "/orders", body: "x", remote: "198.51.100.2:1", header: h})
	assert.Empty(t, w1.Header().Get("Idempotent-Replayed"))
	assert.Empty(t, w2.Header().Get("Idempotent-Replayed"), "another client's key is another record")
	assert.EqualValues(t, 2, a.runs.Load())
	a.post("no-key-no-problem", "")
	assert.Len(t, a.mr.Keys(), 3)
	for _, k := range a.mr.Keys() {
		assert.True(t, strings.HasPrefix(k, "surge:idem:{ip:"), k)
	}
}

func TestIdempotencyRedisDown(t *testing.T) {
	logger, logs := newJSONLogger(slog.LevelInfo)
	var runs atomic.Int64
	for _, tc := range []struct {
		policy ErrorPolicy
		status int
	}{{0, http.StatusServiceUnavailable}, {FailClosed, http.StatusServiceUnavailable}, {FailOpen, http.StatusCreated}} {
		mw, err := NewIdempotency(downRedis(t), &IdempotencyOptions{OnRedisError: tc.policy, Logger: logger})
		require.NoError(t, err)
		r := newEngine(t, mw)
		r.POST("/", func(c *gin.Context) { runs.Add(1); c.Status(http.StatusCreated) })
		w := do(r, req{method: http.MethodPost, target: "/", body: "x", header: http.Header{"Idempotency-Key": {"k"}}})
		assert.Equal(t, tc.status, w.Code)
	}
	assert.EqualValues(t, 1, runs.Load(), "only FailOpen ran the handler")
	assert.Contains(t, logs.String(), "Redis failed before the handler ran")
}

func TestNewIdempotencyRejectsBadOptions(t *testing.T) {
	_, rdb := redistest.Mini(t)
	for field, opt := range map[string]*IdempotencyOptions{
		"IdempotencyOptions.TTL":          {TTL: -1},
		"IdempotencyOptions.MaxBody":      {MaxBody: -1},
		"IdempotencyOptions.MaxResponse":  {MaxResponse: -1},
		"IdempotencyOptions.Lease":        {Lease: -time.Second},
		"IdempotencyOptions.Prefix":       {Prefix: "x}"},
		"IdempotencyOptions.Methods":      {Methods: []string{"PO ST"}},
		"IdempotencyOptions.Lease ":       {Lease: time.Microsecond},
		"IdempotencyOptions.TTL ":         {TTL: time.Microsecond},
		"IdempotencyOptions.OnRedisError": {OnRedisError: -1},
	} {
		_, err := NewIdempotency(rdb, opt)
		require.ErrorIs(t, err, ErrInvalidOptions, field)
		assert.Contains(t, err.Error(), strings.TrimSpace(field))
	}
	_, err := NewIdempotency(nil, nil)
	require.ErrorIs(t, err, ErrInvalidOptions)
	assert.Panics(t, func() { Idempotency(rdb, &IdempotencyOptions{TTL: -1}) }, "refused at wiring time")
}

// TestIdempotencyRealRedis runs the scripts on a real redis-server: replay, 422, 409 and the
// lease expiring by the server's clock.
func TestIdempotencyRealRedis(t *testing.T) {
	srv := redistest.Server(t)
	a := newOrderAPIOn(t, nil, srv.Client(), &IdempotencyOptions{Lease: 200 * time.Millisecond})
	require.Equal(t, http.StatusCreated, a.post("k", "x").Code)
	assert.Equal(t, "true", a.post("k", "x").Header().Get("Idempotent-Replayed"))
	assert.Equal(t, http.StatusUnprocessableEntity, a.post("k", "y").Code)

	started := make(chan struct{})
	release, unblock := blocker(t)
	a.hook = func(c *gin.Context, run int64) {
		if run == 2 {
			close(started)
			<-release
		}
	}
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() { first <- a.post("k2", "x") }()
	<-started
	assert.Equal(t, http.StatusConflict, a.post("k2", "x").Code)
	require.Eventually(t, func() bool { return a.post("k2", "x").Code == http.StatusCreated }, 5*time.Second, 20*time.Millisecond,
		"the lease expires on the server")
	unblock()
	<-first
	assert.EqualValues(t, 3, a.runs.Load())
}

func FuzzParseIdempotencyKey(f *testing.F) {
	f.Add(`"abc"`)
	f.Add(`"a\"b"`)
	f.Add("plain")
	f.Fuzz(func(t *testing.T, s string) {
		k, ok := parseIdempotencyKey([]string{s})
		if !ok {
			return
		}
		if len(k) == 0 || len(k) > maxIdempotencyKeyLen {
			t.Fatalf("%q gave key of length %d", s, len(k))
		}
		for i := 0; i < len(k); i++ {
			if k[i] < 0x20 || k[i] > 0x7e {
				t.Fatalf("%q gave key %q with byte %#x", s, k, k[i])
			}
		}
	})
}
