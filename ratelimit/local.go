package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/maypok86/otter/v2"
)

// Local is an in-process token-bucket limiter with one bucket per key, kept in a bounded otter
// cache. A key's buckets are dropped once they would be full again (nothing is lost: a missing key
// starts full), or earlier when more than MaxKeys keys are active.
//
// NewLocal starts two goroutines (otter's periodic clean-up and its coarse clock); call
// [Local.Close] when done with the limiter (those of an unreachable Local also end by themselves
// within a second). All methods are safe for concurrent use.
type Local struct {
	derived // Allow, Wait, WaitN, Limits
	buckets *otter.Cache[string, *bucket]
	clock   *otter.CoarseClock // otter's clock for expiry: reading it costs a load, not a syscall
	now     func() time.Time   // tests move the clock
	epoch   time.Time
}

// coarseResolution is how often otter's clock reads the time. Expiry only needs to be right to
// within a second, while the buckets themselves read the precise time.
const coarseResolution = 100 * time.Millisecond

// bucket is the state of every limit of one key. Tokens are as of last (ns since Local.epoch).
type bucket struct {
	mu     sync.Mutex
	last   int64
	tokens []float64
}

// NewLocal returns a Local enforcing every limit at once on each key. It returns an error wrapping
// [ErrInvalidOptions], naming the field, when no limit is given, a Rate is not positive, a Burst is
// below 1, two limits share a Name, or opt.MaxKeys is negative. opt may be nil.
func NewLocal(opt *LocalOptions, limits ...Limit) (*Local, error) {
	cfg, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	ls, err := validateLimits(limits)
	if err != nil {
		return nil, err
	}
	var idle time.Duration
	for _, l := range ls {
		idle = max(idle, l.refillTime())
	}
	// Buckets are only read through otter (their state changes in place), and otter may let an
	// entry expire up to a second before the duration its last read asked for: keep buckets a
	// second longer so that none is dropped before it is full.
	// The coarse clock lags by up to its resolution (more under load): keep that much again.
	idle += time.Second + 2*coarseResolution
	clock := otter.NewCoarseClock(coarseResolution)
	c, err := otter.New(&otter.Options[string, *bucket]{
		MaximumSize:      cfg.maxKeys,
		ExpiryCalculator: otter.ExpiryAccessing[string, *bucket](idle),
		Clock:            clock,
	})
	if err != nil {
		clock.Stop()
		return nil, fmt.Errorf("%w: %v", ErrInvalidOptions, err)
	}
	l := &Local{buckets: c, clock: clock, now: time.Now, epoch: time.Now()}
	l.derived = derived{limits: ls, allowN: l.AllowN}
	return l, nil
}

// AllowN takes n tokens from every bucket of key if all of them hold n, and none otherwise.
// n == 0 peeks: it reports whether one event would be allowed and takes nothing. It never blocks
// and ignores ctx. Errors: [ErrInvalidArgument] for an empty key or negative n, [ErrExceedsBurst]
// when n is larger than a limit's Burst.
func (l *Local) AllowN(_ context.Context, key string, n int) (Result, error) {
	if err := checkCall(l.limits, key, n); err != nil {
		return Result{}, err
	}
	now := int64(l.now().Sub(l.epoch))
	var buf [4]float64
	tokens := buf[:0]
	b, ok := l.buckets.GetIfPresent(key)
	if !ok && n == 0 {
		for _, lim := range l.limits {
			tokens = append(tokens, float64(lim.Burst))
		}
		return buildResult(l.limits, tokens, true, 0), nil
	}
	if !ok {
		b, _ = l.buckets.ComputeIfAbsent(key, func() (*bucket, bool) {
			nb := &bucket{last: now, tokens: make([]float64, len(l.limits))}
			for i, lim := range l.limits {
				nb.tokens[i] = float64(lim.Burst)
			}
			return nb, false
		})
	}
	want := need(n)
	allowed := true
	b.mu.Lock()
	elapsed := now - b.last
	for i, lim := range l.limits {
		tk := b.tokens[i]
		if elapsed > 0 {
			tk = min(tk+float64(elapsed)*lim.Rate/1e9, float64(lim.Burst))
		}
		tokens = append(tokens, tk)
		allowed = allowed && tk+eps >= want
	}
	switch {
	case allowed && n > 0:
		for i := range tokens {
			tokens[i] = max(tokens[i]-float64(n), 0)
			b.tokens[i] = tokens[i]
		}
		b.last = now
	case elapsed < 0:
		// The clock went back: restart refilling from now rather than waiting for it to catch up.
		b.last = now
	}
	b.mu.Unlock()
	return buildResult(l.limits, tokens, allowed, n), nil
}

// Reset forgets key's buckets, so it starts full again. It never blocks; it returns an error
// wrapping [ErrInvalidArgument] for an empty key.
func (l *Local) Reset(_ context.Context, key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidArgument)
	}
	l.buckets.Invalidate(key)
	return nil
}

// Len returns about how many keys hold a bucket.
func (l *Local) Len() int { return l.buckets.EstimatedSize() }

// Close stops the goroutines NewLocal started and waits for them. It is idempotent and returns
// nil; the limiter keeps working afterwards, only expired buckets are then dropped lazily.
func (l *Local) Close() error {
	l.buckets.StopAllGoroutines()
	l.clock.Stop()
	return nil
}
