package ratelimit

import (
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/surgekit/surge/internal/keys"
)

// DefaultMaxKeys is the default [LocalOptions.MaxKeys].
const DefaultMaxKeys = 100_000

// DefaultPrefix is the default [RedisOptions.Prefix].
const DefaultPrefix = "surge:rl:"

// DefaultProbeInterval is the default [RedisOptions.ProbeInterval].
const DefaultProbeInterval = time.Second

// DefaultOnRedisError is the default [RedisOptions.OnRedisError]: [FailClosed].
const DefaultOnRedisError = FailClosed

// LocalOptions configures [NewLocal]. A nil *LocalOptions means all defaults.
type LocalOptions struct {
	// MaxKeys bounds how many keys keep a bucket in memory (default DefaultMaxKeys); the bound is
	// never exceeded. When more keys are active, a new key replaces a bucket that is full again or
	// else the least recently used of a few sampled ones; a dropped key starts again with a full
	// bucket. Keys are spread over up to 256 shards of MaxKeys/shards buckets each, so replacing
	// may begin a little before MaxKeys keys are held. Must not be negative.
	MaxKeys int
	// MeterProvider receives the surge.ratelimit.decisions counter (see the package doc); nil
	// means the global provider (otel.GetMeterProvider()), a no-op until an SDK is installed.
	// The instrument and its attribute sets are made once, in the constructor.
	MeterProvider metric.MeterProvider
}

// Algorithm is how a [Redis] limiter keeps its buckets: [TokenBucket] (the default) or [GCRA].
// Both give the same answers and the same [Result] for the same calls.
type Algorithm int

const (
	// TokenBucket stores each bucket as its tokens and the server time they were counted at.
	// The default.
	TokenBucket Algorithm = iota + 1
	// GCRA (the generic cell rate algorithm, as redis_rate and Stripe use) stores one number per
	// bucket, the server time at which it will be full again: less work per call on the server.
	// Its keys differ from TokenBucket's, so switching starts every key full. Limits must have a
	// Rate of at most MaxGCRARate. When the server clock steps back, a bucket counts as empty
	// (no longer than one refill) instead of keeping its tokens.
	GCRA
)

// MaxGCRARate is the highest [Limit.Rate] [GCRA] accepts: one token per microsecond, the
// resolution of the Redis clock.
const MaxGCRARate = 1e6

// DefaultAlgorithm is the default [RedisOptions.Algorithm].
const DefaultAlgorithm = TokenBucket

// String returns "token-bucket", "gcra" or "Algorithm(n)".
func (a Algorithm) String() string {
	switch a {
	case TokenBucket:
		return "token-bucket"
	case GCRA:
		return "gcra"
	}
	return "Algorithm(" + strconv.Itoa(int(a)) + ")"
}

// RedisOptions configures [NewRedis]. A nil *RedisOptions means all defaults.
type RedisOptions struct {
	// Prefix starts every Redis key (default DefaultPrefix). It must not contain '{' or '}': the
	// user key becomes the {hash tag}, so all buckets of one key share a cluster slot.
	Prefix string
	// Algorithm is how buckets are kept in Redis; 0 means DefaultAlgorithm (TokenBucket).
	Algorithm Algorithm
	// Pipeline, when true, sends the calls that are made while another is in flight together, in
	// one pipelined round trip (automatic pipelining). A call with nothing else in flight is sent
	// at once on its own, so a lone caller sees no difference; under concurrency Redis and the
	// client do one read and one write per batch instead of per call, which raises throughput, at
	// the cost of a queued call waiting for the round trip in flight to end before its own.
	// Each caller still waits only as long as its ctx allows (a call that was already sent may
	// then have been charged, as without Pipeline). Default false.
	Pipeline bool
	// OnRedisError decides what AllowN answers when Redis fails; nil means DefaultOnRedisError
	// (FailClosed).
	OnRedisError ErrorPolicy
	// ProbeInterval is, with Fallback, how often a request tries Redis again while the fallback
	// is in use (default DefaultProbeInterval). No goroutine is started: the probe is one ordinary
	// request, at most one per interval.
	ProbeInterval time.Duration
	// Logger receives, with FailOpen or Fallback (which do not return Redis errors), a warning
	// when Redis starts failing and a note when it answers again. nil discards.
	Logger *slog.Logger
	// MeterProvider receives the surge.ratelimit.decisions counter (see the package doc); nil
	// means the global provider (otel.GetMeterProvider()), a no-op until an SDK is installed.
	// The instrument and its attribute sets are made once, in the constructor.
	MeterProvider metric.MeterProvider
}

