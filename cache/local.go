package cache

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// The local tier's coherence rests on four rules:
//
//  1. Every invalidation of a key (a Set or Delete here, a notice from another process, a
//     server-assisted invalidation) first bumps the key's epoch, then removes the key locally.
//  2. A value read from Redis is stored locally only if the key's epoch did not move between
//     the moment before the read was sent and the store, checked again after the store (an
//     invalidation that slipped in between removes what was stored).
//  3. Nothing is stored before the instance listens for invalidations (ready), and the first
//     subscription (and every re-subscription after a reconnect) moves every epoch. On a Redis
//     Cluster, where surge sends no notices, nothing is stored once a master refused tracking
//     (blind).
//  4. With server-assisted invalidation, this instance's own writes (fills, Set) come back as
//     invalidations of the keys they wrote, so rule 2 would drop or evict every value it wrote.
//     Such a value is kept by ownWrites (below) instead: stored once its write succeeded, its
//     echo came back and a read sent after the echo still finds exactly the written bytes.
//
// So an entry written to the local tier either predates no invalidation it could have missed, or
// is removed by that invalidation's rule 1.

// epochStripes is how many epochs keys are spread over: an invalidation keeps the reads of only
// 1/epochStripes of the keys out of the local tier, instead of every read in flight.
const epochStripes = 256

// epochs are the invalidation counters of the local tier, striped by key.
type epochs [epochStripes]atomic.Uint64

// epochOf returns the epoch of key's stripe (FNV-1a of the key).
func (c *Cache[V]) epochOf(key string) *atomic.Uint64 {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return &c.epochs[h%epochStripes]
}

// snapshot is taken before a Redis read of key; storeLocal compares it.
func (c *Cache[V]) snapshot(key string) uint64 { return c.epochOf(key).Load() }

// invalidateLocal applies rule 1 to key: an invalidation that is not the echo of a write of
// this instance, which also cancels the local stores of this instance's writes of key.
func (c *Cache[V]) invalidateLocal(key string) {
	c.own.spoil(key)
	c.dropLocal(key)
}

// dropLocal moves key's epoch and removes its local entry.
func (c *Cache[V]) dropLocal(key string) {
	c.epochOf(key).Add(1)
	if c.local != nil {
		c.local.Invalidate(key)
	}
}

// bumpAll moves every epoch: reads in flight store nothing, nor do own writes in flight.
func (c *Cache[V]) bumpAll() {
	c.own.spoilAll()
	for i := range c.epochs {
		c.epochs[i].Add(1)
	}
}

// lookupLocal returns key's local entry, counting a hit.
func (c *Cache[V]) lookupLocal(key string) (*localEntry[V], bool) {
	if c.local == nil {
		return nil, false
	}
	e, ok := c.local.GetIfPresent(key)
	if ok {
		c.st.localHits.Add(1)
	}
	return e, ok
}

// storeLocal puts a value (or negative entry) read from or written to Redis into the local tier
// (rules 2 and 3): snap is the key's epoch from before the read or write was sent.
func (c *Cache[V]) storeLocal(snap uint64, key string, v V, h header) {
	if c.local == nil || !c.ready.Load() || c.blind.Load() {
		return
	}
	ep := c.epochOf(key)
	if ep.Load() != snap {
		return
	}
	if c.beforeLocalPut != nil {
		c.beforeLocalPut(key)
	}
	if !c.putLocal(key, &localEntry[V]{v: v, notFound: h.tombstone}, h) {
		return
	}
	if ep.Load() != snap {
		// An invalidation came in between the check and the put, and may have run its removal
		// before the put: remove the entry ourselves.
		c.local.Invalidate(key)
	}
}

// putLocal stores e for min(Local.TTL, the time left until the Redis copy expires or, with
// RefreshAfter, turns stale): a local hit is never stale, so once the soft expiry passes the next
// read goes to Redis, serves the stale value there and starts the refresh. It reports whether it
// stored anything.
func (c *Cache[V]) putLocal(key string, e *localEntry[V], h header) bool {
	until := h.hard
	if h.soft != 0 && h.soft < until {
		until = h.soft
	}
	left := time.Duration(until-c.now().UnixMilli()) * time.Millisecond
	e.ttl = min(c.cfg.local.TTL, left)
	if e.ttl <= 0 {
		return false
	}
	c.local.Set(key, e)
	return true
}

