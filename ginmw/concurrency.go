package ginmw

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/surgekit/surge/ratelimit"
)

// releaseTimeout bounds giving a permit back, which runs even when the client has gone.
const releaseTimeout = 5 * time.Second

// Concurrency returns middleware that holds one slot of l for every request while the rest of
// the chain runs, so that at most l's limit of requests per key are in flight at once (across
// every instance when l is a [ratelimit.Concurrency] on Redis). The slot is given back when the
// handler returns, also when it panics (the panic goes on); a release that fails is logged, and
// a Redis slot frees itself when its lease ends. A handler that may outlive the limiter's lease
// loses its slot early unless it renews the permit.
//
// The key is opt.Key, by default the client address exactly as [RateLimit]'s default key takes
// it (requests without an address go to opt.NoAddressKey or are refused with 500); a custom Key
// returning "" lets the request through without a slot. When every slot of the key is held the
// request gets opt.Status (429 by default, or 503) with Retry-After (the limiter's hint in whole
// seconds, at least 1) and an application/problem+json body. When l fails the error is logged
// and opt.OnRedisError decides: [FailOpen] (the default) or [FailClosed] (503). A request whose
// context ended gets 503.
//
// The handler blocks for Acquire and Release (a Redis round trip each for ratelimit.Concurrency)
// and is safe for concurrent use. Concurrency panics at wiring time when [NewConcurrency] would
// return an error.
func Concurrency(l ratelimit.ConcurrencyLimiter, opt *ConcurrencyOptions) gin.HandlerFunc {
	return must(NewConcurrency(l, opt))
}

// NewConcurrency is [Concurrency] returning an error wrapping [ErrInvalidOptions] instead of
// panicking for a nil limiter or a bad option (a Status other than 429 or 503, an unknown
// OnRedisError).
func NewConcurrency(l ratelimit.ConcurrencyLimiter, opt *ConcurrencyOptions) (gin.HandlerFunc, error) {
	if l == nil {
		return nil, optionError("l", "nil ratelimit.ConcurrencyLimiter")
	}
	cfg, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	m := &concurrency{l: l, cfg: cfg, dk: defaultKey{mw: "Concurrency", noAddressKey: cfg.noAddressKey, log: cfg.log}}
	return m.handle, nil
}

type concurrency struct {
	l   ratelimit.ConcurrencyLimiter
	cfg concurrencyConfig
	dk  defaultKey
}

func (m *concurrency) handle(c *gin.Context) {
	var key string
	if m.cfg.key != nil {
		key = m.cfg.key(c)
	} else if k, ok := m.dk.key(c); ok {
		key = k
	} else {
		return
	}
	if key == "" {
		c.Next()
		return
	}
	ctx := c.Request.Context()
	permit, err := m.l.Acquire(ctx, key)
	if err != nil {
		var ce *ratelimit.ConcurrencyError
		switch {
		case errors.Is(err, ratelimit.ErrConcurrencyLimited):
			wait := DefaultConcurrencyRetryAfter
			if errors.As(err, &ce) && ce.RetryAfter > 0 {
				wait = ce.RetryAfter
			}
			retryAfter(c.Writer.Header(), max(ceilSeconds(wait), 1))
			abortProblem(c, m.cfg.status, "too many requests of this client are in progress")
		case ctx.Err() != nil:
			abortContextDone(c)
		default:
			m.cfg.log.LogAttrs(ctx, slog.LevelError, "ginmw: concurrency limiter failed",
				slog.String("key", key), slog.Any("error", err), slog.String("request_id", RequestIDFrom(c)))
			answerRedisError(c, m.cfg.onRedisError)
		}
		return
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		if err := permit.Release(rctx); err != nil {
			m.cfg.log.LogAttrs(rctx, slog.LevelWarn, "ginmw: releasing a concurrency slot failed; it frees itself when its lease ends",
				slog.String("key", key), slog.Any("error", err))
		}
	}()
	c.Next()
}

// defaultKey is the default key of [RateLimit] and [Concurrency]: the client address, the peer
// address when Gin would believe any client's forwarding header (warned once), noAddressKey or a
// refusal (500, logged once) for requests without an address.
type defaultKey struct {
	mw           string // the middleware's name, for the log lines
	noAddressKey string
	log          *slog.Logger
	warned       atomic.Bool // the proxy-trust warning was logged
	noAddr       atomic.Bool // the no-address error was logged
}

// key returns the key of c's request; ok false means the request was answered.
func (d *defaultKey) key(c *gin.Context) (key string, ok bool) {
	addr, spoofable := clientAddr(c)
	if spoofable && d.warned.CompareAndSwap(false, true) {
		d.log.LogAttrs(c.Request.Context(), slog.LevelWarn, "ginmw: "+d.mw+" keys requests by the peer address "+
			"because the gin engine trusts every proxy, so any client could set its own X-Forwarded-For; call "+
			"engine.SetTrustedProxies with your proxies' addresses (or nil when there are none) to key by the client address behind them",
			slog.String("peer", c.Request.RemoteAddr))
	}
	switch {
	case addr != "":
		return addr, true
	case d.noAddressKey != "":
		return d.noAddressKey, true
	}
	if d.noAddr.CompareAndSwap(false, true) {
		d.log.LogAttrs(c.Request.Context(), slog.LevelError, "ginmw: "+d.mw+" refuses requests without a client "+
			"address (a unix-socket listener without X-Forwarded-For?); have the proxy in front set one, or set "+
			d.mw+"Options.NoAddressKey or Key", slog.String("remote_addr", c.Request.RemoteAddr))
	}
	abortProblem(c, http.StatusInternalServerError, "")
	return "", false
}