// ErrorPolicy is what a [Redis] limiter does when Redis fails: [FailClosed], [FailOpen] or
// [Fallback]. A context that ended is never a Redis failure: its error is returned as is.
type ErrorPolicy interface {
	policy() (mode FailMode, fallback *Local)
}

// FailMode is an [ErrorPolicy] that answers without any other limiter: [FailClosed] or [FailOpen].
type FailMode int

func (m FailMode) policy() (FailMode, *Local) { return m, nil }

const (
	// FailClosed returns the Redis error (wrapped) with a zero, denied Result. The default.
	FailClosed FailMode = iota
	// FailOpen allows the request and returns a nil error, as if every bucket were full
	// (Remaining is Burst-n of the binding limit). Counted in [Stats].FailOpen.
	FailOpen
	modeFallback // Fallback's mode; not a policy on its own
)

type fallbackPolicy struct{ local *Local }

func (f fallbackPolicy) policy() (FailMode, *Local) { return modeFallback, f.local }

// Fallback answers from local while Redis fails, with a full [Result], and returns to Redis once
// a probe (see [RedisOptions.ProbeInterval]) succeeds. The local limiter is the caller's: give it
// the share of the limits one instance should allow on its own (e.g. the global rate divided by
// the number of instances). Fallback(nil) is rejected by [NewRedis].
func Fallback(local *Local) ErrorPolicy { return fallbackPolicy{local: local} }

// localConfig is the resolved form of LocalOptions.
type localConfig struct {
	maxKeys int
	meter   metric.MeterProvider
}

// resolve validates o (nil means all defaults) and fills in the defaults.
func (o *LocalOptions) resolve() (localConfig, error) {
	var in LocalOptions
	if o != nil {
		in = *o
	}
	c := localConfig{maxKeys: in.MaxKeys, meter: in.MeterProvider}
	switch {
	case in.MaxKeys < 0:
		return c, fmt.Errorf("%w: LocalOptions.MaxKeys must not be negative, got %d", ErrInvalidOptions, in.MaxKeys)
	case in.MaxKeys == 0:
		c.maxKeys = DefaultMaxKeys
	}
	return c, nil
}

// redisConfig is the resolved form of RedisOptions.
type redisConfig struct {
	prefix   string
	algo     Algorithm
	pipeline bool
	mode     FailMode
	fallback *Local
	probe    time.Duration
	log      *slog.Logger
	meter    metric.MeterProvider
}

