package lock

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/surgekit/surge/internal/keys"
)

// Client obtains locks on one Redis deployment: a single server, a Sentinel-managed primary or a
// Redis Cluster. It is safe for concurrent use. It starts no goroutine of its own except while
// Obtain waits (one pub/sub reader shared by all its waiters; on a Redis Cluster one per
// awaited lock, over sharded pub/sub) and one watchdog per auto-renewed lock; there is nothing
// to close.
type Client struct {
	g group // one node, quorum 1
}

// New returns a Client on rdb. It never fails: invalid opt is reported by every Obtain and Do
// with an error wrapping [ErrInvalidOptions] that names the bad field, and a nil rdb with an
// error saying so. rdb is not closed by the Client.
func New(rdb redis.UniversalClient, opt *Options) *Client {
	cfg, err := opt.resolve()
	if err == nil && rdb == nil {
		err = errors.New("lock: New: nil redis client")
	}
	_, sharded := rdb.(*redis.ClusterClient)
	c := &Client{g: group{nodes: []*node{newNode(rdb, sharded)}, quorum: 1, cfg: cfg, err: err, now: time.Now, publish: "publish"}}
	if sharded {
		c.g.publish = "spublish"
	}
	if cfg.waitReplicas == 0 {
		// A lock handed over by a release would skip the WAIT of WaitReplicas: queue only without.
		c.g.queueLease = queueLease
		// Queued waiters name this hub, so that a release by this Client tells its own waiters
		// of a hand-over from the reply, without a message.
		c.g.local = &c.g.nodes[0].hub
		c.g.local.id = rand.Text()
		c.g.gates = &gates{m: make(map[string]*gate)}
	}
	return c
}

// queueLease is how long a waiter's place in a lock's queue lasts unless it renews it (every
// queueLease/2 while it waits): a waiter that died without leaving the queue is skipped after
// at most this long.
const queueLease = 2 * time.Second

// Obtain tries to acquire the lock named key for ttl (at least 1ms; Redis keeps whole
// milliseconds, and a fraction of one is dropped). With opt.Wait > 0 it
// blocks until it acquires, the wait runs out or ctx ends: waiters queue in arrival order (the
// goroutines of one Client in process, one of them at a time in Redis, so fairness between
// processes is per Client) and the holder's release hands the lock to the first of them (see
// [ObtainOptions.Wait]). A lock obtained with a wait keeps its Client's turn for the key until
// it is released or lost: a goroutine that obtains the key again on the same Client while it
// holds it waits for itself until its lock is lost. It returns an error wrapping [ErrNotObtained] when someone else kept
// the lock (also wrapping ctx.Err() when ctx ended the wait), [ErrNotReplicated] (see
// [Options.WaitReplicas]), or the Redis error met. Each successful Obtain draws a new
// [Lock.Fence]. With opt.AutoRenew the returned lock owns a watchdog until [Lock.Release].
func (c *Client) Obtain(ctx context.Context, key string, ttl time.Duration, opt *ObtainOptions) (*Lock, error) {
	return c.g.obtain(ctx, key, ttl, opt, nil)
}

// Do obtains the lock as [Client.Obtain] does, always with the watchdog, runs fn, and releases
// the lock. fn's context carries the lock ([FromContext]); its Deadline is the lock's validity
// as the holder knows it (last successful acquisition or renewal, plus ttl, minus drift), moved
// on by each renewal, and it is cancelled, with cause [ErrLost], as soon as the lock is known
// lost (a renewal found it gone, or that validity ran out while renewals failed or hung,
// whatever the client's timeouts), and when ctx ends. The release runs on
// context.WithoutCancel(ctx), so a cancelled ctx does not leave the lock held. Do returns the Obtain error, or fn's error joined with the release error
// (which wraps [ErrNotHeld] when the lock was lost meanwhile). A panic in fn releases the lock
// and propagates.
func (c *Client) Do(ctx context.Context, key string, ttl time.Duration, opt *ObtainOptions, fn func(ctx context.Context) error) error {
	return c.g.do(ctx, key, ttl, opt, fn)
}

// node is one Redis deployment a group acquires on, with the pub/sub hub its waiters share.
type node struct {
	rdb redis.UniversalClient
	hub hub
}

func newNode(rdb redis.UniversalClient, sharded bool) *node {
	return &node{rdb: rdb, hub: hub{sharded: sharded}}
}

