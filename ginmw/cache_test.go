package ginmw

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/cache"
	"github.com/surgekit/surge/internal/redistest"
)

func newHTTPCache(t *testing.T, rdb redis.UniversalClient, opt *CacheOptions) *HTTPCache {
	t.Helper()
	h, err := NewHTTPCache(rdb, opt)
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// miniCache returns an HTTPCache on miniredis and an engine with it in front.
func miniCache(t *testing.T, opt *CacheOptions) (*HTTPCache, *gin.Engine) {
	t.Helper()
	_, rdb := redistest.Mini(t)
	h := newHTTPCache(t, rdb, opt)
	return h, newEngine(t, h.Handler())
}

// countingHandler answers with a body naming the run number, so a cached answer is recognisable.
func countingHandler(runs *atomic.Int64, extra func(c *gin.Context)) gin.HandlerFunc {
	return func(c *gin.Context) {
		n := runs.Add(1)
		if extra != nil {
			extra(c)
		}
		if c.IsAborted() {
			return
		}
		c.String(http.StatusOK, "run %d for %s", n, c.Request.URL.String())
	}
}

func TestCacheMissThenHit(t *testing.T) {
	_, rdb := redistest.Mini(t)
	h := newHTTPCache(t, rdb, nil)
	var runs atomic.Int64
	r := newEngine(t, RequestID(nil), h.Handler())
	items := countingHandler(&runs, func(c *gin.Context) {
		c.Writer.Header().Add("X-Multi", "a")
		c.Writer.Header().Add("X-Multi", "b")
		c.Header("Content-Type", "text/plain; charset=utf-8")
	})
	r.GET("/items/:id", items)
	r.HEAD("/items/:id", items)
	var now atomic.Int64
	now.Store(time.Now().UnixMilli())
	h.now = func() time.Time { return time.UnixMilli(now.Load()) }

	w1 := get(r, "/items/1?b=2&a=1")
	require.Equal(t, http.StatusOK, w1.Code)
	assert.Equal(t, cacheStatusStored, w1.Header().Get("Cache-Status"))
	assert.Empty(t, w1.Header().Get("Age"))

	now.Add(3500)
	w2 := get(r, "/items/1?a=1&b=2") // same query, other order
	assert.Equal(t, cacheStatusHit, w2.Header().Get("Cache-Status"))
	assert.Equal(t, "3", w2.Header().Get("Age"))
	assert.Equal(t, w1.Body.String(), w2.Body.String())
	assert.Equal(t, []string{"a", "b"}, w2.Header().Values("X-Multi"), "repeated headers kept")
	assert.Equal(t, "text/plain; charset=utf-8", w2.Header().Get("Content-Type"))
	assert.NotEqual(t, w1.Header().Get("X-Request-ID"), w2.Header().Get("X-Request-ID"), "earlier middleware's headers are not stored")
	assert.EqualValues(t, 1, runs.Load())

	w3 := get(r, "/items/1?a=1&b=3")
	assert.Equal(t, cacheStatusStored, w3.Header().Get("Cache-Status"), "another query is another entry")
	w4 := do(r, req{method: http.MethodHead, target: "/items/1?a=1&b=2"})
	assert.Equal(t, cacheStatusStored, w4.Header().Get("Cache-Status"), "HEAD keyed apart from GET")
	w5h := httptest.NewRequest(http.MethodGet, "http://other.example/items/1?a=1&b=2", nil)
	w5 := httptest.NewRecorder()
	r.ServeHTTP(w5, w5h)
	assert.Equal(t, cacheStatusStored, w5.Header().Get("Cache-Status"), "host is part of the key")
	assert.EqualValues(t, 4, runs.Load())

	// An unmatched route is gin's 404, untouched.
	for range 2 {
		w := get(r, "/nowhere")
		assert.Equal(t, http.StatusNotFound, w.Code)
		assert.Equal(t, "404 page not found", w.Body.String())
		assert.Empty(t, w.Header().Get("Cache-Status"))
	}
}

func TestCacheUsersNeverShare(t *testing.T) {
	_, rdb := redistest.Mini(t)
	h := newHTTPCache(t, rdb, nil)
	auth := JWT(JWTOptions{Key: hmacSecret, ValidMethods: []string{"HS256"}, now: func() time.Time { return jwtNow }})
	r := newEngine(t, auth, h.Handler())
	var runs atomic.Int64
	r.GET("/me", countingHandler(&runs, func(c *gin.Context) { c.Header("X-User", principalOf(c)) }))
	tok := func(sub string) string {
		return sign(t, jwt.SigningMethodHS256, hmacSecret, with(validClaims(), "sub", sub))
	}
	a1 := bearer(r, tok("alice"))
	b1 := bearer(r, tok("bob"))
	a2 := bearer(r, tok("alice"))
	b2 := bearer(r, tok("bob"))
	assert.Equal(t, "iss:\"https://issuer.example\" sub:\"alice\"", a2.Header().Get("X-User"))
	assert.Equal(t, "iss:\"https://issuer.example\" sub:\"bob\"", b2.Header().Get("X-User"))
	assert.Equal(t, a1.Body.String(), a2.Body.String())
	assert.Equal(t, b1.Body.String(), b2.Body.String())
	assert.NotEqual(t, a1.Body.String(), b1.Body.String())
	assert.Equal(t, cacheStatusHit, a2.Header().Get("Cache-Status"))
	assert.Equal(t, cacheStatusHit, b2.Header().Get("Cache-Status"))
	assert.EqualValues(t, 2, runs.Load())
}

func TestCacheDefaultPrincipalWithoutJWT(t *testing.T) {
	_, r := miniCache(t, nil)
	var runs atomic.Int64
	r.GET("/", countingHandler(&runs, nil))
	do(r, req{target: "/", remote: "198.51.100.1:1"})
	w := do(r, req{target: "/", remote: "198.51.100.2:1"})
	assert.Equal(t, cacheStatusStored, w.Header().Get("Cache-Status"), "another client address, another entry")
	w = do(r, req{target: "/", remote: "198.51.100.1:1"})
	assert.Equal(t, cacheStatusHit, w.Header().Get("Cache-Status"))
	// Credentials nobody verified: the user is unknown, so the cache is bypassed.
	for _, hdr := range []http.Header{{"Cookie": {"sid=1"}}, {"Authorization": {"Basic eDp5"}}} {
		for range 2 {
			w = do(r, req{target: "/", remote: "198.51.100.1:1", header: hdr})
			assert.Equal(t, cacheStatusBypass, w.Header().Get("Cache-Status"))
		}
	}
	assert.EqualValues(t, 6, runs.Load())

	// An explicit principal shares as told.
	_, r = miniCache(t, &CacheOptions{Principal: func(*gin.Context) (string, bool) { return "", true }})
	r.GET("/", countingHandler(&runs, nil))
	do(r, req{target: "/", remote: "198.51.100.1:1", header: http.Header{"Cookie": {"a=1"}}})
	w = do(r, req{target: "/", remote: "198.51.100.7:1"})
	assert.Equal(t, cacheStatusHit, w.Header().Get("Cache-Status"))
}

func TestCacheDoesNotStoreUnshareable(t *testing.T) {
	_, rdb := redistest.Mini(t)
	h := newHTTPCache(t, rdb, &CacheOptions{Vary: []string{"accept-language"}, MaxBody: 64})
	r := newEngine(t, h.Handler())
	var runs atomic.Int64
	cases := map[string]func(c *gin.Context){
		"/set-cookie": func(c *gin.Context) { c.SetCookie("sid", "secret", 60, "/", "", true, true) },
		"/no-store":   func(c *gin.Context) { c.Header("Cache-Control", "max-age=60, no-store") },
		"/private":    func(c *gin.Context) { c.Header("Cache-Control", `private="x", max-age=60`) },
		"/no-cache":   func(c *gin.Context) { c.Header("Cache-Control", "No-Cache") },
		"/vary-star":  func(c *gin.Context) { c.Header("Vary", "*") },
		"/vary-other": func(c *gin.Context) { c.Header("Vary", "Accept-Language, Accept-Encoding") },
		"/404":        func(c *gin.Context) { c.String(http.StatusNotFound, "no") },
		"/500":        func(c *gin.Context) { c.String(http.StatusInternalServerError, "err") },
		"/206":        func(c *gin.Context) { c.String(http.StatusPartialContent, "part") },
		"/big":        func(c *gin.Context) { c.String(http.StatusOK, "%0100d", 1) },
	}
	for path, fn := range cases {
		r.GET(path, countingHandler(&runs, fn))
	}
	for path := range cases {
		before := runs.Load()
		w1, w2 := get(r, path), get(r, path)
		assert.Equal(t, cacheStatusNotStored, w1.Header().Get("Cache-Status"), path)
		assert.Equal(t, cacheStatusNotStored, w2.Header().Get("Cache-Status"), path)
		assert.Equal(t, before+2, runs.Load(), "%s ran twice", path)
	}
	assert.Contains(t, get(r, "/set-cookie").Header().Get("Set-Cookie"), "sid=secret", "still delivered")

	// A Vary the key covers is stored per value.
	r.GET("/vary-lang", countingHandler(&runs, func(c *gin.Context) { c.Header("Vary", "Accept-Language") }))
	en1 := get(r, "/vary-lang", "Accept-Language", "en")
	de1 := get(r, "/vary-lang", "Accept-Language", "de")
	en2 := get(r, "/vary-lang", "Accept-Language", "en")
	assert.Equal(t, cacheStatusStored, de1.Header().Get("Cache-Status"))
	assert.Equal(t, cacheStatusHit, en2.Header().Get("Cache-Status"))
	assert.Equal(t, en1.Body.String(), en2.Body.String())
	assert.NotEqual(t, en1.Body.String(), de1.Body.String())

	// POST is not touched.
	r.POST("/post", countingHandler(&runs, nil))
	w := do(r, req{method: http.MethodPost, target: "/post"})
	assert.Empty(t, w.Header().Get("Cache-Status"))
}

func TestCacheConcurrentMissesRunHandlerOnce(t *testing.T) {
	h, r := miniCache(t, nil)
	var runs atomic.Int64
	release, unblock := blocker(t)
	r.GET("/slow", countingHandler(&runs, func(*gin.Context) { <-release }))

	const n = 8
	var wg sync.WaitGroup
	bodies := make([]string, n)
	statuses := make([]string, n)
	for i := range n {
		wg.Go(func() {
			w := get(r, "/slow")
			bodies[i], statuses[i] = w.Body.String(), w.Header().Get("Cache-Status")
		})
	}
	// Every request is waiting once each has counted a miss (one leads, the others join it).
	require.Eventually(t, func() bool { return h.Stats().Misses == n }, 5*time.Second, time.Millisecond)
	unblock()
	wg.Wait()
	assert.EqualValues(t, 1, runs.Load())
	stored := 0
	for i := range n {
		assert.Equal(t, bodies[0], bodies[i])
		if statuses[i] == cacheStatusStored {
			stored++
		}
	}
	assert.Equal(t, 1, stored, "one request produced the response: %v", statuses)
	assert.EqualValues(t, n-1, h.Stats().SharedLoads)
}

func TestCacheConcurrentUnshareableRunsEach(t *testing.T) {
	h, r := miniCache(t, nil)
	var runs atomic.Int64
	release, unblock := blocker(t)
	r.GET("/cookie", countingHandler(&runs, func(c *gin.Context) {
		if runs.Load() == 1 {
			<-release
		}
		c.SetCookie("sid", "x", 60, "/", "", true, true)
	}))
	const n = 4
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			w := get(r, "/cookie")
			assert.Equal(t, http.StatusOK, w.Code)
			assert.Contains(t, w.Header().Get("Set-Cookie"), "sid=x", "each request gets its own cookie")
		})
	}
	require.Eventually(t, func() bool { return h.Stats().Misses == n }, 5*time.Second, time.Millisecond)
	unblock()
	wg.Wait()
	assert.EqualValues(t, n, runs.Load(), "joined requests ran their own handler")
}

