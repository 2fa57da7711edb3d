package cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/surgekit/surge/internal/luascript"
)

// result is the outcome of one key's load.
type result[V any] struct {
	v   V
	err error
}

// slot is one key of a load: what the leader knows and decides about it.
type slot[V any] struct {
	key   string
	fl    *flight[V]
	token string // this load's lease (or fence) token
	seen  string // a refresh: the envelope header of the stale value read ("" for a miss)
	snap  uint64 // the key's epoch before the load began (storeLocal)
	plan  plan
	v     V
	err   error
}

// batch is the keys one leader loads together: one claim round trip, one loader call, one
// write round trip.
type batch[V any] []*slot[V]

// with returns the slots whose plan is p.
func (b batch[V]) with(p plan) batch[V] {
	var out batch[V]
	for _, s := range b {
		if s.plan == p {
			out = append(out, s)
		}
	}
	return out
}

func (b batch[V]) keys() []string {
	out := make([]string, len(b))
	for i, s := range b {
		out[i] = s.key
	}
	return out
}

// leadFree joins the flights of keys, starts one load for those nobody in this process is
// loading, and returns every key's flight. With seen (the headers of the stale values read, one
// per key) the load is a refresh: a key whose value changed since it was read takes the new
// value instead of loading. Misses that join a running load count as shared loads.
func (c *Cache[V]) leadFree(ctx context.Context, keys []string, seen []header, load BatchLoader[V], redisDown bool) []*flight[V] {
	fl, led := c.fl.join(keys)
	var b batch[V]
	for i, f := range fl {
		switch {
		case led[i]:
			s := &slot[V]{key: keys[i], fl: f}
			if seen != nil {
				s.seen = seen[i].bytes()
			}
			b = append(b, s)
		case seen == nil:
			c.st.sharedLoads.Add(1)
		}
	}
	if len(b) > 0 {
		c.lead(ctx, b, load, redisDown)
	}
	return fl
}

// lead loads the keys of b (whose flights the caller leads) on a goroutine Close waits for, on
// context.WithoutCancel(ctx) so that the caller giving up does not fail the other waiters (but
// Close cancels it), and finishes every flight. After Close it finishes the flights with
// ErrClosed and returns false.
func (c *Cache[V]) lead(ctx context.Context, b batch[V], load BatchLoader[V], redisDown bool) bool {
	ok := c.goTrack(func() {
		ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		defer context.AfterFunc(c.stop, cancel)()
		c.loadBatch(ctx, b, load, redisDown)
		for _, s := range b {
			c.fl.finish(s.key, s.fl, s.v, s.err)
		}
	})
	if !ok {
		var zero V
		for _, s := range b {
			c.fl.finish(s.key, s.fl, zero, ErrClosed)
		}
	}
	return ok
}

// plan says what loadBatch does with one key.
type plan uint8

const (
	planWrite   plan = iota // ours to load and write (fenced by our lease token)
	planNoWrite             // load but do not write (Redis down, or another process's lease outlived our wait)
	planWait                // another process holds the lease: wait for its value
	planDone                // result known
	planBad                 // an undecodable value is in the way: claim without looking at it
)

// loadBatch resolves keys that are missing in Redis (or stale): it claims their leases, waits for
// the ones other processes hold, calls load once for the rest and writes them fenced.
func (c *Cache[V]) loadBatch(ctx context.Context, b batch[V], load BatchLoader[V], redisDown bool) {
	for _, s := range b {
		s.token, s.snap = c.token(), c.snapshot(s.key)
		if redisDown {
			s.plan = planNoWrite
		}
	}
	var keep *leaseKeeper[V]
	var wakes uint64
	if !redisDown {
		if c.cfg.Lease > 0 {
			// Renewals start before the claims: a claim's reply may come back late.
			keep = c.keepLeases(ctx, b)
			defer keep.stop()
		}
		wakes = c.wakes.Load() // before the claims: see waitForFills
		c.claimLeases(ctx, b, true)
		if bad := b.with(planBad); len(bad) > 0 {
			c.claimLeases(ctx, bad, false)
		}
		keep.drop(b.with(planDone))
		keep.drop(b.with(planNoWrite))
	}
	wait := b.with(planWait)
	toLoad := append(b.with(planWrite), b.with(planNoWrite)...)
	var wg sync.WaitGroup
	if len(wait) > 0 {
		c.st.leaseWaits.Add(uint64(len(wait)))
		wg.Go(func() { c.waitForFills(ctx, wait, keep, wakes) })
	}
	if len(toLoad) > 0 {
		c.loadAndFill(ctx, toLoad, load, keep)
	}
	wg.Wait()
	// Keys whose wait ended with the lease in our hands, or with the wait running out (unless
	// Close ended it).
	var again batch[V]
	for _, s := range wait {
		switch {
		case s.plan == planDone:
		case ctx.Err() != nil:
			s.err = fmt.Errorf("cache: load %q: %w", s.key, ctx.Err())
		default:
			again = append(again, s)
		}
	}
	if len(again) > 0 {
		c.loadAndFill(ctx, again, load, keep)
	}
}

