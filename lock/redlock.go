package lock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redlock obtains locks on N independent Redis masters (no replication between them): a lock is
// held when a quorum of N/2+1 nodes granted it within its validity, ttl − elapsed − drift, with
// drift = ttl·0.01 + 2ms. It survives the loss of fewer than a quorum of nodes. Locks it returns
// behave as those of [Client]: Release, Refresh and TTL act on every node in parallel, each
// bounded by [Options.NodeTimeout], and succeed when a quorum answers; a node that has not
// answered by then counts as failed and is not waited for. A waiter subscribes to every node in
// the background, so a hung node does not hold it up either; what a hung node holds (a call, a
// subscription) ends with the client's own timeouts. It is safe for concurrent use and has
// nothing to close.
type Redlock struct {
	g group
}

// NewRedlock returns a Redlock over clients, one per independent Redis master. It never fails:
// no clients, a nil client or invalid opt is reported by every Obtain and Do. The clients are not
// closed by the Redlock. [Options.WaitReplicas] does not apply.
func NewRedlock(clients []redis.UniversalClient, opt *Options) *Redlock {
	cfg, err := opt.resolve()
	if err == nil && len(clients) == 0 {
		err = fmt.Errorf("lock: NewRedlock: no clients")
	}
	nodes := make([]*node, len(clients))
	for i, rdb := range clients {
		if err == nil && rdb == nil {
			err = fmt.Errorf("lock: NewRedlock: client %d is nil", i)
		}
		nodes[i] = newNode(rdb, false)
	}
	// No queue: each node would hand the lock to its own first waiter, and no waiter might get a
	// quorum. Releases publish "" and every waiter tries again.
	return &Redlock{g: group{nodes: nodes, quorum: len(clients)/2 + 1, cfg: cfg, err: err, now: time.Now, publish: "publish"}}
}

// Obtain is [Client.Obtain] across the nodes: it succeeds when a quorum granted the lock within
// its validity, and otherwise releases the lock on every node before retrying or returning an
// error wrapping [ErrNotObtained] (and the node errors met, and ctx.Err() when ctx ended the
// wait). Node errors do not end a wait early: the nodes may come back.
func (r *Redlock) Obtain(ctx context.Context, key string, ttl time.Duration, opt *ObtainOptions) (*Lock, error) {
	return r.g.obtain(ctx, key, ttl, opt, nil)
}

// Do is [Client.Do] across the nodes.
func (r *Redlock) Do(ctx context.Context, key string, ttl time.Duration, opt *ObtainOptions, fn func(ctx context.Context) error) error {
	return r.g.do(ctx, key, ttl, opt, fn)
}

func (g *group) acquireQuorum(ctx context.Context, l *Lock, ttl time.Duration, start time.Time) attempt {
	timeout := g.cfg.nodeTimeoutFor(ttl)
	replies := make([]int64, len(g.nodes))
	ok, errs := g.each(ctx, timeout, l, opAcquire, ttl.Milliseconds(), isFence, replies)

	until := start.Add(ttl - g.drift(ttl))
	if ok >= g.quorum && g.now().Before(until) {
		// Raise every granting node's counter to the fence handed out, so that any later quorum,
		// which shares a node with this one, draws a higher fence.
		fence := slices.Max(replies)
		raised, rerrs := g.each(ctx, timeout, l, opFence, fence, nil, nil)
		if raised >= g.quorum && g.now().Before(until) {
			l.granted(fence, until)
			return attempt{ok: true}
		}
		errs = append(errs, rerrs...)
	}
	if ok > 0 || len(errs) > 0 {
		// A node may have granted the lock even if its answer was lost: release everywhere.
		g.each(context.WithoutCancel(ctx), timeout, l, opRelease, 0, nil, nil)
	}
	var pttl time.Duration
	for _, n := range replies {
		if d := time.Duration(-n) * time.Millisecond; d > 0 && (pttl == 0 || d < pttl) {
			pttl = d
		}
	}
	return attempt{retry: true, pttl: pttl, errs: errs, err: notObtained(l.key, nil, errs)}
}

// each runs op for l on every node and counts the nodes whose reply satisfies accept (default: reply
// == 1); out, when not nil, receives each node's reply. With several nodes the calls run in
// parallel and each returns within timeout (or when ctx ends): a node that has not answered by
// then counts as an error, and its call is left to finish on its own (it is bounded by the
// client's own timeouts; its late answer is dropped), so one hung node cannot hold up a round.
func (g *group) each(ctx context.Context, timeout time.Duration, l *Lock, o op, arg int64,
	accept func(int64) bool, out []int64) (ok int, errs []error) {
	if accept == nil {
		accept = isOne
	}
	if len(g.nodes) == 1 {
		n, err := l.run(ctx, g.nodes[0].rdb, o, arg)
		if err != nil {
			return 0, []error{err}
		}
		if out != nil {
			out[0] = n
		}
		if accept(n) {
			return 1, nil
		}
		return 0, nil
	}
	type reply struct {
		i   int
		n   int64
		err error
	}
	replies := make(chan reply, len(g.nodes)) // buffered: a straggler's send never blocks
	for i, nd := range g.nodes {
		go func() {
			nctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			n, err := l.run(nctx, nd.rdb, o, arg)
			replies <- reply{i, n, err}
		}()
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	answered := make([]bool, len(g.nodes))
	for range g.nodes {
		var r reply
		select {
		case r = <-replies:
		case <-timer.C:
			return ok, append(errs, unanswered(answered, fmt.Errorf("no answer within %v", timeout))...)
		case <-ctx.Done():
			return ok, append(errs, unanswered(answered, ctx.Err())...)
		}
		answered[r.i] = true
		switch {
		case r.err != nil && ctx.Err() == nil && errors.Is(r.err, context.DeadlineExceeded):
			// The node timeout, not the caller's context: do not let it match ctx errors.
			errs = append(errs, fmt.Errorf("node %d: no answer within %v", r.i, timeout))
		case r.err != nil:
			errs = append(errs, fmt.Errorf("node %d: %w", r.i, r.err))
		case accept(r.n):
			ok++
			fallthrough
		default:
			if out != nil {
				out[r.i] = r.n
			}
		}
	}
	return ok, errs
}

// unanswered returns err for each node that has not answered.
func unanswered(answered []bool, err error) []error {
	var errs []error
	for i, a := range answered {
		if !a {
			errs = append(errs, fmt.Errorf("node %d: %w", i, err))
		}
	}
	return errs
}

func isOne(n int64) bool     { return n == 1 }
func isFence(n int64) bool   { return n > 0 }
func isHeldTTL(n int64) bool { return n != ttlNotHeld }