func TestCacheLeaderGivesUpWhileHandlerRuns(t *testing.T) {
	_, r := miniCache(t, nil)
	started := make(chan struct{})
	var finished atomic.Bool
	r.GET("/", func(c *gin.Context) {
		close(started)
		<-c.Request.Context().Done() // the client goes away mid-handler
		c.String(http.StatusOK, "late")
		finished.Store(true)
	})
	ctx, cancel := context.WithCancel(context.Background())
	hr := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.ServeHTTP(httptest.NewRecorder(), hr)
	}()
	<-started
	cancel()
	<-done
	assert.True(t, finished.Load(), "the middleware returned before its handler, which still used the gin.Context")
}

func TestCachePanicIsReraisedInRequest(t *testing.T) {
	_, r := miniCache(t, nil)
	var runs atomic.Int64
	r.GET("/", countingHandler(&runs, func(c *gin.Context) {
		if runs.Load() == 1 {
			panic("boom")
		}
	}))
	assert.Equal(t, http.StatusInternalServerError, get(r, "/").Code, "gin's recovery saw the panic")
	w := get(r, "/")
	assert.Equal(t, http.StatusOK, w.Code)
	assert.Equal(t, cacheStatusStored, w.Header().Get("Cache-Status"))
}

func TestCacheRedisDownServesFromHandler(t *testing.T) {
	h := newHTTPCache(t, downRedis(t), nil)
	r := newEngine(t, h.Handler())
	var runs atomic.Int64
	r.GET("/", countingHandler(&runs, nil))
	for range 2 {
		w := get(r, "/")
		assert.Equal(t, http.StatusOK, w.Code)
		assert.Contains(t, w.Body.String(), "run")
	}
	assert.EqualValues(t, 2, runs.Load())

	closed := newHTTPCache(t, downRedis(t), &CacheOptions{OnRedisError: FailClosed})
	r = newEngine(t, closed.Handler())
	r.GET("/", countingHandler(&runs, nil))
	w := get(r, "/")
	assert.Equal(t, http.StatusServiceUnavailable, w.Code, "FailClosed")
	assert.Equal(t, "1", w.Header().Get("Retry-After"))
	assert.EqualValues(t, 2, runs.Load(), "FailClosed does not run the handler")
}

