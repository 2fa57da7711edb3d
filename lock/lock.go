package lock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Lock is one acquisition of a lock, returned by Obtain. Its methods are safe for concurrent use.
type Lock struct {
	g    *group
	key  string
	keys [4]string // indexed by keyLock, keyFence, keyQueue, keyWaiters
	// channel is the release channel: release.lua publishes on it, waiters subscribe to it.
	channel string
	token   string
	meta    string
	fence   int64

	onLost func() // Do: cancels fn's context

	gate *gate // its Client's gate for the key, while it holds it (guarded by gates.mu)

	refreshing sync.Mutex // one refresh at a time (watchdog and Refresh), so validity follows Redis

	mu         sync.Mutex
	ttl        time.Duration // the watchdog renews with the last ttl set
	validUntil time.Time     // local estimate of the expiry, drift subtracted
	expiry     *time.Timer   // armed: fires at validUntil and marks the lock lost, whatever calls hang
	released   bool
	isLost     bool
	lost       chan struct{}      // made by the first Lost call
	stopWatch  context.CancelFunc // nil without watchdog
	watchDone  chan struct{}
}

// Key returns the lock's name as given to Obtain (without prefix); "" for a nil Lock.
func (l *Lock) Key() string {
	if l == nil {
		return ""
	}
	return l.key
}

// Token returns the random token (128 bits from crypto/rand, 26 base32 characters) that
// identifies this acquisition; "" for a nil Lock.
func (l *Lock) Token() string {
	if l == nil {
		return ""
	}
	return l.token
}

// Metadata returns [ObtainOptions.Metadata] as given to Obtain; "" for a nil Lock.
func (l *Lock) Metadata() string {
	if l == nil {
		return ""
	}
	return l.meta
}

// Fence returns the fencing token of this acquisition: it strictly increases across every
// successful acquisition of the key, by any holder, and a refresh does not change it. Pass it
// with every write to the protected resource, and have the resource remember the highest fence
// it has seen and reject writes carrying a lower one; a holder that paused past its TTL then
// cannot overwrite the work of the next holder. (The counter lives in Redis without expiry; it
// restarts only if that key is deleted or the data lost, e.g. by a failover that lost recent
// writes: see the package documentation on what [Options.WaitReplicas] buys.) For a [Redlock]
// it is the highest of
// the nodes' fences, raised on every node of the quorum so the next quorum draws a higher one.
// A nil Lock has fence 0, below every real one.
func (l *Lock) Fence() int64 {
	if l == nil {
		return 0
	}
	return l.fence
}

// Lost returns a channel closed when the lock is known lost: a watchdog renewal, [Lock.Refresh]
// or [Lock.TTL] found it gone, or its validity ran out: a timer armed at the validity the holder
// knows (its last successful acquisition or renewal, plus ttl, minus drift) closes it on time
// even while a renewal hangs on a stalled server or network, whatever the client's timeouts.
// A lock without watchdog is lost when its ttl runs out. It is not closed by Release. A nil Lock
// returns a closed channel: it holds nothing.
func (l *Lock) Lost() <-chan struct{} {
	if l == nil {
		return closedChan
	}
	l.mu.Lock()
	if l.lost == nil {
		l.lost = make(chan struct{})
		if l.isLost {
			close(l.lost)
		}
	}
	ch := l.lost
	expired := !l.isLost && !l.released && !l.g.now().Before(l.validUntil)
	if !expired {
		l.armLocked() // from now on someone watches: the timer closes ch on time
	}
	l.mu.Unlock()
	if expired {
		l.markLost("validity ran out")
	}
	return ch
}

