package bloom

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// TestCluster runs the cluster behaviour on one shared real Redis Cluster (3 masters, 1 replica
// each): shards spread over slots and masters, every call still works across them.
func TestCluster(t *testing.T) {
	c := redistest.Cluster(t, 3, 1)
	rdb := c.Client()
	ctx := context.Background()

	t.Run("sharded filter spreads over masters and loses nothing", func(t *testing.T) {
		const n, fp, shards = 30_000, 0.01, 12
		r, err := NewRedis(rdb, "users", n, fp, &RedisOptions{Shards: shards})
		require.NoError(t, err)
		checkFilter(t, r, n, fp)

		masters := map[string]bool{}
		slots := map[int64]bool{}
		for s := range shards {
			bitmap, cfg := r.ShardKeys(s)
			slot, err := rdb.ClusterKeySlot(ctx, bitmap).Result()
			require.NoError(t, err)
			cfgSlot, err := rdb.ClusterKeySlot(ctx, cfg).Result()
			require.NoError(t, err)
			require.Equal(t, slot, cfgSlot, "shard %d: bitmap and config in different slots", s)
			slots[slot] = true
			masters[c.MasterOf(bitmap).Addr()] = true
			count, err := rdb.BitCount(ctx, bitmap, nil).Result()
			require.NoError(t, err)
			require.NotZero(t, count, "shard %d got no keys", s)
		}
		require.Len(t, slots, shards, "shards share slots")
		require.Len(t, masters, 3, "shards do not reach every master")

		approx, err := r.ApproximateCount(ctx)
		require.NoError(t, err)
		require.InDelta(t, n, float64(approx), 0.05*n)
		require.NoError(t, r.Delete(ctx))
		for s := range shards {
			bitmap, cfg := r.ShardKeys(s)
			require.Zero(t, rdb.Exists(ctx, bitmap, cfg).Val())
		}
	})

	t.Run("pipelined checks across masters", func(t *testing.T) {
		r, err := NewRedis(rdb, "piped", 10_000, 0.01, &RedisOptions{Shards: 12, Pipeline: true})
		require.NoError(t, err)
		in := randomKeys(60, 2000, "p")
		require.NoError(t, r.Add(ctx, in...))
		// 16 callers check one key each at a time: calls queue behind each other and leave in
		// batches that span every master.
		var wg sync.WaitGroup
		var missed atomic.Int64
		for g := range 16 {
			wg.Go(func() {
				for i := g; i < len(in); i += 16 {
					if ok, err := r.MightContain(ctx, in[i]); err != nil || !ok {
						missed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		require.Zero(t, missed.Load())
		st := r.pipe.Stats()
		require.EqualValues(t, len(in), st.Direct+st.Batched, "every check went out once: %+v", st)
		t.Logf("%+v", st)
		require.NoError(t, r.Delete(ctx))
	})

	t.Run("one shard equals a local filter", func(t *testing.T) {
		checkSameAsLocal(t, rdb, 10_000, 0.01)
	})

	t.Run("config mismatch across slots", func(t *testing.T) {
		a, err := NewRedis(rdb, "orders", 1000, 0.01, &RedisOptions{Shards: 4})
		require.NoError(t, err)
		keys := randomKeys(40, 200, "o")
		require.NoError(t, a.Add(ctx, keys...))
		b, err := NewRedis(rdb, "orders", 5000, 0.01, &RedisOptions{Shards: 4})
		require.NoError(t, err)
		require.ErrorIs(t, b.Add(ctx, keys...), ErrConfigMismatch)
		_, err = b.MightContainMany(ctx, keys)
		require.ErrorIs(t, err, ErrConfigMismatch)
		got, err := a.MightContainMany(ctx, keys)
		require.NoError(t, err)
		require.NotContains(t, got, false)
	})

	t.Run("warm and rebuild into a sharded filter", func(t *testing.T) {
		small, err := NewRedis(rdb, "sessions:v1", 100, 0.01, nil)
		require.NoError(t, err)
		live, err := NewLive(small)
		require.NoError(t, err)
		source := randomKeys(41, 5000, "s")
		_, err = Warm(ctx, live, slices.Values(source[:100]))
		require.NoError(t, err)
		big, err := NewRedis(rdb, "sessions:v2", 10_000, 0.01, &RedisOptions{Shards: 6})
		require.NoError(t, err)
		n, old, err := live.Rebuild(ctx, big, slices.Values(source))
		require.NoError(t, err)
		require.Equal(t, len(source), n)
		require.NoError(t, old.(*Redis).Delete(ctx))
		got, err := big.MightContainMany(ctx, source)
		require.NoError(t, err)
		require.NotContains(t, got, false)
	})
}
