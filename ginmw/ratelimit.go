package ginmw

import (
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/surgekit/surge/ratelimit"
)

// Header names of draft-ietf-httpapi-ratelimit-headers, in canonical form.
const (
	headerRateLimit       = "Ratelimit"
	headerRateLimitPolicy = "Ratelimit-Policy"
)

// maxPolicies bounds the cache of formatted RateLimit-Policy values (one per distinct Limit).
const maxPolicies = 64

// answerRedisError applies policy after err was logged: FailClosed answers 503 with Retry-After: 1;
// FailOpen lets the request go on.
func answerRedisError(c *gin.Context, policy ErrorPolicy) {
	if policy == FailClosed {
		retryAfter(c.Writer.Header(), 1)
		abortProblem(c, http.StatusServiceUnavailable, "")
		return
	}
	c.Next()
}

// RateLimit returns middleware that charges every request to a bucket of l and answers 429 when
// it is empty.
//
// The bucket key is opt.Key, by default the client address ([ClientIPKey]: Gin's trusted-proxy
// logic, the peer address when the engine trusts every proxy, IPv6 grouped by /64); a request
// without any client address is charged to opt.NoAddressKey or, without one, refused with 500.
// When the default key meets a forwarding header it does not believe, it logs once through
// opt.Logger how to configure trusted proxies. A custom Key returning "" lets the request through
// uncharged. The cost is opt.Cost (default 1).
//
// Every charged response carries the IETF draft headers (draft-ietf-httpapi-ratelimit-headers)
// for the binding limit, in delta seconds: RateLimit-Policy: "name";q=<burst>;w=<seconds to
// refill> and RateLimit: "name";r=<remaining>;t=<seconds until full>. A denied request gets 429
// with Retry-After (whole seconds, at least 1) and an application/problem+json body; a cost above
// the burst (never allowed) gets 429 without Retry-After.
//
// When l fails the error is logged through opt.Logger and opt.OnRedisError decides: [FailOpen]
// (the default) or [FailClosed] (503). A request whose context ended while waiting gets 503.
// Set opt.Engine to have [CheckProxies] report at construction how the engine resolves client
// addresses.
//
// The handler blocks for l.AllowN (a Redis round trip for ratelimit.Redis) and is safe for
// concurrent use. RateLimit panics at wiring time when [NewRateLimit] would return an error (a
// nil l, an unknown OnRedisError).
func RateLimit(l ratelimit.Limiter, opt *RateLimitOptions) gin.HandlerFunc {
	return must(NewRateLimit(l, opt))
}

// NewRateLimit is [RateLimit] returning an error wrapping [ErrInvalidOptions] for a nil limiter
// or a bad option instead of panicking.
func NewRateLimit(l ratelimit.Limiter, opt *RateLimitOptions) (gin.HandlerFunc, error) {
	if l == nil {
		return nil, optionError("l", "nil ratelimit.Limiter")
	}
	cfg, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	if cfg.engine != nil {
		CheckProxies(cfg.engine, cfg.log)
	}
	m := &rateLimiter{l: l, cfg: cfg, dk: defaultKey{mw: "RateLimit", noAddressKey: cfg.noAddressKey, log: cfg.log}}
	return m.handle, nil
}

type rateLimiter struct {
	l        ratelimit.Limiter
	cfg      rateLimitConfig
	dk       defaultKey
	policies atomic.Pointer[map[ratelimit.Limit][]string]
	mu       sync.Mutex // serialises additions to policies
}

// key returns the bucket of c's request; ok false means the request was answered.
func (m *rateLimiter) key(c *gin.Context) (key string, ok bool) {
	if m.cfg.key != nil {
		return m.cfg.key(c), true
	}
	return m.dk.key(c)
}

