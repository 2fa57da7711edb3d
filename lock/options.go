package lock

import (
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/surgekit/surge/internal/jitter"
	"github.com/surgekit/surge/internal/keys"
)

// Defaults of [Options] and [ObtainOptions]; a zero field means its default.
const (
	// DefaultPrefix is the default [Options.Prefix].
	DefaultPrefix = "surge:lock:"
	// DefaultWaitTimeout is the default [Options.WaitTimeout].
	DefaultWaitTimeout = time.Second
	// DefaultBackoffBase and DefaultBackoffMax shape the default [ObtainOptions.Backoff]: full
	// jitter, uniform in [0, min(DefaultBackoffMax, DefaultBackoffBase·2^attempt)).
	DefaultBackoffBase = 8 * time.Millisecond
	DefaultBackoffMax  = 512 * time.Millisecond
	// DefaultNodeTimeoutDivisor and MinNodeTimeout give the default [Options.NodeTimeout]:
	// ttl/DefaultNodeTimeoutDivisor, at least MinNodeTimeout.
	DefaultNodeTimeoutDivisor = 10
	MinNodeTimeout            = 2 * time.Millisecond
)

// Options configures a [Client] or a [Redlock]. A nil *Options means all defaults.
type Options struct {
	// Prefix is prepended to every lock key; default [DefaultPrefix]. It must not contain '{' or
	// '}': the lock key is Prefix + "{" + key + "}", and its fence counter appends ":fence" in the
	// same Redis Cluster hash slot.
	Prefix string

	// WaitReplicas, when > 0, makes Obtain run WAIT WaitReplicas WaitTimeout on the connection of
	// the acquisition, and fail with [ErrNotReplicated] (releasing the lock) when fewer replicas
	// acknowledged it. It narrows, without closing, the window in which a failover loses a lock
	// and repeats a fence: a replica that acknowledged may not be the one promoted (see the
	// package documentation). Waiters then do not queue (a lock handed over by a release would
	// skip the WAIT): they retry on release messages and the backoff. Needs a *redis.Client or
	// *redis.ClusterClient; ignored by [Redlock]. Default 0 (off).
	WaitReplicas int

	// WaitTimeout bounds the WAIT of WaitReplicas; default [DefaultWaitTimeout]. Zero means the
	// default: Redis would read WAIT ... 0 as "block forever".
	WaitTimeout time.Duration

	// NodeTimeout bounds each node's answer in a [Redlock]; default ttl/[DefaultNodeTimeoutDivisor],
	// at least [MinNodeTimeout]. The single-node [Client] relies on ctx and the client's own
	// timeouts instead.
	NodeTimeout time.Duration

	// Logger receives background events: watchdog renewal errors and lost locks. Nil discards.
	Logger *slog.Logger

	// TracerProvider opens the "lock.wait" span of an Obtain or Do that waits: one with
	// [ObtainOptions.Wait] > 0 that did not get the lock at its first try (see the package
	// documentation). No other call opens a span. Nil means the global provider,
	// otel.GetTracerProvider().
	TracerProvider trace.TracerProvider

	// MeterProvider records surge.lock.acquisitions, surge.lock.wait.duration and
	// surge.lock.lost (see the package documentation). Nil means the global provider,
	// otel.GetMeterProvider(); with no SDK installed recording costs next to nothing.
	MeterProvider metric.MeterProvider
}

// ObtainOptions tunes one Obtain or Do. A nil *ObtainOptions means one try, no watchdog.
type ObtainOptions struct {
	// Wait is how long to keep trying while someone else holds the lock; 0 means one try.
	// On a [Client] (without [Options.WaitReplicas]) the waiters of one Client first take turns
	// in process, in arrival order: at most one goroutine of a Client contends for a key in
	// Redis at a time, and it keeps that turn while it holds the lock. Its release hands the lock
	// to the Client's next waiter in the same script, unless a waiter of another Client is queued
	// in Redis, which then comes first; so fairness between processes is per Client, not per
	// goroutine. The goroutine whose turn it is queues in Redis, in arrival order among Clients:
	// a release hands the lock to the first waiter still queued and tells it (from the release's
	// reply when the waiter is in the releasing Client, else by a message naming it), so that
	// waiter holds the lock without another call. It renews its place every second; one that
	// gives up leaves the queue, one that died is skipped after 2s (a release in between hands it
	// the lock, which then stays taken until its ttl runs out). A turn passes on when the lock is
	// released or lost (a lock never released is lost when its validity runs out, watched or
	// not, and marked so), or the Obtain fails. A [Redlock] does not queue: its waiters retry as soon
	// as the holder releases. Either way a waiter also looks again at the holder's expiry.
	Wait time.Duration

	// Backoff returns the delay before retry attempt (0-based) when no release message came, for
	// waiters that do not queue ([Redlock], [Options.WaitReplicas]); a queued waiter needs no
	// polling. The delay is capped by the holder's remaining TTL. Default: full-jitter
	// exponential, uniform in [0, min([DefaultBackoffMax], [DefaultBackoffBase]·2^attempt)).
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

func defaultBackoff(attempt int) time.Duration {
	return jitter.Exponential(attempt, DefaultBackoffBase, DefaultBackoffMax)
}

// config is Options resolved: defaults filled in and checked.
type config struct {
	prefix       string
	waitReplicas int
	waitTimeout  time.Duration
	nodeTimeout  time.Duration
	log          *slog.Logger
	tel          *telemetry // never nil, even when resolve fails: failed Obtains are counted
}

// resolve checks o and fills in the defaults; a nil o means all defaults. Its errors wrap
// [ErrInvalidOptions] and name the field.
func (o *Options) resolve() (config, error) {
	c := config{prefix: DefaultPrefix, waitTimeout: DefaultWaitTimeout, log: slog.New(slog.DiscardHandler)}
	if o == nil {
		c.tel = newTelemetry(nil, nil)
		return c, nil
	}
	c.tel = newTelemetry(o.TracerProvider, o.MeterProvider)
	if o.Prefix != "" {
		if !keys.ValidPrefix(o.Prefix) {
			return c, fmt.Errorf("%w: Options.Prefix must not contain '{' or '}', got %q", ErrInvalidOptions, o.Prefix)
		}
		c.prefix = o.Prefix
	}
	if o.WaitReplicas < 0 {
		return c, fmt.Errorf("%w: Options.WaitReplicas must not be negative, got %d", ErrInvalidOptions, o.WaitReplicas)
	}
	c.waitReplicas = o.WaitReplicas
	if o.WaitTimeout < 0 {
		return c, fmt.Errorf("%w: Options.WaitTimeout must not be negative, got %v", ErrInvalidOptions, o.WaitTimeout)
	}
	if o.WaitTimeout > 0 {
		c.waitTimeout = o.WaitTimeout
	}
	if o.NodeTimeout < 0 {
		return c, fmt.Errorf("%w: Options.NodeTimeout must not be negative, got %v", ErrInvalidOptions, o.NodeTimeout)
	}
	c.nodeTimeout = o.NodeTimeout
	if o.Logger != nil {
		c.log = o.Logger
	}
	return c, nil
}

// nodeTimeoutFor is the per-node deadline of a Redlock operation on a lock of the given ttl.
func (c *config) nodeTimeoutFor(ttl time.Duration) time.Duration {
	if c.nodeTimeout > 0 {
		return c.nodeTimeout
	}
	return max(ttl/DefaultNodeTimeoutDivisor, MinNodeTimeout)
}
