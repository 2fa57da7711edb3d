package ginmw

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/internal/keys"
)

var (
	//go:embed idem_begin.lua
	idemBeginLua string
	//go:embed idem_complete.lua
	idemCompleteLua string
	//go:embed idem_release.lua
	idemReleaseLua string

	idemBegin    = redis.NewScript(idemBeginLua)
	idemComplete = redis.NewScript(idemCompleteLua)
	idemRelease  = redis.NewScript(idemReleaseLua)
)

const (
	headerIdempotencyKey = "Idempotency-Key"
	headerReplayed       = "Idempotent-Replayed"
	maxIdempotencyKeyLen = 255
	// idemWriteTimeout bounds recording the outcome, which runs even when the client has gone.
	idemWriteTimeout = 5 * time.Second
)

// notReplayed are response headers never stored for replay: hop-by-hop and per-response ones.
// Headers set before the handler ran (request ids, rate-limit state) are left out as well.
var notReplayed = map[string]bool{
	"Date": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true,
	"Keep-Alive": true, "Trailer": true, "Upgrade": true, headerReplayed: true,
}

// NewIdempotency is [Idempotency] returning an error wrapping [ErrInvalidOptions] for a bad
// option (nil rdb, negative TTL, MaxBody, MaxResponse or Lease, a Prefix with braces, an invalid
// method) instead of a handler that answers 500.
func NewIdempotency(rdb redis.UniversalClient, opt *IdempotencyOptions) (gin.HandlerFunc, error) {
	var o IdempotencyOptions
	if opt != nil {
		o = *opt
	}
	if rdb == nil {
		return nil, optionError("rdb", "nil Redis client")
	}
	for _, d := range []struct {
		name string
		v    *int64
		def  int64
	}{
		{"TTL", (*int64)(&o.TTL), int64(24 * time.Hour)},
		{"MaxBody", &o.MaxBody, 1 << 20},
		{"MaxResponse", &o.MaxResponse, 1 << 20},
		{"Lease", (*int64)(&o.Lease), int64(time.Minute)},
	} {
		switch {
		case *d.v < 0:
			return nil, optionError("IdempotencyOptions."+d.name, "negative (%d)", *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if o.TTL < time.Millisecond || o.Lease < time.Millisecond {
		return nil, optionError("IdempotencyOptions", "TTL and Lease must be at least 1ms")
	}
	if o.Prefix == "" {
		o.Prefix = "surge:idem:"
	}
	if !keys.ValidPrefix(o.Prefix) {
		return nil, optionError("IdempotencyOptions.Prefix", "%q must not contain '{' or '}'", o.Prefix)
	}
	if len(o.Methods) == 0 {
		o.Methods = []string{http.MethodPost, http.MethodPatch}
	}
	m := &idempotency{
		rdb: rdb, opt: o, methods: map[string]bool{}, log: discard(o.Logger),
		principal: o.Principal, onError: o.OnError,
	}
	for _, meth := range o.Methods {
		if !validHeaderName(meth) { // a method is a token too
			return nil, optionError("IdempotencyOptions.Methods", "%q is not a valid method", meth)
		}
		m.methods[meth] = true
	}
	if m.principal == nil {
		m.principal = Principal
	}
	if m.onError == nil {
		m.onError = FailClosed
	}
	return m.handle, nil
}

// Idempotency returns middleware implementing the IETF Idempotency-Key header
// (draft-ietf-httpapi-idempotency-key-header) over Redis, for opt.Methods (default POST, PATCH).
//
// The key (an sf-string, quoted or not, 1-255 printable ASCII characters; anything else is 400)
// is scoped by opt.Principal (default [Principal]). The request is fingerprinted by method, path
// with query, and a SHA-256 of the body, read up to opt.MaxBody (larger bodies get 413, so memory
// stays bounded; the handler reads the buffered copy). Then, atomically in Redis:
//   - an unknown key takes a lease (opt.Lease) and the handler runs; its response is stored for
//     opt.TTL (default 24h) with its status, headers (only those the handler set) and body,
//     except a 5xx, a 429 or a panic, which give the lease up so that a retry runs at once; a
//     crashed process's lease expires after opt.Lease;
//   - a key used with a different fingerprint gets 422;
//   - a key whose request is still running gets 409 with Retry-After;
//   - a completed key is replayed with Idempotent-Replayed: true.
//
// Requests without the header pass through, or get 400 with opt.Required. Errors are
// application/problem+json. When Redis fails before the handler ran the error is logged and
// opt.OnError decides (default [FailClosed], 503); when storing the outcome fails it is logged and
// the lease expires on its own. The handler blocks on Redis and is safe for concurrent use. An
// invalid opt makes every request answer 500 (logged once); [NewIdempotency] returns the error.
func Idempotency(rdb redis.UniversalClient, opt *IdempotencyOptions) gin.HandlerFunc {
	h, err := NewIdempotency(rdb, opt)
	if err != nil {
		return misconfigured(err, opt.logger())
	}
	return h
}

type idempotency struct {
	rdb       redis.UniversalClient
	opt       IdempotencyOptions
	methods   map[string]bool
	principal func(*gin.Context) string
	onError   func(*gin.Context, error)
	log       *slog.Logger
}

func (m *idempotency) handle(c *gin.Context) {
	if !m.methods[c.Request.Method] || c.FullPath() == "" {
		c.Next() // not ours, or no route matched (gin answers 404/405 itself)
		return
	}
	raw := c.Request.Header[headerIdempotencyKey]
	if len(raw) == 0 {
		if m.opt.Required {
			abortProblem(c, http.StatusBadRequest, "this request needs an Idempotency-Key header")
			return
		}
		c.Next()
		return
	}
	key, ok := parseIdempotencyKey(raw)
	if !ok {
		abortProblem(c, http.StatusBadRequest, "the Idempotency-Key header must be one string of 1 to 255 printable ASCII characters")
		return
	}
	fp, status := m.fingerprint(c)
	if status != 0 {
		abortProblem(c, status, "")
		return
	}
	ctx := c.Request.Context()
	rk := keys.Tagged(m.opt.Prefix, m.principal(c)) + ":" + key
	tok := generateID()
	res, err := idemBegin.Run(ctx, m.rdb, []string{rk}, fp, tok, m.opt.Lease.Milliseconds()).Slice()
	if err != nil {
		if ctx.Err() != nil {
			abortContextDone(c)
			return
		}
		m.log.LogAttrs(ctx, slog.LevelError, "ginmw: idempotency: Redis failed before the handler ran",
			slog.Any("error", err), slog.String("request_id", RequestIDFrom(c)))
		m.onError(c, err)
		if !c.IsAborted() {
			c.Next()
		}
		return
	}
	verdict, _ := res[0].(string)
	switch verdict {
	case "new":
		m.run(c, rk, tok)
	case "mismatch":
		abortProblem(c, http.StatusUnprocessableEntity, "this Idempotency-Key was used for a different request")
	case "busy":
		pttl, _ := res[1].(int64)
		retryAfter(c.Writer.Header(), ceilSeconds(time.Duration(pttl)*time.Millisecond))
		abortProblem(c, http.StatusConflict, "a request with this Idempotency-Key is still being processed")
	case "done":
		var r storedResponse
		enc, _ := res[1].(string)
		if err := decodeResponse([]byte(enc), &r); err != nil {
			m.log.LogAttrs(ctx, slog.LevelError, "ginmw: idempotency: stored response unreadable",
				slog.String("key", rk), slog.Any("error", err))
			abortProblem(c, http.StatusInternalServerError, "")
			return
		}
		writeStored(c, &r, headerReplayed, "true")
	default:
		m.log.LogAttrs(ctx, slog.LevelError, "ginmw: idempotency: unexpected script reply", slog.Any("reply", res))
		abortProblem(c, http.StatusInternalServerError, "")
	}
}

// run executes the handler for the request holding the lease and records the outcome.
func (m *idempotency) run(c *gin.Context, rk, tok string) {
	orig := c.Writer
	before := make(map[string]bool, len(orig.Header()))
	for k := range orig.Header() {
		before[k] = true
	}
	tee := &teeWriter{ResponseWriter: orig, max: int(min(m.opt.MaxResponse, 1<<40))}
	c.Writer = tee
	finished := false
	defer func() {
		c.Writer = orig
		if !finished { // a panic: give the lease up so a retry can run
			m.release(c, rk, tok)
		}
	}()
	c.Next()
	finished = true
	status := tee.Status()
	if status >= 500 || status == http.StatusTooManyRequests {
		m.release(c, rk, tok) // not an outcome: the client may retry
		return
	}
	r := storedResponse{Status: status, Header: http.Header{}, Body: tee.body, Stored: time.Now().UnixMilli()}
	for k, vs := range orig.Header() {
		if !before[k] && !notReplayed[k] {
			r.Header[k] = vs
		}
	}
	if tee.over {
		for _, k := range []string{"Content-Type", "Content-Encoding", "Content-Range", "Etag"} {
			delete(r.Header, k)
		}
		r.Header["Content-Type"] = []string{problemJSON}
		r.Body = problemBody(status, "the original response was too large to store for replay; it was delivered to the first request")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), idemWriteTimeout)
	defer cancel()
	ok, err := idemComplete.Run(ctx, m.rdb, []string{rk}, tok, appendResponse(nil, &r), m.opt.TTL.Milliseconds()).Int()
	switch {
	case err != nil:
		m.log.LogAttrs(ctx, slog.LevelError, "ginmw: idempotency: storing the response failed; a retry runs again once the lease expires",
			slog.String("key", rk), slog.Any("error", err))
	case ok == 0:
		m.log.LogAttrs(ctx, slog.LevelWarn, "ginmw: idempotency: lease expired before the handler finished; response not stored (raise IdempotencyOptions.Lease)",
			slog.String("key", rk))
	}
}

func (m *idempotency) release(c *gin.Context, rk, tok string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), idemWriteTimeout)
	defer cancel()
	if err := idemRelease.Run(ctx, m.rdb, []string{rk}, tok).Err(); err != nil {
		m.log.LogAttrs(ctx, slog.LevelError, "ginmw: idempotency: releasing the lease failed; it expires on its own",
			slog.String("key", rk), slog.Any("error", err))
	}
}