func TestCacheInvalidate(t *testing.T) {
	t.Run("miniredis", func(t *testing.T) {
		_, rdb := redistest.Mini(t)
		testCacheInvalidate(t, rdb)
	})
	t.Run("redis-server", func(t *testing.T) { testCacheInvalidate(t, redistest.Server(t).Client()) })
}

func testCacheInvalidate(t *testing.T, rdb redis.UniversalClient) {
	h := newHTTPCache(t, rdb, nil)
	r := newEngine(t, h.Handler())
	var runs atomic.Int64
	r.GET("/users/:id", countingHandler(&runs, nil))
	r.GET("/files/*path", countingHandler(&runs, nil))
	r.DELETE("/users/:id", func(c *gin.Context) {
		if err := h.Invalidate(c, c.FullPath(), c.Params); err != nil {
			c.Status(http.StatusInternalServerError)
			return
		}
		c.Status(http.StatusNoContent)
	})
	get(r, "/users/42")
	get(r, "/users/42?fields=name")
	get(r, "/users/43")
	get(r, "/files/a/b.txt")
	for _, p := range []string{"/users/42", "/users/42?fields=name", "/users/43", "/files/a/b.txt"} {
		require.Equal(t, cacheStatusHit, get(r, p).Header().Get("Cache-Status"), p)
	}
	require.Equal(t, http.StatusNoContent, do(r, req{method: http.MethodDelete, target: "/users/42"}).Code)
	assert.Equal(t, cacheStatusStored, get(r, "/users/42").Header().Get("Cache-Status"))
	assert.Equal(t, cacheStatusStored, get(r, "/users/42?fields=name").Header().Get("Cache-Status"))
	assert.Equal(t, cacheStatusHit, get(r, "/users/43").Header().Get("Cache-Status"), "other ids untouched")

	require.NoError(t, h.Invalidate(t.Context(), "/files/*path", gin.Params{{Key: "path", Value: "/a/b.txt"}}))
	assert.Equal(t, cacheStatusStored, get(r, "/files/a/b.txt").Header().Get("Cache-Status"))
	require.ErrorIs(t, h.Invalidate(t.Context(), "/users/:id", nil), ErrInvalidOptions)
	require.NoError(t, h.InvalidatePath(t.Context(), "/never/cached"))
}

