package ratelimit

import (
	"hash/maphash"
	"math/bits"
	"strings"
	"sync"
)

// store holds the buckets of a Local: a fixed number of shards, each a map guarded by one mutex
// that also guards the buckets in it (an update is a few float operations, shorter than taking a
// second lock). It bounds the number of buckets without a goroutine:
//   - a bucket left alone for idle (the longest refill time) is full again and worth nothing: such
//     buckets are swept from a shard when it needs room, and at most once per idle period when a
//     new key arrives in it;
//   - when a shard is at capacity and holds no full bucket, a new key evicts the least recently
//     seen of a few sampled buckets (approximate LRU, as Redis does), so a key in active use,
//     denied or not, keeps its state.
type store struct {
	shards []shard
	mask   uint64
	seed   maphash.Seed
	cap    int   // buckets per shard
	idle   int64 // ns after its last charge when a bucket is full again
}

// shard is one part of a store. The padding keeps two shards' locks off one cache line.
type shard struct {
	mu      sync.Mutex
	m       map[string]*bucket
	sweepAt int64 // time (ns since epoch) of the next sweep for age
	inserts int   // inserts since the last sweep
	_       [64]byte
}

// bucket is the state of every limit of one key, guarded by its shard's mutex. Tokens are as of
// last; seen is the last access (ns since Local.epoch).
type bucket struct {
	last   int64
	seen   int64
	tokens []float64 // inline when there are at most two limits: one object, one cache miss
	inline [2]float64
}

// evictSample is how many buckets an eviction compares.
const evictSample = 5

// minShardCap is the fewest buckets per shard: fewer, larger shards for a small MaxKeys, so the
// bound stays close to MaxKeys.
const minShardCap = 64

// maxShards bounds the shard count (256 shards leave lock contention negligible).
const maxShards = 256

func newStore(maxKeys int, idle int64) *store {
	n := 1
	if want := maxKeys / minShardCap; want > 1 {
		n = 1 << (bits.Len(uint(want)) - 1) // the largest power of two <= want
	}
	n = min(n, maxShards)
	s := &store{shards: make([]shard, n), mask: uint64(n - 1), seed: maphash.MakeSeed(), cap: maxKeys / n, idle: idle}
	for i := range s.shards {
		s.shards[i].m = make(map[string]*bucket)
	}
	return s
}

func (s *store) shard(key string) *shard {
	if s.mask == 0 {
		return &s.shards[0]
	}
	return &s.shards[maphash.String(s.seed, key)&s.mask]
}

// insert adds a full bucket for key at now, making room first. The caller holds sh.mu.
func (s *store) insert(sh *shard, key string, now int64, limits []Limit) *bucket {
	if now >= sh.sweepAt || (len(sh.m) >= s.cap && sh.inserts >= s.cap/4) {
		s.sweep(sh, now)
	}
	if len(sh.m) >= s.cap {
		s.evict(sh, now)
	}
	sh.inserts++
	b := &bucket{last: now, seen: now}
	if len(limits) <= len(b.inline) {
		b.tokens = b.inline[:len(limits)]
	} else {
		b.tokens = make([]float64, len(limits))
	}
	for i, l := range limits {
		b.tokens[i] = float64(l.Burst)
	}
	// A copy, so that a key sliced from a large request buffer does not keep the buffer alive.
	sh.m[strings.Clone(key)] = b
	return b
}

// sweep drops the buckets of sh that are full again. The caller holds sh.mu.
func (s *store) sweep(sh *shard, now int64) {
	for k, b := range sh.m {
		if now-b.last >= s.idle {
			delete(sh.m, k)
		}
	}
	sh.inserts = 0
	sh.sweepAt = now + s.idle
}

// evict drops one bucket of sh: a full one if the sample holds one, else the least recently seen.
// The caller holds sh.mu.
func (s *store) evict(sh *shard, now int64) {
	var victim string
	var oldest int64
	i := 0
	for k, b := range sh.m {
		if now-b.last >= s.idle {
			victim = k
			break
		}
		if i == 0 || b.seen < oldest {
			victim, oldest = k, b.seen
		}
		if i++; i == evictSample {
			break
		}
	}
	delete(sh.m, victim)
}

// len returns the number of buckets held.
func (s *store) len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// sweepAll drops every bucket that is full again.
func (s *store) sweepAll(now int64) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		s.sweep(sh, now)
		sh.mu.Unlock()
	}
}