// flushLocal empties the local tier (after a reconnect of the invalidation listener: notices sent
// meanwhile are lost) and wakes every lease waiter.
func (c *Cache[V]) flushLocal() {
	c.bumpAll()
	c.st.localFlushes.Add(1)
	if c.local != nil {
		c.local.InvalidateAll()
	}
	c.wakes.Add(1)
	c.mu.Lock()
	for _, ch := range c.waiters {
		wake(ch)
	}
	c.mu.Unlock()
}

// Rule 4. Redis reports writes to a BCAST tracking client in order, but per event-loop cycle:
// every key written since the last report goes out once, in one message, however often it was
// written. So the echo of this instance's write of key k may also stand for a write of k by
// another client that ran just after it, and counting echoes cannot tell the two apart. Hence:
//
//   - A write that would store its value locally (a fill, a Set) registers an ownWrite for the
//     key before it is sent. Every server-assisted invalidation of the key from then on counts
//     as an echo; any other invalidation (a Delete or a notice, a flush after a reconnect)
//     cancels it.
//   - Once the write succeeded and exactly one echo came (in either order), a GET is sent: it
//     runs after that echo was reported, so any later write of the key is reported in a later
//     message, a second echo. If the GET returns exactly the written envelope and no second
//     echo came by then, the value goes to the local tier, under the same lock as the echo
//     counting, so an echo that comes later removes it (rule 1).
//   - A failed or fenced write, a second echo, a cancellation or no echo within ownWriteTimeout
//     stores nothing: the next read goes to Redis, as it would without a local tier.
//
// The GETs of all writes that become ready together go out in one pipeline, on a goroutine that
// Close waits for; the caller of the write does not wait for them.

// ownWriteTimeout is how long an own write waits for its echo before it is given up.
const ownWriteTimeout = 2 * time.Second

// ownWrite is the pending local store of one write of this instance.
type ownWrite[V any] struct {
	key    string
	e      *localEntry[V]
	h      header
	env    []byte    // the envelope written, compared with what the GET returns
	at     time.Time // registration
	echoes int       // server-assisted invalidations of key since registration
	wrote  bool      // the write succeeded
	done   bool      // stored or given up
}

// ownWrites are the pending local stores of this instance's writes (rule 4).
type ownWrites[V any] struct {
	n       atomic.Int64 // pending writes: when 0, invalidations skip the lock
	mu      sync.Mutex
	m       map[string][]*ownWrite[V]
	fifo    []*ownWrite[V] // in registration order, for ownWriteTimeout
	queue   []*ownWrite[V] // written and echoed once: waiting for their GET
	running bool           // a goroutine sends the queue's GETs
}

// ownStores reports whether writes of this instance store their values through rule 4: with a
// local tier, once the listener is subscribed, when the server accepted tracking (without
// tracking, an instance's own writes are not reported back to it and rule 2 keeps them).
func (c *Cache[V]) ownStores() bool {
	return c.local != nil && c.ready.Load() && c.tracking.Load() && !c.blind.Load()
}

// registerOwn registers the local store of e for key (written as env with header h), before
// the write is sent; nil when rule 4 does not apply. The caller reports the write's outcome
// with ownWritten.
func (c *Cache[V]) registerOwn(key string, e *localEntry[V], h header, env []byte) *ownWrite[V] {
	if !c.ownStores() {
		return nil
	}
	w := &ownWrite[V]{key: key, e: e, h: h, env: env, at: time.Now()}
	o := &c.own
	o.mu.Lock()
	defer o.mu.Unlock()
	for len(o.fifo) > 0 && (o.fifo[0].done || time.Since(o.fifo[0].at) > ownWriteTimeout) {
		o.dropLocked(o.fifo[0])
		o.fifo[0] = nil
		o.fifo = o.fifo[1:]
	}
	if o.m == nil {
		o.m = make(map[string][]*ownWrite[V])
	}
	o.m[key] = append(o.m[key], w)
	o.fifo = append(o.fifo, w)
	o.n.Add(1)
	return w
}

// ownWritten reports the outcome of w's write (nil w: nothing registered).
func (c *Cache[V]) ownWritten(w *ownWrite[V], ok bool) {
	if w == nil {
		return
	}
	o := &c.own
	o.mu.Lock()
	start := false
	switch {
	case w.done:
	case !ok:
		o.dropLocked(w)
	default:
		w.wrote = true
		if w.echoes == 1 {
			start = o.enqueueLocked(w)
		}
	}
	o.mu.Unlock()
	if start {
		c.startVerify()
	}
}

