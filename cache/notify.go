package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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

// Notices on a Redis Cluster. Classic PUBLISH is broadcast to every node of a cluster, and a
// script may SPUBLISH only to a shard channel of its own keys' slot, which a reader would have to
// subscribe to per slot (16384 channels, moving with resharding). Neither is needed: on a cluster
// every listener, with a local tier or waiting for another process's lease, uses server-assisted
// invalidation per master (trackMasters), which reports every write under Prefix, fills and
// lease changes included, in write order, from the key's own node. So on a cluster surge writers
// publish nothing (notices is "") and listeners subscribe to no notice channel: one message per
// write per listening instance.
//
// Rolling upgrade from a release that published notices on a cluster: old and new instances can
// run side by side. New instances ignore old notices (they do not subscribe). Old instances with
// a local tier track every master and are invalidated by new writers' writes through tracking as
// before (a notice only doubled that message). An old instance waiting for a lease without a
// local tier no longer hears a new writer's fill and finds the value at its next poll (Lease/10,
// 5-100 ms). An old instance whose servers refuse tracking relied on notices alone: it may serve
// a value a new writer replaced for up to Local.TTL, so upgrade it first or run it without Local.

// notice encodes a notice of kind for key from this instance, or "" when writes announce
// nothing (Redis Cluster).
func (c *Cache[V]) notice(kind byte, key string) string {
	if c.notices == "" {
		return ""
	}
	return encodeNotice(kind, c.id, []string{key})
}

// trackingChannel is where Redis sends server-assisted invalidations to a RESP2 connection that
// redirected its own tracking to itself.
const trackingChannel = "__redis__:invalidate"

// subscriber is what listens for invalidations and fills. On a *redis.Client it is a goroutine
// listening on trackingChannel with a local tier (and on the cache's notice channel without one,
// or when the server refuses tracking). On a *redis.ClusterClient it is a goroutine keeping one
// tracker (see tracker) per master, whether or not there is a local tier: no surge instance
// publishes or subscribes to notices on a cluster, where classic pub/sub is broadcast to every
// node (see notices).
type subscriber struct {
	ps    *redis.PubSub // nil on a cluster
	own   *redis.Client // the client ps belongs to when the Cache made it (tracking); closed by Close
	want  int           // subscription confirmations of ps before its part is ready (set by listen)
	parts atomic.Int32  // parts not yet subscribed: ps, or on a cluster the first set of trackers
	ready chan struct{} // closed once every part is subscribed
}

// partReady records that one part of s is subscribed; the last one makes the Cache ready.
func (c *Cache[V]) partReady(s *subscriber) {
	if s.parts.Add(-1) == 0 {
		// From now on every invalidation reaches us; reads sent before now store nothing.
		c.ready.Store(true)
		c.bumpAll()
		close(s.ready)
	}
}

// startSubscriberLocked starts the listener once; c.mu must be held.
func (c *Cache[V]) startSubscriberLocked() {
	if c.sub != nil || c.closing {
		return
	}
	s := &subscriber{ready: make(chan struct{})}
	s.parts.Store(1)
	c.sub = s
	if cluster, ok := c.rdb.(*redis.ClusterClient); ok {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.trackMasters(cluster, s)
		}()
		return
	}
	channels := []string{c.cfg.channel}
	if rdb, ok := c.rdb.(*redis.Client); ok && c.local != nil {
		s.own = c.trackingClient(rdb)
		channels = append(channels, trackingChannel)
	}
	// No channel yet: Subscribe without channels does no I/O, so a dead Redis does not block
	// here; the goroutine subscribes, and go-redis re-subscribes after every reconnect.
	if s.own != nil {
		s.ps = s.own.Subscribe(context.Background())
	} else {
		s.ps = c.rdb.Subscribe(context.Background())
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.listen(s, channels)
	}()
}

// tracker is a connection to one cluster master with server-assisted invalidation on.
type tracker struct {
	cl   *redis.Client
	ps   *redis.PubSub
	done chan struct{} // closed when its listener returned
}

// mastersPoll is how often trackMasters looks for masters that changed (failover, resharding).
const mastersPoll = time.Second

