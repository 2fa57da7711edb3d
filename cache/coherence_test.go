package cache

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/luascript"
	"github.com/surgekit/surge/internal/redistest"
)

// Tests of the coherence and one-refresh promises, on a real redis-server. Each reproduces an
// interleaving deterministically: a gateHook on one client holds one command back (before or
// after the server ran it) until the test releases it.

// gateHook, once armed, holds back the first command (or pipeline, with pipelines) that match
// accepts: before it reaches the server, or with after once the server answered it. hit closes
// when it is held; release lets it go.
type gateHook struct {
	match     func(cmd redis.Cmder) bool
	after     bool
	pipelines bool
	armed     atomic.Bool
	hit       chan struct{}
	release   chan struct{}
}

func newGate(after, pipelines bool, match func(cmd redis.Cmder) bool) *gateHook {
	return &gateHook{match: match, after: after, pipelines: pipelines, hit: make(chan struct{}), release: make(chan struct{})}
}

func (h *gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return h.run([]redis.Cmder{cmd}, func() error { return next(ctx, cmd) })
	}
}

func (h *gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !h.pipelines {
			return next(ctx, cmds)
		}
		return h.run(cmds, func() error { return next(ctx, cmds) })
	}
}

func (h *gateHook) run(cmds []redis.Cmder, fn func() error) error {
	if !slices.ContainsFunc(cmds, h.match) || !h.armed.Load() {
		return fn()
	}
	if !h.after {
		if !h.armed.CompareAndSwap(true, false) {
			return fn()
		}
		close(h.hit)
		<-h.release
		return fn()
	}
	err := fn()
	if err != nil || !h.armed.CompareAndSwap(true, false) {
		return err // (EVALSHA meeting NOSCRIPT did not write: hold the EVAL that follows)
	}
	close(h.hit)
	<-h.release
	return err
}

// writes matches a command that writes valueKey (a plain SET or a script given that key).
func writes(valueKey string) func(cmd redis.Cmder) bool {
	return func(cmd redis.Cmder) bool {
		switch cmd.Name() {
		case "set", "evalsha", "eval":
			return slices.Contains(cmd.Args(), any(valueKey))
		}
		return false
	}
}

func named(name string) func(cmd redis.Cmder) bool {
	return func(cmd redis.Cmder) bool { return cmd.Name() == name }
}

// flightsIdle reports whether no load runs in c.
func flightsIdle(c *Cache[user]) bool {
	c.fl.mu.Lock()
	defer c.fl.mu.Unlock()
	return len(c.fl.m) == 0
}

