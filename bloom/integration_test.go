package bloom

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// Integration tests on a real redis-server: the full 100k-key sizes miniredis is too slow for.

func TestServerNoFalseNegativesAndFPRate(t *testing.T) {
	srv := redistest.Server(t)
	for _, shards := range []int{1, 8} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			const n, fp = 100_000, 0.01
			r, err := NewRedis(srv.Client(), t.Name(), n, fp, &RedisOptions{Shards: shards})
			require.NoError(t, err)
			checkFilter(t, r, n, fp)
			approx, err := r.ApproximateCount(context.Background())
			require.NoError(t, err)
			require.InDelta(t, n, float64(approx), 0.03*n)
		})
	}
}

func TestServerSameBitsAsLocal(t *testing.T) {
	checkSameAsLocal(t, redistest.Server(t).Client(), 100_000, 0.01)
}

func TestServerConfigMismatch(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Server(t).Client()
	a, err := NewRedis(rdb, "users", 1000, 0.01, nil)
	require.NoError(t, err)
	require.NoError(t, a.Add(ctx, "x"))
	b, err := NewRedis(rdb, "users", 1000, 0.02, nil)
	require.NoError(t, err)
	require.ErrorIs(t, b.Add(ctx, "y"), ErrConfigMismatch)
	_, err = b.MightContain(ctx, "x")
	require.ErrorIs(t, err, ErrConfigMismatch)

	// Another shard count is caught on every key, also where the first filter has no shard.
	c, err := NewRedis(rdb, "sessions", 1000, 0.01, &RedisOptions{Shards: 2})
	require.NoError(t, err)
	keys := randomKeys(15, 40, "s")
	require.NoError(t, c.Add(ctx, keys...))
	d, err := NewRedis(rdb, "sessions", 1000, 0.01, &RedisOptions{Shards: 5})
	require.NoError(t, err)
	for _, k := range keys {
		_, err := d.MightContain(ctx, k)
		require.ErrorIs(t, err, ErrConfigMismatch, "key %q", k)
		require.ErrorIs(t, d.Add(ctx, k), ErrConfigMismatch, "key %q", k)
	}
}

// TestServerConcurrent runs Adds and MightContains from many goroutines on one filter (under
// -race): a key handed over after its Add returned must be seen by any reader.
func TestServerConcurrent(t *testing.T) {
	ctx := context.Background()
	r, err := NewRedis(redistest.Server(t).Client(), "conc", 20_000, 0.01, &RedisOptions{Shards: 4})
	require.NoError(t, err)
	added := make(chan []string, 16)
	var writers, readers sync.WaitGroup
	var mu sync.Mutex
	var missed []string
	for w := range 4 {
		writers.Go(func() {
			keys := randomKeys(uint64(200+w), 4000, fmt.Sprintf("w%d:", w))
			for i := 0; i < len(keys); i += 50 {
				batch := keys[i : i+50]
				if err := r.Add(ctx, batch...); err != nil {
					panic(err)
				}
				added <- batch
			}
		})
	}
	for range 4 {
		readers.Go(func() {
			for batch := range added {
				for j, k := range batch {
					var ok bool
					var err error
					if j%10 == 0 { // mostly the batch call, some single-key calls
						ok, err = r.MightContain(ctx, k)
					} else {
						var got []bool
						got, err = r.MightContainMany(ctx, batch[j:j+1])
						ok = err == nil && got[0]
					}
					if err != nil || !ok {
						mu.Lock()
						missed = append(missed, k)
						mu.Unlock()
					}
				}
			}
		})
	}
	writers.Wait()
	close(added)
	readers.Wait()
	require.Empty(t, missed)
}

func TestServerScriptCacheLoss(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Server(t).Client()
	r, err := NewRedis(rdb, "flush", 1000, 0.01, &RedisOptions{Shards: 3})
	require.NoError(t, err)
	require.NoError(t, r.Add(ctx, "a", "b", "c", "d"))
	require.NoError(t, rdb.ScriptFlush(ctx).Err())
	require.NoError(t, r.Add(ctx, "e", "f", "g", "h"))
	require.NoError(t, rdb.ScriptFlush(ctx).Err())
	got, err := r.MightContainMany(ctx, []string{"a", "b", "c", "d", "e", "f", "g", "h"})
	require.NoError(t, err)
	require.NotContains(t, got, false)
}

// TestServerPipelineSharesRoundTrips: with Pipeline, single-key checks and Adds made while
// another call is in flight leave together, each caller gets its own answer, and a queued caller
// whose ctx ends returns its ctx error and sends nothing.
func TestServerPipelineSharesRoundTrips(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	rdb := srv.NewClient(&redis.Options{MaxRetries: -1, ContextTimeoutEnabled: true, ReadTimeout: 20 * time.Second})
	r, err := NewRedis(rdb, "piped", 10_000, 0.01, &RedisOptions{Shards: 4, Pipeline: true})
	require.NoError(t, err)
	in := randomKeys(50, 200, "in:")
	require.NoError(t, r.Add(ctx, in...)) // several keys: one direct round trip
	// Keys the filter answers false for (not false positives), to check both answers.
	var out []string
	cand := randomKeys(51, 100, "out:")
	got, err := r.MightContainMany(ctx, cand)
	require.NoError(t, err)
	for i, ok := range got {
		if !ok && len(out) < 10 {
			out = append(out, cand[i])
		}
	}
	require.Len(t, out, 10)
	base := r.pipe.Stats()

	type answer struct {
		key string
		ok  bool
		err error
	}
	answers := make(chan answer, 32)
	check := func(key string) {
		go func() {
			ok, err := r.MightContain(ctx, key)
			answers <- answer{key, ok, err}
		}()
	}
	srv.Pause(20 * time.Second)
	check(in[0])
	require.Eventually(t, func() bool { return r.pipe.InFlight() == 1 }, 10*time.Second, time.Millisecond)
	for i := range 10 {
		check(in[i+1])
		check(out[i])
	}
	added := randomKeys(52, 5, "added:")
	adds := make(chan error, len(added))
	for _, k := range added {
		go func() { adds <- r.Add(ctx, k) }()
	}
	require.Eventually(t, func() bool { return r.pipe.Queued() == 25 }, 10*time.Second, time.Millisecond)

	// One more, whose ctx ends while it waits behind the others.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = r.MightContain(cctx, "late")
	require.ErrorIs(t, err, context.DeadlineExceeded)

	srv.Resume()
	for range 21 {
		a := <-answers
		require.NoError(t, a.err, a.key)
		require.Equal(t, strings.HasPrefix(a.key, "in:"), a.ok, a.key)
	}
	for range added {
		require.NoError(t, <-adds)
	}
	got, err = r.MightContainMany(ctx, added)
	require.NoError(t, err)
	require.NotContains(t, got, false, "the pipelined Adds landed")
	st := r.pipe.Stats()
	require.EqualValues(t, 1, st.Direct-base.Direct, "the first check went out alone")
	require.EqualValues(t, 25, st.Batched-base.Batched, "10+10 checks and 5 Adds were batched")
	require.LessOrEqual(t, st.Batches-base.Batches, uint64(3), "25 queued calls in %d round trips", st.Batches-base.Batches)
	require.EqualValues(t, 1, st.Dropped, "the late check was never sent")
}
