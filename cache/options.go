package cache

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/surgekit/surge/internal/keys"
)

// Defaults applied by [New] to zero fields of [Options] and [LocalOptions].
const (
	DefaultTTL         = 10 * time.Minute
	DefaultJitter      = 0.1
	DefaultNegativeTTL = time.Minute
	DefaultLoadTimeout = 5 * time.Second
	DefaultLocalSize   = 10_000
	DefaultLocalTTL    = time.Minute
	// DefaultCompressAbove is the encoded size from which values are stored S2-compressed.
	DefaultCompressAbove = 1024
)

// DefaultOnRedisError is the policy applied when Options.OnRedisError is zero.
const DefaultOnRedisError = FailOpen

// ErrorPolicy says what a read does when Redis fails. The zero value means
// [DefaultOnRedisError].
type ErrorPolicy int

const (
	// FailOpen (the default) counts the Redis error and serves from the loader, still one load
	// per key per process, so an outage does not turn into a stampede on the source.
	FailOpen ErrorPolicy = iota + 1
	// FailClosed returns Redis read errors to the caller. A write that fails after a successful
	// load is still only counted and logged: the loaded value is returned.
	FailClosed
)

// ErrInvalidOptions is wrapped by the error [New] returns for a bad [Options] field; the message
// names the field and the value.
var ErrInvalidOptions = errors.New("cache: invalid options")

// Options configures a [Cache]. A nil *Options means all defaults. [New] validates it and names
// the bad field in its error.
type Options struct {
	// Prefix starts every Redis key of this cache: the value of key k lives at Prefix+"{k}".
	// It must not contain '{' or '}'. Default "".
	Prefix string
	// TTL is the Redis lifetime of a value, spread by Jitter. Default 10m.
	TTL time.Duration
	// Jitter spreads every TTL (values and negative entries) uniformly over TTL ± Jitter·TTL so
	// that keys written together do not expire together. Below 1; 0 means the default 0.1 and
	// a negative value turns jitter off.
	Jitter float64
	// NegativeTTL is how long "not found" is remembered. Default 1m; negative disables negative
	// caching.
	NegativeTTL time.Duration
	// RefreshAfter enables stale-while-revalidate: a value older than RefreshAfter is served at
	// once while one caller (per process, or across processes with Lease) reloads it in the
	// background. Must be below TTL·(1−Jitter), the shortest jittered TTL, so that every value
	// can be served stale before Redis drops it. 0 (default) disables it. A local-tier entry lives at most
	// until its value turns stale, so the read after that goes to Redis and starts the refresh.
	RefreshAfter time.Duration
	// EarlyRefreshBeta enables probabilistic early refresh (XFetch): a read refreshes in the
	// background when now - delta·beta·ln(rand) >= expiry, delta being the last load duration.
	// 1 is the paper's choice; larger refreshes earlier. 0 (default) disables it.
	EarlyRefreshBeta float64
	// Lease enables cross-process single loading: a miss takes a lease in Redis for this long;
	// other processes wait for the value (pub/sub wake-up, short polls) up to LoadTimeout
	// instead of loading. It should exceed a typical load. 0 (default) disables it. On a Redis
	// Cluster the wake-up comes from server-assisted invalidation: from its first wait on, an
	// instance keeps one connection per master that reports every write under Prefix.
	Lease time.Duration
	// LoadTimeout bounds one load (and, with Lease, the wait for another process's load).
	// Default 5s.
	LoadTimeout time.Duration
	// Local enables the in-process tier. nil (default) disables it.
	Local *LocalOptions
	// Guard, when set, is asked before Redis; a key it rules out is ErrNotFound at once.
	Guard Guard
	// Codec encodes values for Redis. Default [MsgpackCodec]; [JSONCodec] and [BytesCodec] are
	// the other built-in ones. Entries written by an earlier release (envelope version 1) are
	// read with this Codec when it is set, else with JSON (that release's default); an entry
	// that does not decode is a miss, never an error.
	Codec Codec
	// CompressAbove: an encoded value of at least this many bytes (and at most 64 MiB) is
	// stored S2-compressed (when that makes it smaller), which saves Redis memory and network
	// for large values at a small CPU cost. 0 means [DefaultCompressAbove]; negative turns
	// compression off. A compressed entry that claims to decode to more than 64 MiB is corrupt:
	// a miss, counted in Stats.DecodeErrors.
	CompressAbove int
	// OnRedisError is the policy for Redis failures on reads. Zero means [DefaultOnRedisError]
	// ([FailOpen]).
	OnRedisError ErrorPolicy
	// DoubleDelete, when positive, makes [Cache.Delete] delete the keys a second time after this
	// delay, for races with lagging database replicas. 0 (default) disables it.
	DoubleDelete time.Duration
	// Logger receives background errors (failed writes, failed second deletes). nil discards.
	Logger *slog.Logger
	// TracerProvider opens the span of each load ("cache.load", scope
	// github.com/surgekit/surge/cache; never one for a hit). nil (default) means
	// otel.GetTracerProvider() at New.
	TracerProvider trace.TracerProvider
	// MeterProvider records surge.cache.requests (keys requested through Fetch, FetchMany and
	// Get, by surge.cache.name = Prefix and surge.cache.result = local_hit, redis_hit,
	// negative_hit, stale, miss or error; an asynchronous counter read from the Cache's own
	// counters, so a hit costs nothing more with an SDK installed) and surge.cache.load.duration
	// (seconds per loader call, with error.type = panic, timeout, canceled or _OTHER on failure).
	// nil (default) means otel.GetMeterProvider() at New. [Cache.Close] unregisters the Cache.
	MeterProvider metric.MeterProvider
}

