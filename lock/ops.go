package lock

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// op names the script an operation runs on one node.
type op int8

const (
	opAcquire op = iota // Redlock, no queue: arg: ttl in ms; reply: fence, or -(holder's PTTL)
	opRelease           // reply: 1 when released (or handed over to a waiter)
	opRefresh           // arg: ttl in ms; reply: 1 when extended
	opTTL               // reply: PTTL in ms, or ttlNotHeld
	opFence             // arg: fence; reply: 1 when the counter is at least arg
)

// Indexes of Lock.keys; they share one hash tag.
const (
	keyLock    = iota // the lock: "<token>:<fence>:<metadata>", with the ttl
	keyFence          // the fence counter, never expires
	keyQueue          // waiters in arrival order (a list of tokens)
	keyWaiters        // each queued waiter's lease expiry, ttl and metadata (a hash)
)

// run runs op for l on one node, through s (a client, or a dedicated connection).
func (l *Lock) run(ctx context.Context, s redis.Scripter, o op, arg int64) (int64, error) {
	var cmd *redis.Cmd
	switch o {
	case opAcquire:
		gr, err := l.runAcquire(ctx, s, time.Duration(arg)*time.Millisecond, 0)
		if gr.fence > 0 || err != nil {
			return gr.fence, err
		}
		return -gr.pttl.Milliseconds(), nil
	case opRelease:
		return l.runRelease(ctx, s)
	case opRefresh:
		cmd = refreshScript.Run(ctx, s, l.keys[:keyLock+1], l.token, arg)
	case opTTL:
		cmd = ttlScript.Run(ctx, s, l.keys[:keyLock+1], l.token)
	default:
		cmd = fenceScript.Run(ctx, s, l.keys[:keyFence+1], l.token, arg)
	}
	return cmd.Int64()
}

// grant is acquire.lua's answer.
type grant struct {
	fence   int64         // > 0 when the token holds the lock
	pttl    time.Duration // else the holder's remaining ttl, 0 when unknown
	counter int64         // else the fence counter: hand-overs after this answer draw a higher fence
}

// runAcquire runs acquire.lua for l on one node, through s. A lease > 0 queues l's token (or
// renews its place) for that long, so that a release hands the lock over to it.
func (l *Lock) runAcquire(ctx context.Context, s redis.Scripter, ttl, lease time.Duration) (grant, error) {
	var hub string
	if lease > 0 && l.g.local != nil {
		hub = l.g.local.id
	}
	v, err := acquireScript.Run(ctx, s, l.keys[:], l.token, ttl.Milliseconds(), l.meta, lease.Milliseconds(), hub).Result()
	if err != nil {
		return grant{}, err
	}
	switch v := v.(type) {
	case int64:
		return grant{fence: v}, nil
	case []any:
		if len(v) == 2 {
			pttl, ok1 := v[0].(int64)
			counter, ok2 := v[1].(int64)
			if ok1 && ok2 {
				return grant{pttl: time.Duration(pttl) * time.Millisecond, counter: counter}, nil
			}
		}
	}
	return grant{}, fmt.Errorf("acquire: unexpected reply %v", v)
}

// runRelease runs release.lua for l on one node, through s, and answers 1 when l held the lock,
// 0 when it did not. A hand-over to a waiter of this Client comes back in the reply instead of a
// message, and the waiter is told here, with the time the release was sent: the waiter's ttl
// started after it. When no answer came, the script may have handed the lock to such a waiter:
// every waiter of this Client on the key looks again. When l holds its Client's gate for the key,
// the release names the first gate waiter, which gets the lock from the script when no other
// process waits, and the gate passes on (see gates).
func (l *Lock) runRelease(ctx context.Context, s redis.Scripter) (int64, error) {
	gt, succ := l.takeGate()
	r, err := l.releaseOnce(ctx, s, gt, succ)
	for r.rel != nil { // the successor gave up after it was (maybe) handed the lock: release it in its place
		// Not bound to ctx, which may be what ended the release before its answer came.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.g.cfg.nodeTimeoutFor(r.rel.ttl))
		next, _ := r.rel.releaseOnce(rctx, s, gt, r.succ)
		cancel()
		r.rel, r.succ = next.rel, next.succ
	}
	return r.n, err
}

// releaseResult is releaseOnce's answer: n as runRelease's, and a lock still to release (with
// the successor to name) when the named successor gave up meanwhile.
type releaseResult struct {
	n    int64
	rel  *Lock
	succ *gateWaiter
}

func (l *Lock) releaseOnce(ctx context.Context, s redis.Scripter, gt *gate, succ *gateWaiter) (releaseResult, error) {
	h := l.g.local
	var id string
	var sent time.Time
	if h != nil {
		id, sent = h.id, l.g.now()
	}
	var succToken, succMeta string
	var succTTL int64
	if succ != nil {
		succToken, succMeta, succTTL = succ.l.token, succ.l.meta, succ.l.ttl.Milliseconds()
	}
	v, err := releaseScript.Run(ctx, s, l.keys[:], l.token, l.channel, l.g.publish, id, succToken, succTTL, succMeta).Result()
	var token string
	var f int64
	if str, ok := v.(string); ok && err == nil {
		token, f = parseHandover(str)
	}
	var r releaseResult
	if gt != nil {
		handed := int64(0)
		if succ != nil && token == succToken && f > 0 {
			handed = f
		}
		r.rel, r.succ = l.afterRelease(gt, succ, handed, sent, err != nil)
		if handed > 0 {
			r.n = 1
			return r, nil
		}
	}
	if err != nil {
		if h != nil {
			h.wakeAll(l.channel)
		}
		return r, err
	}
	switch v := v.(type) {
	case int64:
		r.n = v
		return r, nil
	case string:
		if h != nil {
			if f > 0 {
				if ack := h.handOver(l.channel, handover{token: token, fence: f, at: sent}, true); ack != nil {
					<-ack // the waiter runs now, not after our next blocking call
				}
			} else {
				h.wakeAll(l.channel) // not ours to read: they will look
			}
			r.n = 1
			return r, nil
		}
	}
	return r, fmt.Errorf("release: unexpected reply %v", v)
}

// releaseChannel is the pub/sub channel release.lua publishes on; waiters subscribe to it.
func releaseChannel(lockKey string) string {
	return lockKey + ":released"
}
