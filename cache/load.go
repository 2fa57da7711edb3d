package cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// result is the outcome of one key's load.
type result[V any] struct {
	v   V
	err error
}

// lead loads keys (whose flights fl the caller leads) on a goroutine Close waits for, on
// context.WithoutCancel(ctx) so that the caller giving up does not fail the other waiters (but
// Close cancels it), and finishes every flight. refresh says the keys have (stale) values to
// replace rather than none. After Close it finishes the flights with ErrClosed and returns false.
func (c *Cache[V]) lead(ctx context.Context, keys []string, fl []*flight[V], load BatchLoader[V], redisDown, refresh bool) bool {
	ok := c.goTrack(func() {
		ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		defer context.AfterFunc(c.stop, cancel)()
		res := c.loadKeys(ctx, keys, load, redisDown, refresh)
		for i, k := range keys {
			c.fl.finish(k, fl[i], res[i].v, res[i].err)
		}
	})
	if !ok {
		var zero V
		for i, k := range keys {
			c.fl.finish(k, fl[i], zero, ErrClosed)
		}
	}
	return ok
}

// plan says what loadKeys does with one key.
type plan uint8

const (
	planWrite   plan = iota // ours to load and write (fenced by our lease token)
	planNoWrite             // load but do not write (Redis down, or another process's lease outlived our wait)
	planWait                // another process holds the lease: wait for its value
	planDone                // result known
	planBad                 // an undecodable value is in the way: claim without looking at it
)

// loadKeys resolves keys that are missing in Redis (or, with refresh, stale): it claims their
// leases, waits for the ones other processes hold, calls load once for the rest and writes them
// fenced.
func (c *Cache[V]) loadKeys(ctx context.Context, keys []string, load BatchLoader[V], redisDown, refresh bool) []result[V] {
	res := make([]result[V], len(keys))
	plans := make([]plan, len(keys))
	tokens := make([]string, len(keys))
	for i := range tokens {
		tokens[i] = c.token()
	}
	epoch := c.epoch.Load()
	all := make([]int, len(keys))
	for i := range all {
		all[i] = i
	}
	if redisDown {
		for i := range plans {
			plans[i] = planNoWrite
		}
	} else {
		c.claim(ctx, keys, all, tokens, plans, res, epoch, !refresh)
		if bad := withPlan(all, plans, planBad); len(bad) > 0 {
			c.claim(ctx, keys, bad, tokens, plans, res, epoch, false)
		}
	}
	waitIdx := withPlan(all, plans, planWait)
	loadIdx := append(withPlan(all, plans, planWrite), withPlan(all, plans, planNoWrite)...)
	var wg sync.WaitGroup
	if len(waitIdx) > 0 {
		c.st.leaseWaits.Add(uint64(len(waitIdx)))
		wg.Go(func() { c.waitFills(ctx, keys, waitIdx, tokens, plans, res, epoch) })
	}
	if len(loadIdx) > 0 {
		c.loadAndWrite(ctx, keys, loadIdx, tokens, plans, res, load, epoch)
	}
	wg.Wait()
	// Keys whose wait ended with the lease in our hands, or with the wait running out (unless
	// Close ended it).
	loadIdx = loadIdx[:0]
	for _, i := range waitIdx {
		switch {
		case plans[i] == planDone:
		case ctx.Err() != nil:
			res[i].err = fmt.Errorf("cache: load %q: %w", keys[i], ctx.Err())
		default:
			loadIdx = append(loadIdx, i)
		}
	}
	if len(loadIdx) > 0 {
		c.loadAndWrite(ctx, keys, loadIdx, tokens, plans, res, load, epoch)
	}
	return res
}

// withPlan returns the indexes in idx whose plan is p.
func withPlan(idx []int, plans []plan, p plan) []int {
	var out []int
	for _, i := range idx {
		if plans[i] == p {
			out = append(out, i)
		}
	}
	return out
}

// claim runs claim.lua for keys[idx] in one round trip: with Options.Lease it takes each lease
// exclusively (SET NX PX Lease), else it sets a plain fence token (SET PX LoadTimeout) that a
// later claimer, Set or Delete replaces. With check, a value that arrived meanwhile is taken
// instead. Each key's plan becomes planWrite (claimed), planWait (held elsewhere), planDone
// (value found, or a Redis error under FailClosed), planNoWrite (Redis error under FailOpen) or
// planBad (an undecodable value).
func (c *Cache[V]) claim(ctx context.Context, keys []string, idx []int, tokens []string, plans []plan, res []result[V], epoch uint64, check bool) {
	exclusive, ttl := "", c.cfg.LoadTimeout
	if c.cfg.Lease > 0 {
		exclusive, ttl = "1", c.cfg.Lease
	}
	checkArg := ""
	if check {
		checkArg = "1"
	}
	calls := make([]scriptCall, len(idx))
	for j, i := range idx {
		vk := c.valueKey(keys[i])
		calls[j] = scriptCall{claimScript, []string{vk, leaseKey(vk)}, []any{tokens[i], ttl.Milliseconds(), exclusive, checkArg}}
	}
	for j, cmd := range runScripts(ctx, c.rdb, calls) {
		i := idx[j]
		switch val, err := cmd.Result(); {
		case err != nil:
			c.st.redisErrors.Add(1)
			plans[i] = planNoWrite
			if c.cfg.OnRedisError == FailClosed {
				res[i].err = fmt.Errorf("cache: fetch %q: %w", keys[i], err)
				plans[i] = planDone
			}
		case val == int64(1):
			plans[i] = planWrite
		case val == int64(0):
			plans[i] = planWait
		default:
			s, _ := val.(string)
			h, v, err := c.decode([]byte(s))
			if err != nil {
				plans[i] = planBad
				continue
			}
			plans[i] = planDone
			c.storeLocal(epoch, keys[i], v, h)
			if h.tombstone {
				res[i].err = ErrNotFound
			} else {
				res[i].v = v
			}
		}
	}
}