// trackMasters keeps one tracker per master of the cluster until Close: the first set makes a
// part of s ready; a tracker for a master that appears later (a promoted replica) flushes the
// local tier once subscribed, since the writes it took before were not reported to us.
func (c *Cache[V]) trackMasters(cl *redis.ClusterClient, s *subscriber) {
	trackers := map[string]*tracker{}
	defer func() {
		for _, t := range trackers {
			t.close()
		}
	}()
	first := true
	tick := time.NewTicker(mastersPoll)
	defer tick.Stop()
	for {
		var mu sync.Mutex
		nodes := map[string]*redis.Client{}
		ctx, cancel := context.WithTimeout(c.stop, c.cfg.LoadTimeout)
		err := cl.ForEachMaster(ctx, func(_ context.Context, node *redis.Client) error {
			mu.Lock()
			nodes[node.Options().Addr] = node
			mu.Unlock()
			return nil
		})
		cancel()
		if err == nil {
			for addr, t := range trackers {
				if nodes[addr] == nil {
					t.close()
					delete(trackers, addr)
				}
			}
			var pending atomic.Int32
			pending.Store(int32(len(nodes) - len(trackers)))
			initial := first
			onFirst := func() {
				if !initial {
					c.flushLocal()
				} else if pending.Add(-1) == 0 {
					c.partReady(s)
				}
			}
			for addr, node := range nodes {
				if trackers[addr] == nil {
					trackers[addr] = c.startTracker(node, onFirst)
				}
			}
			first = false
		} else if c.stop.Err() == nil {
			c.cfg.Logger.Warn("cache: cannot list cluster masters for server-assisted invalidation", "err", err)
		}
		select {
		case <-c.stop.Done():
			return
		case <-tick.C:
		}
	}
}

// startTracker connects a tracker to node; onFirst runs at its first subscription confirmation,
// and every later one (a reconnect) flushes the local tier.
func (c *Cache[V]) startTracker(node *redis.Client, onFirst func()) *tracker {
	cl := c.trackingClient(node)
	t := &tracker{cl: cl, ps: cl.Subscribe(context.Background()), done: make(chan struct{})}
	go func() {
		defer close(t.done)
		_ = t.ps.Subscribe(context.Background(), trackingChannel)
		subscribed := false
		for m := range t.ps.ChannelWithSubscriptions(redis.WithChannelSize(1024)) {
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind != "subscribe" {
					continue
				}
				if !subscribed {
					subscribed = true
					onFirst()
				} else {
					c.flushLocal()
				}
			case *redis.Message:
				c.handleTracking(m.PayloadSlice)
			}
		}
	}()
	return t
}

func (t *tracker) close() {
	_ = t.ps.Close()
	<-t.done
	_ = t.cl.Close()
}

// trackingClient returns a client like rdb (same address, dialer, credentials) whose connections
// speak RESP2 and, as they connect (again, after any reconnect), turn on server-assisted
// invalidation for the cache's prefix in broadcast mode, redirected to themselves: once such a
// connection subscribes to trackingChannel, Redis tells it about every change of a key under the
// prefix, whoever made it, including expiry and eviction. NOLOOP is not used: it would only
// spare writes made on this very connection, which makes none. A server that refuses tracking
// (before Redis 6, or an ACL) leaves the cache with notices from surge writers only.
func (c *Cache[V]) trackingClient(rdb *redis.Client) *redis.Client {
	opt := *rdb.Options()
	opt.Protocol = 2
	onConnect := opt.OnConnect
	opt.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
		if onConnect != nil {
			if err := onConnect(ctx, cn); err != nil {
				return err
			}
		}
		id, err := cn.ClientID(ctx).Result()
		if err == nil {
			args := []any{"CLIENT", "TRACKING", "on", "REDIRECT", id, "BCAST"}
			if c.cfg.Prefix != "" {
				args = append(args, "PREFIX", c.cfg.Prefix)
			}
			err = cn.Do(ctx, args...).Err()
		}
		c.tracking.Store(err == nil)
		if err != nil {
			if _, cluster := c.rdb.(*redis.ClusterClient); cluster {
				// No notices on a cluster either: nothing would tell this instance of writes, so
				// its local tier stays empty and its lease waiters find values by polling.
				if !c.blind.Swap(true) {
					c.cfg.Logger.Warn("cache: server-assisted invalidation unavailable on a cluster master: no local tier, lease waiters poll", "err", err)
				}
				c.flushLocal()
				return nil
			}
			c.cfg.Logger.Warn("cache: server-assisted invalidation unavailable: only surge writers invalidate local tiers", "err", err)
		}
		return nil
	}
	return redis.NewClient(&opt)
}