// group is the acquisition logic Client and Redlock share: a set of independent nodes and the
// quorum among them (a Client is a group of one node, quorum 1).
//
// Acquiring, from the top: obtain makes the Lock and calls acquireRound, then wait, which calls
// acquireRound again on each wake-up. acquireRound is one acquisition round: on a single node it
// runs acquire.lua (Lock.runAcquire, or acquireReplicated with WaitReplicas); on several it
// is acquireQuorum, which runs acquire.lua on every node in parallel and counts the grants.
type group struct {
	nodes   []*node
	quorum  int
	cfg     config
	err     error  // from New or NewRedlock: returned by every Obtain and Do
	publish string // "publish", or "spublish" for a Redis Cluster client (sharded pub/sub)
	// queueLease > 0 (single node, no WaitReplicas) makes waiters queue, and releases hand the
	// lock over to the first live waiter.
	queueLease time.Duration
	// local is the hub of the queued waiters (nil without queue): a release hands the lock to a
	// waiter of this hub through it, with no pub/sub message.
	local *hub
	// gates (single node, no WaitReplicas) let one goroutine of the Client at a time contend for
	// a key in Redis; nil elsewhere.
	gates *gates
	now   func() time.Time // tests move the clock

	beforeSubscribe func() // tests: runs between the failed first try and the subscription
}

// drift is the validity a lock loses to clock drift and, across several nodes, network delays.
func (g *group) drift(ttl time.Duration) time.Duration {
	if len(g.nodes) == 1 {
		return ttl / 100
	}
	return ttl/100 + 2*time.Millisecond
}

// handedOver is the validity of a lock handed over whose ttl started no earlier than from, and
// whether it is worth taking: only with more than half of the ttl left, else a round renews it.
func (g *group) handedOver(from time.Time, ttl time.Duration) (until time.Time, ok bool) {
	until = from.Add(ttl - g.drift(ttl))
	return until, until.Sub(g.now()) > ttl/2
}

func (g *group) do(ctx context.Context, key string, ttl time.Duration, opt *ObtainOptions, fn func(ctx context.Context) error) (err error) {
	if fn == nil {
		return fmt.Errorf("lock: do %q: nil function", key)
	}
	o := ObtainOptions{}
	if opt != nil {
		o = *opt
	}
	o.AutoRenew = true
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	l, err := g.obtain(ctx, key, ttl, &o, func() {
		cancel(fmt.Errorf("lock: %q: %w", key, ErrLost))
	})
	if err != nil {
		return err
	}
	defer func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), max(ttl, time.Second))
		defer rcancel()
		err = errors.Join(err, l.Release(rctx))
	}()
	return fn(&lockContext{Context: cctx, l: l})
}

type lockCtxKey struct{}

// lockContext is the context Do gives fn: cancelled (cause ErrLost) when the lock is lost, with
// the lock's current validity as deadline, moved on by each renewal. The validity timer cancels
// it; a context derived from it with a later deadline ends with it.
type lockContext struct {
	context.Context
	l *Lock
}

func (c *lockContext) Deadline() (time.Time, bool) {
	until := c.l.validity()
	if d, ok := c.Context.Deadline(); ok && d.Before(until) {
		return d, true
	}
	return until, true
}

func (c *lockContext) Value(key any) any {
	if key == (lockCtxKey{}) {
		return c.l
	}
	return c.Context.Value(key)
}

// FromContext returns the lock held by the [Client.Do] or [Redlock.Do] whose function received
// ctx (or a context derived from it), for its Fence, Token and Lost; nil elsewhere.
func FromContext(ctx context.Context) *Lock {
	l, _ := ctx.Value(lockCtxKey{}).(*Lock)
	return l
}

// obtain is Obtain (and Do's acquisition), counted in surge.lock.acquisitions.
func (g *group) obtain(ctx context.Context, key string, ttl time.Duration, opt *ObtainOptions, onLost func()) (*Lock, error) {
	l, err := g.acquire(ctx, key, ttl, opt, onLost)
	g.cfg.tel.acquired(ctx, err)
	return l, err
}

