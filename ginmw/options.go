package ginmw

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"

	"github.com/surgekit/surge/cache"
)

// RequestIDOptions configures [RequestID]. The zero value (or nil) is ready to use.
type RequestIDOptions struct {
	// Header is the request id header, read from requests and written on responses.
	// Default "X-Request-ID". Must be a valid header field name.
	Header string
	// Generate makes a new request id when the request brings no valid one. Its results are used
	// as they are. Default: 32 random lowercase hex characters. Must be safe for concurrent use.
	Generate func() string
	// IgnoreIncoming makes RequestID always generate ids, ignoring the request's header; set it on
	// services whose callers are not trusted to choose ids. Default false.
	IgnoreIncoming bool
}

type requestIDConfig struct {
	header         string // canonical
	Generate       func() string
	IgnoreIncoming bool
}

func (o *RequestIDOptions) resolve() (requestIDConfig, error) {
	cfg := requestIDConfig{header: "X-Request-Id", Generate: generateID}
	if o == nil {
		return cfg, nil
	}
	if o.Header != "" {
		if !validHeaderName(o.Header) {
			return cfg, optionError("RequestIDOptions.Header", "%q is not a valid header field name", o.Header)
		}
		cfg.header = http.CanonicalHeaderKey(o.Header)
	}
	if o.Generate != nil {
		cfg.Generate = o.Generate
	}
	cfg.IgnoreIncoming = o.IgnoreIncoming
	return cfg, nil
}

// LoggerOptions configures [NewLogger]; [Logger] uses the defaults with the given logger.
type LoggerOptions struct {
	// Logger receives one line per request. Default slog.Default().
	Logger *slog.Logger
	// Headers are request headers logged as attributes named header.<lowercase name>.
	// Credentials (Authorization, Proxy-Authorization, Cookie, Set-Cookie) are refused with an
	// error: they are never logged. Default none.
	Headers []string
	// Skip, when set, is called before the handler chain; requests it reports true for are not
	// logged (health checks...). Must be safe for concurrent use.
	Skip func(*gin.Context) bool
}

// RateLimitOptions configures [RateLimit]. The zero value (or nil) is ready to use.
type RateLimitOptions struct {
	// Key returns the bucket a request is charged to; "" lets the request through uncharged.
	// Default [ClientIPKey]: the client IP from Gin's trusted-proxy logic, IPv6 grouped by /64.
	Key func(*gin.Context) string
	// Cost returns how many tokens a request takes; values below 1 count as 1. Default 1.
	Cost func(*gin.Context) int
	// OnError decides what happens when the limiter fails: abort (see [FailClosed], 503) or
	// not (the request goes on unlimited). The error is logged first. Default [FailOpen].
	OnError func(*gin.Context, error)
	// Logger receives limiter errors and the start-up warning about proxies; nil discards.
	Logger *slog.Logger
	// Engine, when set, is checked at construction with [CheckProxies]: a warning is logged
	// through Logger when it trusts every proxy, which lets any client choose its own key.
	Engine *gin.Engine
}

// JWTOptions configures [JWT] and [NewJWT]. ValidMethods and one of Key or Keyfunc are required.
type JWTOptions struct {
	// Key verifies every token: []byte for HS256/384/512 (at least as long as the hash, per
	// RFC 7518), *rsa.PublicKey for RS*/PS*, *ecdsa.PublicKey for ES*, ed25519.PublicKey for
	// EdDSA. A static key may not serve both HMAC and public-key methods.
	Key any
	// Keyfunc picks the key per token (for key rotation or a JWKS source); exclusive with Key.
	Keyfunc jwt.Keyfunc
	// ValidMethods lists the accepted "alg" values, e.g. []string{"RS256"}. Required; "none" and
	// unknown names are refused.
	ValidMethods []string
	// Issuer, when set, must equal the token's "iss".
	Issuer string
	// Audience, when set, must be one of the token's "aud".
	Audience string
	// Leeway is the clock skew allowed on exp, nbf and iat; at most 5 minutes. Default 0.
	Leeway time.Duration
	// Realm is the realm named in WWW-Authenticate. Default "api".
	Realm string
	// Optional lets requests without a bearer token through unauthenticated (a present but invalid
	// token is still answered 401). Default false.
	Optional bool
	// Logger receives why tokens were rejected (debug level); nil discards. Reasons never reach
	// the client.
	Logger *slog.Logger

	now func() time.Time // tests move the clock
}

