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
	l.mu.Unlock()
	go l.watch(ctx)
}

// watch renews every ttl/3. It returns when stopped (ctx, by Release) or when the lock is lost.
func (l *Lock) watch(ctx context.Context) {
	defer close(l.watchDone)
	t := time.NewTimer(l.currentTTL() / 3)
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
		t.Reset(l.currentTTL() / 3)
	}
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
		ttl, until := l.ttl, l.validUntil
		l.mu.Unlock()
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
