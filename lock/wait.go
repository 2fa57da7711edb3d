package lock

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// wait retries the acquisition until it succeeds, o.Wait runs out or ctx ends. It subscribes to
// the release channel first and retries once the subscription is confirmed, so a release that
// happens after the failed try always wakes it; the backoff timer, capped by the holder's PTTL,
// covers expiries and lost messages.
func (g *group) wait(ctx context.Context, l *Lock, ttl time.Duration, o *ObtainOptions, att attempt) attempt {
	deadline := g.now().Add(o.Wait)
	backoff := o.Backoff
	if backoff == nil {
		backoff = defaultBackoff
	}
	w := &waiter{wake: make(chan struct{}, 1)}
	ch := releaseChannel(l.keys[0])
	if g.beforeSubscribe != nil {
		g.beforeSubscribe()
	}
	for _, c := range g.nodes {
		c.hub.join(ctx, c.rdb, ch, w)
	}
	defer func() {
		for _, c := range g.nodes {
			c.hub.leave(ch, w)
		}
	}()
	timer := time.NewTimer(time.Hour) // reset before every wait
	defer timer.Stop()
	for n := 0; ; n++ {
		left := deadline.Sub(g.now())
		if left <= 0 {
			return attempt{err: notObtained(l.key, nil, att.errs)}
		}
		d := backoff(n)
		if att.pttl > 0 && att.pttl < d {
			d = att.pttl
		}
		timer.Reset(min(d, left))
		select {
		case <-ctx.Done():
			return attempt{err: notObtained(l.key, ctx.Err(), att.errs)}
		case <-w.wake:
		case <-timer.C:
		}
		att = g.acquire(ctx, l, ttl)
		switch {
		case att.ok:
			return att
		case ctx.Err() != nil: // ended during the try
			return attempt{err: notObtained(l.key, ctx.Err(), nil)}
		case !att.retry:
			return att
		}
	}
}

// hub multiplexes the release channels of all of a Client's waiters over one pub/sub
// connection, opened by the first waiter and closed (its reader goroutine waited for) by the
// last one to leave.
type hub struct {
	mu    sync.Mutex
	ps    *redis.PubSub
	done  chan struct{} // closed when the reader goroutine of ps has exited
	chans map[string]*subscription
}

type subscription struct {
	waiters []*waiter
	pending int // SUBSCRIBE commands sent and not yet confirmed
}

// waiter is one waiting Obtain; wake is signalled (without blocking) on a release message and on
// subscription confirmation: both mean "try again now".
type waiter struct{ wake chan struct{} }

func (w *waiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// join adds w to the waiters of channel, subscribing when it is the first. w is signalled once
// the subscription is known active.
func (h *hub) join(ctx context.Context, rdb redis.UniversalClient, channel string, w *waiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.chans[channel]
	if s == nil {
		s = &subscription{pending: 1}
		if h.chans == nil {
			h.chans = make(map[string]*subscription)
		}
		h.chans[channel] = s
		if h.ps == nil {
			// A write error here is healed by go-redis, which reconnects and resubscribes; the
			// backoff timer covers the meantime.
			h.ps = rdb.Subscribe(context.WithoutCancel(ctx), channel) // shared: not this waiter's ctx
			h.done = make(chan struct{})
			go h.read(h.ps.ChannelWithSubscriptions(redis.WithChannelSize(64)), h.done)
		} else {
			_ = h.ps.Subscribe(context.WithoutCancel(ctx), channel)
		}
	}
	s.waiters = append(s.waiters, w)
	if s.pending == 0 {
		w.signal()
	}
}

// leave removes w; the last waiter of a channel unsubscribes, and the last waiter of the hub
// closes the connection and waits for the reader goroutine.
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
	if len(s.waiters) > 0 {
		h.mu.Unlock()
		return
	}
	delete(h.chans, channel)
	if len(h.chans) > 0 {
		_ = h.ps.Unsubscribe(context.Background(), channel)
		h.mu.Unlock()
		return
	}
	ps, done := h.ps, h.done
	h.ps, h.done = nil, nil
	h.mu.Unlock()
	_ = ps.Close()
	<-done
}

// read dispatches pub/sub traffic until the connection is closed. A subscription confirmation
// (also after go-redis reconnected and resubscribed, when messages may have been missed) wakes
// the channel's waiters, as a release message does.
func (h *hub) read(msgs <-chan any, done chan struct{}) {
	defer close(done)
	for m := range msgs {
		switch m := m.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				h.notify(m.Channel, true)
			}
		case *redis.Message:
			h.notify(m.Channel, false)
		}
	}
}

func (h *hub) notify(channel string, confirmed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.chans[channel]
	if s == nil {
		return
	}
	if confirmed && s.pending > 0 {
		s.pending--
		if s.pending > 0 {
			return
		}
	}
	for _, w := range s.waiters {
		w.signal()
	}
}