func (g *group) acquire(ctx context.Context, key string, ttl time.Duration, opt *ObtainOptions, onLost func()) (*Lock, error) {
	if g.err != nil {
		return nil, g.err
	}
	if err := checkArgs("obtain", key, ttl, opt); err != nil {
		return nil, err
	}
	// Redis keeps whole milliseconds (PX): the validity counts no more than the key lives.
	ttl = ttl.Truncate(time.Millisecond)
	if err := ctx.Err(); err != nil {
		return nil, notObtained(key, err, nil)
	}
	var o ObtainOptions
	if opt != nil {
		o = *opt
	}
	lockKey := keys.Tagged(g.cfg.prefix, key)
	l := &Lock{
		g:       g,
		key:     key,
		keys:    [4]string{lockKey, lockKey + ":fence", lockKey + ":queue", lockKey + ":waiters"},
		channel: releaseChannel(lockKey),
		token:   rand.Text(),
		meta:    o.Metadata,
		ttl:     ttl,
		onLost:  onLost,
	}

	var lease time.Duration
	var begin time.Time // of a call that may wait: its span and surge.lock.wait.duration start here
	if o.Wait > 0 {
		lease = g.queueLease // queue at once: a release may hand the lock over before we subscribe
		begin = time.Now()
	}
	// A wait (at the gate, then in Redis) has a span and a duration, backdated to begin.
	var wctx context.Context
	var span trace.Span
	gated := o.Wait > 0 && g.gates != nil
	if gated {
		start := g.now()
		gr, ok, queued := g.gates.enter(ctx, l, start.Add(o.Wait))
		if queued {
			wctx, span = g.cfg.tel.startWait(ctx, key, begin)
		}
		if !ok {
			att := attempt{err: notObtained(key, ctx.Err(), nil)}
			if span != nil {
				g.cfg.tel.waited(wctx, span, begin, l, att)
			}
			return nil, att.err
		}
		if gr.fence > 0 {
			// Handed over by the release of the goroutine before us, sent at gr.at: the lock's
			// ttl started after it. With less than half of it left, a round renews it.
			if until, ok := g.handedOver(gr.at, ttl); ok {
				l.granted(gr.fence, until)
				if span != nil {
					g.cfg.tel.waited(wctx, span, begin, l, attempt{ok: true})
				}
				return g.gatedObtained(l, &o), nil
			}
		}
		if o.Wait -= g.now().Sub(start); o.Wait <= 0 {
			o.Wait = time.Nanosecond // one round, as the rest of the wait
		}
	}
	att := g.acquireRound(ctx, l, ttl, lease)
	if !att.ok && att.retry && o.Wait > 0 {
		if span == nil {
			wctx, span = g.cfg.tel.startWait(ctx, key, begin)
		}
		att = g.wait(wctx, l, ttl, &o, att)
	}
	if !att.ok && att.err == nil { // held by another: the error is built only when it is returned
		att.err = notObtained(l.key, nil, att.errs)
	}
	if span != nil {
		g.cfg.tel.waited(wctx, span, begin, l, att)
	}
	if !att.ok {
		if gated {
			l.leaveGate()
		}
		return nil, att.err
	}
	if gated {
		return g.gatedObtained(l, &o), nil
	}
	if o.AutoRenew {
		l.startWatchdog()
	}
	return l, nil
}

// gatedObtained finishes an Obtain that holds its Client's gate for the key: the Client's gate
// timer passes the gate on if the lock's validity runs out before it is released, whoever
// observes it, and whether or not anyone waits for the gate.
func (g *group) gatedObtained(l *Lock, o *ObtainOptions) *Lock {
	l.obtainedGated()
	if o.AutoRenew {
		l.startWatchdog()
	}
	return l
}

// attempt is the outcome of one acquisition round.
type attempt struct {
	ok    bool
	retry bool          // not acquired, but waiting may help (held by another, or Redlock node errors)
	pttl  time.Duration // holder's remaining ttl when known, else 0
	err   error         // why not: ErrNotObtained-wrapping (nil when only held by another), a Redis error or a validation error
	errs  []error       // Redlock: node errors of this round

	// Queued on a single node: when the round started and the fence counter it saw. A hand-over
	// message with a higher fence came after this round, so the lock's ttl started after start.
	start   time.Time
	counter int64
}

// acquireRound runs one acquisition round on every node, queueing the lock's token for lease
// (single node only); on success it fills l.fence and the validity.
func (g *group) acquireRound(ctx context.Context, l *Lock, ttl, lease time.Duration) attempt {
	start := g.now()
	if len(g.nodes) > 1 {
		return g.acquireQuorum(ctx, l, ttl, start)
	}
	n := g.nodes[0]
	var gr grant
	var err error
	if g.cfg.waitReplicas > 0 {
		gr, err = n.acquireReplicated(ctx, l, ttl, &g.cfg)
	} else {
		gr, err = l.runAcquire(ctx, n.rdb, ttl, lease)
	}
	switch {
	case err != nil:
		// The script may have run although no answer came (cancelled, timed out, connection lost
		// after the write): give the key (and the place in the queue) back, best effort, rather
		// than orphan it for a full ttl.
		g.giveBack(ctx, l)
		return attempt{err: fmt.Errorf("lock: obtain %q: %w", l.key, err)}
	case gr.fence == 0: // err is left to the caller: a waiter tries again
		return attempt{retry: true, pttl: gr.pttl, start: start, counter: gr.counter}
	}
	l.granted(gr.fence, start.Add(ttl-g.drift(ttl)))
	return attempt{ok: true}
}

// giveBack releases l on a single node, best effort and bounded even when ctx ended: after an
// acquisition without answer, and when a queued waiter gives up (release.lua also takes it out
// of the queue, and hands the lock on if it was handed to it meanwhile).
func (g *group) giveBack(ctx context.Context, l *Lock) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.nodeTimeoutFor(l.ttl))
	defer cancel()
	_, _ = l.run(rctx, g.nodes[0].rdb, opRelease, 0)
}
