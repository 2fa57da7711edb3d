package ginmw

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
	"github.com/surgekit/surge/ratelimit"
)

func newLocal(t *testing.T, limits ...ratelimit.Limit) *ratelimit.Local {
	t.Helper()
	l, err := ratelimit.NewLocal(nil, limits...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// keyRecorder wraps a limiter and records the keys it is asked about.
type keyRecorder struct {
	ratelimit.Limiter
	keys []string
}

func (k *keyRecorder) AllowN(ctx context.Context, key string, n int) (ratelimit.Result, error) {
	k.keys = append(k.keys, key)
	return k.Limiter.AllowN(ctx, key, n)
}

func rlEngine(t *testing.T, l ratelimit.Limiter, opt *RateLimitOptions, trusted []string) *gin.Engine {
	t.Helper()
	r := newEngine(t)
	require.NoError(t, r.SetTrustedProxies(trusted))
	r.Use(RateLimit(l, opt))
	r.GET("/", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	return r
}

func TestRateLimitKeyIgnoresSpoofedForwardedFor(t *testing.T) {
	rec := &keyRecorder{Limiter: newLocal(t, ratelimit.Limit{Rate: 0.001, Burst: 1, Name: "one"})}
	r := rlEngine(t, rec, nil, []string{"10.0.0.1"})
	w1 := do(r, req{target: "/", remote: "203.0.113.5:1000", header: http.Header{"X-Forwarded-For": {"1.1.1.1"}}})
	w2 := do(r, req{target: "/", remote: "203.0.113.5:1001", header: http.Header{"X-Forwarded-For": {"2.2.2.2"}, "X-Real-Ip": {"3.3.3.3"}}})
	assert.Equal(t, http.StatusOK, w1.Code)
	assert.Equal(t, http.StatusTooManyRequests, w2.Code, "a new X-Forwarded-For from an untrusted peer must not buy a new bucket")
	assert.Equal(t, []string{"203.0.113.5", "203.0.113.5"}, rec.keys)
}

func TestRateLimitKeyFromTrustedProxies(t *testing.T) {
	rec := &keyRecorder{Limiter: newLocal(t, ratelimit.PerSecond(100))}
	r := rlEngine(t, rec, nil, []string{"10.0.0.0/8"})
	// The proxy chain appends; the rightmost address not trusted is the client.
	do(r, req{target: "/", remote: "10.0.0.1:80", header: http.Header{"X-Forwarded-For": {"1.1.1.1, 198.51.100.7, 10.0.0.2"}}})
	assert.Equal(t, []string{"198.51.100.7"}, rec.keys)
}

func TestClientIPKeyIPv6Slash64(t *testing.T) {
	rec := &keyRecorder{Limiter: newLocal(t, ratelimit.Limit{Rate: 0.001, Burst: 1, Name: "one"})}
	r := rlEngine(t, rec, nil, nil)
	a := do(r, req{target: "/", remote: "[2001:db8:1:2::1]:1"})
	b := do(r, req{target: "/", remote: "[2001:db8:1:2:ffff:eeee:dddd:cccc]:1"})
	c := do(r, req{target: "/", remote: "[2001:db8:1:3::1]:1"})
	d := do(r, req{target: "/", remote: "[::ffff:192.0.2.77]:1"})
	assert.Equal(t, http.StatusOK, a.Code)
	assert.Equal(t, http.StatusTooManyRequests, b.Code, "same /64 shares the bucket")
	assert.Equal(t, http.StatusOK, c.Code, "another /64 has its own")
	assert.Equal(t, http.StatusOK, d.Code)
	assert.Equal(t, []string{"2001:db8:1:2::/64", "2001:db8:1:2::/64", "2001:db8:1:3::/64", "192.0.2.77"}, rec.keys)
}

func TestCheckProxies(t *testing.T) {
	logger, logs := newJSONLogger(slog.LevelWarn)
	assert.True(t, CheckProxies(gin.New(), logger), "gin's default trusts everyone")
	assert.Len(t, logs.lines(), 1)
	assert.Contains(t, logs.String(), "SetTrustedProxies")

	r := gin.New()
	require.NoError(t, r.SetTrustedProxies([]string{"10.0.0.0/8", "fd00::/8"}))
	assert.False(t, CheckProxies(r, logger))
	require.NoError(t, r.SetTrustedProxies(nil))
	assert.False(t, CheckProxies(r, logger))
	r = gin.New()
	r.ForwardedByClientIP = false
	assert.False(t, CheckProxies(r, logger))
	r = gin.New()
	require.NoError(t, r.SetTrustedProxies([]string{"::/0"}))
	assert.True(t, CheckProxies(r, nil), "all of IPv6 is all proxies too")
	assert.Len(t, logs.lines(), 1)

	// RateLimit warns at construction when given the engine.
	logger, logs = newJSONLogger(slog.LevelWarn)
	RateLimit(newLocal(t, ratelimit.PerSecond(1)), &RateLimitOptions{Engine: gin.New(), Logger: logger})
	assert.Len(t, logs.lines(), 1)
}

// sfItem is one member of a Structured Fields list whose items are strings with integer
// parameters, the shape of RateLimit and RateLimit-Policy.
type sfItem struct {
	name   string
	params map[string]int64
}

// parseSFList parses an RFC 8941 list of sf-string items with integer parameters, strictly:
// anything else is an error. It is independent of the code under test.
func parseSFList(s string) ([]sfItem, error) {
	var out []sfItem
	i := 0
	bad := func(why string) ([]sfItem, error) {
		return nil, errors.New(why + " at " + strconv.Itoa(i) + " in " + s)
	}
	for {
		if i >= len(s) || s[i] != '"' {
			return bad("want sf-string")
		}
		i++
		var name strings.Builder
		for ; i < len(s) && s[i] != '"'; i++ {
			c := s[i]
			if c == '\\' {
				i++
				if i >= len(s) || (s[i] != '"' && s[i] != '\\') {
					return bad("bad escape")
				}
				c = s[i]
			} else if c < 0x20 || c > 0x7e {
				return bad("bad char")
			}
			name.WriteByte(c)
		}
		if i >= len(s) {
			return bad("unterminated")
		}
		i++
		it := sfItem{name: name.String(), params: map[string]int64{}}
		for i < len(s) && s[i] == ';' {
			i++
			j := i
			for i < len(s) && (s[i] >= 'a' && s[i] <= 'z' || s[i] >= '0' && s[i] <= '9' || s[i] == '_' || s[i] == '-' || s[i] == '.' || s[i] == '*') {
				i++
			}
			key := s[j:i]
			if key == "" || key[0] < 'a' || key[0] > 'z' || i >= len(s) || s[i] != '=' {
				return bad("bad param")
			}
			i++
			j = i
			if i < len(s) && s[i] == '-' {
				i++
			}
			for i < len(s) && s[i] >= '0' && s[i] <= '9' {
				i++
			}
			n, err := strconv.ParseInt(s[j:i], 10, 64)
			if err != nil || i-j > 15 {
				return bad("bad integer")
			}
			it.params[key] = n
		}
		out = append(out, it)
		if i == len(s) {
			return out, nil
		}
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i >= len(s) || s[i] != ',' {
			return bad("want ','")
		}
		i++
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
	}
}

func TestRateLimitHeadersAndDenial(t *testing.T) {
	for name, mk := range map[string]func(t *testing.T, lim ratelimit.Limit) ratelimit.Limiter{
		"local": func(t *testing.T, lim ratelimit.Limit) ratelimit.Limiter { return newLocal(t, lim) },
		"redis": func(t *testing.T, lim ratelimit.Limit) ratelimit.Limiter {
			_, rdb := redistest.Mini(t)
			l, err := ratelimit.NewRedis(rdb, nil, lim)
			require.NoError(t, err)
			return l
		},
	} {
		t.Run(name, func(t *testing.T) {
			lim := ratelimit.Limit{Rate: 3.0 / 60, Burst: 3, Name: `api "v1"`}
			r := rlEngine(t, mk(t, lim), nil, nil)
			for i := range 3 {
				w := get(r, "/")
				require.Equal(t, http.StatusOK, w.Code, "request %d within burst", i)
				pol, err := parseSFList(w.Header().Get("RateLimit-Policy"))
				require.NoError(t, err)
				require.Len(t, pol, 1)
				assert.Equal(t, `api "v1"`, pol[0].name)
				assert.Equal(t, map[string]int64{"q": 3, "w": 60}, pol[0].params)
				cur, err := parseSFList(w.Header().Get("RateLimit"))
				require.NoError(t, err)
				require.Len(t, cur, 1)
				assert.Equal(t, `api "v1"`, cur[0].name)
				assert.Equal(t, int64(2-i), cur[0].params["r"])
				assert.Positive(t, cur[0].params["t"])
				assert.LessOrEqual(t, cur[0].params["t"], int64(60), "delta seconds, never an epoch")
			}
			w := get(r, "/")
			require.Equal(t, http.StatusTooManyRequests, w.Code)
			ra, err := strconv.Atoi(w.Header().Get("Retry-After"))
			require.NoError(t, err)
			assert.GreaterOrEqual(t, ra, 1)
			assert.LessOrEqual(t, ra, 20)
			assert.Equal(t, problemJSON, w.Header().Get("Content-Type"))
			var p map[string]any
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p))
			assert.EqualValues(t, 429, p["status"])
			cur, err := parseSFList(w.Header().Get("RateLimit"))
			require.NoError(t, err)
			assert.Zero(t, cur[0].params["r"])
		})
	}
}

func TestRateLimitCostAndKey(t *testing.T) {
	l := newLocal(t, ratelimit.Limit{Rate: 0.001, Burst: 5, Name: "b"})
	r := newEngine(t)
	mw := RateLimit(l, &RateLimitOptions{
		Key: func(c *gin.Context) string { return c.GetHeader("X-Tenant") },
		Cost: func(c *gin.Context) int {
			n, _ := strconv.Atoi(c.Query("cost"))
			return n
		},
	})
	r.GET("/", mw, func(c *gin.Context) { c.Status(http.StatusOK) })
	assert.Equal(t, http.StatusOK, get(r, "/?cost=3", "X-Tenant", "a").Code)
	assert.Equal(t, http.StatusTooManyRequests, get(r, "/?cost=3", "X-Tenant", "a").Code, "3+3 > 5")
	assert.Equal(t, http.StatusOK, get(r, "/?cost=-4", "X-Tenant", "a").Code, "cost below 1 counts 1")
	assert.Equal(t, http.StatusOK, get(r, "/?cost=3", "X-Tenant", "b").Code, "other key")
	w := get(r, "/?cost=6", "X-Tenant", "c")
	assert.Equal(t, http.StatusTooManyRequests, w.Code, "above burst: never allowed")
	assert.Empty(t, w.Header().Get("Retry-After"))
	w = get(r, "/?cost=100")
	assert.Equal(t, http.StatusOK, w.Code, "empty key: not limited")
	assert.Empty(t, w.Header().Get("RateLimit"))
}

func TestRateLimitRedisDown(t *testing.T) {
	l, err := ratelimit.NewRedis(downRedis(t), &ratelimit.RedisOptions{OnRedisError: ratelimit.FailClosed}, ratelimit.PerSecond(10))
	require.NoError(t, err)

	logger, logs := newJSONLogger(slog.LevelInfo)
	open := rlEngine(t, l, &RateLimitOptions{Logger: logger}, nil)
	assert.Equal(t, http.StatusOK, get(open, "/").Code, "default: fail open")
	assert.Contains(t, logs.String(), "rate limiter failed")

	closed := rlEngine(t, l, &RateLimitOptions{OnRedisError: FailClosed}, nil)
	w := get(closed, "/")
	assert.Equal(t, http.StatusServiceUnavailable, w.Code)
	assert.Equal(t, "1", w.Header().Get("Retry-After"))
	assert.Equal(t, problemJSON, w.Header().Get("Content-Type"))

	_, err = NewRateLimit(l, &RateLimitOptions{OnRedisError: 7})
	require.ErrorIs(t, err, ErrInvalidOptions)
	assert.Contains(t, err.Error(), "RateLimitOptions.OnRedisError")
}

func TestRateLimitNilLimiter(t *testing.T) {
	assert.Panics(t, func() { RateLimit(nil, nil) }, "refused at wiring time")
}

func TestRateLimitHeaderFormat(t *testing.T) {
	assert.Equal(t, `"default";q=10;w=1`, policyValue(ratelimit.Limit{Rate: 10, Burst: 10}))
	assert.Equal(t, `"1000/h";q=1000;w=3600`, policyValue(ratelimit.PerHour(1000)))
	assert.Equal(t, `"a\"b\\c?";q=1;w=2`, policyValue(ratelimit.Limit{Rate: 0.5, Burst: 1, Name: "a\"b\\c\n"}))
	assert.Equal(t, int64(1), ceilSeconds(1))
	assert.Equal(t, int64(2), ceilSeconds(1001*1e6))
}

func TestContextEndedWhileWaitingOnRedis(t *testing.T) {
	_, rdb := redistest.Mini(t)
	l, err := ratelimit.NewRedis(rdb, nil, ratelimit.PerSecond(10))
	require.NoError(t, err)
	var runs int
	handler := func(c *gin.Context) { runs++; c.Status(http.StatusOK) }

	r := rlEngine(t, l, nil, nil)
	assert.Equal(t, http.StatusServiceUnavailable, doCancelled(r, http.MethodGet, "/", nil).Code, "RateLimit")

	r = newEngine(t, Idempotency(rdb, nil))
	r.POST("/", handler)
	w := doCancelled(r, http.MethodPost, "/", http.Header{"Idempotency-Key": {"k"}})
	assert.Equal(t, http.StatusServiceUnavailable, w.Code, "Idempotency")

	_, err = NewRateLimit(nil, nil)
	require.ErrorIs(t, err, ErrInvalidOptions)
}
