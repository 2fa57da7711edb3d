package lock

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// wait retries the acquisition until it succeeds, o.Wait runs out or ctx ends. It subscribes to
// the release channel first and retries once the subscription is confirmed, so a release that
// happens after the failed try always wakes it; the backoff timer, capped by the holder's PTTL
// (and, while queued, by half the queue lease, to renew the place), covers expiries and lost
// messages. On a single node the waiter is queued: a release hands the lock over to the first
// live waiter and names it (in its reply, when this Client released, else in its message), and
// that waiter holds the lock without another call.
// A waiter that gives up leaves the queue (and hands on a lock handed to it meanwhile).
func (g *group) wait(ctx context.Context, l *Lock, ttl time.Duration, o *ObtainOptions, att attempt) attempt {
	deadline := g.now().Add(o.Wait)
	backoff := o.Backoff
	if backoff == nil {
		backoff = defaultBackoff
	}
	w := &waiter{token: l.token, wake: make(chan struct{}, 1)}
	ch := l.channel
	if g.beforeSubscribe != nil {
		g.beforeSubscribe()
	}
	var queuedAt time.Time // when queued, the subscription may spare the first retry
	if g.queueLease > 0 {
		queuedAt = att.start
	}
	if len(g.nodes) == 1 {
		n := g.nodes[0]
		n.hub.join(ctx, n.rdb, ch, w, queuedAt)
		defer n.hub.leave(ch, w)
	} else {
		// Redlock: subscribing on a hung node blocks for the client's timeouts, and must not hold
		// up the wait (the other nodes make the quorum). Each node joins and, once the wait is
		// over, leaves in the background.
		over := make(chan struct{})
		defer close(over)
		for _, n := range g.nodes {
			go func() {
				n.hub.join(ctx, n.rdb, ch, w, queuedAt)
				<-over
				n.hub.leave(ch, w)
			}()
		}
	}
	giveUp := func(err error) attempt {
		if g.queueLease > 0 {
			g.giveBack(ctx, l)
		}
		return attempt{err: err}
	}
	timer := time.NewTimer(time.Hour) // reset before every wait
	defer timer.Stop()
	for n := 0; ; n++ {
		left := deadline.Sub(g.now())
		if left <= 0 {
			return giveUp(notObtained(l.key, nil, att.errs))
		}
		var d time.Duration
		if queued := g.queueLease > 0 && !att.start.IsZero(); queued {
			// The release hands the lock over and names us: no polling. Look again at the
			// holder's expiry, and in time to renew our place in the queue.
			d = g.queueLease / 2
		} else {
			d = backoff(n)
		}
		if att.pttl > 0 && att.pttl < d {
			d = att.pttl
		}
		timer.Reset(min(d, left))
		w.parked.Store(true)
		var ended bool
		select {
		case <-ctx.Done():
			ended = true
		case <-w.wake:
		case <-timer.C:
		}
		// Not parked any more, then take the hand-over, if any: in this order, a releaser that
		// waits for us to take it (see hub.handOver) is never left waiting.
		w.parked.Store(false)
		ho := w.handedOver.Swap(nil)
		ho.taken()
		if ended {
			return giveUp(notObtained(l.key, ctx.Err(), att.errs))
		}
		if ho != nil && ho.fence > att.counter && !att.start.IsZero() {
			// Handed over after our last round, which started at att.start, and (told by a
			// release of this Client) after that release was sent at ho.at: the lock's ttl
			// started after both. With less than half of it left, the next round renews it.
			from := att.start
			if ho.at.After(from) {
				from = ho.at
			}
			if until, ok := g.handedOver(from, ttl); ok {
				l.granted(ho.fence, until)
				return attempt{ok: true}
			}
		}
		att = g.acquireRound(ctx, l, ttl, g.queueLease)
		switch {
		case att.ok:
			return att
		case ctx.Err() != nil: // ended during the try
			return giveUp(notObtained(l.key, ctx.Err(), nil))
		case !att.retry:
			return att // acquireRound gave the key back
		}
	}
}

