package ginmw

import (
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/surgekit/surge/cache"
	"github.com/surgekit/surge/internal/keys"
)

// Defaults of the options of this package; a zero option field means its default.
const (
	// DefaultRequestIDHeader is [RequestIDOptions].Header's default.
	DefaultRequestIDHeader = "X-Request-ID"

	// DefaultRateLimitOnRedisError is [RateLimitOptions].OnRedisError's default: a failing limiter
	// does not take the API down.
	DefaultRateLimitOnRedisError = FailOpen

	// DefaultJWTRealm is [JWTOptions].Realm's default.
	DefaultJWTRealm = "api"
	// MaxJWTLeeway bounds [JWTOptions].Leeway: clock skew beyond it is a broken clock, not skew.
	MaxJWTLeeway = 5 * time.Minute

	// DefaultCacheTTL is [CacheOptions].TTL's default.
	DefaultCacheTTL = time.Minute
	// DefaultCacheJitter is [CacheOptions].Jitter's default.
	DefaultCacheJitter = 0.1
	// DefaultCacheMaxBody is [CacheOptions].MaxBody's default (1 MiB).
	DefaultCacheMaxBody = 1 << 20
	// DefaultCachePrefix is [CacheOptions].Prefix's default.
	DefaultCachePrefix = "surge:http:"
	// DefaultCacheLoadTimeout is [CacheOptions].LoadTimeout's default.
	DefaultCacheLoadTimeout = 5 * time.Second
	// DefaultCacheOnRedisError is [CacheOptions].OnRedisError's default: serve from the handler.
	DefaultCacheOnRedisError = FailOpen

	// DefaultIdempotencyTTL is [IdempotencyOptions].TTL's default.
	DefaultIdempotencyTTL = 24 * time.Hour
	// DefaultIdempotencyMaxBody is [IdempotencyOptions].MaxBody's default (1 MiB).
	DefaultIdempotencyMaxBody = 1 << 20
	// DefaultIdempotencyMaxResponse is [IdempotencyOptions].MaxResponse's default (1 MiB).
	DefaultIdempotencyMaxResponse = 1 << 20
	// DefaultIdempotencyLease is [IdempotencyOptions].Lease's default.
	DefaultIdempotencyLease = time.Minute
	// DefaultIdempotencyPrefix is [IdempotencyOptions].Prefix's default.
	DefaultIdempotencyPrefix = "surge:idem:"
	// DefaultIdempotencyOnRedisError is [IdempotencyOptions].OnRedisError's default: running the
	// handler without the record could repeat a completed request.
	DefaultIdempotencyOnRedisError = FailClosed

	// DefaultConcurrencyStatus is [ConcurrencyOptions].Status's default.
	DefaultConcurrencyStatus = http.StatusTooManyRequests
	// DefaultConcurrencyRetryAfter is the Retry-After [Concurrency] sends when the limiter gives no
	// hint.
	DefaultConcurrencyRetryAfter = time.Second
	// DefaultConcurrencyOnRedisError is [ConcurrencyOptions].OnRedisError's default.
	DefaultConcurrencyOnRedisError = FailOpen
)

// ErrorPolicy says what a middleware does when Redis (or the limiter behind it) fails. The zero
// value means the default the middleware documents: [FailOpen] for [RateLimit], [Cache] and
// [Concurrency], [FailClosed] for [Idempotency].
type ErrorPolicy int

const (
	// FailOpen lets the request go on as if the middleware were not there (not limited, not
	// cached, not deduplicated). The error is logged.
	FailOpen ErrorPolicy = iota + 1
	// FailClosed answers 503 with Retry-After: 1 and an application/problem+json body. The error
	// is logged.
	FailClosed
)

// String returns "FailOpen", "FailClosed", "default" for the zero value, or the number.
func (p ErrorPolicy) String() string {
	switch p {
	case 0:
		return "default"
	case FailOpen:
		return "FailOpen"
	case FailClosed:
		return "FailClosed"
	}
	return "ErrorPolicy(" + strconv.Itoa(int(p)) + ")"
}

// resolve returns p, or def for the zero value; an unknown value is an error naming field.
func (p ErrorPolicy) resolve(field string, def ErrorPolicy) (ErrorPolicy, error) {
	switch p {
	case 0:
		return def, nil
	case FailOpen, FailClosed:
		return p, nil
	}
	return 0, optionError(field, "unknown policy %d (use FailOpen or FailClosed)", int(p))
}

