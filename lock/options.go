package lock

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/surgekit/surge/internal/jitter"
	"github.com/surgekit/surge/internal/keys"
)

// DefaultPrefix is the [Options.Prefix] used when none is given.
const DefaultPrefix = "surge:lock:"

// Options configures a [Client] or a [Redlock]. A nil *Options means all defaults.
type Options struct {
	// Prefix is prepended to every lock key; default [DefaultPrefix]. It must not contain '{' or
	// '}': the lock key is Prefix + "{" + key + "}", and its fence counter appends ":fence" in the
	// same Redis Cluster hash slot.
	Prefix string

	// WaitReplicas, when > 0, makes Obtain run WAIT WaitReplicas WaitTimeout on the connection of
	// the acquisition, and fail with [ErrNotReplicated] (releasing the lock) when fewer replicas
	// acknowledged it. It narrows, without closing, the window in which a failover loses a lock.
	// Needs a *redis.Client or *redis.ClusterClient; ignored by [Redlock]. Default 0 (off).
	WaitReplicas int

	// WaitTimeout bounds the WAIT of WaitReplicas; default 1s. Zero means the default: Redis
	// would read WAIT ... 0 as "block forever".
	WaitTimeout time.Duration

	// NodeTimeout bounds each node's answer in a [Redlock]; default ttl/10, at least 2ms. The
	// single-node [Client] relies on ctx and the client's own timeouts instead.
	NodeTimeout time.Duration

	// Logger receives background events: watchdog renewal errors and lost locks. Nil discards.
	Logger *slog.Logger
}

// ObtainOptions tunes one Obtain or Do. A nil *ObtainOptions means one try, no watchdog.
type ObtainOptions struct {
	// Wait is how long to keep trying while someone else holds the lock; 0 means one try.
	// Waiters subscribe to the lock's release channel and retry as soon as the holder releases;
	// the backoff timer is the fallback (expiry, lost message).
	Wait time.Duration

	// Backoff returns the delay before retry attempt (0-based) when no release message came.
	// The delay is capped by the holder's remaining TTL. Default: full-jitter exponential,
	// uniform in [0, min(512ms, 8ms·2^attempt)).
	Backoff func(attempt int) time.Duration

	// AutoRenew starts a watchdog that renews the lock every ttl/3 until [Lock.Release], and
	// closes [Lock.Lost] when a renewal finds the lock gone or the lock's local validity runs out
	// before a renewal succeeds. [Client.Do] always renews. Transient Redis errors are retried
	// while the lock is still locally valid. A renewed lock that is never released is held for
	// as long as the process lives: always Release it.
	AutoRenew bool

	// Metadata is stored with the lock in Redis (for operators inspecting the key) and returned by
	// [Lock.Metadata].
	Metadata string
}

const (
	defaultWaitTimeout = time.Second
	backoffBase        = 8 * time.Millisecond
	backoffMax         = 512 * time.Millisecond
)

func defaultBackoff(attempt int) time.Duration {
	return jitter.Exponential(attempt, backoffBase, backoffMax)
}

// config is Options resolved: defaults filled in and checked.
type config struct {
	prefix       string
	waitReplicas int
	waitTimeout  time.Duration
	nodeTimeout  time.Duration
	log          *slog.Logger
}

func resolve(opt *Options) (config, error) {
	c := config{prefix: DefaultPrefix, waitTimeout: defaultWaitTimeout}
	if opt == nil {
		c.log = slog.New(slog.DiscardHandler)
		return c, nil
	}
	if opt.Prefix != "" {
		if !keys.ValidPrefix(opt.Prefix) {
			return c, fmt.Errorf("lock: Options.Prefix %q must not contain '{' or '}'", opt.Prefix)
		}
		c.prefix = opt.Prefix
	}
	if opt.WaitReplicas < 0 {
		return c, fmt.Errorf("lock: Options.WaitReplicas %d is negative", opt.WaitReplicas)
	}
	c.waitReplicas = opt.WaitReplicas
	if opt.WaitTimeout < 0 {
		return c, fmt.Errorf("lock: Options.WaitTimeout %v is negative", opt.WaitTimeout)
	}
	if opt.WaitTimeout > 0 {
		c.waitTimeout = opt.WaitTimeout
	}
	if opt.NodeTimeout < 0 {
		return c, fmt.Errorf("lock: Options.NodeTimeout %v is negative", opt.NodeTimeout)
	}
	c.nodeTimeout = opt.NodeTimeout
	c.log = opt.Logger
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// nodeTimeoutFor is the per-node deadline of a Redlock operation on a lock of the given ttl.
func (c *config) nodeTimeoutFor(ttl time.Duration) time.Duration {
	if c.nodeTimeout > 0 {
		return c.nodeTimeout
	}
	return max(ttl/10, 2*time.Millisecond)
}
