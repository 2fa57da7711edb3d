package lock

import (
	"context"
	"slices"
	"sync"
	"time"
)

// gates are the per-key gates of a single-node Client (without WaitReplicas): an Obtain that
// may wait first takes its Client's gate for the key, in arrival order, so that at most one
// goroutine of a Client contends for a key in Redis (queued there, subscribed) at a time. The
// gate stays with the goroutine while it holds the lock; its release names the next gate waiter
// to release.lua, which hands the lock straight to it when no other process waits: one script
// per acquisition. A gate never outlives its lock: it passes on, exactly once, when the lock is
// released or lost, or when the Obtain that took it fails.
type gates struct {
	mu sync.Mutex // guards everything below, every gate's fields and Lock.gate
	m  map[string]*gate
	// expiry, one timer for all the Client's gates instead of one per lock, fires at due: no
	// later than the validity of every gate holder. It marks the holders whose validity ran out
	// lost, which passes their gates on, whether or not anyone waits for them: a lock never
	// released leaves no gate behind. nil until the first gated lock; due is zero while unarmed.
	expiry *time.Timer
	due    time.Time

	// waitEnded, set by tests before any waiter comes, runs in enter when a waiter's wait ended
	// (ctx, deadline), before it looks at what it was given meanwhile.
	waitEnded func()
}

// gate is one key's gate. While held, exactly one party owns it and will pass it on: an Obtain
// in flight (from enter, or from giveLocked, until it returns), a lock that obtained it (holder,
// watched by the gate timer or by its own validity timer), or a release in flight (takeGate
// until afterRelease). Only the second can stay for long, so the gate timer watches only
// holders: the others end by themselves, each bounded by its ctx and the client's timeouts.
type gate struct {
	held   bool
	holder *Lock         // the goroutine with the gate once it obtained the lock, else nil
	q      []*gateWaiter // in arrival order
}

// gateWaiter is an Obtain waiting for a gate.
type gateWaiter struct {
	l      *Lock
	ready  chan struct{} // buffered: signalled once got is set
	got    gateGrant
	given  bool
	chosen bool // a release is running with l's token as successor
	gaveUp bool // gave up while chosen: the releaser hands on what it gets
}

// gateGrant is what a goroutine gets with the gate: the lock itself when fence > 0 (handed over by
// the release sent at at), else only the right to contend in Redis. unsure: the release that
// gave it got no answer, and its script may have handed the lock to this goroutine's token.
type gateGrant struct {
	fence  int64
	at     time.Time
	unsure bool
}

// enter takes the gate of l's key for l, waiting in arrival order until deadline or the end of
// ctx; ok false when it gave up (then it holds nothing: what it was given meanwhile is handed
// on); queued when it had to wait.
func (gs *gates) enter(ctx context.Context, l *Lock, deadline time.Time) (gr gateGrant, ok, queued bool) {
	key := l.keys[keyLock]
	gs.mu.Lock()
	gt := gs.m[key]
	if gt == nil {
		gt = &gate{}
		gs.m[key] = gt
	}
	if !gt.held {
		gt.held = true
		l.gate = gt
		gs.mu.Unlock()
		return gateGrant{}, true, false
	}
	w := &gateWaiter{l: l, ready: make(chan struct{}, 1)}
	gt.q = append(gt.q, w)
	gs.mu.Unlock()

	timer := time.NewTimer(deadline.Sub(l.g.now()))
	defer timer.Stop()
	select {
	case <-w.ready:
		return w.got, true, true
	case <-ctx.Done():
	case <-timer.C:
	}
	if gs.waitEnded != nil {
		gs.waitEnded()
	}
	gs.mu.Lock()
	switch {
	case w.given: // given at the last moment: hand on what came with it
		gs.mu.Unlock()
		if w.got.fence > 0 || w.got.unsure {
			l.fence = w.got.fence
			l.g.giveBack(ctx, l) // release.lua hands the lock, and the gate, on
		}
		l.leaveGate()
		return gateGrant{}, false, true
	case w.chosen:
		w.gaveUp = true // the release running with our token hands on what it gets
	default:
		gt.q = slices.DeleteFunc(gt.q, func(x *gateWaiter) bool { return x == w })
	}
	gs.mu.Unlock()
	return gateGrant{}, false, true
}

// nextLocked takes gt's first waiter out of the queue as the successor a release names, or nil.
// gs.mu is held.
func (gt *gate) nextLocked() *gateWaiter {
	if len(gt.q) == 0 {
		return nil
	}
	w := gt.q[0]
	gt.q[0] = nil
	gt.q = gt.q[1:]
	w.chosen = true
	return w
}

// giveLocked gives gt to w, with gr. gs.mu is held.
func (gt *gate) giveLocked(w *gateWaiter, gr gateGrant) {
	gt.holder = nil
	w.chosen = false
	w.got, w.given = gr, true
	w.l.gate = gt
	w.ready <- struct{}{}
}