// Release stops the watchdog, waiting for it, and deletes the lock if this handle still owns it,
// waking waiters. It returns an error wrapping [ErrNotHeld] when the lock was no longer owned
// (expired, taken by another, or released before; the other holder's key is left untouched), or
// the Redis error met; after such an error nothing is settled and Release may be called again.
// It blocks for one round trip (per node, in parallel, for a Redlock). A lock obtained with a
// wait on a [Client] hands itself, in the same round trip, to the next goroutine of that Client
// waiting for the key, unless a waiter of another Client is queued in Redis. When the release
// hands the lock to a goroutine of the same Client waiting in Redis, Release returns once that
// goroutine has taken it (as sync.Mutex does in starvation mode), so the lock moves on at once
// rather than after the caller's next blocking call.
func (l *Lock) Release(ctx context.Context) error {
	if l == nil {
		return errNilLock
	}
	l.mu.Lock()
	released := l.released
	stop, done := l.stopWatch, l.watchDone
	l.stopWatch = nil
	l.mu.Unlock()
	if released {
		return fmt.Errorf("lock: release %q: %w (released already)", l.key, ErrNotHeld)
	}
	if stop != nil {
		stop()
		<-done
	}
	ok, errs := l.g.each(ctx, l.g.cfg.nodeTimeoutFor(l.currentTTL()), l, opRelease, 0, nil, nil)
	err := l.verdict("release", ok, errs)
	if err == nil || errors.Is(err, ErrNotHeld) { // a definitive answer: nothing left to release
		l.mu.Lock()
		l.released = true
		if l.expiry != nil {
			l.expiry.Stop()
		}
		l.mu.Unlock()
	}
	return err
}

// Refresh resets the lock's TTL to ttl (at least 1ms, in whole milliseconds as for Obtain) if this handle still owns it; the watchdog,
// if any, renews with this ttl from then on. It returns an error wrapping [ErrNotHeld], closing
// [Lock.Lost], when the lock is no longer owned or was already known lost, or the Redis error
// met; after an error the lock's local validity is the earlier of the one it had and the one
// this ttl would give, since Redis may have applied it. It waits for a watchdog renewal in
// flight, then blocks for one round trip.
func (l *Lock) Refresh(ctx context.Context, ttl time.Duration) error {
	if l == nil {
		return errNilLock
	}
	if ttl < time.Millisecond {
		return fmt.Errorf("lock: refresh %q: ttl %v is below 1ms", l.key, ttl)
	}
	if err := l.checkReleased("refresh", true); err != nil {
		return err
	}
	ttl = ttl.Truncate(time.Millisecond) // as Obtain: Redis keeps whole milliseconds
	err := l.refresh(ctx, ttl)
	l.validityMoved() // a shorter ttl may have moved it earlier
	return err
}

// checkReleased returns ErrNotHeld, without a Redis call, once Release was called (and, with
// lostToo, once the lock is known lost).
func (l *Lock) checkReleased(op string, lostToo bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return fmt.Errorf("lock: %s %q: %w (released)", op, l.key, ErrNotHeld)
	}
	if lostToo && l.isLost {
		return fmt.Errorf("lock: %s %q: %w (lost)", op, l.key, ErrNotHeld)
	}
	return nil
}

// refresh extends the lock on the nodes and moves its local validity. Refreshes run one at a
// time, so the validity set last belongs to the PEXPIRE Redis applied last.
func (l *Lock) refresh(ctx context.Context, ttl time.Duration) error {
	l.refreshing.Lock()
	defer l.refreshing.Unlock()
	start := l.g.now()
	until := start.Add(ttl - l.g.drift(ttl))
	ok, errs := l.g.each(ctx, l.g.cfg.nodeTimeoutFor(ttl), l, opRefresh, ttl.Milliseconds(), nil, nil)
	late := ok >= l.g.quorum && !l.g.now().Before(until)
	if late {
		ok = 0 // took longer than the ttl: whatever the nodes say, it is not valid any more
	}
	if ok >= l.g.quorum {
		l.mu.Lock()
		lost := l.isLost
		if !lost {
			l.ttl = ttl
			l.setValidityLocked(until)
		}
		l.mu.Unlock()
		if !lost {
			return nil
		}
		// The validity ran out while the renewal was in flight: lost is final.
		l.dropExtended(ctx, ttl)
		return fmt.Errorf("lock: refresh %q: %w (validity ran out)", l.key, ErrNotHeld)
	}
	err := l.verdict("refresh", ok, errs)
	if late {
		l.dropExtended(ctx, ttl)
	}
	if !errors.Is(err, ErrNotHeld) {
		// Some node may have applied ttl: never believe in a later expiry than it gives.
		l.mu.Lock()
		if until.Before(l.validUntil) {
			l.setValidityLocked(until)
		}
		l.mu.Unlock()
	}
	return err
}

