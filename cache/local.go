package cache

import (
	"sync/atomic"
	"time"
)

// The local tier's coherence rests on three rules:
//
//  1. Every invalidation of a key (a Set or Delete here, a notice from another process, a
//     server-assisted invalidation) first bumps the key's epoch, then removes the key locally.
//  2. A value read from Redis is stored locally only if the key's epoch did not move between
//     the moment before the read was sent and the store, checked again after the store (an
//     invalidation that slipped in between removes what was stored).
//  3. Nothing is stored before the instance listens for invalidations (ready), and the first
//     subscription (and every re-subscription after a reconnect) moves every epoch.
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

// invalidateLocal applies rule 1 to key.
func (c *Cache[V]) invalidateLocal(key string) {
	c.epochOf(key).Add(1)
	if c.local != nil {
		c.local.Invalidate(key)
	}
}

// bumpAll moves every epoch: reads in flight store nothing.
func (c *Cache[V]) bumpAll() {
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
	if c.local == nil || !c.ready.Load() {
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
	c.mu.Lock()
	for _, ch := range c.waiters {
		wake(ch)
	}
	c.mu.Unlock()
}