// ownEchoes counts a server-assisted invalidation of keys and applies rule 1 (dropLocal) to
// them, in one step under own.mu, where own writes are stored: a store either comes before
// the step and is removed by it, or comes after it, as the store of a write that this echo
// (its first) reported. Dropping after the lock was released instead would evict a value
// stored in between on the strength of this very echo.
func (c *Cache[V]) ownEchoes(keys []string) {
	o := &c.own
	if o.n.Load() == 0 {
		for _, k := range keys {
			c.dropLocal(k)
		}
		return
	}
	o.mu.Lock()
	start := false
	for _, k := range keys {
		for _, w := range o.m[k] {
			if w.done {
				continue
			}
			if w.echoes++; w.echoes > 1 {
				o.dropLocked(w) // another write of key: its value may be newer
			} else if w.wrote {
				start = o.enqueueLocked(w) || start
			}
		}
		c.dropLocal(k)
	}
	o.mu.Unlock()
	if start {
		c.startVerify()
	}
}

// spoil gives up the pending local stores of key.
func (o *ownWrites[V]) spoil(key string) {
	if o.n.Load() == 0 {
		return
	}
	o.mu.Lock()
	for _, w := range o.m[key] {
		o.dropLocked(w)
	}
	o.mu.Unlock()
}

// spoilAll gives up every pending local store.
func (o *ownWrites[V]) spoilAll() {
	if o.n.Load() == 0 {
		return
	}
	o.mu.Lock()
	for _, ws := range o.m {
		for _, w := range ws {
			o.dropLocked(w)
		}
	}
	o.mu.Unlock()
}

// dropLocked marks w done and forgets it (o.mu held).
func (o *ownWrites[V]) dropLocked(w *ownWrite[V]) {
	if w.done {
		return
	}
	w.done = true
	o.n.Add(-1)
	ws := o.m[w.key]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(o.m, w.key)
	} else {
		o.m[w.key] = ws
	}
}

// enqueueLocked queues w for its GET; true when the caller must start the goroutine sending
// the queue (o.mu held).
func (o *ownWrites[V]) enqueueLocked(w *ownWrite[V]) bool {
	o.queue = append(o.queue, w)
	if o.running {
		return false
	}
	o.running = true
	return true
}

// startVerify starts the goroutine that sends the queued GETs (after Close, the queue is
// given up).
func (c *Cache[V]) startVerify() {
	if !c.goTrack(c.verifyOwn) {
		o := &c.own
		o.mu.Lock()
		for _, w := range o.queue {
			o.dropLocked(w)
		}
		o.queue, o.running = nil, false
		o.mu.Unlock()
	}
}

// verifyOwn sends the GETs of the queued own writes, one round trip per batch (per node on a
// cluster), and stores the values Redis still holds, until the queue is empty.
func (c *Cache[V]) verifyOwn() {
	o := &c.own
	for {
		o.mu.Lock()
		batch := o.queue
		o.queue = nil
		if len(batch) == 0 {
			o.running = false
			o.mu.Unlock()
			return
		}
		o.mu.Unlock()
		// Through the reads' pipe: one MGET on a *redis.Client, split per node on a cluster,
		// and sharing its round trip with reads in flight (a queued read is sent after it was
		// queued, so still after the echo).
		vks := make([]string, len(batch))
		for i, w := range batch {
			vks[i] = c.valueKey(w.key)
		}
		ctx, cancel := context.WithTimeout(c.stop, c.cfg.LoadTimeout)
		vals, errs := c.rd.pipe.get(ctx, c.rdb, vks)
		cancel()
		o.mu.Lock()
		for i, w := range batch {
			if w.done {
				continue
			}
			if errs[i] == nil && bytes.Equal(vals[i], w.env) && c.ready.Load() {
				c.putLocal(w.key, w.e, w.h)
			}
			o.dropLocked(w)
		}
		o.mu.Unlock()
	}
}

// ownIdle reports whether no own write waits for its echo or its GET (tests).
func (c *Cache[V]) ownIdle() bool {
	o := &c.own
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n.Load() == 0 && !o.running
}