// LocalOptions configures the in-process tier, which holds decoded values (no decoding on a hit).
// A Cache with a local tier owns goroutines from [New] on (see there) until [Cache.Close].
// Callers share the values it holds: treat a V that contains pointers, slices or maps as
// read-only.
//
// Coherence: once a write returns ([Cache.Set], [Cache.Delete] or a load's fill, from any
// process), no local tier serves the value it replaced for longer than the invalidation delay:
// the time a message takes from Redis to each instance's listener, measured at 0.03 ms p50 and
// 4-6 ms p99 on a busy two-core host (BENCHMARKS.md has the figures; it grows with CPU starvation
// of the process, not with the number of instances). On a *redis.Client (a single server or a
// failover client) and on a *redis.ClusterClient the tier follows every writer: the listener's
// connection (one per master on a cluster, re-checked every second so a promoted replica is
// tracked too) turns on server-assisted invalidation (CLIENT TRACKING BCAST PREFIX Prefix,
// Redis 6 or later), so a Set or Delete of any instance, a SET or DEL by another service or by
// redis-cli, an expiry and an eviction evict the local copy; give the cache a Prefix of its own,
// since Redis then reports every key under it. Outside a cluster every surge writer also
// announces its writes on InvalidationChannel, from the script that writes, whether or not it
// has a local tier itself: a server that refuses tracking leaves the tier those notices only
// (logged at each connect). On a cluster surge sends and hears no notices (classic pub/sub is
// broadcast to every node there), and a master that refuses tracking leaves the tier empty
// (logged). A FLUSHALL is not reported. While a listener connection is down nothing reaches it;
// when it reconnects (or a new master is tracked) the whole tier is flushed. Entries never
// outlive their Redis copy, nor, with RefreshAfter, the moment it turns stale.
//
// An instance's own writes (a fill after a load, a Set) are reported back to it too; it keeps
// the value it wrote once that report came and a read sent after it (in the background, one
// round trip for a batch, shared with reads in flight) still finds the bytes it wrote, so a
// write by another client that Redis reported in the same message is never hidden. The tier
// costs Redis one connection per master per instance, one message per write under Prefix per
// instance, and one key read per own write; other Redis clients (a Ring, a custom
// UniversalClient) get surge writers' notices only.
//
// Rolling upgrade on a cluster from a release that published notices there: old and new
// instances run side by side. Old instances with a local tier track every master, so new
// writers' writes reach them; an old lease waiter without a local tier finds a new writer's
// value at its next poll (Lease/10, 5 to 100 ms) instead of at once. An old instance whose
// cluster refuses tracking relied on notices alone: upgrade it first, or run it without Local.
type LocalOptions struct {
	// MaxEntries bounds the tier. Default 10000.
	MaxEntries int
	// TTL caps the lifetime of a local entry; an entry never outlives its Redis copy. Default 1m.
	TTL time.Duration
	// InvalidationChannel is the Redis pub/sub channel on which every surge writer outside a
	// cluster announces its writes (and, with Lease, its fills). A listener subscribes to it
	// where the server refuses tracking; with server-assisted invalidation it does not need to,
	// and on a Redis Cluster the channel is not used at all. Default "surge:cache:events:" +
	// Prefix. A Cache without Local announces on the default channel, so readers that name
	// another one rely on server-assisted invalidation alone for that writer.
	InvalidationChannel string
}