func (m *rateLimiter) handle(c *gin.Context) {
	key, ok := m.key(c)
	switch {
	case !ok:
		return
	case key == "":
		c.Next()
		return
	}
	n := 1
	if m.cfg.cost != nil {
		n = max(m.cfg.cost(c), 1)
	}
	ctx := c.Request.Context()
	res, err := m.l.AllowN(ctx, key, n)
	if err != nil {
		switch {
		case errors.Is(err, ratelimit.ErrExceedsBurst):
			abortProblem(c, http.StatusTooManyRequests, "the request costs more than the limit's burst")
		case ctx.Err() != nil:
			abortContextDone(c)
		default:
			m.cfg.log.LogAttrs(ctx, slog.LevelError, "ginmw: rate limiter failed",
				slog.String("key", key), slog.Any("error", err), slog.String("request_id", RequestIDFrom(c)))
			answerRedisError(c, m.cfg.onRedisError)
		}
		return
	}
	h := c.Writer.Header()
	if res.Limit.Rate > 0 && res.Limit.Burst > 0 {
		h[headerRateLimitPolicy] = m.policy(res.Limit)
		h[headerRateLimit] = []string{rateLimitValue(res)}
	}
	if !res.Allowed {
		retryAfter(h, ceilSeconds(res.RetryAfter))
		abortProblem(c, http.StatusTooManyRequests, "")
		return
	}
	c.Next()
}

// policy returns the RateLimit-Policy value of lim, formatted once and then served from a
// copy-on-write map (limiters have a handful of limits).
func (m *rateLimiter) policy(lim ratelimit.Limit) []string {
	if p := m.policies.Load(); p != nil {
		if v, ok := (*p)[lim]; ok {
			return v
		}
	}
	v := []string{policyValue(lim)}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.policies.Load()
	if old != nil && len(*old) >= maxPolicies {
		return v
	}
	next := make(map[ratelimit.Limit][]string, 1)
	if old != nil {
		for k, x := range *old {
			next[k] = x
		}
	}
	next[lim] = v
	m.policies.Store(&next)
	return v
}

// policyValue formats `"name";q=<burst>;w=<window>`, the window being the seconds a drained bucket
// takes to refill (at least 1; see windowSeconds).
func policyValue(lim ratelimit.Limit) string {
	b := appendSFString(make([]byte, 0, 48), limitName(lim))
	b = append(b, ";q="...)
	b = strconv.AppendInt(b, int64(lim.Burst), 10)
	b = append(b, ";w="...)
	w := windowSeconds(lim)
	b = strconv.AppendInt(b, int64(max(min(w, math.MaxInt32), 1)), 10)
	return string(b)
}

// rateLimitValue formats `"name";r=<remaining>;t=<seconds until full>`.
func rateLimitValue(res ratelimit.Result) string {
	var buf [80]byte
	b := appendSFString(buf[:0], limitName(res.Limit))
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, int64(max(res.Remaining, 0)), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, ceilSeconds(res.ResetAfter), 10)
	return string(b)
}

func limitName(lim ratelimit.Limit) string {
	if lim.Name == "" {
		return "default"
	}
	return lim.Name
}

// appendSFString appends s as an RFC 8941 sf-string: quoted, with '"' and '\' escaped and bytes
// outside printable ASCII (which an sf-string cannot hold) replaced by '?'.
func appendSFString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c > 0x7e:
			b = append(b, '?')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// ceilSeconds rounds d up to whole seconds (0 for d <= 0).
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// windowSeconds returns the whole seconds a drained bucket of lim takes to refill: the ceiling
// of [ratelimit.Limit.Window], which is exact for PerSecond/PerMinute/PerHour although
// n/(n/60.0) is not (PerMinute(11) has w=60, not 61); at most MaxInt32.
func windowSeconds(lim ratelimit.Limit) float64 {
	if w := float64(lim.Burst) / lim.Rate; !(w < math.MaxInt32) { // also NaN
		return math.MaxInt32
	}
	return float64(ceilSeconds(lim.Window()))
}