func TestNewCacheRejectsBadOptions(t *testing.T) {
	_, rdb := redistest.Mini(t)
	for field, opt := range map[string]*CacheOptions{
		"CacheOptions.TTL":          {TTL: -time.Second},
		"CacheOptions.MaxBody":      {MaxBody: -1},
		"CacheOptions.Prefix":       {Prefix: "a{b"},
		"CacheOptions.Vary":         {Vary: []string{"bad name"}},
		"CacheOptions.Jitter":       {Jitter: 1},
		"CacheOptions.LoadTimeout":  {LoadTimeout: -1},
		"CacheOptions.OnRedisError": {OnRedisError: 3},
		"CacheOptions.Local":        {Local: &cache.LocalOptions{MaxEntries: 10}},
	} {
		_, err := NewCache(rdb, opt)
		require.ErrorIs(t, err, ErrInvalidOptions, field)
		assert.Contains(t, err.Error(), field)
	}
	_, err := NewHTTPCache(nil, nil)
	require.ErrorIs(t, err, ErrInvalidOptions)
	assert.PanicsWithError(t, "ginmw: invalid options: CacheOptions.TTL: must not be negative, got -1ns", func() {
		Cache(rdb, &CacheOptions{TTL: -1})
	}, "Cache refuses bad options at wiring time")
	assert.Panics(t, func() { Cache(rdb, &CacheOptions{Local: &cache.LocalOptions{MaxEntries: 10}}) },
		"Cache would start goroutines nobody can stop")
}

