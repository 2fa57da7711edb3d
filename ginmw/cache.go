package ginmw

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/cache"
	"github.com/surgekit/surge/internal/keys"
)

// Cache-Status values (RFC 9211) this package sends, "surge" being the cache's name.
const (
	cacheStatusHit       = "surge; hit"
	cacheStatusStored    = "surge; fwd=miss; stored"
	cacheStatusNotStored = "surge; fwd=miss"
	cacheStatusBypass    = "surge; fwd=bypass"
)

// errRequestGone is returned by a Cache loader started after its request had already given up.
var errRequestGone = errors.New("ginmw: request gone before its load started")

// HTTPCache is a response cache for Gin routes over Redis, built on [cache.Cache]: see [Cache]
// for what it stores and how it keys responses. Create it with [NewHTTPCache]; its methods are
// safe for concurrent use.
type HTTPCache struct {
	c   *cache.Cache[storedResponse]
	rdb redis.UniversalClient
	cfg cacheConfig
	set map[string]bool // cfg.vary, for checking response Vary
	now func() time.Time
}

// NewHTTPCache returns an HTTPCache over rdb (never closed by it), whose [HTTPCache.Handler] is
// the middleware [Cache] describes and which offers [HTTPCache.Invalidate]. It returns an error
// wrapping [ErrInvalidOptions] when an option is bad (nil rdb, negative TTL, MaxBody or
// LoadTimeout, Jitter of 1 or more, a Prefix with '{' or '}', an invalid Vary name, an unknown
// OnRedisError) and cache.New's error for the rest. It does no I/O; it starts goroutines only
// when opt.Local is set, and [HTTPCache.Close] stops them.
func NewHTTPCache(rdb redis.UniversalClient, opt *CacheOptions) (*HTTPCache, error) {
	if rdb == nil {
		return nil, optionError("rdb", "nil Redis client")
	}
	cfg, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	h := &HTTPCache{rdb: rdb, cfg: cfg, set: make(map[string]bool, len(cfg.vary)), now: time.Now}
	for _, v := range cfg.vary {
		h.set[v] = true
	}
	policy := cache.FailOpen
	if cfg.onRedisError == FailClosed {
		policy = cache.FailClosed
	}
	c, err := cache.New[storedResponse](rdb, &cache.Options{
		Prefix:         cfg.prefix + "r:",
		TTL:            cfg.ttl,
		Jitter:         cfg.jitter,
		NegativeTTL:    -1, // a route's "not found" is a 404 response, which is never stored
		LoadTimeout:    cfg.loadTimeout,
		Local:          cfg.local,
		Codec:          responseCodec{},
		OnRedisError:   policy,
		Logger:         cfg.log,
		TracerProvider: cfg.tp,
		MeterProvider:  cfg.mp,
	})
	if err != nil {
		return nil, fmt.Errorf("ginmw: cache: %w", err)
	}
	h.c = c
	return h, nil
}

// NewCache is [Cache] returning an error wrapping [ErrInvalidOptions] instead of panicking; see
// [NewHTTPCache] for what is checked. It refuses opt.Local, whose goroutines the returned handler
// could never stop: use NewHTTPCache and [HTTPCache.Close] for an in-process tier.
func NewCache(rdb redis.UniversalClient, opt *CacheOptions) (gin.HandlerFunc, error) {
	if opt != nil && opt.Local != nil {
		return nil, optionError("CacheOptions.Local", "starts goroutines that a bare handler cannot stop; use NewHTTPCache and HTTPCache.Close")
	}
	h, err := NewHTTPCache(rdb, opt)
	if err != nil {
		return nil, err
	}
	return h.Handler(), nil
}

// Cache returns middleware that caches GET and HEAD responses in Redis (through [cache.Cache]:
// one handler run per key per process for concurrent misses, jittered TTL).
//
// The key is method + host + path + sorted query + principal + the request headers listed in
// opt.Vary. The principal (opt.Principal, default [Principal]: the verified JWT's issuer and
// subject, else the client address) keeps callers apart; a request whose caller cannot be told
// apart (a token without a subject, a Cookie, Authorization or X-API-Key nobody verified, no
// client address) bypasses the cache (Cache-Status fwd=bypass). Set opt.Principal to share
// responses more widely (return ("", true) to share one entry between everybody).
//
// Only 2xx responses (not 206) up to opt.MaxBody are stored, and never ones with Set-Cookie,
// Cache-Control no-store, no-cache or private, Vary: *, or a Vary naming a header outside
// opt.Vary. Repeated headers are kept. Only headers the handler sets are stored (not X-Request-ID
// or RateLimit ones set by earlier middleware), so put Cache after those. Responses carry
// Cache-Status (RFC 9211): "surge; hit" with Age, "surge; fwd=miss; stored" or "surge; fwd=miss".
// Request Cache-Control directives are ignored, so clients cannot bust the cache. A cached route
// cannot stream (Flush buffers) or hijack, and its handler must not depend on request headers
// outside opt.Vary (X-Forwarded-Host, say), or one client's response is served to others.
//
// When Redis fails, opt.OnRedisError decides: [FailOpen] (the default) serves from the handler,
// [FailClosed] answers 503. The handler blocks on Redis and on joined loads and is safe for
// concurrent use; the cache it creates starts no goroutine and is never closed. Cache panics at
// wiring time when [NewCache] would return an error, including for opt.Local: use
// [NewHTTPCache] (which also offers [HTTPCache.Invalidate]) and [HTTPCache.Close] for that.
func Cache(rdb redis.UniversalClient, opt *CacheOptions) gin.HandlerFunc {
	return must(NewCache(rdb, opt))
}

