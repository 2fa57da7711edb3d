package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// ConcurrencyLimiter bounds how many operations per key are in flight at once.
// [*LocalConcurrency] (one process) and [*Concurrency] (every process sharing a Redis) implement it.
type ConcurrencyLimiter interface {
	// Acquire takes a slot for key without waiting and returns the [Permit] that holds it. When
	// every slot of key is held it returns (nil, *[ConcurrencyError]), which wraps
	// [ErrConcurrencyLimited] and carries a RetryAfter hint. Release the permit when the operation
	// ends, whatever its outcome.
	Acquire(ctx context.Context, key string) (*Permit, error)
}

var (
	_ ConcurrencyLimiter = (*LocalConcurrency)(nil)
	_ ConcurrencyLimiter = (*Concurrency)(nil)
)

// ConcurrencyError is the error Acquire returns when every slot of a key is held. It wraps
// [ErrConcurrencyLimited]: test with errors.Is, and read RetryAfter with errors.As.
type ConcurrencyError struct {
	Key        string        // the key whose slots are all held
	Max        int           // the limiter's slots per key
	RetryAfter time.Duration // a hint for a Retry-After header: [ConcurrencyOptions.RetryAfter]
}

// Error describes the refusal.
func (e *ConcurrencyError) Error() string {
	return "ratelimit: key " + strconv.Quote(e.Key) + ": all " + strconv.Itoa(e.Max) + " slots in use: " +
		ErrConcurrencyLimited.Error()
}

// Unwrap returns [ErrConcurrencyLimited].
func (e *ConcurrencyError) Unwrap() error { return ErrConcurrencyLimited }

// permitOwner is the limiter a Permit gives its slot back to.
type permitOwner interface {
	release(ctx context.Context, p *Permit) error
	renew(ctx context.Context, p *Permit) error
}

// Permit is one held slot of a concurrency limiter, returned by Acquire. Release gives it back.
// Its methods are safe for concurrent use.
type Permit struct {
	owner permitOwner
	key   string
	id    string // the holder's member in Redis; empty for LocalConcurrency

	mu       sync.Mutex
	released bool
}

// Key returns the key the slot was taken for.
func (p *Permit) Key() string { return p.key }

// Release gives the slot back. It is idempotent: once a Release has succeeded, later calls do
// nothing and return nil. For [Concurrency] it is one round trip to Redis that honours ctx; if it
// fails, the error is returned, a later Release may try again, and the slot frees itself when its
// lease ends anyway. For [LocalConcurrency] it never blocks and never fails. A nil *Permit is a
// no-op.
func (p *Permit) Release(ctx context.Context) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		return nil
	}
	if err := p.owner.release(ctx, p); err != nil {
		return err
	}
	p.released = true
	return nil
}

// Renew extends the permit's lease to a full [ConcurrencyOptions.Lease] from now, for an operation
// that may outlast its lease. For [Concurrency] it is one round trip that honours ctx; it returns
// an error wrapping [ErrPermitLost] when the lease had already ended (the slot may be someone
// else's now: stop the operation if that matters) or the permit was released. For
// [LocalConcurrency], whose permits have no lease, it returns nil, or ErrPermitLost after Release.
func (p *Permit) Renew(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		return fmt.Errorf("ratelimit: renew %q: released: %w", p.key, ErrPermitLost)
	}
	return p.owner.renew(ctx, p)
}

// LocalConcurrency is an in-process concurrency limiter: at most Max permits per key are held at
// once. A permit is held until released (the process ending frees them all; Lease does not
// apply). It starts no goroutine and holds memory only for keys with permits out.
// All methods are safe for concurrent use.
type LocalConcurrency struct {
	max   int
	retry time.Duration
	dec   decisions

	mu       sync.Mutex
	inFlight map[string]int
}

// NewLocalConcurrency returns a limiter allowing at most max permits per key in this process.
// It returns an error wrapping [ErrInvalidOptions], naming the field, when max is below 1 or an
// option is invalid. opt may be nil; of its fields RetryAfter, Name and MeterProvider apply.
func NewLocalConcurrency(max int, opt *ConcurrencyOptions) (*LocalConcurrency, error) {
	cfg, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	if max < 1 {
		return nil, fmt.Errorf("%w: max must be at least 1, got %d", ErrInvalidOptions, max)
	}
	return &LocalConcurrency{max: max, retry: cfg.retryAfter, inFlight: make(map[string]int),
		dec: newConcurrencyDecisions(cfg)}, nil
}

// newConcurrencyDecisions counts Acquire calls under the limiter's Name.
func newConcurrencyDecisions(cfg concurrencyConfig) decisions {
	return newDecisions(cfg.meter, []string{cfg.name}, cfg.name)
}

// countAcquire counts one Acquire in surge.ratelimit.decisions: allowed with a permit, denied
// with a *ConcurrencyError, error otherwise.
func (d *decisions) countAcquire(ctx context.Context, err error) {
	switch {
	case err == nil:
		d.add(ctx, 0, decAllowed)
	case errors.Is(err, ErrConcurrencyLimited):
		d.add(ctx, 0, decDenied)
	default:
		d.failed(ctx)
	}
}

// Acquire takes a slot for key if fewer than max are held, without waiting. Errors: the context's
// error if ctx has already ended, [ErrInvalidArgument] for an empty key, and a *[ConcurrencyError]
// wrapping [ErrConcurrencyLimited] when all slots are held.
func (l *LocalConcurrency) Acquire(ctx context.Context, key string) (*Permit, error) {
	p, err := l.acquire(ctx, key)
	l.dec.countAcquire(ctx, err)
	return p, err
}

func (l *LocalConcurrency) acquire(ctx context.Context, key string) (*Permit, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ratelimit: acquire %q: %w", key, err)
	}
	if key == "" {
		return nil, fmt.Errorf("%w: empty key", ErrInvalidArgument)
	}
	l.mu.Lock()
	n := l.inFlight[key]
	if n >= l.max {
		l.mu.Unlock()
		return nil, &ConcurrencyError{Key: key, Max: l.max, RetryAfter: l.retry}
	}
	l.inFlight[key] = n + 1
	l.mu.Unlock()
	return &Permit{owner: l, key: key}, nil
}

func (l *LocalConcurrency) release(_ context.Context, p *Permit) error {
	l.mu.Lock()
	if n := l.inFlight[p.key]; n <= 1 {
		delete(l.inFlight, p.key)
	} else {
		l.inFlight[p.key] = n - 1
	}
	l.mu.Unlock()
	return nil
}

func (l *LocalConcurrency) renew(context.Context, *Permit) error { return nil }

// InFlight returns how many permits of key are held now.
func (l *LocalConcurrency) InFlight(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inFlight[key]
}

// Max returns the number of slots per key.
func (l *LocalConcurrency) Max() int { return l.max }