// config is Options after defaults and validation.
type config struct {
	Options
	local       LocalOptions
	channel     string
	legacyCodec Codec // decodes envelope version 1 payloads
	maxS2       int   // maxCompressed; tests lower it
}

// maxCompressed is the largest encoded value stored S2-compressed; larger ones are stored as
// they are. A compressed entry claims its decoded length up front, and S2 decoding allocates
// that much before it reads on: an entry claiming more than this is corrupt (a miss), and
// reading it allocates nothing. Without the bound one corrupt or hostile entry made each read
// allocate what it claimed, up to 4 GiB. Redis itself caps a value at 512 MB by default.
const maxCompressed = 64 << 20

func (o *Options) resolve() (config, error) {
	c := config{maxS2: maxCompressed}
	if o != nil {
		c.Options = *o
	}
	bad := func(field string, v any, why string) (config, error) {
		return config{}, fmt.Errorf("%w: Options.%s %s, got %v", ErrInvalidOptions, field, why, v)
	}
	if !keys.ValidPrefix(c.Prefix) {
		return bad("Prefix", fmt.Sprintf("%q", c.Prefix), "must not contain '{' or '}'")
	}
	switch {
	case c.TTL < 0:
		return bad("TTL", c.TTL, "must not be negative")
	case c.TTL == 0:
		c.TTL = DefaultTTL
	}
	switch {
	case math.IsNaN(c.Jitter) || c.Jitter >= 1:
		return bad("Jitter", c.Jitter, "must be below 1 (negative turns it off)")
	case c.Jitter == 0:
		c.Jitter = DefaultJitter
	case c.Jitter < 0:
		c.Jitter = 0
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = DefaultNegativeTTL
	}
	// The shortest jittered TTL: a value must be able to turn stale before Redis drops it.
	minTTL := time.Duration(float64(c.TTL) * (1 - c.Jitter))
	if c.RefreshAfter < 0 || (c.RefreshAfter > 0 && c.RefreshAfter >= minTTL) {
		return bad("RefreshAfter", c.RefreshAfter, fmt.Sprintf("must be in [0, TTL·(1−Jitter)) = [0, %v)", minTTL))
	}
	if math.IsNaN(c.EarlyRefreshBeta) || math.IsInf(c.EarlyRefreshBeta, 0) || c.EarlyRefreshBeta < 0 {
		return bad("EarlyRefreshBeta", c.EarlyRefreshBeta, "must be a finite number >= 0")
	}
	if c.Lease < 0 {
		return bad("Lease", c.Lease, "must not be negative")
	}
	switch {
	case c.LoadTimeout < 0:
		return bad("LoadTimeout", c.LoadTimeout, "must not be negative")
	case c.LoadTimeout == 0:
		c.LoadTimeout = DefaultLoadTimeout
	}
	switch c.OnRedisError {
	case 0:
		c.OnRedisError = DefaultOnRedisError
	case FailOpen, FailClosed:
	default:
		return bad("OnRedisError", int(c.OnRedisError), "must be FailOpen or FailClosed")
	}
	if c.DoubleDelete < 0 {
		return bad("DoubleDelete", c.DoubleDelete, "must not be negative")
	}
	c.legacyCodec = c.Codec
	if c.Codec == nil {
		c.Codec, c.legacyCodec = MsgpackCodec{}, JSONCodec{}
	}
	if c.CompressAbove == 0 {
		c.CompressAbove = DefaultCompressAbove
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.channel = "surge:cache:events:" + c.Prefix
	if c.Local != nil {
		c.local = *c.Local
		switch {
		case c.local.MaxEntries < 0:
			return bad("Local.MaxEntries", c.local.MaxEntries, "must not be negative")
		case c.local.MaxEntries == 0:
			c.local.MaxEntries = DefaultLocalSize
		}
		switch {
		case c.local.TTL < 0:
			return bad("Local.TTL", c.local.TTL, "must not be negative")
		case c.local.TTL == 0:
			c.local.TTL = DefaultLocalTTL
		}
		if c.local.InvalidationChannel != "" {
			c.channel = c.local.InvalidationChannel
		}
	}
	return c, nil
}
