package ratelimit

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
)

// Local is an in-process token-bucket limiter with one bucket per key. A key's buckets are
// forgotten once they would be full again (nothing is lost: a missing key starts full), or
// earlier when more than MaxKeys keys are active: then a new key replaces the least recently used
// of a few sampled ones, so a key in use keeps its state.
//
// NewLocal starts no goroutine: buckets that are full again are dropped when a new key needs
// room. All methods are safe for concurrent use; keys in different shards never contend.
type Local struct {
	derived  // Allow, Wait, WaitN, Limits
	buckets  *store
	dec      decisions        // surge.ratelimit.decisions, labelled by limits' String
	minBurst int              // the smallest Burst: n above it is an error
	now      func() time.Time // nil: the monotonic clock; tests set a fake one
	epoch    time.Time
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
	minBurst := ls[0].Burst
	for _, l := range ls {
		idle = max(idle, l.refillTime())
		minBurst = min(minBurst, l.Burst)
	}
	labels, errLabel := limitLabels(ls)
	l := &Local{buckets: newStore(cfg.maxKeys, int64(idle)), minBurst: minBurst, epoch: time.Now(),
		dec: newDecisions(cfg.meter, labels, errLabel)}
	l.derived = derived{limits: ls, allowN: l.AllowN}
	return l, nil
}

// clock returns the time in ns since l.epoch. time.Since reads only the monotonic clock, half
// the cost of time.Now.
func (l *Local) clock() int64 {
	if l.now == nil {
		return int64(time.Since(l.epoch))
	}
	return int64(l.now().Sub(l.epoch))
}

// AllowN takes n tokens from every bucket of key if all of them hold n, and none otherwise.
// n == 0 peeks: it reports whether one event would be allowed and takes nothing. It never blocks;
// ctx only goes to the telemetry ([LocalOptions.MeterProvider]). Errors: [ErrInvalidArgument]
// for an empty key or negative n, [ErrExceedsBurst] when n is larger than a limit's Burst.
func (l *Local) AllowN(ctx context.Context, key string, n int) (Result, error) {
	if key == "" || n < 0 || n > l.minBurst {
		l.dec.failed(ctx)
		return Result{}, checkCall(l.limits, key, n)
	}
	now := l.clock()
	var buf [4]float64
	tokens := buf[:0]
	sh := l.buckets.shard(key)
	sh.mu.Lock()
	b := sh.m[key]
	if b == nil {
		if n == 0 {
			sh.mu.Unlock()
			for _, lim := range l.limits {
				tokens = append(tokens, float64(lim.Burst))
			}
			res, bound := bindingResult(l.limits, tokens, true, 0)
			l.dec.add(ctx, bound, decAllowed)
			return res, nil
		}
		b = l.buckets.insert(sh, key, now, l.limits)
	}
	b.seen = now
	want := need(n)
	allowed := true
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
	sh.mu.Unlock()
	res, bound := bindingResult(l.limits, tokens, allowed, n)
	l.dec.add(ctx, bound, verdict(allowed))
	return res, nil
}

// quiet returns a Local that shares l's buckets (and clock) but counts nothing. A Redis limiter
// answers from it when l is its Fallback, so that each call is counted once, by the Redis
// limiter. (AllowN counts in its own body rather than through a wrapper: one call frame fewer
// on the hot path.)
func (l *Local) quiet() *Local {
	q := *l
	q.dec.c = noop.Int64Counter{}
	return &q
}

// bindingIndex returns the index in l's limits of res.Limit, the binding limit of an answer of l.
func (l *Local) bindingIndex(res Result) int {
	for i, lim := range l.limits {
		if lim == res.Limit {
			return i
		}
	}
	return 0
}

// Reset forgets key's buckets, so it starts full again. It never blocks; it returns an error
// wrapping [ErrInvalidArgument] for an empty key.
func (l *Local) Reset(_ context.Context, key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidArgument)
	}
	sh := l.buckets.shard(key)
	sh.mu.Lock()
	delete(sh.m, key)
	sh.mu.Unlock()
	return nil
}

// Len returns how many keys hold a bucket (some of which may be full again and not yet dropped).
func (l *Local) Len() int { return l.buckets.len() }

// Close does nothing and returns nil: a Local owns no goroutine. It is kept so that a Local can be
// closed like the other limiters; the limiter keeps working afterwards.
func (l *Local) Close() error { return nil }