// RequestIDOptions configures [RequestID] and [NewRequestID]. nil means all defaults.
type RequestIDOptions struct {
	// Header is the request id header, read from requests and written on responses.
	// Default [DefaultRequestIDHeader]. Must be a valid header field name.
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
	generate       func() string
	ignoreIncoming bool
}

func (o *RequestIDOptions) resolve() (requestIDConfig, error) {
	cfg := requestIDConfig{header: http.CanonicalHeaderKey(DefaultRequestIDHeader), generate: generateID}
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
		cfg.generate = o.Generate
	}
	cfg.ignoreIncoming = o.IgnoreIncoming
	return cfg, nil
}

// TelemetryOptions configures [Telemetry] and [NewTelemetry]. nil means all defaults: the global
// providers and propagator, read once when the middleware is built.
type TelemetryOptions struct {
	// TracerProvider opens the server spans. Default (nil): otel.GetTracerProvider(), which
	// records nothing until an SDK is installed.
	TracerProvider trace.TracerProvider
	// MeterProvider records [MetricRequestDuration]. Default (nil): otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// Propagator reads the caller's trace context from the request headers. Default (nil):
	// otel.GetTextMapPropagator(), which reads nothing unless one was set; pass
	// propagation.TraceContext{} to continue incoming W3C traceparent headers.
	Propagator propagation.TextMapPropagator
	// Skip, when set, is called first; requests it reports true for are neither traced nor
	// recorded (health checks...). Must be safe for concurrent use.
	Skip func(*gin.Context) bool
}

type telemetryConfig struct {
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
	propagator     propagation.TextMapPropagator
	skip           func(*gin.Context) bool
}

// resolve copies o; every field is valid as it is (nil means the global one).
func (o *TelemetryOptions) resolve() (telemetryConfig, error) {
	if o == nil {
		return telemetryConfig{}, nil
	}
	return telemetryConfig{tracerProvider: o.TracerProvider, meterProvider: o.MeterProvider,
		propagator: o.Propagator, skip: o.Skip}, nil
}

// LoggerOptions configures [Logger] and [NewLogger]. nil means all defaults.
type LoggerOptions struct {
	// Logger receives one line per request. Default slog.Default(): this logger is the
	// middleware's output, so unlike the diagnostic loggers of the other options a nil one does
	// not discard.
	Logger *slog.Logger
	// Headers are request headers logged as attributes named header.<lowercase name>.
	// Credentials (Authorization, Proxy-Authorization, Cookie, Set-Cookie) are refused with an
	// error: they are never logged. Default none.
	Headers []string
	// Skip, when set, is called before the handler chain; requests it reports true for are not
	// logged (health checks...). Must be safe for concurrent use.
	Skip func(*gin.Context) bool
}

type loggerConfig struct {
	log     *slog.Logger
	headers []loggedHeader
	skip    func(*gin.Context) bool
}

func (o *LoggerOptions) resolve() (loggerConfig, error) {
	cfg := loggerConfig{log: slog.Default()}
	if o == nil {
		return cfg, nil
	}
	if o.Logger != nil {
		cfg.log = o.Logger
	}
	cfg.skip = o.Skip
	for _, h := range o.Headers {
		if !validHeaderName(h) {
			return cfg, optionError("LoggerOptions.Headers", "%q is not a valid header field name", h)
		}
		canon := http.CanonicalHeaderKey(h)
		if credentialHeaders[canon] {
			return cfg, optionError("LoggerOptions.Headers", "%s carries credentials and is never logged", canon)
		}
		cfg.headers = append(cfg.headers, loggedHeader{name: canon, attr: "header." + strings.ToLower(canon)})
	}
	return cfg, nil
}