// fingerprint reads the body (at most MaxBody bytes, else status 413), gives the handler a
// buffered copy and returns the hex SHA-256 of method, path with query, and body.
func (m *idempotency) fingerprint(c *gin.Context) (string, int) {
	req := c.Request
	h := sha256.New()
	_, _ = io.WriteString(h, req.Method+"\x00"+req.URL.RequestURI()+"\x00")
	if req.Body != nil && req.Body != http.NoBody {
		if req.ContentLength > m.opt.MaxBody {
			return "", http.StatusRequestEntityTooLarge
		}
		var buf bytes.Buffer
		if req.ContentLength > 0 {
			buf.Grow(int(req.ContentLength))
		}
		_, err := buf.ReadFrom(io.TeeReader(io.LimitReader(req.Body, m.opt.MaxBody+1), h))
		_ = req.Body.Close()
		switch {
		case int64(buf.Len()) > m.opt.MaxBody:
			return "", http.StatusRequestEntityTooLarge
		case err != nil:
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return "", http.StatusRequestEntityTooLarge
			}
			return "", http.StatusBadRequest
		}
		req.Body = io.NopCloser(bytes.NewReader(buf.Bytes()))
	}
	return hex.EncodeToString(h.Sum(nil)), 0
}

// parseIdempotencyKey returns the key of the Idempotency-Key header: one value, an sf-string
// ("...", with \" and \\ escapes) or bare, 1-255 printable ASCII characters.
func parseIdempotencyKey(vals []string) (string, bool) {
	if len(vals) != 1 {
		return "", false
	}
	v := strings.Trim(vals[0], " \t")
	if len(v) >= 2 && v[0] == '"' {
		var b strings.Builder
		i := 1
		for ; i < len(v); i++ {
			c := v[i]
			if c == '"' {
				break
			}
			if c == '\\' {
				i++
				if i == len(v) || (v[i] != '"' && v[i] != '\\') {
					return "", false
				}
				c = v[i]
			}
			b.WriteByte(c)
		}
		if i != len(v)-1 {
			return "", false // unterminated, or something after the closing quote
		}
		v = b.String()
	}
	if len(v) == 0 || len(v) > maxIdempotencyKeyLen {
		return "", false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return "", false
		}
	}
	return v, true
}
