package ginmw

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
	"github.com/surgekit/surge/ratelimit"
)

// slowAPI is an engine with mw in front of GET /work, whose handler reports that it entered and
// then waits for release (or panics with ?panic=1).
func slowAPI(t *testing.T, mw gin.HandlerFunc) (r *gin.Engine, entered chan struct{}, release func()) {
	t.Helper()
	wait, release := blocker(t)
	entered = make(chan struct{}, 16)
	r = newEngine(t, mw)
	r.GET("/work", func(c *gin.Context) {
		entered <- struct{}{}
		<-wait
		if c.Query("panic") != "" {
			panic("handler failed")
		}
		c.Status(http.StatusOK)
	})
	r.GET("/fast", func(c *gin.Context) {
		if c.Query("panic") != "" {
			panic("handler failed")
		}
		c.Status(http.StatusOK)
	})
	return r, entered, release
}

func TestConcurrencyLimitsInFlight(t *testing.T) {
	for name, mk := range map[string]func(t *testing.T) ratelimit.ConcurrencyLimiter{
		"local": func(t *testing.T) ratelimit.ConcurrencyLimiter {
			l, err := ratelimit.NewLocalConcurrency(2, &ratelimit.ConcurrencyOptions{RetryAfter: 2500 * time.Millisecond})
			require.NoError(t, err)
			return l
		},
		"redis": func(t *testing.T) ratelimit.ConcurrencyLimiter {
			_, rdb := redistest.Mini(t)
			l, err := ratelimit.NewConcurrency(rdb, 2, &ratelimit.ConcurrencyOptions{RetryAfter: 2500 * time.Millisecond})
			require.NoError(t, err)
			return l
		},
	} {
		t.Run(name, func(t *testing.T) {
			r, entered, release := slowAPI(t, Concurrency(mk(t), nil))
			var wg sync.WaitGroup
			codes := make([]int, 2)
			for i := range 2 {
				wg.Add(1)
				go func() { defer wg.Done(); codes[i] = get(r, "/work").Code }()
				<-entered
			}
			w := get(r, "/work")
			assert.Equal(t, http.StatusTooManyRequests, w.Code, "a third request while two run")
			assert.Equal(t, "3", w.Header().Get("Retry-After"), "the limiter's hint, rounded up")
			assert.Equal(t, problemJSON, w.Header().Get("Content-Type"))
			other := do(r, req{target: "/fast", remote: "198.51.100.9:1"})
			assert.Equal(t, http.StatusOK, other.Code, "another client has its own slots")

			release()
			wg.Wait()
			assert.Equal(t, []int{200, 200}, codes)
			assert.Equal(t, http.StatusOK, get(r, "/fast").Code, "slots given back when the handlers returned")
		})
	}
}

func TestConcurrencyReleasesOnPanic(t *testing.T) {
	l, err := ratelimit.NewLocalConcurrency(1, nil)
	require.NoError(t, err)
	r, _, _ := slowAPI(t, Concurrency(l, nil))
	for range 3 {
		assert.Equal(t, http.StatusInternalServerError, get(r, "/fast?panic=1").Code, "recovery saw the panic")
	}
	assert.Equal(t, http.StatusOK, get(r, "/fast").Code, "the panicking handlers gave their slot back")
}

func TestConcurrencyOptions(t *testing.T) {
	l, err := ratelimit.NewLocalConcurrency(1, nil)
	require.NoError(t, err)
	r, entered, release := slowAPI(t, Concurrency(l, &ConcurrencyOptions{
		Status: http.StatusServiceUnavailable,
		Key:    func(c *gin.Context) string { return c.GetHeader("X-Tenant") },
	}))
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- get(r, "/work", "X-Tenant", "a") }()
	<-entered
	w := get(r, "/fast", "X-Tenant", "a")
	assert.Equal(t, http.StatusServiceUnavailable, w.Code)
	ra, err := strconv.Atoi(w.Header().Get("Retry-After"))
	require.NoError(t, err)
	assert.GreaterOrEqual(t, ra, 1)
	assert.Equal(t, http.StatusOK, get(r, "/fast", "X-Tenant", "b").Code)
	assert.Equal(t, http.StatusOK, get(r, "/fast").Code, "empty key: no slot taken")
	release()
	assert.Equal(t, http.StatusOK, (<-done).Code)

	for field, opt := range map[string]*ConcurrencyOptions{
		"ConcurrencyOptions.Status":       {Status: http.StatusTeapot},
		"ConcurrencyOptions.OnRedisError": {OnRedisError: 3},
	} {
		_, err := NewConcurrency(l, opt)
		require.ErrorIs(t, err, ErrInvalidOptions, field)
		assert.Contains(t, err.Error(), field)
	}
	_, err = NewConcurrency(nil, nil)
	require.ErrorIs(t, err, ErrInvalidOptions)
	assert.Panics(t, func() { Concurrency(nil, nil) })
}

func TestConcurrencyRedisDown(t *testing.T) {
	l, err := ratelimit.NewConcurrency(downRedis(t), 1, nil)
	require.NoError(t, err)
	logger, logs := newJSONLogger(0)
	for _, tc := range []struct {
		policy ErrorPolicy
		status int
	}{{0, http.StatusOK}, {FailOpen, http.StatusOK}, {FailClosed, http.StatusServiceUnavailable}} {
		r, _, _ := slowAPI(t, Concurrency(l, &ConcurrencyOptions{OnRedisError: tc.policy, Logger: logger}))
		w := get(r, "/fast")
		assert.Equal(t, tc.status, w.Code, tc.policy)
	}
	assert.Contains(t, logs.String(), "concurrency limiter failed")
}