// RateLimitOptions configures [RateLimit] and [NewRateLimit]. nil means all defaults.
type RateLimitOptions struct {
	// Key returns the bucket a request is charged to; "" lets the request through uncharged.
	// Default: the client address as [ClientIPKey] gives it, except that a request with no client
	// address at all (a unix-socket listener without forwarding headers) is charged to
	// NoAddressKey or, when that is empty, refused with 500 (logged once), never let through.
	Key func(*gin.Context) string
	// NoAddressKey is the bucket the default Key charges requests without a client address to
	// (all of them share it). Default "": such requests are refused.
	NoAddressKey string
	// Cost returns how many tokens a request takes; values below 1 count as 1. Default 1.
	Cost func(*gin.Context) int
	// OnRedisError decides what happens when the limiter fails: [FailOpen] (the request goes on
	// unlimited) or [FailClosed] (503). The error is logged first. Default
	// [DefaultRateLimitOnRedisError].
	OnRedisError ErrorPolicy
	// Logger receives limiter errors and the warnings about proxy trust and missing client
	// addresses; nil discards.
	Logger *slog.Logger
	// Engine, when set, is checked at construction with [CheckProxies], which logs through Logger
	// how the engine resolves client addresses when clients can choose theirs.
	Engine *gin.Engine
}

type rateLimitConfig struct {
	key          func(*gin.Context) string // nil: the default key
	noAddressKey string
	cost         func(*gin.Context) int
	onRedisError ErrorPolicy
	log          *slog.Logger
	engine       *gin.Engine
}

func (o *RateLimitOptions) resolve() (rateLimitConfig, error) {
	cfg := rateLimitConfig{onRedisError: DefaultRateLimitOnRedisError, log: discard(nil)}
	if o == nil {
		return cfg, nil
	}
	var err error
	if cfg.onRedisError, err = o.OnRedisError.resolve("RateLimitOptions.OnRedisError", DefaultRateLimitOnRedisError); err != nil {
		return cfg, err
	}
	cfg.key, cfg.noAddressKey, cfg.cost, cfg.log, cfg.engine = o.Key, o.NoAddressKey, o.Cost, discard(o.Logger), o.Engine
	return cfg, nil
}

// ConcurrencyOptions configures [Concurrency] and [NewConcurrency]. nil means all defaults.
type ConcurrencyOptions struct {
	// Key returns the key whose slots a request takes; "" lets the request through without one.
	// Default: the client address, as [RateLimitOptions].Key's default takes it.
	Key func(*gin.Context) string
	// NoAddressKey is the key the default Key gives requests without a client address (all of
	// them share its slots). Default "": such requests are refused with 500.
	NoAddressKey string
	// Status answers a request when every slot of its key is held: 429 Too Many Requests or 503
	// Service Unavailable. Default [DefaultConcurrencyStatus].
	Status int
	// OnRedisError decides what happens when the limiter fails: [FailOpen] (the request runs
	// without a slot) or [FailClosed] (503). The error is logged first. Default
	// [DefaultConcurrencyOnRedisError].
	OnRedisError ErrorPolicy
	// Logger receives limiter errors, failed releases and the warnings about proxy trust and
	// missing client addresses; nil discards.
	Logger *slog.Logger
}

type concurrencyConfig struct {
	key          func(*gin.Context) string // nil: the default key
	noAddressKey string
	status       int
	onRedisError ErrorPolicy
	log          *slog.Logger
}

func (o *ConcurrencyOptions) resolve() (concurrencyConfig, error) {
	cfg := concurrencyConfig{status: DefaultConcurrencyStatus, onRedisError: DefaultConcurrencyOnRedisError, log: discard(nil)}
	if o == nil {
		return cfg, nil
	}
	switch o.Status {
	case 0:
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		cfg.status = o.Status
	default:
		return cfg, optionError("ConcurrencyOptions.Status", "must be 429 or 503, got %d", o.Status)
	}
	var err error
	if cfg.onRedisError, err = o.OnRedisError.resolve("ConcurrencyOptions.OnRedisError", DefaultConcurrencyOnRedisError); err != nil {
		return cfg, err
	}
	cfg.key, cfg.noAddressKey, cfg.log = o.Key, o.NoAddressKey, discard(o.Logger)
	return cfg, nil
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
	// Leeway is the clock skew allowed on exp, nbf and iat; at most [MaxJWTLeeway]. Default 0.
	Leeway time.Duration
	// Realm is the realm named in WWW-Authenticate. Default [DefaultJWTRealm].
	Realm string
	// Optional lets requests without a bearer token through unauthenticated (a present but invalid
	// token is still answered 401). Default false.
	Optional bool
	// Logger receives why tokens were rejected (debug level); nil discards. Reasons never reach
	// the client.
	Logger *slog.Logger

	now func() time.Time // tests move the clock
}

