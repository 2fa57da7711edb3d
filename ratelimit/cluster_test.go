package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// TestCluster shares one real Redis Cluster (3 masters, 1 replica each) between its subtests.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster start takes several seconds")
	}
	c := redistest.Cluster(t, 3, 1)
	ctx := context.Background()

	t.Run("multi-limit keys share a slot whatever the key", func(t *testing.T) {
		r, err := NewRedis(c.Client(), &RedisOptions{Prefix: "c:rl:"},
			Limit{Rate: 1e-3, Burst: 3, Name: "short"}, Limit{Rate: 1e-4, Burst: 5, Name: "long"})
		require.NoError(t, err)
		ids := []string{"user:1", "}", "{x}", "a}b{c", "%7D", "ü{}"}
		for i := 0; i < 40; i++ { // spread over many slots, hence all three masters
			ids = append(ids, fmt.Sprintf("k%d", i))
		}
		for _, id := range ids {
			got, _ := countAllowed(t, r, id, 10)
			require.Equal(t, 3, got, "id %q", id)
			require.NoError(t, r.Reset(ctx, id), "id %q: DEL of all buckets", id)
			res := allowN(t, r, id, 2)
			require.True(t, res.Allowed, "id %q: reset", id)
			require.Equal(t, 1, res.Remaining)
		}
	})

	t.Run("pipelined batches span the masters, both algorithms", func(t *testing.T) {
		for _, algo := range []Algorithm{TokenBucket, GCRA} {
			r, err := NewRedis(c.Client(), &RedisOptions{Prefix: "c:p:" + algo.String() + ":", Algorithm: algo, Pipeline: true},
				Limit{Rate: 1e-4, Burst: 3, Name: "a"}, Limit{Rate: 1e-4, Burst: 4, Name: "b"})
			require.NoError(t, err)
			var mu sync.Mutex
			allowed := map[string]int{}
			var wg sync.WaitGroup
			for g := 0; g < 16; g++ {
				wg.Go(func() {
					for i := 0; i < 40; i++ {
						key := fmt.Sprintf("k%d", (g+i)%20) // 20 keys over many slots
						res, err := r.Allow(ctx, key)
						if err != nil {
							t.Error(err)
							return
						}
						if res.Allowed {
							mu.Lock()
							allowed[key]++
							mu.Unlock()
						}
					}
				})
			}
			wg.Wait()
			for i := 0; i < 20; i++ {
				require.Equal(t, 3, allowed[fmt.Sprintf("k%d", i)], "%v: key k%d", algo, i)
			}
		}
	})

	t.Run("concurrency limiter keys on every master", func(t *testing.T) {
		cl, err := NewConcurrency(c.Client(), 2, &ConcurrencyOptions{Prefix: "c:cl:"})
		require.NoError(t, err)
		for i := 0; i < 20; i++ {
			key := fmt.Sprintf("tenant:%d}{", i)
			a, err := cl.Acquire(ctx, key)
			require.NoError(t, err)
			b, err := cl.Acquire(ctx, key)
			require.NoError(t, err)
			_, err = cl.Acquire(ctx, key)
			require.ErrorIs(t, err, ErrConcurrencyLimited, "key %q", key)
			require.NoError(t, a.Release(ctx))
			require.NoError(t, b.Renew(ctx))
			n, err := cl.InFlight(ctx, key)
			require.NoError(t, err)
			require.Equal(t, 1, n)
			require.NoError(t, b.Release(ctx))
		}
	})

	t.Run("master killed: fallback, then the promoted replica", func(t *testing.T) {
		local, err := NewLocal(nil, Limit{Rate: 1e-3, Burst: 1000})
		require.NoError(t, err)
		defer local.Close()
		// A client that reports a dead node quickly (go-redis's defaults retry for seconds, which
		// would hold calls until their own deadline instead of letting the fallback answer).
		var addrs []string
		for _, n := range c.Nodes() {
			addrs = append(addrs, n.Addr())
		}
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, MaxRetries: -1,
			DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
		defer rdb.Close()
		r, err := NewRedis(rdb, &RedisOptions{OnRedisError: Fallback(local), ProbeInterval: 50 * time.Millisecond},
			Limit{Rate: 1e-3, Burst: 1000})
		require.NoError(t, err)
		res := allowN(t, r, "victim", 1)
		require.True(t, res.Allowed)

		stop, done := make(chan struct{}), make(chan struct{})
		errc := make(chan error, 1)
		go func() { // steady traffic on the key while its master dies
			defer close(done)
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := r.Allow(cctx, "victim")
				cancel()
				if err != nil {
					errc <- err
					return
				}
			}
		}()
		c.KillMaster("{victim}")
		// go-redis refreshes a cluster client's slot map on MOVED or every few seconds; a refused
		// dial to the dead master triggers neither, so refresh it as the shared client was.
		rdb.ReloadState(ctx)
		// Eventually a call is answered by Redis (the promoted replica), not by the fallback.
		require.Eventually(t, func() bool {
			before := r.Stats().Fallback
			_, err := r.Allow(ctx, "victim")
			return err == nil && r.Stats().Fallback == before
		}, 30*time.Second, 20*time.Millisecond)
		close(stop)
		<-done
		select {
		case err := <-errc:
			require.NoError(t, err, "Allow failed during failover despite the fallback")
		default:
		}
		st := r.Stats()
		t.Logf("failover stats: %+v", st)
		res = allowN(t, r, "victim", 1)
		require.True(t, res.Allowed)
	})
}