func (c *Cache[V]) token() string {
	return c.id + "." + strconv.FormatUint(c.seq.Add(1), 36)
}

// pollInterval is how often a lease waiter looks at Redis when no notice wakes it.
func (c *Cache[V]) pollInterval() time.Duration {
	return min(max(c.cfg.Lease/10, 5*time.Millisecond), 100*time.Millisecond)
}

// waitFills waits, up to LoadTimeout, for the values of keys[idx] that other processes are
// loading under their leases, polling with claim (woken early by their fill notices). Each key
// ends planDone, planWrite (the lease came free and is now ours) or planNoWrite (the wait ran
// out, Redis failed under FailOpen, or the value is undecodable).
func (c *Cache[V]) waitFills(ctx context.Context, keys []string, idx []int, tokens []string, plans []plan, res []result[V], epoch uint64) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.LoadTimeout)
	defer cancel()
	wakeCh := make(chan struct{}, 1)
	names := make([]string, len(idx))
	for j, i := range idx {
		names[j] = keys[i]
	}
	c.registerWait(names, wakeCh)
	defer c.unregisterWait(names, wakeCh)
	poll := time.NewTimer(c.pollInterval())
	defer poll.Stop()
	for pending := idx; len(pending) > 0; pending = withPlan(pending, plans, planWait) {
		select {
		case <-ctx.Done():
			for _, i := range pending {
				plans[i] = planNoWrite
			}
			return
		case <-wakeCh:
		case <-poll.C:
		}
		c.claim(ctx, keys, pending, tokens, plans, res, epoch, true)
		for _, i := range pending {
			if plans[i] == planBad {
				plans[i] = planNoWrite // not ours to overwrite while another process holds the lease
			}
		}
		poll.Reset(c.pollInterval())
	}
}

// loadAndWrite calls load once for keys[idx] and writes the results of the planWrite ones,
// fenced by their lease tokens, in one round trip. Keys load leaves out become negative entries.
func (c *Cache[V]) loadAndWrite(ctx context.Context, keys []string, idx []int, tokens []string, plans []plan, res []result[V], load BatchLoader[V], epoch uint64) {
	batch := make([]string, len(idx))
	for j, i := range idx {
		batch[j] = keys[i]
	}
	m, dur, err := c.callLoader(ctx, load, batch)
	channel, notice := "", ""
	calls := make([]scriptCall, 0, len(idx))
	type write struct {
		i     int
		h     header
		store bool // a value or negative entry that may go to the local tier once written
	}
	writes := make([]write, 0, len(idx))
	for _, i := range idx {
		k := keys[i]
		var env []byte
		var h header
		var ttl time.Duration
		switch v, found := m[k]; {
		case err != nil:
			res[i].err = fmt.Errorf("cache: load %q: %w", k, err)
		case found:
			res[i].v = v
			var eerr error
			if env, h, ttl, eerr = c.encode(v, dur); eerr != nil {
				c.cfg.Logger.Warn("cache: cannot encode loaded value", "key", k, "err", eerr)
				env = nil
			}
		default:
			res[i].err = ErrNotFound
			env, h, ttl, _ = c.tombstone()
		}
		plan := plans[i]
		plans[i] = planDone
		if plan != planWrite {
			continue
		}
		if c.cfg.Lease > 0 {
			channel, notice = c.cfg.channel, encodeNotice(noticeFilled, c.id, []string{k})
		}
		vk := c.valueKey(k)
		// An empty envelope only releases the lease, so that waiters take over at once.
		calls = append(calls, scriptCall{fillScript, []string{vk, leaseKey(vk)},
			[]any{tokens[i], env, max(ttl.Milliseconds(), 1), channel, notice}})
		writes = append(writes, write{i: i, h: h, store: env != nil})
	}
	if len(calls) == 0 {
		return
	}
	for j, cmd := range runScripts(ctx, c.rdb, calls) {
		w := writes[j]
		switch n, err := cmd.Int64(); {
		case err != nil:
			c.st.redisErrors.Add(1)
			c.cfg.Logger.Warn("cache: write after load failed", "key", keys[w.i], "err", err)
		case n == 0:
			c.st.fenceRejects.Add(1)
		case w.store:
			c.storeLocal(epoch, keys[w.i], res[w.i].v, w.h)
		}
	}
}

// callLoader runs load within LoadTimeout, turning a panic into an error wrapping
// ErrLoaderPanic and an error wrapping ErrNotFound into "none of the keys exist".
func (c *Cache[V]) callLoader(ctx context.Context, load BatchLoader[V], keys []string) (m map[string]V, dur time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.LoadTimeout)
	defer cancel()
	c.st.loads.Add(1)
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
	}()
	m, err = load(ctx, keys)
	return m, 0, err
}