// Handler returns the middleware; see [Cache].
func (h *HTTPCache) Handler() gin.HandlerFunc { return h.handle }

// Stats returns the underlying [cache.Cache] counters. Safe for concurrent use.
func (h *HTTPCache) Stats() cache.Stats { return h.c.Stats() }

// Close closes the underlying [cache.Cache] (stopping its goroutines, if any) and never the
// Redis client. Idempotent.
func (h *HTTPCache) Close() error { return h.c.Close() }

// cacheRun ties one request to the load the cache may start for it. The load runs the rest of
// the handler chain on the request's gin.Context, possibly on a cache goroutine, so the two sides
// agree through state on who may touch the context: the load only if it starts before the
// request gave up, and the request waits for a load that started.
type cacheRun struct {
	h      *HTTPCache
	c      *gin.Context
	state  atomic.Int32 // runIdle -> runLoading (load) or runGone (request)
	done   chan struct{}
	resp   *storedResponse
	stored bool
	panic  any
}

const (
	runIdle int32 = iota
	runLoading
	runGone
)

func (h *HTTPCache) handle(c *gin.Context) {
	if m := c.Request.Method; (m != http.MethodGet && m != http.MethodHead) || c.FullPath() == "" {
		c.Next() // not cacheable, or no route matched (gin answers 404/405 itself)
		return
	}
	principal, ok := h.cfg.principal(c)
	if !ok {
		c.Writer.Header()["Cache-Status"] = []string{cacheStatusBypass}
		c.Next()
		return
	}
	key := h.key(c, principal)
	run := &cacheRun{h: h, c: c, done: make(chan struct{})}
	v, err := h.c.Fetch(c.Request.Context(), key, run.load)
	if !run.state.CompareAndSwap(runIdle, runGone) {
		<-run.done // our own handler ran (or runs) inside the load
		if run.panic != nil {
			panic(run.panic)
		}
		status := cacheStatusNotStored
		if run.stored {
			status = cacheStatusStored
		}
		writeStored(c, run.resp, "Cache-Status", status)
		return
	}
	switch {
	case err == nil:
		age := max(h.now().UnixMilli()-v.Stored, 0) / 1000
		writeStored(c, &v, "Cache-Status", cacheStatusHit, "Age", strconv.FormatInt(age, 10))
	case c.Request.Context().Err() != nil:
		abortContextDone(c)
	default:
		// The load we joined produced a response that may not be shared (or failed, or was
		// another request's that gave up): run our own handler, uncached.
		if !errors.Is(err, errNotCacheable) && !errors.Is(err, errRequestGone) {
			if h.cfg.onRedisError == FailClosed {
				h.cfg.log.LogAttrs(c.Request.Context(), slog.LevelError, "ginmw: cache fetch failed; answering 503",
					slog.Any("error", err), slog.String("request_id", RequestIDFrom(c)))
				retryAfter(c.Writer.Header(), 1)
				abortProblem(c, http.StatusServiceUnavailable, "")
				return
			}
			h.cfg.log.LogAttrs(c.Request.Context(), slog.LevelWarn, "ginmw: cache fetch failed; serving uncached",
				slog.Any("error", err), slog.String("request_id", RequestIDFrom(c)))
		}
		c.Writer.Header()["Cache-Status"] = []string{cacheStatusNotStored}
		c.Next()
	}
}

// load is the cache.Loader: it runs the rest of the chain into a captureWriter and hands the
// response back for storing when it may be stored. A panic is kept for the request's goroutine to
// re-raise (the load may run on a cache goroutine, where it would kill the process).
func (r *cacheRun) load(ctx context.Context, key string) (storedResponse, error) {
	if !r.state.CompareAndSwap(runIdle, runLoading) {
		return storedResponse{}, errRequestGone
	}
	defer close(r.done)
	c := r.c
	orig := c.Writer
	w := newCaptureWriter(orig)
	c.Writer = w
	func() {
		defer func() {
			if p := recover(); p != nil {
				r.panic = p
			}
		}()
		c.Next()
	}()
	c.Writer = orig
	r.resp = &storedResponse{Status: w.status, Header: w.header, Body: w.body, Stored: r.h.now().UnixMilli()}
	if r.panic != nil || !r.h.storable(r.resp) {
		return storedResponse{}, errNotCacheable
	}
	r.stored = true
	r.h.index(ctx, c.Request.URL.Path, key)
	return *r.resp, nil
}

