package bloom

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

func TestRedisNoFalseNegativesAndFPRateMini(t *testing.T) {
	for _, shards := range []int{1, 8} {
		t.Run(map[int]string{1: "one shard", 8: "eight shards"}[shards], func(t *testing.T) {
			_, rdb := redistest.Mini(t)
			// miniredis rewrites the whole string on each SETBIT, so it gets a small filter;
			// the 100k-key runs are on a real server (integration_test.go).
			const n, fp = 2000, 0.01
			r, err := NewRedis(rdb, "users", n, fp, &RedisOptions{Shards: shards})
			require.NoError(t, err)
			checkFilter(t, r, n, fp)
			approx, err := r.ApproximateCount(context.Background())
			require.NoError(t, err)
			require.InDelta(t, n, float64(approx), 0.03*n, "ApproximateCount")
			fill, err := r.FillRatio(context.Background())
			require.NoError(t, err)
			require.InDelta(t, 0.5, fill, 0.05)
		})
	}
}

func TestRedisSameBitsAsLocalMini(t *testing.T) {
	_, rdb := redistest.Mini(t)
	checkSameAsLocal(t, rdb, 2000, 0.01)
}

func TestRedisEmptyFilterAnswersFalseWithoutWriting(t *testing.T) {
	ctx := context.Background()
	mr, rdb := redistest.Mini(t)
	r, err := NewRedis(rdb, "never", 1000, 0.01, &RedisOptions{Shards: 4})
	require.NoError(t, err)
	ok, err := r.MightContain(ctx, "a")
	require.NoError(t, err)
	require.False(t, ok)
	many, err := r.MightContainMany(ctx, []string{"a", "b", "c"})
	require.NoError(t, err)
	require.Equal(t, []bool{false, false, false}, many)
	require.Empty(t, mr.Keys(), "a read created keys")

	key := "a"
	for r.shardOf(new(hashKey(key))) == 0 {
		key += "a"
	}
	require.NoError(t, r.Add(ctx, key))
	bitmap, cfg := r.ShardKeys(r.shardOf(new(hashKey(key))))
	_, cfg0 := r.ShardKeys(0)
	require.ElementsMatch(t, []string{bitmap, cfg, cfg0}, mr.Keys(),
		"Add writes one shard's bitmap and config, and the config of shard 0")
}

func TestRedisConfigMismatch(t *testing.T) {
	ctx := context.Background()
	mr, rdb := redistest.Mini(t)
	orig, err := NewRedis(rdb, "users", 1000, 0.01, nil)
	require.NoError(t, err)
	require.NoError(t, orig.Add(ctx, "a", "b"))
	bitmap, cfg := orig.ShardKeys(0)
	before, err := mr.Get(bitmap)
	require.NoError(t, err)

	for name, other := range map[string]struct {
		n      uint
		fp     float64
		shards int
	}{
		"other n":      {2000, 0.01, 1},
		"other fp":     {1000, 0.001, 1},
		"other shards": {1000, 0.01, 2},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := NewRedis(rdb, "users", other.n, other.fp, &RedisOptions{Shards: other.shards})
			require.NoError(t, err)
			err = r.Add(ctx, "c")
			require.ErrorIs(t, err, ErrConfigMismatch)
			require.ErrorContains(t, err, "surge-bloom/1 m=")
			require.ErrorContains(t, err, cfg)
			_, err = r.MightContain(ctx, "a")
			require.ErrorIs(t, err, ErrConfigMismatch)
			_, err = r.MightContainMany(ctx, []string{"a", "b"})
			require.ErrorIs(t, err, ErrConfigMismatch)
			err = r.Add(ctx, "c", "d", "e")
			require.ErrorIs(t, err, ErrConfigMismatch)
			after, err := mr.Get(bitmap)
			require.NoError(t, err)
			require.Equal(t, before, after, "a refused Add changed the bitmap")
		})
	}

	// A bitmap whose config is gone is refused too rather than read as this filter.
	mr.Del(cfg)
	_, err = orig.MightContain(ctx, "a")
	require.ErrorIs(t, err, ErrConfigMismatch)
	require.ErrorIs(t, orig.Add(ctx, "a"), ErrConfigMismatch)

	// Delete frees the name for another size.
	require.NoError(t, orig.Delete(ctx))
	require.Empty(t, mr.Keys())
	bigger, err := NewRedis(rdb, "users", 2000, 0.01, nil)
	require.NoError(t, err)
	require.NoError(t, bigger.Add(ctx, "a"))
	ok, err := bigger.MightContain(ctx, "a")
	require.NoError(t, err)
	require.True(t, ok)
}

// TestRedisShardCountMismatch: processes that disagree on Shards get ErrConfigMismatch on every
// key, including keys whose shard the other process never wrote.
func TestRedisShardCountMismatch(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ first, second int }{{4, 3}, {3, 4}, {1, 2}, {2, 1}} {
		t.Run(fmt.Sprintf("%d then %d", tc.first, tc.second), func(t *testing.T) {
			_, rdb := redistest.Mini(t)
			a, err := NewRedis(rdb, "users", 1000, 0.01, &RedisOptions{Shards: tc.first})
			require.NoError(t, err)
			in := randomKeys(14, 50, "k")
			require.NoError(t, a.Add(ctx, in...))
			b, err := NewRedis(rdb, "users", 1000, 0.01, &RedisOptions{Shards: tc.second})
			require.NoError(t, err)
			shards := map[int]bool{}
			for _, k := range in {
				shards[b.shardOf(new(hashKey(k)))] = true
				_, err := b.MightContain(ctx, k)
				require.ErrorIs(t, err, ErrConfigMismatch, "key %q", k)
				require.ErrorIs(t, b.Add(ctx, k), ErrConfigMismatch, "key %q", k)
			}
			require.Len(t, shards, tc.second, "the keys do not reach every shard of the second filter")
			_, err = b.MightContainMany(ctx, in)
			require.ErrorIs(t, err, ErrConfigMismatch)
			require.ErrorIs(t, b.Add(ctx, in...), ErrConfigMismatch)
			// The first filter is intact.
			got, err := a.MightContainMany(ctx, in)
			require.NoError(t, err)
			require.NotContains(t, got, false)
		})
	}
}