// resolve validates o (nil means all defaults) and fills in the defaults.
func (o *RedisOptions) resolve() (redisConfig, error) {
	var in RedisOptions
	if o != nil {
		in = *o
	}
	c := redisConfig{prefix: in.Prefix, algo: in.Algorithm, pipeline: in.Pipeline, probe: in.ProbeInterval, log: in.Logger,
		meter: in.MeterProvider}
	switch c.algo {
	case 0:
		c.algo = DefaultAlgorithm
	case TokenBucket, GCRA:
	default:
		return c, fmt.Errorf("%w: RedisOptions.Algorithm: unknown %v", ErrInvalidOptions, c.algo)
	}
	if c.prefix == "" {
		c.prefix = DefaultPrefix
	}
	if !keys.ValidPrefix(c.prefix) {
		return c, fmt.Errorf("%w: RedisOptions.Prefix %q must not contain '{' or '}'", ErrInvalidOptions, c.prefix)
	}
	pol := in.OnRedisError
	if pol == nil {
		pol = DefaultOnRedisError
	}
	c.mode, c.fallback = pol.policy()
	if c.mode == modeFallback && c.fallback == nil {
		return c, fmt.Errorf("%w: RedisOptions.OnRedisError: Fallback needs a non-nil *Local", ErrInvalidOptions)
	}
	switch {
	case c.probe < 0:
		return c, fmt.Errorf("%w: RedisOptions.ProbeInterval must not be negative, got %v", ErrInvalidOptions, c.probe)
	case c.probe == 0:
		c.probe = DefaultProbeInterval
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// DefaultConcurrencyPrefix is the default [ConcurrencyOptions.Prefix].
const DefaultConcurrencyPrefix = "surge:cl:"

// DefaultLease is the default [ConcurrencyOptions.Lease].
const DefaultLease = 30 * time.Second

// DefaultRetryAfter is the default [ConcurrencyOptions.RetryAfter].
const DefaultRetryAfter = time.Second

// DefaultConcurrencyName is the default [ConcurrencyOptions.Name].
const DefaultConcurrencyName = "concurrency"

// ConcurrencyOptions configures [NewConcurrency] and [NewLocalConcurrency]. A nil
// *ConcurrencyOptions means all defaults.
type ConcurrencyOptions struct {
	// Prefix starts every Redis key (default DefaultConcurrencyPrefix); [Concurrency] only. It must
	// not contain '{' or '}': the user key becomes the {hash tag}.
	Prefix string
	// Lease is how long a [Concurrency] permit holds its slot without [Permit.Renew] (default
	// DefaultLease). A holder that crashes, or never releases, frees its slot when the lease ends;
	// an operation that may run longer must call Renew within each lease. At least a millisecond;
	// [Concurrency] only.
	Lease time.Duration
	// RetryAfter is the hint a refusal carries in [ConcurrencyError].RetryAfter (default
	// DefaultRetryAfter). Must not be negative.
	RetryAfter time.Duration
	// Name labels the limiter's decisions in telemetry: it is the surge.ratelimit.limit attribute
	// of every Acquire counted (default DefaultConcurrencyName, "concurrency"). Give each
	// concurrency limiter of a service its own Name to tell them apart.
	Name string
	// MeterProvider receives the surge.ratelimit.decisions counter (see the package doc); nil
	// means the global provider (otel.GetMeterProvider()), a no-op until an SDK is installed.
	// The instrument and its attribute sets are made once, in the constructor.
	MeterProvider metric.MeterProvider
}

// concurrencyConfig is the resolved form of ConcurrencyOptions.
type concurrencyConfig struct {
	prefix     string
	lease      time.Duration
	retryAfter time.Duration
	name       string
	meter      metric.MeterProvider
}

// resolve validates o (nil means all defaults) and fills in the defaults.
func (o *ConcurrencyOptions) resolve() (concurrencyConfig, error) {
	var in ConcurrencyOptions
	if o != nil {
		in = *o
	}
	c := concurrencyConfig{prefix: in.Prefix, lease: in.Lease, retryAfter: in.RetryAfter, name: in.Name,
		meter: in.MeterProvider}
	if c.name == "" {
		c.name = DefaultConcurrencyName
	}
	if c.prefix == "" {
		c.prefix = DefaultConcurrencyPrefix
	}
	if !keys.ValidPrefix(c.prefix) {
		return c, fmt.Errorf("%w: ConcurrencyOptions.Prefix %q must not contain '{' or '}'", ErrInvalidOptions, c.prefix)
	}
	switch {
	case c.lease == 0:
		c.lease = DefaultLease
	case c.lease < time.Millisecond:
		return c, fmt.Errorf("%w: ConcurrencyOptions.Lease must be at least 1ms, got %v", ErrInvalidOptions, c.lease)
	}
	switch {
	case c.retryAfter == 0:
		c.retryAfter = DefaultRetryAfter
	case c.retryAfter < 0:
		return c, fmt.Errorf("%w: ConcurrencyOptions.RetryAfter must not be negative, got %v", ErrInvalidOptions, c.retryAfter)
	}
	return c, nil
}