// passLocked gives gt (without the lock) to its first waiter, or frees it. gs.mu is held.
func (gs *gates) passLocked(key string, gt *gate) {
	if w := gt.nextLocked(); w != nil {
		gt.giveLocked(w, gateGrant{})
		return
	}
	gt.held, gt.holder = false, nil
	gt.q = nil
	if gs.m[key] == gt {
		delete(gs.m, key)
	}
}

// leaveGate passes l's gate on, if l holds it; later calls do nothing.
func (l *Lock) leaveGate() {
	gs := l.g.gates
	if gs == nil {
		return
	}
	gs.mu.Lock()
	if gt := l.gate; gt != nil {
		l.gate = nil
		gs.passLocked(l.keys[keyLock], gt)
	}
	gs.mu.Unlock()
}

// takeGate takes l's gate out of l (so that nothing else passes it on) for a release, with the
// successor it names: the first gate waiter, or nil. Both nil when l holds no gate.
func (l *Lock) takeGate() (*gate, *gateWaiter) {
	gs := l.g.gates
	if gs == nil {
		return nil, nil
	}
	gs.mu.Lock()
	defer gs.mu.Unlock()
	gt := l.gate
	if gt == nil {
		return nil, nil
	}
	l.gate = nil
	gt.holder = nil
	return gt, gt.nextLocked()
}

// obtainedGated records that l, which holds its gate, obtained the lock, and sees that the
// Client's gate timer fires no later than l's validity.
func (l *Lock) obtainedGated() {
	gs := l.g.gates
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gt := l.gate; gt != nil {
		gt.holder = l
		l.watchGateLocked(gs)
	}
}

// watchGateLocked has the gate timer fire no later than l's validity, unless l's own validity
// timer is armed (a watchdog, Do, a Lost call): that one passes the gate on when it marks l lost.
// gs.mu is held (it is taken before Lock.mu).
func (l *Lock) watchGateLocked(gs *gates) {
	l.mu.Lock()
	until, own := l.validUntil, l.expiry != nil
	l.mu.Unlock()
	if !own {
		gs.watchLocked(until, l.g.now())
	}
}

// validityMoved sees that the Client's gate timer fires no later than l's validity, which a
// Refresh may have moved earlier, while l holds its gate.
func (l *Lock) validityMoved() {
	gs := l.g.gates
	if gs == nil {
		return
	}
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gt := l.gate; gt != nil && gt.holder == l {
		l.watchGateLocked(gs)
	}
}

// watchLocked has the gate timer fire no later than until. gs.mu is held (it is taken before
// Lock.mu).
func (gs *gates) watchLocked(until, now time.Time) {
	if !gs.due.IsZero() && !until.Before(gs.due) {
		return
	}
	gs.due = until
	if gs.expiry == nil {
		gs.expiry = time.AfterFunc(until.Sub(now), gs.expire)
		return
	}
	gs.expiry.Reset(until.Sub(now))
}

// expire runs on the gate timer: the gate holders whose validity ran out (unless a renewal
// moved it on) are marked lost, which passes their gates on; the timer is armed again for the
// earliest validity of the others. Holders with their own validity timer are left to it.
func (gs *gates) expire() {
	var lost []*Lock
	gs.mu.Lock()
	gs.due = time.Time{}
	var now, next time.Time
	for _, gt := range gs.m {
		l := gt.holder
		if l == nil {
			continue
		}
		if now.IsZero() {
			now = l.g.now()
		}
		l.mu.Lock()
		// over: leaving the gate already, or watched by its own timer
		until, over := l.validUntil, l.released || l.isLost || l.expiry != nil
		l.mu.Unlock()
		switch {
		case over:
		case !now.Before(until):
			lost = append(lost, l)
		case next.IsZero() || until.Before(next):
			next = until
		}
	}
	if !next.IsZero() {
		gs.watchLocked(next, now)
	}
	gs.mu.Unlock()
	for _, l := range lost {
		l.markLost("validity ran out")
	}
}

// afterRelease passes gt on once the release that named succ (may be nil) answered: to succ
// with the lock when handed (fence > 0, the release sent at sent), else to succ or the first
// waiter without it. When succ gave up meanwhile and was handed the lock, it returns succ's lock
// and the next successor: the caller releases it in succ's place. So it does when the release got
// no answer (unknown): the script may have handed succ the lock.
func (l *Lock) afterRelease(gt *gate, succ *gateWaiter, handed int64, sent time.Time, unknown bool) (*Lock, *gateWaiter) {
	gs := l.g.gates
	gs.mu.Lock()
	defer gs.mu.Unlock()
	switch {
	case succ == nil:
		gs.passLocked(l.keys[keyLock], gt)
	case !succ.gaveUp:
		gt.giveLocked(succ, gateGrant{fence: handed, at: sent, unsure: unknown})
	case handed > 0 || unknown:
		succ.chosen = false
		succ.l.fence = handed
		return succ.l, gt.nextLocked()
	default:
		succ.chosen = false
		gs.passLocked(l.keys[keyLock], gt)
	}
	return nil, nil
}