// claimLeases runs claim.lua for b in one round trip: with Options.Lease it takes each lease
// exclusively (SET NX PX Lease), else it sets a plain fence token (SET PX 2·LoadTimeout) that a
// later claimer, Set or Delete replaces. With check, a value the slot has not seen (any value
// for a miss; another than the stale one for a refresh) is taken instead. Each key's plan becomes
// planWrite (claimed), planWait (held elsewhere), planDone (value found, or a Redis error under
// FailClosed), planNoWrite (Redis error under FailOpen) or planBad (an undecodable value).
func (c *Cache[V]) claimLeases(ctx context.Context, b batch[V], check bool) {
	exclusive, ttl := "", 2*c.cfg.LoadTimeout
	if c.cfg.Lease > 0 {
		exclusive, ttl = "1", c.cfg.Lease
	}
	checkArg := ""
	if check {
		checkArg = "1"
	}
	calls := make([]luascript.Call, len(b))
	for i, s := range b {
		vk := c.valueKey(s.key)
		calls[i] = luascript.Call{Script: claimScript, Keys: []string{vk, leaseKey(vk)},
			Args: []any{s.token, ttl.Milliseconds(), exclusive, checkArg, s.seen}}
	}
	for i, cmd := range luascript.RunAll(ctx, c.rdb, calls) {
		s := b[i]
		switch val, err := cmd.Result(); {
		case err != nil:
			c.st.redisErrors.Add(1)
			s.plan = planNoWrite
			if c.cfg.OnRedisError == FailClosed {
				s.err = fmt.Errorf("cache: fetch %q: %w", s.key, err)
				s.plan = planDone
			}
		case val == int64(1):
			s.plan = planWrite
		case val == int64(0):
			s.plan = planWait
		default:
			str, _ := val.(string)
			h, v, err := c.decode([]byte(str))
			if err != nil {
				s.plan = planBad
				continue
			}
			s.plan = planDone
			c.storeLocal(s.snap, s.key, v, h)
			if h.tombstone {
				s.err = ErrNotFound
			} else {
				s.v = v
			}
		}
	}
}

func (c *Cache[V]) token() string {
	return c.id + "." + strconv.FormatUint(c.seq.Add(1), 36)
}

// pollInterval is how often a lease waiter looks at Redis when no notice wakes it.
func (c *Cache[V]) pollInterval() time.Duration {
	if c.pollEvery > 0 {
		return c.pollEvery
	}
	return min(max(c.cfg.Lease/10, 5*time.Millisecond), 100*time.Millisecond)
}

// waitForFills waits, up to LoadTimeout, for the values of b that other processes are loading
// under their leases, polling with claimLeases (woken early by their fill notices). Each key ends
// planDone, planWrite (the lease came free and is now ours) or planNoWrite (the wait ran out,
// Redis failed under FailOpen, or the value is undecodable). A lease it claims is renewed by keep
// from that moment on. wakes is c.wakes as it was before b's leases were claimed: when a notice
// came since, it may have been the fill of one of them, which found no waiter to wake, so the
// first look is at once instead of at the first poll.
func (c *Cache[V]) waitForFills(ctx context.Context, b batch[V], keep *leaseKeeper[V], wakes uint64) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.LoadTimeout)
	defer cancel()
	wakeCh := make(chan struct{}, 1)
	names := b.keys()
	c.registerWait(names, wakeCh)
	defer c.unregisterWait(names, wakeCh)
	if c.wakes.Load() != wakes {
		wake(wakeCh)
	}
	poll := time.NewTimer(c.pollInterval())
	defer poll.Stop()
	for pending := b; len(pending) > 0; pending = pending.with(planWait) {
		select {
		case <-ctx.Done():
			for _, s := range pending {
				s.plan = planNoWrite
			}
			return
		case <-wakeCh:
		case <-poll.C:
		}
		c.claimLeases(ctx, pending, true)
		for _, s := range pending {
			if s.plan == planBad {
				s.plan = planNoWrite // not ours to overwrite while another process holds the lease
			}
		}
		keep.drop(pending.with(planDone))
		keep.drop(pending.with(planNoWrite))
		poll.Reset(c.pollInterval())
	}
}

// leaseKeeper renews the leases of a batch's slots (renew.lua, every Lease/3, one pipelined
// round trip for the whole batch) from before they are claimed until their fill has landed, so
// that neither a load slower than Lease nor a claim or fill round trip that a loaded Redis
// answers late lets a lease run out. Renewing a lease the slot does not hold (not yet claimed,
// held by another process, already filled) changes nothing: renew.lua compares the token. A nil
// *leaseKeeper (no Lease, Redis down) does nothing.
type leaseKeeper[V any] struct {
	b            batch[V]
	mu           sync.Mutex
	gone         map[*slot[V]]bool // slots no longer renewed
	done, exited chan struct{}
}