type jwtConfig struct {
	keyfunc  jwt.Keyfunc
	popts    []jwt.ParserOption
	realm    string
	optional bool
	log      *slog.Logger
}

func (o *JWTOptions) resolve() (jwtConfig, error) {
	var cfg jwtConfig
	if len(o.ValidMethods) == 0 {
		return cfg, optionError("JWTOptions.ValidMethods", "required (e.g. []string{\"RS256\"}); there is no default that accepts any alg")
	}
	for _, m := range o.ValidMethods {
		if strings.EqualFold(m, "none") {
			return cfg, optionError("JWTOptions.ValidMethods", "\"none\" accepts unsigned tokens")
		}
		if jwt.GetSigningMethod(m) == nil {
			return cfg, optionError("JWTOptions.ValidMethods", "unknown method %q", m)
		}
	}
	if (o.Key == nil) == (o.Keyfunc == nil) {
		return cfg, optionError("JWTOptions.Key", "set exactly one of Key and Keyfunc")
	}
	cfg.keyfunc = o.Keyfunc
	if o.Key != nil {
		for _, m := range o.ValidMethods {
			if err := checkKey(m, o.Key); err != nil {
				return cfg, err
			}
		}
		key := o.Key
		cfg.keyfunc = func(*jwt.Token) (any, error) { return key, nil }
	}
	if o.Leeway < 0 || o.Leeway > MaxJWTLeeway {
		return cfg, optionError("JWTOptions.Leeway", "%v is outside [0, %v]", o.Leeway, MaxJWTLeeway)
	}
	cfg.realm = o.Realm
	if cfg.realm == "" {
		cfg.realm = DefaultJWTRealm
	}
	for i := 0; i < len(cfg.realm); i++ {
		if c := cfg.realm[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return cfg, optionError("JWTOptions.Realm", "%q must be printable ASCII without quotes or backslashes", cfg.realm)
		}
	}
	cfg.popts = []jwt.ParserOption{
		jwt.WithValidMethods(o.ValidMethods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(o.Leeway),
	}
	if o.Issuer != "" {
		cfg.popts = append(cfg.popts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		cfg.popts = append(cfg.popts, jwt.WithAudience(o.Audience))
	}
	if o.now != nil {
		cfg.popts = append(cfg.popts, jwt.WithTimeFunc(o.now))
	}
	cfg.optional = o.Optional
	cfg.log = discard(o.Logger)
	return cfg, nil
}

// CacheOptions configures [Cache], [NewCache] and [NewHTTPCache]. nil means all defaults.
type CacheOptions struct {
	// TTL is how long a response stays cached, spread by Jitter. Default [DefaultCacheTTL].
	TTL time.Duration
	// Jitter spreads TTLs over TTL ± Jitter·TTL; below 1. Default [DefaultCacheJitter]; negative
	// turns it off.
	Jitter float64
	// Principal returns who the response is for (part of the key) and whether the caller can be
	// told apart at all; a request it returns false for is neither served from nor stored in the
	// cache (Cache-Status fwd=bypass). Return ("", true) to share responses between all callers.
	// Default [Principal].
	Principal func(*gin.Context) (string, bool)
	// Vary lists the request headers that are part of the key (e.g. "Accept-Language"). A
	// response whose Vary names any other header is not stored. Default none.
	Vary []string
	// MaxBody is the largest response body stored. Default [DefaultCacheMaxBody].
	MaxBody int64
	// Prefix starts every Redis key. Default [DefaultCachePrefix]. Must not contain '{' or '}'.
	Prefix string
	// LoadTimeout bounds how long other requests wait for one handler run. Default
	// [DefaultCacheLoadTimeout].
	LoadTimeout time.Duration
	// OnRedisError decides what a request does when Redis fails: [FailOpen] serves it from the
	// handler, uncached; [FailClosed] answers 503. Default [DefaultCacheOnRedisError].
	OnRedisError ErrorPolicy
	// Local enables the in-process tier of [cache.Cache], which starts goroutines: only
	// [NewHTTPCache] accepts it (stop them with [HTTPCache.Close]); [Cache] and [NewCache] refuse
	// it. Default nil (Redis only).
	Local *cache.LocalOptions
	// Logger receives Redis and index errors; nil discards.
	Logger *slog.Logger
	// TracerProvider and MeterProvider go to the [cache.Cache] that stores the responses: its
	// load spans (a handler run on a miss) and its surge.cache.requests and
	// surge.cache.load.duration metrics, named surge.cache.name = Prefix + "r:". nil (default)
	// means the global providers.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

type cacheConfig struct {
	ttl          time.Duration
	jitter       float64 // as cache.Options takes it: negative is off
	principal    func(*gin.Context) (string, bool)
	vary         []string // canonical, deduplicated
	maxBody      int
	prefix       string
	loadTimeout  time.Duration
	onRedisError ErrorPolicy
	local        *cache.LocalOptions
	log          *slog.Logger
	tp           trace.TracerProvider
	mp           metric.MeterProvider
}

func (o *CacheOptions) resolve() (cacheConfig, error) {
	cfg := cacheConfig{
		ttl: DefaultCacheTTL, jitter: DefaultCacheJitter, principal: Principal, maxBody: DefaultCacheMaxBody,
		prefix: DefaultCachePrefix, loadTimeout: DefaultCacheLoadTimeout, onRedisError: DefaultCacheOnRedisError,
		log: discard(nil),
	}
	if o == nil {
		return cfg, nil
	}
	var err error
	switch {
	case o.TTL < 0:
		return cfg, optionError("CacheOptions.TTL", "must not be negative, got %v", o.TTL)
	case o.TTL > 0:
		cfg.ttl = o.TTL
	}
	switch {
	case math.IsNaN(o.Jitter) || o.Jitter >= 1:
		return cfg, optionError("CacheOptions.Jitter", "must be below 1 (negative turns it off), got %v", o.Jitter)
	case o.Jitter < 0:
		cfg.jitter = -1
	case o.Jitter > 0:
		cfg.jitter = o.Jitter
	}
	if o.Principal != nil {
		cfg.principal = o.Principal
	}
	seen := map[string]bool{}
	for _, v := range o.Vary {
		if !validHeaderName(v) {
			return cfg, optionError("CacheOptions.Vary", "%q is not a valid header field name", v)
		}
		if canon := http.CanonicalHeaderKey(v); !seen[canon] {
			seen[canon] = true
			cfg.vary = append(cfg.vary, canon)
		}
	}
	switch {
	case o.MaxBody < 0:
		return cfg, optionError("CacheOptions.MaxBody", "must not be negative, got %d", o.MaxBody)
	case o.MaxBody > 0:
		cfg.maxBody = int(min(o.MaxBody, 1<<40))
	}
	if o.Prefix != "" {
		cfg.prefix = o.Prefix
	}
	if !keys.ValidPrefix(cfg.prefix) {
		return cfg, optionError("CacheOptions.Prefix", "%q must not contain '{' or '}'", cfg.prefix)
	}
	switch {
	case o.LoadTimeout < 0:
		return cfg, optionError("CacheOptions.LoadTimeout", "must not be negative, got %v", o.LoadTimeout)
	case o.LoadTimeout > 0:
		cfg.loadTimeout = o.LoadTimeout
	}
	if cfg.onRedisError, err = o.OnRedisError.resolve("CacheOptions.OnRedisError", DefaultCacheOnRedisError); err != nil {
		return cfg, err
	}
	cfg.local = o.Local
	cfg.tp, cfg.mp = o.TracerProvider, o.MeterProvider
	cfg.log = discard(o.Logger)
	return cfg, nil
}

// IdempotencyOptions configures [Idempotency] and [NewIdempotency]. nil means all defaults.
type IdempotencyOptions struct {
	// TTL is how long a completed response is kept for replay; at least 1ms. Default
	// [DefaultIdempotencyTTL].
	TTL time.Duration
	// MaxBody bounds the request body read to fingerprint it; larger requests get 413.
	// Default [DefaultIdempotencyMaxBody].
	MaxBody int64
	// MaxResponse bounds the response body stored for replay. A larger response is still sent
	// and recorded as completed, but a replay carries its status and a problem body instead of
	// the original body. Default [DefaultIdempotencyMaxResponse].
	MaxResponse int64
	// Principal scopes keys: the same Idempotency-Key from two principals names two records. A
	// request it returns false for (the caller cannot be told apart) runs without a record:
	// nothing is stored or replayed for it. Default [Principal].
	Principal func(*gin.Context) (string, bool)
	// Lease is how long a request holds its key while the handler runs; a crashed process's
	// lease expires after it and a retry proceeds. Must exceed the slowest handler; at least 1ms.
	// Default [DefaultIdempotencyLease].
	Lease time.Duration
	// Prefix starts every Redis key. Default [DefaultIdempotencyPrefix]. Must not contain '{' or
	// '}'.
	Prefix string
	// Methods are the methods the middleware acts on. Default POST and PATCH.
	Methods []string
	// Required answers 400 to requests (of Methods) without an Idempotency-Key. Default false:
	// they pass through.
	Required bool
	// OnRedisError decides what happens when Redis fails before the handler ran: [FailClosed]
	// (503) or [FailOpen] (the handler runs without a record). The error is logged first. Default
	// [DefaultIdempotencyOnRedisError].
	OnRedisError ErrorPolicy
	// Logger receives Redis errors and the warning about callers without a principal; nil
	// discards.
	Logger *slog.Logger
}

type idempotencyConfig struct {
	ttl, lease           time.Duration
	maxBody, maxResponse int64
	principal            func(*gin.Context) (string, bool)
	prefix               string
	methods              map[string]bool
	required             bool
	onRedisError         ErrorPolicy
	log                  *slog.Logger
}

func (o *IdempotencyOptions) resolve() (idempotencyConfig, error) {
	cfg := idempotencyConfig{
		ttl: DefaultIdempotencyTTL, lease: DefaultIdempotencyLease, maxBody: DefaultIdempotencyMaxBody,
		maxResponse: DefaultIdempotencyMaxResponse, principal: Principal, prefix: DefaultIdempotencyPrefix,
		methods:      map[string]bool{http.MethodPost: true, http.MethodPatch: true},
		onRedisError: DefaultIdempotencyOnRedisError, log: discard(nil),
	}
	if o == nil {
		return cfg, nil
	}
	for _, d := range []struct {
		name  string
		v     time.Duration
		dst   *time.Duration
		least time.Duration
	}{{"TTL", o.TTL, &cfg.ttl, time.Millisecond}, {"Lease", o.Lease, &cfg.lease, time.Millisecond}} {
		switch {
		case d.v < 0:
			return cfg, optionError("IdempotencyOptions."+d.name, "must not be negative, got %v", d.v)
		case d.v > 0 && d.v < d.least:
			return cfg, optionError("IdempotencyOptions."+d.name, "must be at least %v, got %v", d.least, d.v)
		case d.v > 0:
			*d.dst = d.v
		}
	}
	for _, d := range []struct {
		name string
		v    int64
		dst  *int64
	}{{"MaxBody", o.MaxBody, &cfg.maxBody}, {"MaxResponse", o.MaxResponse, &cfg.maxResponse}} {
		switch {
		case d.v < 0:
			return cfg, optionError("IdempotencyOptions."+d.name, "must not be negative, got %d", d.v)
		case d.v > 0:
			*d.dst = min(d.v, 1<<40)
		}
	}
	if o.Principal != nil {
		cfg.principal = o.Principal
	}
	if o.Prefix != "" {
		cfg.prefix = o.Prefix
	}
	if !keys.ValidPrefix(cfg.prefix) {
		return cfg, optionError("IdempotencyOptions.Prefix", "%q must not contain '{' or '}'", cfg.prefix)
	}
	if len(o.Methods) > 0 {
		cfg.methods = make(map[string]bool, len(o.Methods))
		for _, m := range o.Methods {
			if !validHeaderName(m) { // a method is a token too
				return cfg, optionError("IdempotencyOptions.Methods", "%q is not a valid method", m)
			}
			cfg.methods[m] = true
		}
	}
	cfg.required = o.Required
	var err error
	if cfg.onRedisError, err = o.OnRedisError.resolve("IdempotencyOptions.OnRedisError", DefaultIdempotencyOnRedisError); err != nil {
		return cfg, err
	}
	cfg.log = discard(o.Logger)
	return cfg, nil
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