// Defect 1: a reader whose GET returned the stale value, but whose refresh claim runs after the
// first refresh finished, must take the new value instead of loading again: in one process, and
// across processes with Lease.
func TestCoherenceStaleValueRefreshedOnce(t *testing.T) {
	for _, lease := range []time.Duration{0, 5 * time.Second} {
		t.Run(fmt.Sprintf("lease=%v", lease), func(t *testing.T) {
			s := redistest.Server(t)
			ctx := context.Background()
			clk := &clock{}
			gate := newGate(true, false, named("get"))
			rdbLate := s.NewClient(nil)
			rdbLate.AddHook(gate)
			opt := Options{Prefix: "once:", TTL: time.Hour, RefreshAfter: time.Minute, Lease: lease}
			late, err := New[user](rdbLate, &opt)
			require.NoError(t, err)
			t.Cleanup(func() { _ = late.Close() })
			late.now = clk.now
			first := late // in one process the first refresh runs in the same Cache
			if lease > 0 {
				first, err = New[user](s.NewClient(nil), &opt)
				require.NoError(t, err)
				t.Cleanup(func() { _ = first.Close() })
				first.now = clk.now
			}
			var loads atomic.Int64
			load := func(ctx context.Context, key string) (user, error) {
				return user{ID: key, Name: fmt.Sprint("v", loads.Add(1))}, nil
			}
			require.NoError(t, first.Set(ctx, "k", user{ID: "k", Name: "v0"}))
			clk.advance(2 * time.Minute) // stale, far from expiring

			gate.armed.Store(true)
			lateDone := make(chan user, 1)
			go func() {
				u, _ := late.Fetch(ctx, "k", load)
				lateDone <- u
			}()
			<-gate.hit // the late reader's GET has read v0 at the server

			// The first refresh: FetchMany reads with a pipeline, which the gate lets through.
			got, err := first.FetchMany(ctx, []string{"k"}, func(ctx context.Context, keys []string) (map[string]user, error) {
				u, err := load(ctx, keys[0])
				return map[string]user{keys[0]: u}, err
			})
			require.NoError(t, err)
			require.Equal(t, "v0", got["k"].Name, "stale served at once")
			require.Eventually(t, func() bool { return loads.Load() == 1 && flightsIdle(first) }, 5*time.Second, time.Millisecond)
			raw, err := s.Client().Get(ctx, "once:{k}").Bytes()
			require.NoError(t, err)
			_, v, err := first.decode(raw)
			require.NoError(t, err)
			require.Equal(t, "v1", v.Name, "the first refresh landed")

			close(gate.release)
			require.Equal(t, "v0", (<-lateDone).Name)
			require.Eventually(t, func() bool { return flightsIdle(late) }, 5*time.Second, time.Millisecond)
			require.EqualValues(t, 1, loads.Load(), "the late reader loaded a value that was already refreshed")
		})
	}
}

