package cache

import (
	"context"
	"encoding/binary"
	"errors"

	"github.com/redis/go-redis/v9"
)

// Notices travel on the cache's pub/sub channel:
//
//	byte 0        kind: noticeInvalidate (Set/Delete) or noticeFilled (a leased load landed)
//	uvarint+bytes sender instance id (a process ignores its own notices)
//	uvarint+bytes each key, repeated
const (
	noticeInvalidate = 'i'
	noticeFilled     = 'f'
)

var errNotice = errors.New("cache: bad notice")

func encodeNotice(kind byte, id string, keys []string) string {
	n := 1 + binary.MaxVarintLen64 + len(id)
	for _, k := range keys {
		n += binary.MaxVarintLen64 + len(k)
	}
	b := make([]byte, 0, n)
	b = append(b, kind)
	b = binary.AppendUvarint(b, uint64(len(id)))
	b = append(b, id...)
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
	}
	return string(b)
}

func decodeNotice(s string) (kind byte, id string, keys []string, err error) {
	if len(s) == 0 || (s[0] != noticeInvalidate && s[0] != noticeFilled) {
		return 0, "", nil, errNotice
	}
	kind, s = s[0], s[1:]
	next := func() (string, bool) {
		n, w := binary.Uvarint([]byte(s[:min(len(s), binary.MaxVarintLen64)]))
		if w <= 0 || n > uint64(len(s)-w) {
			return "", false
		}
		out := s[w : w+int(n)]
		s = s[w+int(n):]
		return out, true
	}
	id, ok := next()
	if !ok {
		return 0, "", nil, errNotice
	}
	for len(s) > 0 {
		k, ok := next()
		if !ok {
			return 0, "", nil, errNotice
		}
		keys = append(keys, k)
	}
	return kind, id, keys, nil
}

// subscriber is the goroutine listening on the cache's channel.
type subscriber struct {
	ps    *redis.PubSub
	ready chan struct{} // closed at the first subscription confirmation
}

// startSubscriberLocked starts the listener once; c.mu must be held.
func (c *Cache[V]) startSubscriberLocked() {
	if c.sub != nil || c.closing {
		return
	}
	// No channel yet: Subscribe without channels does no I/O, so a dead Redis does not block
	// here; the goroutine subscribes, and go-redis re-subscribes after every reconnect.
	s := &subscriber{ps: c.rdb.Subscribe(context.Background()), ready: make(chan struct{})}
	c.sub = s
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.listen(s)
	}()
}

func (c *Cache[V]) listen(s *subscriber) {
	// An error here is a dead Redis or a closed PubSub: the channel is recorded either way, and
	// the receive loop below connects (again) until Close.
	_ = s.ps.Subscribe(context.Background(), c.cfg.channel)
	subscribed := false
	for m := range s.ps.ChannelWithSubscriptions(redis.WithChannelSize(1024)) {
		switch m := m.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if subscribed {
				// A confirmation again means go-redis reconnected and re-subscribed: notices
				// sent meanwhile are lost, so nothing local can be trusted.
				c.flushLocal()
				continue
			}
			subscribed = true
			close(s.ready)
		case *redis.Message:
			c.handleNotice(m.Payload)
		}
	}
}

func (c *Cache[V]) handleNotice(payload string) {
	kind, id, keys, err := decodeNotice(payload)
	if err != nil {
		c.cfg.Logger.Warn("cache: ignoring bad notice", "channel", c.cfg.channel, "err", err)
		return
	}
	if id == c.id {
		return
	}
	if kind == noticeInvalidate {
		c.epoch.Add(1)
		c.st.invalidations.Add(1)
		if c.local != nil {
			for _, k := range keys {
				c.local.Invalidate(k)
			}
		}
	}
	c.mu.Lock()
	for _, k := range keys {
		if ch, ok := c.waiters[k]; ok {
			wake(ch)
		}
	}
	c.mu.Unlock()
}

// flushLocal empties the local tier and wakes every lease waiter.
func (c *Cache[V]) flushLocal() {
	c.epoch.Add(1)
	c.st.localFlushes.Add(1)
	if c.local != nil {
		c.local.InvalidateAll()
	}
	c.mu.Lock()
	for _, ch := range c.waiters {
		wake(ch)
	}
	c.mu.Unlock()
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// registerWait makes notices for keys wake ch (buffered), starting the listener if needed.
func (c *Cache[V]) registerWait(keys []string, ch chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.startSubscriberLocked()
	for _, k := range keys {
		c.waiters[k] = ch
	}
}

// unregisterWait undoes registerWait for keys still pointing at ch.
func (c *Cache[V]) unregisterWait(keys []string, ch chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		if c.waiters[k] == ch {
			delete(c.waiters, k)
		}
	}
}