// CacheOptions configures [Cache] and [NewCache]. The zero value (or nil) is ready to use.
type CacheOptions struct {
	// TTL is how long a response stays cached, spread by Jitter. Default 1m.
	TTL time.Duration
	// Jitter spreads TTLs over TTL ± Jitter·TTL, in [0,1). 0 means cache's default (0.1).
	Jitter float64
	// Principal returns who the response is for; it is part of the key. Default: see [Cache]
	// (JWT subject, else client address, bypassing requests with unverified credentials).
	// Return "" to share responses between all callers.
	Principal func(*gin.Context) string
	// Vary lists the request headers that are part of the key (e.g. "Accept-Language"). A
	// response whose Vary names any other header is not stored. Default none.
	Vary []string
	// MaxBody is the largest response body stored. Default 1 MiB.
	MaxBody int64
	// Prefix starts every Redis key. Default "surge:http:". Must not contain '{' or '}'.
	Prefix string
	// LoadTimeout bounds how long other requests wait for one handler run. Default 5s.
	LoadTimeout time.Duration
	// Local enables the in-process tier of [cache.Cache] (it starts a goroutine: use [NewCache]
	// and [HTTPCache.Close]). Default nil (Redis only).
	Local *cache.LocalOptions
	// Logger receives Redis and index errors; nil discards.
	Logger *slog.Logger
}

// IdempotencyOptions configures [Idempotency]. The zero value (or nil) is ready to use.
type IdempotencyOptions struct {
	// TTL is how long a completed response is kept for replay. Default 24h.
	TTL time.Duration
	// MaxBody bounds the request body read to fingerprint it; larger requests get 413.
	// Default 1 MiB.
	MaxBody int64
	// MaxResponse bounds the response body stored for replay. A larger response is still sent
	// and recorded as completed, but a replay carries its status and a problem body instead of
	// the original body. Default 1 MiB.
	MaxResponse int64
	// Principal scopes keys: the same Idempotency-Key from two principals names two records.
	// Default [Principal] (the JWT subject when [JWT] ran before, else the client IP).
	Principal func(*gin.Context) string
	// Lease is how long a request holds its key while the handler runs; a crashed process's
	// lease expires after it and a retry proceeds. Must exceed the slowest handler. Default 1m.
	Lease time.Duration
	// Prefix starts every Redis key. Default "surge:idem:". Must not contain '{' or '}'.
	Prefix string
	// Methods are the methods the middleware acts on. Default POST and PATCH.
	Methods []string
	// Required answers 400 to requests (of Methods) without an Idempotency-Key. Default false:
	// they pass through.
	Required bool
	// OnError decides what happens when Redis fails before the handler ran. The error is logged
	// first. Default [FailClosed] (503): running the handler could repeat a completed request.
	OnError func(*gin.Context, error)
	// Logger receives Redis errors; nil discards.
	Logger *slog.Logger
}

func (o *RateLimitOptions) logger() *slog.Logger {
	if o == nil {
		return nil
	}
	return o.Logger
}

func (o *CacheOptions) logger() *slog.Logger {
	if o == nil {
		return nil
	}
	return o.Logger
}

func (o *IdempotencyOptions) logger() *slog.Logger {
	if o == nil {
		return nil
	}
	return o.Logger
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenChars[s[i]] {
			return false
		}
	}
	return true
}

var tokenChars = charTable("!#$%&'*+-.^_`|~")

// charTable returns the set of ASCII letters, digits and the bytes of extra.
func charTable(extra string) (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for i := 0; i < len(extra); i++ {
		t[extra[i]] = true
	}
	return t
}

// discard returns l, or a logger that drops everything when l is nil.
func discard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