// Defect 2: a writer with neither a local tier nor a lease (an admin tool, a batch job) must
// still invalidate every reader's local tier.
func TestCoherencePlainWriterInvalidatesLocalTiers(t *testing.T) {
	s := redistest.Server(t)
	ctx := context.Background()
	r := newLocal(t, s.NewClient(nil), Options{Prefix: "plain:"})
	w, err := New[user](s.NewClient(nil), &Options{Prefix: "plain:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close() })
	var calls atomic.Int64
	require.Eventually(t, func() bool {
		_, err := r.Fetch(ctx, "k", countingLoader(&calls))
		return err == nil && r.Stats().LocalHits > 0
	}, 5*time.Second, time.Millisecond)

	require.NoError(t, w.Set(ctx, "k", user{ID: "k", Name: "v2"}))
	require.Eventually(t, func() bool {
		u, err := r.Fetch(ctx, "k", countingLoader(&calls))
		return err == nil && u.Name == "v2"
	}, 2*time.Second, time.Millisecond, "Set by a plain writer left the old value in a local tier")
	require.NoError(t, w.Delete(ctx, "k"))
	require.Eventually(t, func() bool {
		_, err := r.Get(ctx, "k")
		return err == ErrMiss
	}, 2*time.Second, time.Millisecond, "Delete by a plain writer left the value in a local tier")
}

// Defect 4: an invalidation that lands between storeLocal's check and its put must not leave
// the deleted value in the local tier.
func TestCoherenceInvalidationDuringLocalStore(t *testing.T) {
	s := redistest.Server(t)
	ctx := context.Background()
	w, err := New[user](s.NewClient(nil), &Options{Prefix: "toctou:", Local: &LocalOptions{}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close() })
	require.NoError(t, w.Set(ctx, "k", user{ID: "k", Name: "v1"}))
	r := newLocal(t, s.NewClient(nil), Options{Prefix: "toctou:"}) // after the Set: no notice pending

	var once atomic.Bool
	r.beforeLocalPut = func(key string) {
		if key != "k" || !once.CompareAndSwap(false, true) {
			return
		}
		snap := r.snapshot("k") // what the check just compared
		require.NoError(t, w.Delete(ctx, "k"))
		require.Eventually(t, func() bool { return r.snapshot("k") != snap }, 5*time.Second, time.Millisecond)
	}
	u, err := r.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "v1", u.Name)
	r.beforeLocalPut = nil
	_, err = r.Get(ctx, "k")
	require.ErrorIs(t, err, ErrMiss, "the local tier kept a value deleted while it was being stored")
}

// Smaller item: one invalidation must not keep every other key out of the local tier.
func TestCoherenceInvalidationOfOtherKeyDoesNotBlockStore(t *testing.T) {
	s := redistest.Server(t)
	ctx := context.Background()
	w, err := New[user](s.NewClient(nil), &Options{Prefix: "stripe:", Local: &LocalOptions{}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close() })
	require.NoError(t, w.Set(ctx, "a", user{ID: "a", Name: "va"}))
	require.NoError(t, w.Set(ctx, "b", user{ID: "b", Name: "vb"})) // deleting it below is a change Redis reports
	r := newLocal(t, s.NewClient(nil), Options{Prefix: "stripe:"}) // after the Sets: no notice pending
	require.NotSame(t, r.epochOf("a"), r.epochOf("b"))

	var once atomic.Bool
	r.beforeLocalPut = func(key string) {
		if !once.CompareAndSwap(false, true) {
			return
		}
		snap := r.snapshot("b")
		require.NoError(t, w.Delete(ctx, "b"))
		require.Eventually(t, func() bool { return r.snapshot("b") != snap }, 5*time.Second, time.Millisecond)
	}
	_, err = r.Get(ctx, "a")
	require.NoError(t, err)
	r.beforeLocalPut = nil
	_, ok := r.local.GetIfPresent("a")
	require.True(t, ok, "a Delete of b kept a out of the local tier")
}

// Defect 5: when another instance's Set lands after ours and its notice is processed before our
// Set returns, our Set must not store its (overwritten) value locally.
func TestCoherenceConcurrentSetsAcrossInstances(t *testing.T) {
	s := redistest.Server(t)
	ctx := context.Background()
	gate := newGate(true, true, writes("sets:{k}"))
	rdbA := s.NewClient(nil)
	rdbA.AddHook(gate)
	a := newLocal(t, rdbA, Options{Prefix: "sets:"})
	b, err := New[user](s.NewClient(nil), &Options{Prefix: "sets:", Local: &LocalOptions{}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })

	gate.armed.Store(true)
	// a hears of b's write through b's notice or, with server-assisted invalidation, through
	// Redis, which then reports a's own write first.
	before, want := a.Stats().Invalidations, uint64(1)
	if a.tracking.Load() {
		want = 2
	}
	setDone := make(chan error, 1)
	go func() { setDone <- a.Set(ctx, "k", user{ID: "k", Name: "a"}) }()
	<-gate.hit // a's value is in Redis; a's Set has not returned
	require.NoError(t, b.Set(ctx, "k", user{ID: "k", Name: "b"}))
	require.Eventually(t, func() bool { return a.Stats().Invalidations >= before+want }, 5*time.Second, time.Millisecond)
	close(gate.release)
	require.NoError(t, <-setDone)

	raw, err := s.Client().Get(ctx, "sets:{k}").Bytes()
	require.NoError(t, err)
	_, v, err := a.decode(raw)
	require.NoError(t, err)
	require.Equal(t, "b", v.Name)
	u, err := a.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "b", u.Name, "a serves its own overwritten value from its local tier")
}

