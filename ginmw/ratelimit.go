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

// FailOpen is an OnError handler that lets the request go on as if it were not limited (or, for
// [Idempotency], not deduplicated). The middleware has logged the error already.
func FailOpen(*gin.Context, error) {}

// FailClosed is an OnError handler that answers 503 with Retry-After: 1 and an
// application/problem+json body. The middleware has logged the error already.
func FailClosed(c *gin.Context, _ error) {
	retryAfter(c.Writer.Header(), 1)
	abortProblem(c, http.StatusServiceUnavailable, "")
}

// RateLimit returns middleware that charges every request to a bucket of l and answers 429 when
// it is empty.
//
// The bucket key is opt.Key (default [ClientIPKey]: Gin's trusted-proxy client IP, IPv6 grouped
// by /64; an empty key lets the request through uncharged), the cost opt.Cost (default 1). Every
// charged response carries the IETF draft headers (draft-ietf-httpapi-ratelimit-headers) for the
// binding limit, in delta seconds: RateLimit-Policy: "name";q=<burst>;w=<seconds to refill> and
// RateLimit: "name";r=<remaining>;t=<seconds until full>. A denied request gets 429 with
// Retry-After (whole seconds, at least 1) and an application/problem+json body; a cost above the
// burst (never allowed) gets 429 without Retry-After.
//
// When l fails the error is logged through opt.Logger and opt.OnError decides: [FailOpen] (the
// default) or [FailClosed] (503). A request whose context ended while waiting gets 503.
// Set opt.Engine to have [CheckProxies] warn at construction when Gin trusts every proxy.
//
// The handler blocks for l.AllowN (a Redis round trip for ratelimit.Redis) and is safe for
// concurrent use. It never panics on limiter errors; a nil l makes every request answer 500 (and
// logs that once through opt.Logger or slog.Default()); [NewRateLimit] returns the error instead.
func RateLimit(l ratelimit.Limiter, opt *RateLimitOptions) gin.HandlerFunc {
	h, err := NewRateLimit(l, opt)
	if err != nil {
		return misconfigured(err, opt.logger())
	}
	return h
}

// NewRateLimit is [RateLimit] returning an error wrapping [ErrInvalidOptions] for a nil limiter
// instead of a handler that answers 500.
func NewRateLimit(l ratelimit.Limiter, opt *RateLimitOptions) (gin.HandlerFunc, error) {
	var o RateLimitOptions
	if opt != nil {
		o = *opt
	}
	if l == nil {
		return nil, optionError("l", "nil ratelimit.Limiter")
	}
	if o.Engine != nil {
		CheckProxies(o.Engine, o.Logger)
	}
	m := &rateLimiter{l: l, key: o.Key, cost: o.Cost, onError: o.OnError, log: discard(o.Logger)}
	if m.key == nil {
		m.key = ClientIPKey
	}
	if m.onError == nil {
		m.onError = FailOpen
	}
	return m.handle, nil
}

type rateLimiter struct {
	l        ratelimit.Limiter
	key      func(*gin.Context) string
	cost     func(*gin.Context) int
	onError  func(*gin.Context, error)
	log      *slog.Logger
	policies atomic.Pointer[map[ratelimit.Limit][]string]
	mu       sync.Mutex // serialises additions to policies
}

func (m *rateLimiter) handle(c *gin.Context) {
	key := m.key(c)
	if key == "" {
		c.Next()
		return
	}
	n := 1
	if m.cost != nil {
		n = max(m.cost(c), 1)
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
			m.log.LogAttrs(ctx, slog.LevelError, "ginmw: rate limiter failed",
				slog.String("key", key), slog.Any("error", err), slog.String("request_id", RequestIDFrom(c)))
			m.onError(c, err)
			if !c.IsAborted() {
				c.Next()
			}
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
// takes to refill (at least 1).
func policyValue(lim ratelimit.Limit) string {
	b := appendSFString(make([]byte, 0, 48), limitName(lim))
	b = append(b, ";q="...)
	b = strconv.AppendInt(b, int64(lim.Burst), 10)
	b = append(b, ";w="...)
	w := math.Ceil(float64(lim.Burst) / lim.Rate)
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