func (c *Cache[V]) listen(s *subscriber, channels []string) {
	// An error here is a dead Redis or a closed PubSub: the channels are recorded either way, and
	// the receive loop below connects (again) until Close.
	ctx := context.Background()
	if s.own != nil {
		// Server-assisted invalidation reports surge writers' changes (fills included) too: the
		// notice channel would only add a second message and wake-up per write, which costs
		// latency on a busy machine. Listen to it only when the server refused tracking.
		err := s.ps.Subscribe(ctx, trackingChannel)
		channels = []string{trackingChannel}
		if err != nil || !c.tracking.Load() {
			_ = s.ps.Subscribe(ctx, c.cfg.channel)
			channels = append(channels, c.cfg.channel)
		}
	} else {
		_ = s.ps.Subscribe(ctx, channels...)
	}
	s.want = len(channels)
	confirmed := 0
	for m := range s.ps.ChannelWithSubscriptions(redis.WithChannelSize(1024)) {
		switch m := m.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if confirmed++; confirmed > s.want {
				// Confirmations again mean go-redis reconnected and re-subscribed (all channels
				// at once): notices sent meanwhile are lost, so nothing local can be trusted.
				if (confirmed-1)%s.want == 0 {
					c.flushLocal()
				}
				continue
			}
			if confirmed == s.want {
				c.partReady(s)
			}
		case *redis.Message:
			if m.Channel == trackingChannel {
				c.handleTracking(m.PayloadSlice)
			} else {
				c.handleNotice(m.Payload)
			}
		}
	}
}

// handleTracking applies a server-assisted invalidation: Redis keys, some of them this cache's
// value keys (lease keys and others' keys under the prefix are ignored).
func (c *Cache[V]) handleTracking(redisKeys []string) {
	var mine, leases []string
	for _, rk := range redisKeys {
		if k, ok := c.keyOf(rk); ok {
			mine = append(mine, k)
		} else if vk, ok := strings.CutSuffix(rk, ":lease"); ok {
			if k, ok := c.keyOf(vk); ok {
				leases = append(leases, k)
			}
		}
	}
	// Possibly the echo of a write of ours (local.go, rule 4): counted, and rule 1 applied.
	c.ownEchoes(mine)
	if f := c.afterEchoes.Load(); f != nil {
		(*f)(mine)
	}
	if len(mine) > 0 {
		c.st.invalidations.Add(1)
	}
	// A fill landed, the value went, or a lease came free (or was taken): a waiter looks again.
	if len(mine)+len(leases) > 0 {
		c.wakeWaiters(append(mine, leases...))
	}
	if f := c.afterTracking.Load(); f != nil {
		(*f)(redisKeys)
	}
}

var unescaper = strings.NewReplacer("%7D", "}", "%25", "%")

// keyOf is the inverse of valueKey: the cache key whose value lives at Redis key rk.
func (c *Cache[V]) keyOf(rk string) (string, bool) {
	rest, ok := strings.CutPrefix(rk, c.cfg.Prefix)
	if !ok || len(rest) < 2 || rest[0] != '{' || rest[len(rest)-1] != '}' {
		return "", false
	}
	id := rest[1 : len(rest)-1]
	if strings.Contains(id, "%") {
		id = unescaper.Replace(id)
	}
	return id, true
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
		c.st.invalidations.Add(1)
		for _, k := range keys {
			c.invalidateLocal(k)
		}
	}
	c.wakeWaiters(keys)
}

// wakeWaiters wakes the lease waiters of keys.
func (c *Cache[V]) wakeWaiters(keys []string) {
	c.wakes.Add(1)
	c.mu.Lock()
	for _, k := range keys {
		if ch, ok := c.waiters[k]; ok {
			wake(ch)
		}
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
