package cache

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// Tests on a real redis-server: timing, pub/sub and failures that miniredis does not model.

func TestServerLeaseLoadsOnceAcrossInstances(t *testing.T) {
	s := redistest.Server(t)
	var calls atomic.Int64
	load := func(ctx context.Context, key string) (user, error) {
		calls.Add(1)
		time.Sleep(50 * time.Millisecond) // a database round trip, long enough for all to pile up
		return user{ID: key, Name: "db"}, nil
	}
	const instances, perInstance = 4, 250
	caches := make([]*Cache[user], instances)
	for i := range caches {
		c, err := New[user](s.NewClient(nil), &Options{Prefix: "lease:", Lease: 5 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		caches[i] = c
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, instances*perInstance)
	for _, c := range caches {
		for range perInstance {
			wg.Go(func() {
				<-start
				u, err := c.Fetch(context.Background(), "cold", load)
				if err == nil && u.Name != "db" {
					err = fmt.Errorf("got %+v", u)
				}
				errs <- err
			})
		}
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, calls.Load(), "one load for 4 instances × 250 callers")
	var loads uint64
	for _, c := range caches {
		loads += c.Stats().Loads
	}
	require.EqualValues(t, 1, loads)
}

func TestServerKilledMidLoadThenRestarted(t *testing.T) {
	s := redistest.Server(t)
	rdb := s.NewClient(&redis.Options{MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	c, err := New[user](rdb, &Options{Prefix: "kill:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()

	started, release := make(chan string, 1), make(chan struct{})
	results := make(chan error, 20)
	for range 20 {
		go func() {
			u, err := c.Fetch(ctx, "k", slowLoader("db", started, release))
			if err == nil && u.Name != "db" {
				err = fmt.Errorf("got %+v", u)
			}
			results <- err
		}()
	}
	<-started
	require.Eventually(t, func() bool { return c.Stats().SharedLoads == 19 }, 5*time.Second, time.Millisecond)
	s.Kill()
	close(release) // the load finishes while Redis is gone: the fenced write fails
	for range 20 {
		require.NoError(t, <-results, "FailOpen callers still get the loader's value")
	}
	require.NotZero(t, c.Stats().RedisErrors)

	// Redis still down: later misses load (once per key) and serve.
	var calls atomic.Int64
	u, err := c.Fetch(ctx, "other", countingLoader(&calls))
	require.NoError(t, err)
	require.Equal(t, "other", u.ID)

	s.Restart()
	require.Eventually(t, func() bool { return c.Set(ctx, "k", user{ID: "k", Name: "set"}) == nil },
		10*time.Second, 20*time.Millisecond, "the same Cache works again after the restart")
	calls.Store(0)
	u, err = c.Fetch(ctx, "k", countingLoader(&calls))
	require.NoError(t, err)
	require.Equal(t, "set", u.Name)
	require.Zero(t, calls.Load(), "served from Redis")
	_, err = c.Fetch(ctx, "new", countingLoader(&calls))
	require.NoError(t, err)
	_, err = c.Fetch(ctx, "new", countingLoader(&calls))
	require.NoError(t, err)
	require.EqualValues(t, 1, calls.Load(), "loads are cached again")
}

func TestServerLocalInvalidation(t *testing.T) {
	s := redistest.Server(t)
	a := newLocal(t, s.NewClient(nil), Options{Prefix: "loc:"})
	b := newLocal(t, s.NewClient(nil), Options{Prefix: "loc:"})
	ctx := context.Background()
	var calls atomic.Int64
	for _, c := range []*Cache[user]{a, b} {
		u, err := c.Fetch(ctx, "k", countingLoader(&calls))
		require.NoError(t, err)
		require.Equal(t, "name-k", u.Name)
	}
	require.EqualValues(t, 1, b.Stats().RedisHits)
	require.NoError(t, a.Set(ctx, "k", user{ID: "k", Name: "v2"}))
	require.Eventually(t, func() bool {
		u, err := b.Fetch(ctx, "k", countingLoader(&calls))
		return err == nil && u.Name == "v2"
	}, 5*time.Second, time.Millisecond)
	require.NoError(t, a.Delete(ctx, "k"))
	require.Eventually(t, func() bool {
		_, err := b.Get(ctx, "k")
		return err == ErrMiss
	}, 5*time.Second, time.Millisecond)
	// Each write reaches b as a notice from a and, with server-assisted invalidation, from Redis.
	require.GreaterOrEqual(t, b.Stats().Invalidations, uint64(2))

	// A restart drops b's subscription; go-redis re-subscribes and b flushes its local tier.
	_, err := b.Fetch(ctx, "k2", countingLoader(&calls))
	require.NoError(t, err)
	s.Restart()
	require.Eventually(t, func() bool { return b.Stats().LocalFlushes >= 1 }, 15*time.Second, 10*time.Millisecond)
	_, ok := b.local.GetIfPresent("k2")
	require.False(t, ok)
}

// TestCluster shares one real 3-master cluster between its subtests (it takes seconds to start).
func TestCluster(t *testing.T) {
	cl := redistest.Cluster(t, 3, 1)
	rdb := cl.Client()
	ctx := context.Background()

	t.Run("Fetch", func(t *testing.T) {
		c, err := New[user](rdb, &Options{Prefix: "cl:"})
		require.NoError(t, err)
		defer c.Close()
		var calls atomic.Int64
		for i := range 30 {
			k := fmt.Sprint("key-", i)
			for range 2 {
				u, err := c.Fetch(ctx, k, countingLoader(&calls))
				require.NoError(t, err)
				require.Equal(t, k, u.ID)
			}
		}
		require.EqualValues(t, 30, calls.Load())
		require.NoError(t, c.Delete(ctx, "key-1", "key-2", "key-3"))
		_, err = c.Get(ctx, "key-2")
		require.ErrorIs(t, err, ErrMiss)
	})

	// Concurrent reads of keys on every master share pipelines, which the ClusterClient splits
	// per node; every reader gets its own key's value.
	t.Run("pipelined reads", func(t *testing.T) {
		c, err := New[user](rdb, &Options{Prefix: "clp:"})
		require.NoError(t, err)
		defer c.Close()
		const keys, readers, reads = 60, 16, 30
		for i := range keys {
			require.NoError(t, c.Set(ctx, fmt.Sprint("key-", i), user{ID: fmt.Sprint("key-", i)}))
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for r := range readers {
			wg.Go(func() {
				<-start
				for i := range reads {
					k := fmt.Sprint("key-", (r*7+i)%keys)
					u, err := c.Fetch(ctx, k, func(context.Context, string) (user, error) {
						return user{}, errors.New("loader called for a cached key")
					})
					if err != nil || u.ID != k {
						t.Errorf("%s: got %+v, %v", k, u, err)
						return
					}
				}
			})
		}
		close(start)
		wg.Wait()
		st := c.Stats()
		require.EqualValues(t, readers*reads, st.RedisHits)
		require.NotZero(t, st.PipelinedReads, "16 concurrent readers must have shared round trips")
		require.Zero(t, st.RedisErrors)
	})

	t.Run("FetchMany", func(t *testing.T) {
		c, err := New[user](rdb, &Options{Prefix: "clm:"})
		require.NoError(t, err)
		defer c.Close()
		keys := make([]string, 40) // spread over all three masters
		for i := range keys {
			keys[i] = fmt.Sprint("k", i)
		}
		var batches [][]string
		load := func(ctx context.Context, ks []string) (map[string]user, error) {
			batches = append(batches, append([]string(nil), ks...))
			out := map[string]user{}
			for _, k := range ks {
				if k != "k7" {
					out[k] = user{ID: k}
				}
			}
			return out, nil
		}
		got, err := c.FetchMany(ctx, keys, load)
		require.NoError(t, err)
		require.Len(t, got, 39)
		require.Len(t, batches, 1)
		sort.Strings(batches[0])
		require.Len(t, batches[0], 40)
		got, err = c.FetchMany(ctx, keys, load)
		require.NoError(t, err)
		require.Len(t, got, 39)
		require.Len(t, batches, 1, "all 40 (one as a negative entry) came from the cluster")
		require.EqualValues(t, 39, c.Stats().RedisHits)
		require.EqualValues(t, 1, c.Stats().NegativeHits)
	})

	t.Run("Lease", func(t *testing.T) {
		var calls atomic.Int64
		load := func(ctx context.Context, key string) (user, error) {
			calls.Add(1)
			time.Sleep(50 * time.Millisecond)
			return user{ID: key}, nil
		}
		var wg sync.WaitGroup
		for range 3 {
			c, err := New[user](rdb, &Options{Prefix: "cll:", Lease: 5 * time.Second})
			require.NoError(t, err)
			defer c.Close()
			for range 20 {
				wg.Go(func() {
					u, err := c.Fetch(ctx, "hot", load)
					require.NoError(t, err)
					require.Equal(t, "hot", u.ID)
				})
			}
		}
		wg.Wait()
		require.EqualValues(t, 1, calls.Load())
	})

	t.Run("LocalInvalidation", func(t *testing.T) {
		a, err := New[user](rdb, &Options{Prefix: "cli:", Local: &LocalOptions{}})
		require.NoError(t, err)
		defer a.Close()
		b, err := New[user](rdb, &Options{Prefix: "cli:", Local: &LocalOptions{}})
		require.NoError(t, err)
		defer b.Close()
		for _, c := range []*Cache[user]{a, b} {
			select {
			case <-c.sub.ready:
			case <-time.After(5 * time.Second):
				t.Fatal("not subscribed")
			}
		}
		var calls atomic.Int64
		_, err = b.Fetch(ctx, "k", countingLoader(&calls))
		require.NoError(t, err)
		require.NoError(t, a.Set(ctx, "k", user{ID: "k", Name: "new"}))
		require.Eventually(t, func() bool {
			u, err := b.Fetch(ctx, "k", countingLoader(&calls))
			return err == nil && u.Name == "new"
		}, 5*time.Second, time.Millisecond)
	})

	// Defect 3: the invalidation of a Set must not reach another instance before the write it
	// announces, or that instance re-reads the old value and keeps it. The writer's command to
	// the key's master is held back; a notice that arrives meanwhile overtook the write.
	t.Run("NoticeNeverOvertakesWrite", func(t *testing.T) {
		r, err := New[user](rdb, &Options{Prefix: "clo:", Local: &LocalOptions{}})
		require.NoError(t, err)
		defer r.Close()
		select {
		case <-r.sub.ready:
		case <-time.After(5 * time.Second):
			t.Fatal("not subscribed")
		}
		addrs := make([]string, 0)
		for _, n := range cl.Nodes() {
			addrs = append(addrs, n.Addr())
		}
		var gate atomic.Pointer[gateHook]
		wrdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		defer wrdb.Close()
		wrdb.OnNewNode(func(node *redis.Client) { node.AddHook(gateProxy{&gate}) })
		w, err := New[user](wrdb, &Options{Prefix: "clo:", Lease: time.Second}) // Lease: it notifies even before defect 2 was fixed
		require.NoError(t, err)
		defer w.Close()
		// Keys on other masters than the one the channel name hashes to; a keyless PUBLISH may go
		// to any node, so try several.
		for i := range 4 {
			k := fmt.Sprint("k", i)
			var calls atomic.Int64
			require.NoError(t, w.Set(ctx, k, user{ID: k, Name: "old"}))
			require.Eventually(t, func() bool {
				u, err := r.Fetch(ctx, k, countingLoader(&calls))
				_, local := r.local.GetIfPresent(k)
				return err == nil && u.Name == "old" && local
			}, 5*time.Second, time.Millisecond)

			g := newGate(false, true, writes("clo:{"+k+"}"))
			g.armed.Store(true)
			gate.Store(g)
			before := r.Stats().Invalidations
			setDone := make(chan error, 1)
			go func() { setDone <- w.Set(ctx, k, user{ID: k, Name: "new"}) }()
			<-g.hit // the write is held back before its master
			overtaken := false
			for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if r.Stats().Invalidations > before {
					overtaken = true
					break
				}
			}
			_, _ = r.Fetch(ctx, k, countingLoader(&calls)) // re-read while the write is held
			close(g.release)
			require.NoError(t, <-setDone)
			ok := false
			for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if u, err := r.Fetch(ctx, k, countingLoader(&calls)); err == nil && u.Name == "new" {
					ok = true
					break
				}
			}
			require.True(t, ok, "key %s: the old value stayed in the local tier (notice overtook the write: %v)", k, overtaken)
		}
	})

	// Server-assisted invalidation per master: a raw write by another client, on any master,
	// evicts the local copy.
	t.Run("ServerAssistedInvalidation", func(t *testing.T) {
		r, err := New[user](rdb, &Options{Prefix: "clt:", Local: &LocalOptions{TTL: time.Hour}})
		require.NoError(t, err)
		defer r.Close()
		select {
		case <-r.sub.ready:
		case <-time.After(5 * time.Second):
			t.Fatal("not subscribed")
		}
		require.True(t, r.tracking.Load())
		var calls atomic.Int64
		for i := range 6 { // spread over the masters
			k := fmt.Sprint("k", i)
			require.Eventually(t, func() bool {
				_, err := r.Fetch(ctx, k, countingLoader(&calls))
				_, ok := r.local.GetIfPresent(k)
				return err == nil && ok
			}, 5*time.Second, time.Millisecond)
			require.NoError(t, rdb.Del(ctx, r.valueKey(k)).Err())
			require.Eventually(t, func() bool {
				_, ok := r.local.GetIfPresent(k)
				return !ok
			}, 2*time.Second, time.Millisecond, "a raw DEL on %s's master left it in the local tier", k)
		}
	})

	// Notices on a cluster: classic PUBLISH is broadcast to every node of a cluster, so no surge
	// instance sends one there, nor subscribes to the notice channel. A write still invalidates
	// another instance's local tier, and a fill still wakes a lease waiter on another instance
	// at once (the waiter's polls are an hour apart here): both through server-assisted
	// invalidation, one message per write per reader.
	t.Run("NoPublish", func(t *testing.T) {
		nodes := cl.Nodes()
		for _, n := range nodes {
			require.NoError(t, n.Client().ConfigResetStat(ctx).Err())
		}
		r, err := New[user](rdb, &Options{Prefix: "cln:", Local: &LocalOptions{TTL: time.Hour}})
		require.NoError(t, err)
		defer r.Close()
		<-r.sub.ready
		w, err := New[user](rdb, &Options{Prefix: "cln:"})
		require.NoError(t, err)
		defer w.Close()
		var calls atomic.Int64
		for i := range 6 { // spread over the masters
			k := fmt.Sprint("k", i)
			require.NoError(t, w.Set(ctx, k, user{ID: k, Name: "old"}))
			require.Eventually(t, func() bool {
				u, err := r.Fetch(ctx, k, countingLoader(&calls))
				_, local := r.local.GetIfPresent(k)
				return err == nil && u.Name == "old" && local
			}, 5*time.Second, time.Millisecond)
			require.NoError(t, w.Set(ctx, k, user{ID: k, Name: "new"}))
			require.Eventually(t, func() bool {
				u, err := r.Fetch(ctx, k, countingLoader(&calls))
				return err == nil && u.Name == "new"
			}, 5*time.Second, time.Millisecond, "%s: another instance's Set left the old value in the local tier", k)
			require.NoError(t, w.Delete(ctx, k))
			require.Eventually(t, func() bool {
				_, local := r.local.GetIfPresent(k)
				return !local
			}, 5*time.Second, time.Millisecond, "%s: another instance's Delete left the value in the local tier", k)
		}

		// Lease waiters without a local tier.
		// LoadTimeout bounds a's load, which waits for the test: generous, so load cannot end it.
		opt := Options{Prefix: "cln:", Lease: 10 * time.Second, LoadTimeout: 20 * time.Second}
		a, err := New[user](rdb, &opt)
		require.NoError(t, err)
		defer a.Close()
		b, err := New[user](rdb, &opt)
		require.NoError(t, err)
		defer b.Close()
		b.pollEvery = time.Hour
		for i := range 3 {
			k := fmt.Sprint("lease", i)
			started, release := make(chan struct{}), make(chan struct{})
			aDone := make(chan error, 1)
			go func() {
				_, err := a.Fetch(ctx, k, func(_ context.Context, key string) (user, error) {
					close(started)
					<-release
					return user{ID: key, Name: "filled"}, nil
				})
				aDone <- err
			}()
			<-started
			bDone := make(chan error, 1)
			go func() {
				u, err := b.Fetch(ctx, k, func(context.Context, string) (user, error) {
					return user{}, errors.New("the waiter loaded: no fill woke it")
				})
				if err == nil && u.Name != "filled" {
					err = fmt.Errorf("got %+v", u)
				}
				bDone <- err
			}()
			require.Eventually(t, func() bool { return b.Stats().LeaseWaits == uint64(i+1) }, 5*time.Second, time.Millisecond)
			var sub *subscriber
			require.Eventually(t, func() bool { // registered: its listener runs (sub is set)
				b.mu.Lock()
				defer b.mu.Unlock()
				sub = b.sub
				return b.waiters[k] != nil
			}, 5*time.Second, time.Millisecond)
			<-sub.ready // the waiter listens: the fill cannot pass unseen
			close(release)
			require.NoError(t, <-aDone)
			require.NoError(t, <-bDone, "%s: the lease waiter on another instance was not woken by the fill", k)
		}
		require.Zero(t, b.Stats().Loads)

		channel := r.cfg.channel
		for _, n := range nodes {
			stats, err := n.Client().Info(ctx, "commandstats").Result()
			require.NoError(t, err)
			require.NotContains(t, stats, "cmdstat_publish:", "node %s ran PUBLISH", n.Addr())
			subs, err := n.Client().PubSubNumSub(ctx, channel).Result()
			require.NoError(t, err)
			require.Zero(t, subs[channel], "node %s: an instance subscribes to the notice channel", n.Addr())
		}
	})

	// A fill and a Set come back as server-assisted invalidations from their masters: the
	// instance keeps what it wrote locally all the same.
	t.Run("OwnWritesStayLocal", func(t *testing.T) {
		c, err := New[user](rdb, &Options{Prefix: "clw:", Local: &LocalOptions{TTL: time.Hour}})
		require.NoError(t, err)
		defer c.Close()
		<-c.sub.ready
		e := watchEchoes(c)
		keys := make([]string, 60) // spread over the masters
		vks := make([]string, len(keys))
		for i := range keys {
			keys[i] = fmt.Sprint("k", i)
			vks[i] = c.valueKey(keys[i])
		}
		load := func(_ context.Context, ks []string) (map[string]user, error) {
			out := map[string]user{}
			for _, k := range ks {
				out[k] = user{ID: k}
			}
			return out, nil
		}
		_, err = c.FetchMany(ctx, keys[1:], load)
		require.NoError(t, err)
		require.NoError(t, c.Set(ctx, keys[0], user{ID: keys[0]}))
		e.waitAll(t, vks)
		waitOwnIdle(t, c)
		before := c.Stats().LocalHits
		got, err := c.FetchMany(ctx, keys, load)
		require.NoError(t, err)
		require.Len(t, got, len(keys))
		require.EqualValues(t, len(keys), c.Stats().LocalHits-before)
	})

	// With no notices on a cluster, a master refusing CLIENT TRACKING (an ACL here) would leave
	// the local tier deaf to every write: it stays empty instead.
	t.Run("TrackingRefused", func(t *testing.T) {
		addrs := make([]string, 0)
		for _, n := range cl.Nodes() {
			require.NoError(t, n.Client().Do(ctx, "ACL", "SETUSER", "notrack", "on", ">pw", "~*", "&*", "+@all", "-client|tracking").Err())
			addrs = append(addrs, n.Addr())
		}
		lrdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, Username: "notrack", Password: "pw"})
		defer lrdb.Close()
		c, err := New[user](lrdb, &Options{Prefix: "clr:", Local: &LocalOptions{}})
		require.NoError(t, err)
		defer c.Close()
		<-c.sub.ready
		require.True(t, c.blind.Load(), "the refusal was noticed")
		var calls atomic.Int64
		for range 2 {
			_, err := c.Fetch(ctx, "k", countingLoader(&calls))
			require.NoError(t, err)
		}
		require.NoError(t, c.Set(ctx, "s", user{ID: "s"}))
		_, err = c.Get(ctx, "s")
		require.NoError(t, err)
		st := c.Stats()
		require.Zero(t, st.LocalHits)
		require.EqualValues(t, 2, st.RedisHits)
	})

	t.Run("FailoverKeepsServing", func(t *testing.T) { // last: it kills a master
		c, err := New[user](rdb, &Options{Prefix: "clf:"})
		require.NoError(t, err)
		defer c.Close()
		var calls atomic.Int64
		_, err = c.Fetch(ctx, "k", countingLoader(&calls))
		require.NoError(t, err)

		stop, done := make(chan struct{}), make(chan error, 1)
		go func() {
			for {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				if u, err := c.Fetch(ctx, "k", countingLoader(&calls)); err != nil || u.ID != "k" {
					done <- fmt.Errorf("during failover: %+v, %v", u, err)
					return
				}
			}
		}()
		cl.KillMaster("clf:{k}")
		close(stop)
		require.NoError(t, <-done, "FailOpen kept serving while the master died")

		before := c.Stats().RedisHits
		for range 2 {
			_, err = c.Fetch(ctx, "after", countingLoader(&calls))
			require.NoError(t, err)
		}
		require.Equal(t, before+1, c.Stats().RedisHits, "cached in the healed cluster")
	})
}

func TestServerPausedRedisCostsOnlyTheClientTimeout(t *testing.T) {
	s := redistest.Server(t)
	rdb := s.NewClient(&redis.Options{MaxRetries: -1, ReadTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond})
	c, err := New[user](rdb, &Options{Prefix: "pause:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "k", user{ID: "k", Name: "cached"}))

	s.Pause(time.Minute) // connections stay open, nothing answers
	defer s.Resume()
	done := make(chan user, 1)
	var calls atomic.Int64
	go func() {
		u, err := c.Fetch(ctx, "k", countingLoader(&calls))
		assert.NoError(t, err)
		done <- u
	}()
	select {
	case u := <-done:
		require.Equal(t, "name-k", u.Name, "served by the loader while Redis hangs")
	case <-time.After(20 * time.Second):
		t.Fatal("Fetch hung on a paused Redis") // a hang detector; the bound is the 100ms read timeout
	}
	require.NotZero(t, c.Stats().RedisErrors)
}

// gateProxy forwards to the gate currently stored, so a hook added to cluster nodes as they
// appear can be re-armed per step.
type gateProxy struct{ p *atomic.Pointer[gateHook] }

func (g gateProxy) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g gateProxy) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h := g.p.Load(); h != nil {
			return h.ProcessHook(next)(ctx, cmd)
		}
		return next(ctx, cmd)
	}
}

func (g gateProxy) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h := g.p.Load(); h != nil {
			return h.ProcessPipelineHook(next)(ctx, cmds)
		}
		return next(ctx, cmds)
	}
}