// Defect 6: a load slower than Lease is still cached.
func TestCoherenceLoadSlowerThanLeaseIsCached(t *testing.T) {
	s := redistest.Server(t)
	ctx := context.Background()
	// Renewals every Lease/3 leave 130 ms of slack for a starved process (-race on shared cores).
	c, err := New[user](s.NewClient(nil), &Options{Prefix: "slow:", Lease: 200 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	var loads atomic.Int64
	slow := func(ctx context.Context, key string) (user, error) {
		loads.Add(1)
		select { // a slow database, two and a half leases long
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			return user{}, ctx.Err()
		}
		return user{ID: key, Name: "db"}, nil
	}
	u, err := c.Fetch(ctx, "k", slow)
	require.NoError(t, err)
	require.Equal(t, "db", u.Name)
	require.Zero(t, c.Stats().FenceRejects, "the value loaded was dropped")
	n, err := s.Client().Exists(ctx, "slow:{k}").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "a load slower than Lease was not cached")
	_, err = c.Fetch(ctx, "k", slow)
	require.NoError(t, err)
	require.EqualValues(t, 1, loads.Load())
}

// DESIGN §2 Coherence: nothing enters a local tier before its instance listens for
// invalidations, so a Delete right after New is never missed.
func TestCoherenceNothingStoredBeforeSubscribed(t *testing.T) {
	s := redistest.Server(t)
	ctx := context.Background()
	w, err := New[user](s.NewClient(nil), &Options{Prefix: "early:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close() })
	rdb := s.NewClient(nil)
	fresh := func(ctx context.Context, key string) (user, error) { return user{ID: key, Name: "fresh"}, nil }
	for i := range 60 {
		old := fmt.Sprint("v", i)
		require.NoError(t, w.Set(ctx, "k", user{ID: "k", Name: old}))
		r, err := New[user](rdb, &Options{Prefix: "early:", Local: &LocalOptions{}})
		require.NoError(t, err)
		u, err := r.Fetch(ctx, "k", fresh)
		require.NoError(t, err)
		require.Equal(t, old, u.Name)
		require.NoError(t, w.Delete(ctx, "k"))
		ok := false
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
			if u, err := r.Fetch(ctx, "k", fresh); err == nil && u.Name == "fresh" {
				ok = true
				break
			}
			time.Sleep(time.Millisecond)
		}
		require.NoError(t, r.Close())
		require.True(t, ok, "run %d: a value stored before the instance subscribed outlived a Delete", i)
	}
}

// Smaller item: a key Set is not ruled out by a Guard that can learn keys.
func TestCoherenceSetAddsToGuard(t *testing.T) {
	g := &setGuard{m: map[string]bool{}}
	c, _, _ := newCache(t, &Options{Guard: g})
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "k", user{ID: "k", Name: "v"}))
	var calls atomic.Int64
	u, err := c.Fetch(ctx, "k", countingLoader(&calls))
	require.NoError(t, err, "the Guard rejected a key that Set stored")
	require.Equal(t, "v", u.Name)
	_, err = c.Fetch(ctx, "other", countingLoader(&calls))
	require.ErrorIs(t, err, ErrNotFound)
}

// setGuard is a Guard that learns keys, as bloom filters do.
type setGuard struct {
	mu sync.Mutex
	m  map[string]bool
}

func (g *setGuard) MightContain(_ context.Context, key string) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.m[key], nil
}

func (g *setGuard) Add(_ context.Context, keys ...string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, k := range keys {
		g.m[k] = true
	}
	return nil
}