// dropExtended gives back, best effort and bounded even when ctx ended, the key a renewal
// extended after the lock was known lost: its holder, told so, releases nothing, and the next
// waiter (of its Client's gate too, which passed on) would wait for the ttl the renewal set.
// It runs after the lock was marked lost, which passed the gate on: the release names no gate
// successor, and hands the key to the first waiter queued in Redis.
func (l *Lock) dropExtended(ctx context.Context, ttl time.Duration) {
	timeout := l.g.cfg.nodeTimeoutFor(ttl)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	_, _ = l.g.each(rctx, timeout, l, opRelease, 0, nil, nil)
}

// setValidityLocked records the validity and moves the validity timer, if armed, to it. l.mu is
// held.
func (l *Lock) setValidityLocked(until time.Time) {
	l.validUntil = until
	if l.expiry != nil {
		l.expiry.Reset(until.Sub(l.g.now()))
	}
}

// armLocked starts the timer that marks the lock lost at its validity. It is armed only once
// something can observe the loss (a watchdog, Do's function context, a Lost call), which spares
// a plain Obtain/Release its cost. l.mu is held.
func (l *Lock) armLocked() {
	if l.expiry == nil && !l.released && !l.isLost {
		l.expiry = time.AfterFunc(l.validUntil.Sub(l.g.now()), l.expire)
	}
}

// expire runs on the validity timer: the lock is lost unless a renewal moved the validity on.
func (l *Lock) expire() {
	l.mu.Lock()
	if l.released || l.isLost {
		l.mu.Unlock()
		return
	}
	if left := l.validUntil.Sub(l.g.now()); left > 0 {
		l.expiry.Reset(left)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	l.markLost("validity ran out")
}

// granted records a successful acquisition.
func (l *Lock) granted(fence int64, until time.Time) {
	l.fence = fence
	l.mu.Lock()
	l.setValidityLocked(until)
	if l.onLost != nil {
		l.armLocked()
	}
	l.mu.Unlock()
}

// validity returns the lock's local validity.
func (l *Lock) validity() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.validUntil
}

// TTL returns how long the lock remains held if not refreshed (for a Redlock: as long as a quorum
// of nodes holds it). It returns an error wrapping [ErrNotHeld], closing [Lock.Lost], when this
// handle no longer owns the lock, or the Redis error met. It blocks for one round trip.
func (l *Lock) TTL(ctx context.Context) (time.Duration, error) {
	if l == nil {
		return 0, errNilLock
	}
	if err := l.checkReleased("ttl", false); err != nil {
		return 0, err
	}
	ttls := make([]int64, len(l.g.nodes))
	ok, errs := l.g.each(ctx, l.g.cfg.nodeTimeoutFor(l.currentTTL()), l, opTTL, 0, isHeldTTL, ttls)
	if ok < l.g.quorum {
		return 0, l.verdict("ttl", ok, errs)
	}
	// Held as long as a quorum is: the quorum-th longest ttl among the owning nodes.
	held := slices.DeleteFunc(ttls, func(n int64) bool { return !isHeldTTL(n) })
	slices.SortFunc(held, func(a, b int64) int { return int(b - a) })
	return time.Duration(held[l.g.quorum-1]) * time.Millisecond, nil
}

// verdict turns a count of owning nodes into nil, the Redis errors, or ErrNotHeld.
func (l *Lock) verdict(op string, ok int, errs []error) error {
	if ok >= l.g.quorum {
		return nil
	}
	if len(errs) > 0 && ok+len(errs) >= l.g.quorum {
		// Redis errors left the answer open: the lock may still be held.
		return fmt.Errorf("lock: %s %q: %w", op, l.key, errors.Join(errs...))
	}
	if op != "release" {
		l.markLost(op + " found it gone")
	}
	return fmt.Errorf("lock: %s %q: %w", op, l.key, ErrNotHeld)
}

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func (l *Lock) currentTTL() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ttl
}

// markLost closes Lost once and cancels Do's function context.
func (l *Lock) markLost(why string) {
	l.mu.Lock()
	already := l.isLost
	l.isLost = true
	if !already && l.lost != nil {
		close(l.lost)
	}
	l.mu.Unlock()
	if already {
		return
	}
	l.leaveGate()
	l.g.cfg.tel.markedLost()
	if l.onLost != nil {
		l.onLost()
	}
	l.g.cfg.log.Warn("lock lost", "key", l.key, "fence", l.fence, "reason", why)
}