// holdAfterEval holds, once armed, the first EVAL/EVALSHA (alone or in a pipeline) after Redis
// answered it: claimed closes, and the caller goes on when proceed closes.
type holdAfterEval struct {
	armed            atomic.Bool
	once             sync.Once
	claimed, proceed chan struct{}
}

func (h *holdAfterEval) hold(cmds ...redis.Cmder) {
	if !h.armed.Load() {
		return
	}
	for _, cmd := range cmds {
		if n := cmd.Name(); n == "evalsha" || n == "eval" {
			h.once.Do(func() {
				close(h.claimed)
				<-h.proceed
			})
			return
		}
	}
}
func (h *holdAfterEval) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *holdAfterEval) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.hold(cmd)
		return err
	}
}
func (h *holdAfterEval) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.hold(cmds...)
		return err
	}
}

// A fill that lands after a lease waiter's claim found the lease taken, but whose notice
// arrives before the waiter registered for notices, still wakes it at once (it waited for its
// next poll: here an hour, so it ran out of LoadTimeout and loaded; this made TestCluster/
// NoPublish flaky under load).
func TestServerFillBetweenClaimAndWaitWakesTheWaiter(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	// LoadTimeout bounds a's load, which waits for the test: generous, so load cannot end it.
	opt := Options{Prefix: "lw:", Lease: 10 * time.Second, LoadTimeout: 20 * time.Second}
	a, err := New[user](srv.NewClient(nil), &opt)
	require.NoError(t, err)
	defer a.Close()
	brdb := srv.NewClient(nil)
	h := &holdAfterEval{claimed: make(chan struct{}), proceed: make(chan struct{})}
	brdb.AddHook(h)
	bopt := opt
	bopt.Local = &LocalOptions{TTL: time.Hour}
	b, err := New[user](brdb, &bopt)
	require.NoError(t, err)
	defer b.Close()
	b.pollEvery = time.Hour
	b.mu.Lock()
	b.startSubscriberLocked()
	sub := b.sub
	b.mu.Unlock()
	<-sub.ready
	filled := make(chan struct{})
	var fillOnce sync.Once
	f := func(redisKeys []string) {
		for _, rk := range redisKeys {
			if rk == b.valueKey("k") {
				fillOnce.Do(func() { close(filled) })
			}
		}
	}
	b.afterTracking.Store(&f)

	started, release := make(chan string, 1), make(chan struct{})
	aDone := make(chan error, 1)
	go func() { _, err := a.Fetch(ctx, "k", slowLoader("filled", started, release)); aDone <- err }()
	<-started
	h.armed.Store(true)
	bDone := make(chan error, 1)
	go func() {
		u, err := b.Fetch(ctx, "k", func(context.Context, string) (user, error) {
			return user{}, errors.New("the waiter loaded: no fill woke it")
		})
		if err == nil && u.Name != "filled" {
			err = fmt.Errorf("got %+v", u)
		}
		bDone <- err
	}()
	<-h.claimed // b found a's lease and has not registered as a waiter yet
	close(release)
	require.NoError(t, <-aDone)
	<-filled // b got the fill's invalidation, with no waiter to wake
	close(h.proceed)
	require.NoError(t, <-bDone)
	require.Zero(t, b.Stats().Loads)
}