// Server-assisted invalidation: a write by any client (raw SET and DEL here), and a key expiring
// in Redis, evict the local copy.
func TestCoherenceServerAssistedInvalidation(t *testing.T) {
	s := redistest.Server(t)
	ctx := context.Background()
	r := newLocal(t, s.NewClient(nil), Options{Prefix: "trk:"})
	require.True(t, r.tracking.Load(), "the server accepted CLIENT TRACKING")
	w, err := New[user](s.NewClient(nil), &Options{Prefix: "trk:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close() })
	raw := s.Client()
	var calls atomic.Int64
	local := func(k string) bool { _, ok := r.local.GetIfPresent(k); return ok }
	cacheLocally := func(k string) {
		require.Eventually(t, func() bool {
			_, err := r.Fetch(ctx, k, countingLoader(&calls))
			return err == nil && local(k)
		}, 5*time.Second, time.Millisecond)
	}
	// An envelope another service could have written: copied from a key w set.
	require.NoError(t, w.Set(ctx, "template", user{ID: "x", Name: "raw"}))
	env, err := raw.Get(ctx, "trk:{template}").Bytes()
	require.NoError(t, err)

	for _, k := range []string{"k", "a}b%c"} { // escaped ids map back to their keys
		cacheLocally(k)
		require.NoError(t, raw.Set(ctx, r.valueKey(k), env, time.Hour).Err())
		require.Eventually(t, func() bool {
			u, err := r.Fetch(ctx, k, countingLoader(&calls))
			return err == nil && u.Name == "raw"
		}, 2*time.Second, time.Millisecond, "a raw SET left the old value in the local tier")
		cacheLocally(k)
		require.NoError(t, raw.Del(ctx, r.valueKey(k)).Err())
		require.Eventually(t, func() bool { return !local(k) }, 2*time.Second, time.Millisecond, "a raw DEL left the value in the local tier")
	}

	// A key that expires in Redis (its envelope promises an hour) leaves the local tier too.
	require.NoError(t, raw.Set(ctx, "trk:{exp}", env, 300*time.Millisecond).Err())
	cacheLocally("exp")
	require.Eventually(t, func() bool { return !local("exp") }, 3*time.Second, time.Millisecond, "an expired key stayed in the local tier")
}

// slowScripts delays the pipelined runs of one script, as a loaded Redis does: the replies of a
// claim pipeline come back after, the requests of a fill pipeline go out after the delay.
type slowScripts struct {
	claim, fill time.Duration
}

func (slowScripts) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (slowScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h slowScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	runs := func(cmds []redis.Cmder, sc *luascript.Script, src string) bool {
		if len(cmds) == 0 {
			return false
		}
		args := cmds[0].Args()
		return len(args) > 1 && (args[0] == "evalsha" && args[1] == sc.Hash() || args[0] == "eval" && args[1] == src)
	}
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if runs(cmds, fillScript, fillLua) {
			time.Sleep(h.fill)
		}
		err := next(ctx, cmds)
		if runs(cmds, claimScript, claimLua) && !luascript.IsNoScript(cmds[0].Err()) {
			time.Sleep(h.claim)
		}
		return err
	}
}

// One refresh (DESIGN §2): a FetchMany batch loaded slower than Lease is cached whole, even
// when Redis answers its claims and takes its fills late: every claimed key's lease is renewed
// from the moment it is claimed until its fill lands (issue 12, defect 6 for FetchMany).
func TestCoherenceFetchManySlowerThanLeaseIsCached(t *testing.T) {
	s := redistest.Server(t)
	ctx := context.Background()
	const lease = 200 * time.Millisecond
	rdb := s.NewClient(nil)
	rdb.AddHook(slowScripts{claim: lease * 3 / 4, fill: lease * 3 / 4})
	c, err := New[user](rdb, &Options{Prefix: "slowmany:", Lease: lease})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	keys := make([]string, 300)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	var loaded atomic.Int64
	slow := func(ctx context.Context, ks []string) (map[string]user, error) {
		loaded.Add(int64(len(ks)))
		select { // a slow database, two leases long
		case <-time.After(2 * lease):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		m := make(map[string]user, len(ks))
		for _, k := range ks {
			m[k] = user{ID: k, Name: "db"}
		}
		return m, nil
	}
	got, err := c.FetchMany(ctx, keys, slow)
	require.NoError(t, err)
	require.Len(t, got, len(keys))
	require.Zero(t, c.Stats().FenceRejects, "loaded values were dropped")
	vks := make([]string, len(keys))
	for i, k := range keys {
		vks[i] = "slowmany:{" + k + "}"
	}
	n, err := s.Client().Exists(ctx, vks...).Result()
	require.NoError(t, err)
	require.EqualValues(t, len(keys), n, "keys of a load slower than Lease were not cached")
	loaded.Store(0)
	got, err = c.FetchMany(ctx, keys, slow)
	require.NoError(t, err)
	require.Len(t, got, len(keys))
	require.Zero(t, loaded.Load(), "a second FetchMany loaded again")
}

// echoes records the server-assisted invalidations c applied, per Redis key, so a test can wait
// until the invalidations of its own writes came back without sleeping.
type echoes struct {
	mu   sync.Mutex
	seen map[string]int
	more chan struct{} // signalled after each message
}

func watchEchoes(c *Cache[user]) *echoes {
	e := &echoes{seen: map[string]int{}, more: make(chan struct{}, 1)}
	f := func(redisKeys []string) {
		e.mu.Lock()
		for _, k := range redisKeys {
			e.seen[k]++
		}
		e.mu.Unlock()
		select {
		case e.more <- struct{}{}:
		default:
		}
	}
	c.afterTracking.Store(&f)
	return e
}

// waitAll waits until every one of redisKeys was reported at least once.
func (e *echoes) waitAll(t *testing.T, redisKeys []string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		e.mu.Lock()
		missing := 0
		for _, k := range redisKeys {
			if e.seen[k] == 0 {
				missing++
			}
		}
		e.mu.Unlock()
		if missing == 0 {
			return
		}
		select {
		case <-e.more:
		case <-timeout:
			t.Fatalf("%d of %d invalidations never came back", missing, len(redisKeys))
		}
	}
}

// waitOwnIdle waits until c has no local store of its own writes pending.
func waitOwnIdle(t *testing.T, c *Cache[user]) {
	t.Helper()
	require.Eventually(t, c.ownIdle, 10*time.Second, time.Millisecond, "own writes still pending")
}

// A fill (Fetch, FetchMany) or a Set of this instance comes back as a server-assisted
// invalidation of the key it wrote: that echo must not evict the value the instance has just
// stored locally, or a warm-up pass gets no local hits at all on the next pass.
func TestCoherenceOwnWritesStayLocal(t *testing.T) {
	for _, lease := range []time.Duration{0, time.Minute} {
		t.Run(fmt.Sprintf("lease=%v", lease), func(t *testing.T) {
			s := redistest.Server(t)
			ctx := context.Background()
			c := newLocal(t, s.NewClient(nil), Options{Prefix: "own:", Lease: lease})
			require.True(t, c.tracking.Load())
			e := watchEchoes(c)
			const n = 300
			keys := make([]string, n)
			for i := range keys {
				keys[i] = fmt.Sprint("k", i)
			}
			var loads atomic.Int64
			load := func(_ context.Context, ks []string) (map[string]user, error) {
				loads.Add(1)
				out := make(map[string]user, len(ks))
				for _, k := range ks {
					out[k] = user{ID: k}
				}
				return out, nil
			}
			var calls atomic.Int64
			got, err := c.FetchMany(ctx, keys[:n-2], load)
			require.NoError(t, err)
			require.Len(t, got, n-2)
			_, err = c.Fetch(ctx, keys[n-2], countingLoader(&calls))
			require.NoError(t, err)
			require.NoError(t, c.Set(ctx, keys[n-1], user{ID: keys[n-1]}))

			vks := make([]string, n)
			for i, k := range keys {
				vks[i] = c.valueKey(k)
			}
			e.waitAll(t, vks)
			waitOwnIdle(t, c)

			before := c.Stats()
			got, err = c.FetchMany(ctx, keys, load)
			require.NoError(t, err)
			require.Len(t, got, n)
			st := c.Stats()
			require.EqualValues(t, n, st.LocalHits-before.LocalHits, "the second pass is served by the local tier (redis hits %d)", st.RedisHits-before.RedisHits)
			require.EqualValues(t, 1, loads.Load())
			require.EqualValues(t, 1, calls.Load())
		})
	}
}

// Redis reports the writes of one event-loop cycle to a BCAST tracking client as one message,
// each key once: a write by another client that runs just after this instance's Set leaves no
// second echo. The local store of an own write must not count on one: here CLIENT PAUSE WRITE
// holds the Set (or the fill after a load), then a raw SET of the same key, and lets both run in
// one cycle, in that order.
func TestCoherenceOwnWriteEchoSharedWithLaterWrite(t *testing.T) {
	s := redistest.Server(t)
	ctx := context.Background()
	c := newLocal(t, s.NewClient(nil), Options{Prefix: "dup:", Local: &LocalOptions{TTL: time.Hour}})
	require.True(t, c.tracking.Load())
	e := watchEchoes(c)
	admin, raw := s.NewClient(nil), s.NewClient(nil)
	blocked := func(n int) {
		require.Eventually(t, func() bool {
			info, err := admin.Info(ctx, "clients").Result()
			return err == nil && strings.Contains(info, fmt.Sprintf("blocked_clients:%d\r", n))
		}, 5*time.Second, time.Millisecond)
	}
	// An envelope of another value, as another service would write it.
	require.NoError(t, c.Set(ctx, "template", user{ID: "k", Name: "theirs"}))
	env, err := raw.Get(ctx, c.valueKey("template")).Bytes()
	require.NoError(t, err)
	var calls atomic.Int64
	_, err = c.Fetch(ctx, "warm", countingLoader(&calls)) // loads fill.lua: no NOSCRIPT round below
	require.NoError(t, err)
	for i := range 6 {
		k := fmt.Sprint("k", i)
		setDone, rawDone := make(chan error, 1), make(chan error, 1)
		if i%2 == 0 { // a Set
			require.NoError(t, admin.Do(ctx, "CLIENT", "PAUSE", 10_000, "WRITE").Err())
			go func() { setDone <- c.Set(ctx, k, user{ID: k, Name: "mine"}) }()
		} else { // the fill after a load: paused once the lease is taken
			loading, release := make(chan struct{}), make(chan struct{})
			go func() {
				_, err := c.Fetch(ctx, k, func(context.Context, string) (user, error) {
					close(loading)
					<-release
					return user{ID: k, Name: "mine"}, nil
				})
				setDone <- err
			}()
			<-loading
			require.NoError(t, admin.Do(ctx, "CLIENT", "PAUSE", 10_000, "WRITE").Err())
			close(release)
		}
		blocked(1)
		go func() { rawDone <- raw.Set(ctx, c.valueKey(k), env, time.Hour).Err() }()
		blocked(2)
		require.NoError(t, admin.Do(ctx, "CLIENT", "UNPAUSE").Err())
		require.NoError(t, <-setDone)
		require.NoError(t, <-rawDone)
		e.waitAll(t, []string{c.valueKey(k)})
		waitOwnIdle(t, c)
		e.mu.Lock()
		echoes := e.seen[c.valueKey(k)]
		e.mu.Unlock()
		u, err := c.Get(ctx, k)
		require.NoError(t, err)
		require.Equal(t, "theirs", u.Name, "run %d: the local tier kept its own write's value after a later write (%d invalidation messages)", i, echoes)
	}
}

// An own write is stored once its echo was counted; the rule 1 of that same echo must not run
// after the store and evict it. Here the listener is held between counting the echo of a Set
// and whatever handleTracking does next, until the Set's value was stored.
func TestCoherenceOwnWriteNotEvictedByItsOwnEcho(t *testing.T) {
	s := redistest.Server(t)
	ctx := context.Background()
	c := newLocal(t, s.NewClient(nil), Options{Prefix: "echo:", Local: &LocalOptions{TTL: time.Hour}})
	require.True(t, c.tracking.Load())
	e := watchEchoes(c)
	hold := make(chan struct{})
	var once sync.Once
	f := func(keys []string) {
		if slices.Contains(keys, "k") {
			once.Do(func() { <-hold })
		}
	}
	c.afterEchoes.Store(&f)
	require.NoError(t, c.Set(ctx, "k", user{ID: "k"}))
	waitOwnIdle(t, c) // the value was stored (or given up) while the listener is held
	close(hold)
	e.waitAll(t, []string{c.valueKey("k")})
	_, local := c.local.GetIfPresent("k")
	require.True(t, local, "the echo of the Set evicted the value the Set stored")
}
