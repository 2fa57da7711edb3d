package ratelimit

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/internal/keys"
	"github.com/surgekit/surge/internal/luascript"
)

//go:embed acquire.lua
var acquireLua string

var acquireScript = luascript.New(acquireLua)

//go:embed renew.lua
var renewLua string

var renewScript = luascript.New(renewLua)

//go:embed inflight.lua
var inflightLua string

var inflightScript = luascript.New(inflightLua)

// Concurrency is a concurrency limiter shared by every process that uses the same Redis and
// prefix: at most max permits per key are held at once, across all of them. Each key is a sorted
// set (Prefix + "{" + key + "}") of its holders scored by the end of their lease on the Redis
// server's clock; Acquire prunes ended leases in the same script, so a holder that crashed or
// never released frees its slot when its lease ends ([ConcurrencyOptions.Lease], default
// DefaultLease). A holder whose operation may outlast the lease calls [Permit.Renew].
//
// Acquire, Release and Renew are one round trip each. Redis errors are returned (wrapped); the
// caller decides whether to let the operation run. NewConcurrency starts no goroutine; there is
// nothing to close. All methods are safe for concurrent use.
type Concurrency struct {
	rdb    redis.UniversalClient
	max    int
	maxArg string
	prefix string
	lease  string // ms, as ARGV
	retry  time.Duration
	idBase string // random per limiter, so holders of different processes never collide
	seq    atomic.Uint64
	dec    decisions
}

// NewConcurrency returns a limiter allowing at most max permits per key across every process
// using rdb and the same prefix. It never closes rdb. It returns an error wrapping
// [ErrInvalidOptions], naming the field, when rdb is nil, max is below 1 or an option is invalid.
// opt may be nil.
func NewConcurrency(rdb redis.UniversalClient, max int, opt *ConcurrencyOptions) (*Concurrency, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: rdb: nil redis client", ErrInvalidOptions)
	}
	cfg, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	if max < 1 {
		return nil, fmt.Errorf("%w: max must be at least 1, got %d", ErrInvalidOptions, max)
	}
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return &Concurrency{
		rdb: rdb, max: max, maxArg: strconv.Itoa(max), prefix: cfg.prefix,
		lease: strconv.FormatInt(cfg.lease.Milliseconds(), 10), retry: cfg.retryAfter,
		idBase: hex.EncodeToString(b[:]) + ":", dec: newConcurrencyDecisions(cfg),
	}, nil
}

// Acquire takes a slot for key if fewer than max unexpired leases are held, in one round trip,
// without waiting; it honours ctx. Errors: [ErrInvalidArgument] for an empty key, a
// *[ConcurrencyError] wrapping [ErrConcurrencyLimited] when all slots are held, and otherwise the
// context's or Redis's error (wrapped). When ctx ends while the reply is on its way, a slot the
// server did take is not known to the caller and frees itself when its lease ends.
func (c *Concurrency) Acquire(ctx context.Context, key string) (*Permit, error) {
	p, err := c.acquire(ctx, key)
	c.dec.countAcquire(ctx, err)
	return p, err
}

func (c *Concurrency) acquire(ctx context.Context, key string) (*Permit, error) {
	if key == "" {
		return nil, fmt.Errorf("%w: empty key", ErrInvalidArgument)
	}
	id := c.idBase + strconv.FormatUint(c.seq.Add(1), 36)
	vals, err := acquireScript.Run(ctx, c.rdb, []string{keys.Tagged(c.prefix, key)}, id, c.maxArg, c.lease).Int64Slice()
	if err != nil {
		return nil, opError(ctx, "acquire", key, err)
	}
	if len(vals) != 2 {
		return nil, fmt.Errorf("ratelimit: acquire %q: script returned %d values, want 2", key, len(vals))
	}
	if vals[0] != 1 {
		return nil, &ConcurrencyError{Key: key, Max: c.max, RetryAfter: c.retry}
	}
	return &Permit{owner: c, key: key, id: id}, nil
}

func (c *Concurrency) release(ctx context.Context, p *Permit) error {
	if err := c.rdb.ZRem(ctx, keys.Tagged(c.prefix, p.key), p.id).Err(); err != nil {
		return opError(ctx, "release", p.key, err)
	}
	return nil
}

func (c *Concurrency) renew(ctx context.Context, p *Permit) error {
	ok, err := renewScript.Run(ctx, c.rdb, []string{keys.Tagged(c.prefix, p.key)}, p.id, c.lease).Int64()
	if err != nil {
		return opError(ctx, "renew", p.key, err)
	}
	if ok != 1 {
		return fmt.Errorf("ratelimit: renew %q: %w", p.key, ErrPermitLost)
	}
	return nil
}

// InFlight returns how many permits of key hold an unexpired lease now, by the clock of the
// server that holds key (one round trip).
func (c *Concurrency) InFlight(ctx context.Context, key string) (int, error) {
	n, err := inflightScript.Run(ctx, c.rdb, []string{keys.Tagged(c.prefix, key)}).Int64()
	if err != nil {
		return 0, opError(ctx, "in flight", key, err)
	}
	return int(n), nil
}

// Max returns the number of slots per key.
func (c *Concurrency) Max() int { return c.max }

// opError wraps a failed round trip: the context's error when ctx has ended (a client with
// ContextTimeoutEnabled reports an i/o timeout at the deadline), else the Redis error.
func opError(ctx context.Context, op, key string, err error) error {
	if cerr := ctxEnded(ctx); cerr != nil {
		return fmt.Errorf("ratelimit: %s %q: %w (%v)", op, key, cerr, err)
	}
	return fmt.Errorf("ratelimit: %s %q: %w", op, key, err)
}
