package cache

import "sync/atomic"

// Stats is a snapshot of a [Cache]'s counters since [New]. Every key a Fetch or FetchMany
// resolves counts once in exactly one of LocalHits, RedisHits, NegativeHits, GuardRejects or
// Misses (a Redis read error returned under FailClosed counts in none of them).
type Stats struct {
	LocalHits      uint64 // served by the in-process tier (values and negative entries)
	RedisHits      uint64 // values served by Redis
	NegativeHits   uint64 // negative entries served by Redis ("not found" without a load)
	Misses         uint64 // nothing cached: the key waited for a load (its own or a shared one)
	Loads          uint64 // loader calls (a BatchLoader call counts once)
	LoadErrors     uint64 // loader calls that failed or panicked (ErrNotFound is no failure)
	SharedLoads    uint64 // misses that joined a load already running in this process
	SharedReads    uint64 // Redis reads that joined a GET of the same key already in flight
	PipelinedReads uint64 // Redis reads sent in a round trip shared with other reads (an MGET or a pipeline: queued while round trips were in flight, or FetchMany's)
	StaleServed    uint64 // values served past RefreshAfter while a refresh runs
	EarlyRefreshes uint64 // background refreshes started early by EarlyRefreshBeta (XFetch)
	LeaseWaits     uint64 // loads that waited for another process's lease instead of loading
	FenceRejects   uint64 // writes dropped because a Delete/Set or another loader took the lease
	RedisErrors    uint64 // failed Redis calls
	DecodeErrors   uint64 // Redis entries that could not be decoded (served as misses)
	GuardRejects   uint64 // keys ruled out by the Guard
	GuardErrors    uint64 // Guard errors (the key then went on as "maybe")
	Invalidations  uint64 // invalidation messages received: notices from other processes' writes and, with server-assisted invalidation, Redis's own (which include this process's writes)
	LocalFlushes   uint64 // whole local-tier flushes after the invalidation channel reconnected
}

type counters struct {
	localHits, redisHits, negativeHits, misses, loads, loadErrors, sharedLoads, sharedReads, staleServed,
	earlyRefreshes, leaseWaits, fenceRejects, redisErrors, decodeErrors, guardRejects,
	guardErrors, invalidations, localFlushes atomic.Uint64
}

// Stats returns a snapshot of the counters. It does not block and is safe for concurrent use;
// the counters are read one by one, so a snapshot taken under load is not atomic as a whole.
func (c *Cache[V]) Stats() Stats {
	s := &c.st
	return Stats{
		LocalHits:      s.localHits.Load(),
		RedisHits:      s.redisHits.Load(),
		NegativeHits:   s.negativeHits.Load(),
		Misses:         s.misses.Load(),
		Loads:          s.loads.Load(),
		LoadErrors:     s.loadErrors.Load(),
		SharedLoads:    s.sharedLoads.Load(),
		SharedReads:    s.sharedReads.Load(),
		PipelinedReads: c.rd.pipe.pipelined.Load(),
		StaleServed:    s.staleServed.Load(),
		EarlyRefreshes: s.earlyRefreshes.Load(),
		LeaseWaits:     s.leaseWaits.Load(),
		FenceRejects:   s.fenceRejects.Load(),
		RedisErrors:    s.redisErrors.Load(),
		DecodeErrors:   s.decodeErrors.Load(),
		GuardRejects:   s.guardRejects.Load(),
		GuardErrors:    s.guardErrors.Load(),
		Invalidations:  s.invalidations.Load(),
		LocalFlushes:   s.localFlushes.Load(),
	}
}