// storable reports whether a captured response may be stored: 2xx but not 206, within MaxBody,
// no Set-Cookie, no Cache-Control no-store/no-cache/private, and a Vary covered by opt.Vary.
func (h *HTTPCache) storable(r *storedResponse) bool {
	if r.Status < 200 || r.Status > 299 || r.Status == http.StatusPartialContent || len(r.Body) > h.cfg.maxBody {
		return false
	}
	if len(r.Header["Set-Cookie"]) > 0 {
		return false
	}
	for _, v := range r.Header["Cache-Control"] {
		for d := range strings.SplitSeq(v, ",") {
			name, _, _ := strings.Cut(d, "=")
			name = strings.TrimSpace(name)
			if strings.EqualFold(name, "no-store") || strings.EqualFold(name, "private") || strings.EqualFold(name, "no-cache") {
				return false
			}
		}
	}
	for _, v := range r.Header["Vary"] {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			if name == "*" || !h.set[http.CanonicalHeaderKey(name)] {
				return false
			}
		}
	}
	return true
}

// key returns the cache key of c's request: a hash of method, host, path, sorted query,
// principal and the opt.Vary request headers, each part length-delimited.
func (h *HTTPCache) key(c *gin.Context, principal string) string {
	var stack [256]byte
	b := stack[:0]
	req := c.Request
	b = appendPart(b, req.Method)
	b = appendPart(b, strings.ToLower(req.Host))
	b = appendPart(b, req.URL.Path)
	if req.URL.RawQuery != "" {
		b = appendPart(b, req.URL.Query().Encode()) // sorted by key, values in order
	} else {
		b = appendPart(b, "")
	}
	b = appendPart(b, principal)
	for _, name := range h.cfg.vary {
		vs := req.Header[name]
		b = strconv.AppendInt(b, int64(len(vs)), 10)
		for _, v := range vs {
			b = appendPart(b, v)
		}
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

func appendPart(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	return append(b, s...)
}

// indexKey is the Redis set listing the keys cached for one path.
func (h *HTTPCache) indexKey(path string) string { return keys.Tagged(h.cfg.prefix+"idx:", path) }

// index records key under path so that Invalidate finds it. A failure only costs invalidation
// of this entry (its TTL still bounds it) and is logged.
func (h *HTTPCache) index(ctx context.Context, path, key string) {
	ik := h.indexKey(path)
	_, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, ik, key)
		p.PExpire(ctx, ik, 2*h.cfg.ttl)
		return nil
	})
	if err != nil {
		h.cfg.log.LogAttrs(ctx, slog.LevelWarn, "ginmw: cache index write failed", slog.String("path", path), slog.Any("error", err))
	}
}

// Invalidate deletes every cached response of the path that route (a Gin pattern such as
// "/users/:id/*rest") gives with params: all methods, hosts, queries, principals and Vary values.
// In a handler, h.Invalidate(ctx, c.FullPath(), c.Params) drops the route's current path. It
// returns an error wrapping [ErrInvalidOptions] when a parameter of route is missing from params,
// and Redis errors, wrapped. A response being produced while Invalidate runs may still be stored
// afterwards (the usual cache-aside race); its TTL bounds it. Blocks for two Redis round trips;
// safe for concurrent use.
func (h *HTTPCache) Invalidate(ctx context.Context, route string, params gin.Params) error {
	path, err := expandRoute(route, params)
	if err != nil {
		return err
	}
	return h.InvalidatePath(ctx, path)
}

// InvalidatePath is [HTTPCache.Invalidate] for a concrete request path ("/users/42").
func (h *HTTPCache) InvalidatePath(ctx context.Context, path string) error {
	ik := h.indexKey(path)
	members, err := h.rdb.SMembers(ctx, ik).Result()
	if err != nil {
		return fmt.Errorf("ginmw: invalidate %q: %w", path, err)
	}
	if len(members) == 0 {
		return nil
	}
	if err := h.c.Delete(ctx, members...); err != nil {
		return fmt.Errorf("ginmw: invalidate %q: %w", path, err)
	}
	// Only the members deleted: a key stored meanwhile stays listed.
	if err := h.rdb.SRem(ctx, ik, toAny(members)...).Err(); err != nil {
		return fmt.Errorf("ginmw: invalidate %q: %w", path, err)
	}
	return nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// expandRoute fills a Gin route pattern's :name and *name segments from params.
func expandRoute(route string, params gin.Params) (string, error) {
	if !strings.ContainsAny(route, ":*") {
		return route, nil
	}
	var b strings.Builder
	for i, seg := range strings.Split(route, "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		if seg == "" || (seg[0] != ':' && seg[0] != '*') {
			b.WriteString(seg)
			continue
		}
		v, ok := params.Get(seg[1:])
		if !ok {
			return "", optionError("params", "route %q needs parameter %q", route, seg[1:])
		}
		if seg[0] == '*' {
			v = strings.TrimPrefix(v, "/") // Gin's catch-all value starts with the slash
		}
		b.WriteString(v) // decoded, like the URL.Path keys are built from
	}
	return b.String(), nil
}
