package ratelimit

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/surgekit/surge/internal/keys"
)

// DefaultMaxKeys is the default [LocalOptions.MaxKeys].
const DefaultMaxKeys = 100_000

// DefaultPrefix is the default [RedisOptions.Prefix].
const DefaultPrefix = "surge:rl:"

// DefaultProbeInterval is the default [RedisOptions.ProbeInterval].
const DefaultProbeInterval = time.Second

// LocalOptions configures [NewLocal]. A nil *LocalOptions means all defaults.
type LocalOptions struct {
	// MaxKeys bounds how many keys keep a bucket in memory (default DefaultMaxKeys). When more keys
	// are active, the least valuable buckets (otter's W-TinyLFU) are dropped; a dropped key starts
	// again with a full bucket. Must not be negative.
	MaxKeys int
}

// RedisOptions configures [NewRedis]. A nil *RedisOptions means all defaults.
type RedisOptions struct {
	// Prefix starts every Redis key (default DefaultPrefix). It must not contain '{' or '}': the
	// user key becomes the {hash tag}, so all buckets of one key share a cluster slot.
	Prefix string
	// OnRedisError decides what AllowN answers when Redis fails (default FailClosed).
	OnRedisError ErrorPolicy
	// ProbeInterval is, with Fallback, how often a request tries Redis again while the fallback
	// is in use (default DefaultProbeInterval). No goroutine is started: the probe is one ordinary
	// request, at most one per interval.
	ProbeInterval time.Duration
	// Logger receives, with FailOpen or Fallback (which do not return Redis errors), a warning
	// when Redis starts failing and a note when it answers again. nil discards.
	Logger *slog.Logger
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

func (o *LocalOptions) withDefaults() (LocalOptions, error) {
	var out LocalOptions
	if o != nil {
		out = *o
	}
	switch {
	case out.MaxKeys < 0:
		return out, fmt.Errorf("%w: LocalOptions.MaxKeys must not be negative, got %d", ErrInvalidConfig, out.MaxKeys)
	case out.MaxKeys == 0:
		out.MaxKeys = DefaultMaxKeys
	}
	return out, nil
}

func (o *RedisOptions) withDefaults() (RedisOptions, error) {
	var out RedisOptions
	if o != nil {
		out = *o
	}
	if out.Prefix == "" {
		out.Prefix = DefaultPrefix
	}
	if !keys.ValidPrefix(out.Prefix) {
		return out, fmt.Errorf("%w: RedisOptions.Prefix %q must not contain '{' or '}'", ErrInvalidConfig, out.Prefix)
	}
	if out.OnRedisError == nil {
		out.OnRedisError = FailClosed
	}
	if mode, local := out.OnRedisError.policy(); mode == modeFallback && local == nil {
		return out, fmt.Errorf("%w: RedisOptions.OnRedisError: Fallback needs a non-nil *Local", ErrInvalidConfig)
	}
	switch {
	case out.ProbeInterval < 0:
		return out, fmt.Errorf("%w: RedisOptions.ProbeInterval must not be negative, got %v", ErrInvalidConfig, out.ProbeInterval)
	case out.ProbeInterval == 0:
		out.ProbeInterval = DefaultProbeInterval
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return out, nil
}