func TestRedisDoesNotMutateCallerKeys(t *testing.T) {
	ctx := context.Background()
	_, rdb := redistest.Mini(t)
	r, err := NewRedis(rdb, "users", 2000, 0.01, &RedisOptions{Shards: 2})
	require.NoError(t, err)
	in := randomKeys(11, 2500, "m") // more than one script call per shard
	require.Greater(t, len(r.group(in, false)), 2)
	keep := slices.Clone(in)
	require.NoError(t, r.Add(ctx, in...))
	require.Equal(t, keep, in)
	got, err := r.MightContainMany(ctx, in)
	require.NoError(t, err)
	require.Equal(t, keep, in)
	require.NotContains(t, got, false)
}

func TestRedisShardsSplitTheBits(t *testing.T) {
	ctx := context.Background()
	mr, rdb := redistest.Mini(t)
	const shards, n = 8, 4000
	r, err := NewRedis(rdb, "users", n, 0.01, &RedisOptions{Shards: shards})
	require.NoError(t, err)
	whole, err := NewLocal(n, 0.01)
	require.NoError(t, err)
	require.Equal(t, (whole.Cap()+shards-1)/shards, r.Cap(), "each shard holds m/S bits")
	mustAdd(t, r, randomKeys(12, n, "s"))
	var tags []string
	for s := range shards {
		bitmap, cfg := r.ShardKeys(s)
		tags = append(tags, bitmap)
		count, err := rdb.BitCount(ctx, bitmap, nil).Result()
		require.NoError(t, err)
		// Each shard gets about n/S keys and so about half its bits set.
		require.InDelta(t, 0.5, float64(count)/float64(r.Cap()), 0.1, "shard %d fill", s)
		stored, err := mr.Get(cfg)
		require.NoError(t, err)
		require.Contains(t, stored, "shards=8")
	}
	require.Len(t, slices.Compact(slices.Sorted(slices.Values(tags))), shards)
}

// hashTag returns the part of key Redis Cluster hashes (CLUSTER KEYSLOT's rule).
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

func TestRedisShardKeysShareASlotWhateverTheName(t *testing.T) {
	_, rdb := redistest.Mini(t)
	seen := map[string]bool{}
	for _, name := range []string{"users", "a}b{c", "x:{1}", "}", "users:0"} {
		r, err := NewRedis(rdb, name, 100, 0.01, &RedisOptions{Shards: 3})
		require.NoError(t, err)
		bitmap, cfg := r.ShardKeys(3)
		require.Empty(t, bitmap+cfg, "keys of a shard that does not exist")
		for s := range 3 {
			bitmap, cfg := r.ShardKeys(s)
			require.Equal(t, hashTag(bitmap), hashTag(cfg), "name %q shard %d: %q and %q in different slots", name, s, bitmap, cfg)
			require.NotEqual(t, bitmap, hashTag(bitmap), "name %q: %q has no hash tag", name, bitmap)
			require.False(t, seen[bitmap], "key %q used twice", bitmap)
			seen[bitmap] = true
		}
	}
}

func TestRedisRecoversFromScriptFlush(t *testing.T) {
	ctx := context.Background()
	_, rdb := redistest.Mini(t)
	r, err := NewRedis(rdb, "users", 10_000, 0.01, &RedisOptions{Shards: 4})
	require.NoError(t, err)
	in := randomKeys(13, 100, "f")
	require.NoError(t, r.Add(ctx, in[:50]...))
	require.NoError(t, rdb.ScriptFlush(ctx).Err())
	require.NoError(t, r.Add(ctx, in[50:]...), "pipelined Add after SCRIPT FLUSH")
	require.NoError(t, rdb.ScriptFlush(ctx).Err())
	got, err := r.MightContainMany(ctx, in)
	require.NoError(t, err)
	require.NotContains(t, got, false)
	require.NoError(t, rdb.ScriptFlush(ctx).Err())
	ok, err := r.MightContain(ctx, in[0])
	require.NoError(t, err)
	require.True(t, ok)
}

func TestRedisErrorsAreReturned(t *testing.T) {
	mr, _ := redistest.Mini(t)
	// No retries, so the dead server is reported at once.
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	r, err := NewRedis(rdb, "users", 1000, 0.01, nil)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = r.MightContain(ctx, "a")
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, r.Add(ctx, "a", "b"), context.Canceled)

	mr.Close()
	_, err = r.MightContain(context.Background(), "a")
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrConfigMismatch)
	require.ErrorContains(t, err, `bloom: might contain "users"`)
	err = r.Add(context.Background(), "a")
	require.Error(t, err)
	require.ErrorContains(t, err, `bloom: add "users"`)
	_, err = r.ApproximateCount(context.Background())
	require.Error(t, err)
	require.False(t, errors.Is(err, ErrConfigMismatch))
}
