package lock

import (
	"context"
	"errors"
	"time"

	"github.com/surgekit/surge/internal/jitter"
)

// startWatchdog starts the goroutine that renews the lock until Release stops it.
func (l *Lock) startWatchdog() {
	ctx, cancel := context.WithCancel(context.Background())
	l.mu.Lock()
	l.stopWatch, l.watchDone = cancel, make(chan struct{})
	l.armLocked()
	l.mu.Unlock()
	go l.watch(ctx)
}

// watch renews every ttl/3. It returns when stopped (ctx, by Release) or when the lock is lost.
// It only renews: the validity timer (Lock.expire) marks the lock lost on time even while a
// renewal hangs.
func (l *Lock) watch(ctx context.Context) {
	defer close(l.watchDone)
	t := time.NewTimer(l.nextRenewal())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !l.renew(ctx) {
			return
		}
		t.Reset(l.nextRenewal())
	}
}

// nextRenewal is the delay before the next renewal: ttl/3, sooner when less than two thirds of
// the ttl is left of the validity (a lock handed over by a release).
func (l *Lock) nextRenewal() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(min(l.ttl/3, l.validUntil.Sub(l.g.now())/2), 0)
}

// renew refreshes the lock, retrying transient errors while the lock is still locally valid.
// It reports whether the watchdog should go on.
func (l *Lock) renew(ctx context.Context) bool {
	var retry *time.Timer
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for attempt := 0; ; attempt++ {
		l.mu.Lock()
		ttl, until, lost := l.ttl, l.validUntil, l.isLost
		l.mu.Unlock()
		if lost {
			return false // the validity timer fired: extending the key now would only delay others
		}
		left := until.Sub(l.g.now())
		if left <= 0 {
			l.markLost("validity ran out before a renewal succeeded")
			return false
		}
		rctx, cancel := context.WithTimeout(ctx, left)
		err := l.refresh(rctx, ttl)
		cancel()
		switch {
		case err == nil:
			return true
		case ctx.Err() != nil:
			return false // Release stopped us
		case errors.Is(err, ErrNotHeld):
			return false // refresh marked it lost
		}
		l.g.cfg.log.Warn("lock renewal failed, retrying", "key", l.key, "fence", l.fence, "attempt", attempt, "err", err)
		d := min(jitter.Exponential(attempt, max(ttl/30, time.Millisecond), ttl/6), until.Sub(l.g.now()))
		if retry == nil {
			retry = time.NewTimer(d)
		} else {
			retry.Reset(d)
		}
		select {
		case <-ctx.Done():
			return false
		case <-retry.C:
		}
	}
}