// hub multiplexes the release channels of all of a node's waiters. With plain pub/sub it uses one
// connection, opened by the first waiter and closed (its reader goroutine waited for) by the last
// one to leave. With sharded pub/sub (Redis Cluster: a shard channel is served by the node owning
// its slot) each channel has its own connection and reader, for as long as it has waiters.
type hub struct {
	sharded bool
	id      string // named by the waiters it queues (see acquire.lua); "" when they do not queue

	// dropMessage, set by tests before the first waiter joins, discards the release messages
	// it returns true for, as if pub/sub had lost them.
	dropMessage func(payload string) bool

	mu    sync.Mutex
	ps    *redis.PubSub // plain pub/sub: shared by every channel
	done  chan struct{} // closed when the reader goroutine of ps has exited
	chans map[string]*subscription
}

type subscription struct {
	waiters  []*waiter
	pending  int           // SUBSCRIBE commands sent and not yet confirmed
	activeAt time.Time     // when the subscription was last confirmed
	ps       *redis.PubSub // sharded: this channel's own connection
	done     chan struct{}
	// The last hand-overs to tokens without a waiter here yet: a waiter queued by its first try
	// may be handed the lock before it joins.
	recent [16]handover
	next   int
}

// handover is a release's hand-over of the lock to the waiter with token, at fence. at is when
// the release was sent, when known (a release of this Client), else zero.
type handover struct {
	token string
	fence int64
	at    time.Time
	ack   chan struct{} // when not nil, closed once the waiter took the hand-over (or left)
}

// taken closes ho's ack, if any; ho may be nil. Only who took ho out of waiter.handedOver calls it.
func (ho *handover) taken() {
	if ho != nil && ho.ack != nil {
		close(ho.ack)
	}
}

// waiter is one waiting Obtain. wake is signalled (without blocking) on subscription confirmation,
// on a release message that lets anyone try, and on a hand-over naming its token, which is then
// in handedOver: all mean "look again now".
type waiter struct {
	token      string
	wake       chan struct{}
	handedOver atomic.Pointer[handover]
	parked     atomic.Bool // in its select: a hand-over wakes it at once
}

func (w *waiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// join adds w to the waiters of channel, subscribing when it is the first. w is signalled once
// the subscription is known active, so that it looks again: a release between its failed try and
// the subscription sent no message it could receive. A waiter queued by a try that started at
// queuedAt, after the subscription was confirmed active, needs no such look: every release after
// its try hands the lock to a queued waiter, and the message reached this hub; if it named w,
// join finds it among the recent hand-overs.
func (h *hub) join(ctx context.Context, rdb redis.UniversalClient, channel string, w *waiter, queuedAt time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.chans[channel]
	if s == nil {
		s = &subscription{pending: 1}
		if h.chans == nil {
			h.chans = make(map[string]*subscription)
		}
		h.chans[channel] = s
		// A write error here is healed by go-redis, which reconnects and resubscribes; the
		// backoff timer covers the meantime. The connection is shared: not this waiter's ctx.
		sctx := context.WithoutCancel(ctx)
		switch {
		case h.sharded:
			s.ps = rdb.SSubscribe(sctx, channel)
			s.done = make(chan struct{})
			go h.read(s.ps.ChannelWithSubscriptions(redis.WithChannelSize(64)), s.done)
		case h.ps == nil:
			h.ps = rdb.Subscribe(sctx, channel)
			h.done = make(chan struct{})
			go h.read(h.ps.ChannelWithSubscriptions(redis.WithChannelSize(64)), h.done)
		default:
			_ = h.ps.Subscribe(sctx, channel)
		}
	}
	s.waiters = append(s.waiters, w)
	switch {
	case s.pending > 0: // the confirmation will signal
	case queuedAt.IsZero() || !s.activeAt.Before(queuedAt):
		w.signal()
	default:
		for i := range s.recent {
			if s.recent[i].token == w.token {
				ho := s.recent[i]
				w.handedOver.Store(&ho)
				w.signal()
			}
		}
	}
}

// leave removes w; the last waiter of a channel unsubscribes, and the last waiter of a connection
// closes it and waits for its reader goroutine.
func (h *hub) leave(channel string, w *waiter) {
	h.mu.Lock()
	s := h.chans[channel]
	if s == nil {
		h.mu.Unlock()
		return
	}
	for i, x := range s.waiters {
		if x == w {
			s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
			break
		}
	}
	w.handedOver.Swap(nil).taken() // no hand-over reaches w from now on
	if len(s.waiters) > 0 {
		h.mu.Unlock()
		return
	}
	delete(h.chans, channel)
	var ps *redis.PubSub
	var done chan struct{}
	switch {
	case s.ps != nil:
		ps, done = s.ps, s.done
	case len(h.chans) > 0:
		_ = h.ps.Unsubscribe(context.Background(), channel)
	default:
		ps, done = h.ps, h.done
		h.ps, h.done = nil, nil
	}
	h.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
		<-done
	}
}