func TestResponseCodecRoundTrip(t *testing.T) {
	in := storedResponse{Status: 203, Header: http.Header{"A": {"1", "2"}, "B": {""}}, Body: []byte("body\x00"), Stored: -5}
	b, err := responseCodec{}.Marshal(in)
	require.NoError(t, err)
	var out storedResponse
	require.NoError(t, responseCodec{}.Unmarshal(b, &out))
	assert.Equal(t, in, out)
	for i := range b {
		assert.NotPanics(t, func() { _ = decodeResponse(b[:i], &out) }, strconv.Itoa(i))
	}
	_, err = responseCodec{}.Marshal(42)
	assert.Error(t, err)
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add(appendResponse(nil, &storedResponse{Status: 200, Header: http.Header{"X": {"y"}}, Body: []byte("hi")}))
	f.Add([]byte{1, 200, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r storedResponse
		if decodeResponse(b, &r) != nil {
			return
		}
		again := appendResponse(nil, &r)
		var r2 storedResponse
		if err := decodeResponse(again, &r2); err != nil {
			t.Fatalf("re-encoded response does not decode: %v", err)
		}
		if r2.Status != r.Status || string(r2.Body) != string(r.Body) || len(r2.Header) != len(r.Header) {
			t.Fatalf("round trip changed %+v into %+v", r, r2)
		}
	})
}

func TestCacheWaiterContextEnds(t *testing.T) {
	h, r := miniCache(t, nil)
	var runs atomic.Int64
	release, unblock := blocker(t)
	r.GET("/", countingHandler(&runs, func(*gin.Context) { <-release }))

	leader := make(chan *httptest.ResponseRecorder, 1)
	go func() { leader <- get(r, "/") }()
	require.Eventually(t, func() bool { return h.Stats().Misses == 1 }, 5*time.Second, time.Millisecond)

	ctx, cancel := context.WithCancel(context.Background())
	waiter := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		w := httptest.NewRecorder()
		hr := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
		hr.RemoteAddr = "192.0.2.10:1234" // the leader's client: same key
		r.ServeHTTP(w, hr)
		waiter <- w
	}()
	require.Eventually(t, func() bool { return h.Stats().SharedLoads == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	w := <-waiter
	assert.Equal(t, http.StatusServiceUnavailable, w.Code, "a waiter whose context ended gets 503, not an empty 200")
	unblock()
	assert.Equal(t, http.StatusOK, (<-leader).Code)
	assert.EqualValues(t, 1, runs.Load())
}
