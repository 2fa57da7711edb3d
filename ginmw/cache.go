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
// for what it stores and how it keys responses. Create it with [NewCache]; its methods are safe
// for concurrent use.
type HTTPCache struct {
	c         *cache.Cache[storedResponse]
	rdb       redis.UniversalClient
	prefix    string
	ttl       time.Duration
	principal func(*gin.Context) (string, bool)
	vary      []string        // canonical request header names in the key
	varySet   map[string]bool // the same, for checking response Vary
	maxBody   int
	log       *slog.Logger
	now       func() time.Time
}

// NewCache returns an HTTPCache over rdb (never closed by it). It returns an error wrapping
// [ErrInvalidOptions] when an option is bad (negative TTL or MaxBody, a Prefix with '{' or '}',
// an invalid Vary name) and cache.New's error for the rest. It does no I/O; it starts goroutines
// only when opt.Local is set (see [HTTPCache.Close]).
func NewCache(rdb redis.UniversalClient, opt *CacheOptions) (*HTTPCache, error) {
	var o CacheOptions
	if opt != nil {
		o = *opt
	}
	if rdb == nil {
		return nil, optionError("rdb", "nil Redis client")
	}
	switch {
	case o.TTL < 0:
		return nil, optionError("CacheOptions.TTL", "negative (%v)", o.TTL)
	case o.TTL == 0:
		o.TTL = time.Minute
	}
	switch {
	case o.MaxBody < 0:
		return nil, optionError("CacheOptions.MaxBody", "negative (%d)", o.MaxBody)
	case o.MaxBody == 0:
		o.MaxBody = 1 << 20
	}
	if o.Prefix == "" {
		o.Prefix = "surge:http:"
	}
	if !keys.ValidPrefix(o.Prefix) {
		return nil, optionError("CacheOptions.Prefix", "%q must not contain '{' or '}'", o.Prefix)
	}
	h := &HTTPCache{
		rdb: rdb, prefix: o.Prefix, ttl: o.TTL, maxBody: int(min(o.MaxBody, 1<<40)),
		varySet: map[string]bool{}, log: discard(o.Logger), now: time.Now,
	}
	for _, v := range o.Vary {
		if !validHeaderName(v) {
			return nil, optionError("CacheOptions.Vary", "%q is not a valid header field name", v)
		}
		canon := http.CanonicalHeaderKey(v)
		if !h.varySet[canon] {
			h.varySet[canon] = true
			h.vary = append(h.vary, canon)
		}
	}
	h.principal = defaultCachePrincipal
	if o.Principal != nil {
		p := o.Principal
		h.principal = func(c *gin.Context) (string, bool) { return p(c), true }
	}
	c, err := cache.New[storedResponse](rdb, &cache.Options{
		Prefix:      o.Prefix + "r:",
		TTL:         o.TTL,
		Jitter:      o.Jitter,
		NegativeTTL: -1, // a route's "not found" is a 404 response, which is never stored
		LoadTimeout: o.LoadTimeout,
		Local:       o.Local,
		Codec:       responseCodec{},
		Logger:      o.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("ginmw: cache: %w", err)
	}
	h.c = c
	return h, nil
}

// Cache returns middleware that caches GET and HEAD responses in Redis (through [cache.Cache]:
// one handler run per key per process for concurrent misses, jittered TTL).
//
// The key is method + host + path + sorted query + principal + the request headers listed in
// opt.Vary. The principal (opt.Principal, default: "sub:" + the JWT subject when [JWT] verified
// a token, else "ip:" + client address) keeps users apart; by default a request carrying
// Authorization or Cookie without a verified JWT bypasses the cache (Cache-Status fwd=bypass),
// since its user is unknown. Set opt.Principal to share responses more widely (return "" to
// share one entry between everybody).
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
// Redis failures are served from the handler (cache's FailOpen). An invalid opt makes every
// request answer 500 and logs once through opt.Logger or slog.Default(); [NewCache] returns the
// error instead and offers [HTTPCache.Invalidate]. The handler blocks on Redis and on joined
// loads, is safe for concurrent use, and the cache it creates is never closed (no goroutines
// unless opt.Local is set: then use NewCache and Close).
func Cache(rdb redis.UniversalClient, opt *CacheOptions) gin.HandlerFunc {
	h, err := NewCache(rdb, opt)
	if err != nil {
		return misconfigured(err, opt.logger())
	}
	return h.Handler()
}

// Handler returns the middleware; see [Cache].
func (h *HTTPCache) Handler() gin.HandlerFunc { return h.handle }

// Stats returns the underlying [cache.Cache] counters. Safe for concurrent use.
func (h *HTTPCache) Stats() cache.Stats { return h.c.Stats() }

// Close closes the underlying [cache.Cache] (stopping its goroutines, if any) and never the
// Redis client. Idempotent.
func (h *HTTPCache) Close() error { return h.c.Close() }

// defaultCachePrincipal is the JWT subject, else the client address for requests without
// credentials; a request with credentials nobody verified bypasses the cache.
func defaultCachePrincipal(c *gin.Context) (string, bool) {
	if s := stateFrom(c); s != nil && s.authed && s.subject != "" {
		return "sub:" + s.subject, true
	}
	hdr := c.Request.Header
	if len(hdr["Authorization"]) > 0 || len(hdr["Cookie"]) > 0 {
		return "", false
	}
	return "ip:" + ClientIPKey(c), true
}

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
	principal, ok := h.principal(c)
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
			h.log.LogAttrs(c.Request.Context(), slog.LevelWarn, "ginmw: cache fetch failed; serving uncached",
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
	if r.Status < 200 || r.Status > 299 || r.Status == http.StatusPartialContent || len(r.Body) > h.maxBody {
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
			if name == "*" || !h.varySet[http.CanonicalHeaderKey(name)] {
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
	for _, name := range h.vary {
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
func (h *HTTPCache) indexKey(path string) string { return keys.Tagged(h.prefix+"idx:", path) }

// index records key under path so that Invalidate finds it. A failure only costs invalidation
// of this entry (its TTL still bounds it) and is logged.
func (h *HTTPCache) index(ctx context.Context, path, key string) {
	ik := h.indexKey(path)
	_, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, ik, key)
		p.PExpire(ctx, ik, 2*h.ttl)
		return nil
	})
	if err != nil {
		h.log.LogAttrs(ctx, slog.LevelWarn, "ginmw: cache index write failed", slog.String("path", path), slog.Any("error", err))
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