// read dispatches pub/sub traffic until the connection is closed. A subscription confirmation
// (also after go-redis reconnected and resubscribed, when messages may have been missed) wakes
// the channel's waiters, as a release message does.
func (h *hub) read(msgs <-chan any, done chan struct{}) {
	defer close(done)
	for m := range msgs {
		switch m := m.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" || m.Kind == "ssubscribe" {
				h.confirmed(m.Channel)
			}
		case *redis.Message:
			if h.dropMessage != nil && h.dropMessage(m.Payload) {
				continue
			}
			h.released(m.Channel, m.Payload)
		}
	}
}

func (h *hub) confirmed(channel string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.chans[channel]
	if s == nil {
		return
	}
	if s.pending > 0 {
		s.pending--
		if s.pending > 0 {
			return
		}
	}
	s.activeAt = time.Now()
	for _, w := range s.waiters {
		w.signal()
	}
}

// released handles a release message: "" wakes every waiter (the lock is free), "<token>:<fence>"
// only the waiter the lock was handed over to.
func (h *hub) released(channel, payload string) {
	if token, f := parseHandover(payload); f > 0 {
		h.handOver(channel, handover{token: token, fence: f}, false)
	} else {
		h.wakeAll(channel) // "" or not ours to read: wake everyone, they will look
	}
}

// parseHandover reads release.lua's "<token>:<fence>" (its message, or its reply to a release of
// the waiter's Client); fence is 0 when s is not one.
func parseHandover(s string) (token string, fence int64) {
	token, f, ok := strings.Cut(s, ":")
	n, err := strconv.ParseInt(f, 10, 64)
	if !ok || err != nil || n <= 0 {
		return "", 0
	}
	return token, n
}

// handOver tells the waiter of channel with ho's token that it holds the lock. A waiter that has
// not joined yet finds it among the recent hand-overs when it joins (or, when the channel has no
// subscription yet, looks again once its subscription is confirmed).
//
// With ack (a release of this Client), when the waiter is parked waiting, handOver returns a
// channel closed as soon as the waiter took the hand-over; otherwise nil. A releaser that waits
// on it lets the waiter run at once: woken by the releaser, the waiter would otherwise wait
// for the releaser's next blocking call (it goes first on the releaser's processor). The waiter
// takes the hand-over right after its wait ends, whatever ended it, so the channel is closed as
// soon as it runs.
func (h *hub) handOver(channel string, ho handover, ack bool) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.chans[channel]
	if s == nil {
		return nil
	}
	for _, w := range s.waiters {
		if w.token == ho.token {
			if ack {
				ho.ack = make(chan struct{})
			}
			w.handedOver.Swap(&ho).taken()
			w.signal()
			if ack && !w.parked.Load() {
				// Busy (or about to be): it takes the hand-over when it next waits. Its taking
				// closes ack, which nobody waits for.
				return nil
			}
			return ho.ack
		}
	}
	s.recent[s.next] = ho
	s.next = (s.next + 1) % len(s.recent)
	return nil
}

// wakeAll makes every waiter of channel look again.
func (h *hub) wakeAll(channel string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.chans[channel]; s != nil {
		for _, w := range s.waiters {
			w.signal()
		}
	}
}
