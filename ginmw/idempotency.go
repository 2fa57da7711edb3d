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
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/internal/keys"
	"github.com/surgekit/surge/internal/luascript"
)

var (
	//go:embed idem_begin.lua
	idemBeginLua string
	//go:embed idem_complete.lua
	idemCompleteLua string
	//go:embed idem_release.lua
	idemReleaseLua string

	idemBeginScript    = luascript.New(idemBeginLua)
	idemCompleteScript = luascript.New(idemCompleteLua)
	idemReleaseScript  = luascript.New(idemReleaseLua)
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

// NewIdempotency is [Idempotency] returning an error wrapping [ErrInvalidOptions] instead of
// panicking for a bad option (nil rdb, negative TTL, MaxBody, MaxResponse or Lease, a TTL or
// Lease under 1ms, a Prefix with braces, an invalid method, an unknown OnRedisError).
func NewIdempotency(rdb redis.UniversalClient, opt *IdempotencyOptions) (gin.HandlerFunc, error) {
	if rdb == nil {
		return nil, optionError("rdb", "nil Redis client")
	}
	cfg, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	m := &idempotency{rdb: rdb, cfg: cfg}
	return m.handle, nil
}

// Idempotency returns middleware implementing the IETF Idempotency-Key header
// (draft-ietf-httpapi-idempotency-key-header) over Redis, for opt.Methods (default POST, PATCH).
//
// The key (an sf-string, quoted or not, 1-255 printable ASCII characters; anything else is 400)
// is scoped by opt.Principal (default [Principal]): the same key from two principals names two
// records, and a request whose caller cannot be told apart (a token without a subject, a Cookie,
// Authorization or X-API-Key nobody verified, no client address) runs without a record, nothing
// stored or replayed, with a warning logged once. The request is fingerprinted by method, path
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
// opt.OnRedisError decides (default [FailClosed], 503); when storing the outcome fails it is
// logged and the lease expires on its own. The handler blocks on Redis and is safe for
// concurrent use. Idempotency panics at wiring time when [NewIdempotency] would return an error.
func Idempotency(rdb redis.UniversalClient, opt *IdempotencyOptions) gin.HandlerFunc {
	return must(NewIdempotency(rdb, opt))
}

type idempotency struct {
	rdb    redis.UniversalClient
	cfg    idempotencyConfig
	warned atomic.Bool // the no-principal warning was logged
}

func (m *idempotency) handle(c *gin.Context) {
	if !m.cfg.methods[c.Request.Method] || c.FullPath() == "" {
		c.Next() // not ours, or no route matched (gin answers 404/405 itself)
		return
	}
	raw := c.Request.Header[headerIdempotencyKey]
	if len(raw) == 0 {
		if m.cfg.required {
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
	principal, ok := m.cfg.principal(c)
	if !ok {
		if m.warned.CompareAndSwap(false, true) {
			m.cfg.log.LogAttrs(c.Request.Context(), slog.LevelWarn, "ginmw: idempotency: a request's caller cannot be told apart "+
				"(credentials without a verified JWT subject, or no client address); such requests run without idempotency. "+
				"Set IdempotencyOptions.Principal to name callers of your authentication scheme",
				slog.String("request_id", RequestIDFrom(c)))
		}
		c.Next()
		return
	}
	fp, status := m.fingerprint(c)
	if status != 0 {
		abortProblem(c, status, "")
		return
	}
	ctx := c.Request.Context()
	rk := keys.Tagged(m.cfg.prefix, principal) + ":" + key
	tok := generateID()
	res, err := idemBeginScript.Run(ctx, m.rdb, []string{rk}, fp, tok, m.cfg.lease.Milliseconds()).Slice()
	if err != nil {
		if ctx.Err() != nil {
			abortContextDone(c)
			return
		}
		m.cfg.log.LogAttrs(ctx, slog.LevelError, "ginmw: idempotency: Redis failed before the handler ran",
			slog.Any("error", err), slog.String("request_id", RequestIDFrom(c)))
		answerRedisError(c, m.cfg.onRedisError)
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
			m.cfg.log.LogAttrs(ctx, slog.LevelError, "ginmw: idempotency: stored response unreadable",
				slog.String("key", rk), slog.Any("error", err))
			abortProblem(c, http.StatusInternalServerError, "")
			return
		}
		writeStored(c, &r, headerReplayed, "true")
	default:
		m.cfg.log.LogAttrs(ctx, slog.LevelError, "ginmw: idempotency: unexpected script reply", slog.Any("reply", res))
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
	tee := &teeWriter{ResponseWriter: orig, max: int(m.cfg.maxResponse)}
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
	ok, err := idemCompleteScript.Run(ctx, m.rdb, []string{rk}, tok, appendResponse(nil, &r), m.cfg.ttl.Milliseconds()).Int()
	switch {
	case err != nil:
		m.cfg.log.LogAttrs(ctx, slog.LevelError, "ginmw: idempotency: storing the response failed; a retry runs again once the lease expires",
			slog.String("key", rk), slog.Any("error", err))
	case ok == 0:
		m.cfg.log.LogAttrs(ctx, slog.LevelWarn, "ginmw: idempotency: lease expired before the handler finished; response not stored (raise IdempotencyOptions.Lease)",
			slog.String("key", rk))
	}
}

func (m *idempotency) release(c *gin.Context, rk, tok string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), idemWriteTimeout)
	defer cancel()
	if err := idemReleaseScript.Run(ctx, m.rdb, []string{rk}, tok).Err(); err != nil {
		m.cfg.log.LogAttrs(ctx, slog.LevelError, "ginmw: idempotency: releasing the lease failed; it expires on its own",
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
		if req.ContentLength > m.cfg.maxBody {
			return "", http.StatusRequestEntityTooLarge
		}
		var buf bytes.Buffer
		if req.ContentLength > 0 {
			buf.Grow(int(req.ContentLength))
		}
		_, err := buf.ReadFrom(io.TeeReader(io.LimitReader(req.Body, m.cfg.maxBody+1), h))
		_ = req.Body.Close()
		switch {
		case int64(buf.Len()) > m.cfg.maxBody:
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