// keepLeases starts renewing the leases of b until stop; drop takes slots out earlier.
func (c *Cache[V]) keepLeases(ctx context.Context, b batch[V]) *leaseKeeper[V] {
	k := &leaseKeeper[V]{b: b, gone: make(map[*slot[V]]bool), done: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(k.exited)
		t := time.NewTicker(max(c.cfg.Lease/3, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-k.done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			live, calls := k.calls(c)
			for i, cmd := range luascript.RunAll(ctx, c.rdb, calls) {
				if err := cmd.Err(); err != nil && ctx.Err() == nil {
					c.cfg.Logger.Warn("cache: lease renewal failed", "key", live[i].key, "err", err)
				}
			}
		}
	}()
	return k
}

// calls returns the slots still renewed and their renew.lua calls.
func (k *leaseKeeper[V]) calls(c *Cache[V]) (batch[V], []luascript.Call) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var live batch[V]
	var calls []luascript.Call
	for _, s := range k.b {
		if !k.gone[s] {
			live = append(live, s)
			calls = append(calls, luascript.Call{Script: renewScript, Keys: []string{leaseKey(c.valueKey(s.key))},
				Args: []any{s.token, c.cfg.Lease.Milliseconds()}})
		}
	}
	return live, calls
}

// drop stops renewing the leases of b (filled, or never ours).
func (k *leaseKeeper[V]) drop(b batch[V]) {
	if k == nil || len(b) == 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, s := range b {
		k.gone[s] = true
	}
}

// stop ends the renewals and waits for them.
func (k *leaseKeeper[V]) stop() {
	if k == nil {
		return
	}
	close(k.done)
	<-k.exited
}

// loadAndFill calls load once for b and writes the results of the planWrite slots, fenced by
// their lease tokens, in one round trip. Keys load leaves out become negative entries. keep
// renews their leases until the write has landed.
func (c *Cache[V]) loadAndFill(ctx context.Context, b batch[V], load BatchLoader[V], keep *leaseKeeper[V]) {
	defer keep.drop(b)
	m, dur, err := c.callLoader(ctx, load, b.keys())
	channel, notice := "", ""
	calls := make([]luascript.Call, 0, len(b))
	type write struct {
		s     *slot[V]
		h     header
		store bool         // a value or negative entry that may go to the local tier once written
		own   *ownWrite[V] // its local store waiting for the write's echo (local.go, rule 4)
	}
	writes := make([]write, 0, len(b))
	for _, s := range b {
		var env []byte
		var h header
		var ttl time.Duration
		switch v, found := m[s.key]; {
		case err != nil:
			s.err = fmt.Errorf("cache: load %q: %w", s.key, err)
		case found:
			s.v = v
			var eerr error
			if env, h, ttl, eerr = c.encode(v, dur); eerr != nil {
				c.cfg.Logger.Warn("cache: cannot encode loaded value", "key", s.key, "err", eerr)
				env = nil
			}
		default:
			s.err = ErrNotFound
			env, h, ttl, _ = c.tombstone()
		}
		p := s.plan
		s.plan = planDone
		if p != planWrite {
			continue
		}
		if c.cfg.Lease > 0 {
			channel, notice = c.notices, c.notice(noticeFilled, s.key)
		}
		vk := c.valueKey(s.key)
		// An empty envelope only releases the lease, so that waiters take over at once.
		calls = append(calls, luascript.Call{Script: fillScript, Keys: []string{vk, leaseKey(vk)},
			Args: []any{s.token, env, max(ttl.Milliseconds(), 1), channel, notice}})
		w := write{s: s, h: h, store: env != nil}
		if w.store {
			w.own = c.registerOwn(s.key, &localEntry[V]{v: s.v, notFound: h.tombstone}, h, env)
		}
		writes = append(writes, w)
	}
	if len(calls) == 0 {
		return
	}
	for i, cmd := range luascript.RunAll(ctx, c.rdb, calls) {
		w := writes[i]
		n, err := cmd.Int64()
		c.ownWritten(w.own, err == nil && n == 1)
		switch {
		case err != nil:
			c.st.redisErrors.Add(1)
			c.cfg.Logger.Warn("cache: write after load failed", "key", w.s.key, "err", err)
		case n == 0:
			c.st.fenceRejects.Add(1)
		case w.store && w.own == nil:
			c.storeLocal(w.s.snap, w.s.key, w.s.v, w.h)
		}
	}
}

// callLoader runs load within LoadTimeout, under a "cache.load" span and timed in
// surge.cache.load.duration (telemetry.go), turning a panic into an error wrapping
// ErrLoaderPanic and an error wrapping ErrNotFound into "none of the keys exist".
func (c *Cache[V]) callLoader(ctx context.Context, load BatchLoader[V], keys []string) (m map[string]V, dur time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.LoadTimeout)
	defer cancel()
	c.st.loads.Add(1)
	ctx, span := c.tel.startLoad(ctx, len(keys))
	start := time.Now()
	defer func() {
		dur = time.Since(start)
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("%w: %v", ErrLoaderPanic, r)
		}
		if errors.Is(err, ErrNotFound) {
			m, err = nil, nil
		}
		if err != nil {
			c.st.loadErrors.Add(1)
		}
		c.tel.endLoad(ctx, span, dur, err)
	}()
	m, err = load(ctx, keys)
	return m, 0, err
}
