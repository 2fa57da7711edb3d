package bloom

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// recorder is a Filter that records the batches it is given, failing the Add numbered failAt
// (1-based; 0 never).
type recorder struct {
	mu      sync.Mutex
	batches [][]string
	failAt  int
}

func (r *recorder) Add(_ context.Context, keys ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.batches)+1 == r.failAt {
		return errors.New("boom")
	}
	r.batches = append(r.batches, slices.Clone(keys))
	return nil
}

func (r *recorder) MightContain(context.Context, string) (bool, error) { return true, nil }

func TestWarmBatches(t *testing.T) {
	in := randomKeys(20, 2500, "w")
	rec := &recorder{}
	n, err := Warm(context.Background(), rec, slices.Values(in))
	require.NoError(t, err)
	require.Equal(t, 2500, n)
	require.Len(t, rec.batches, 3)
	require.Len(t, rec.batches[0], WarmBatch)
	require.Len(t, rec.batches[2], 500)
	require.Equal(t, in, slices.Concat(rec.batches...))

	n, err = Warm(context.Background(), rec, slices.Values([]string(nil)))
	require.NoError(t, err)
	require.Zero(t, n)
	_, err = Warm(context.Background(), nil, slices.Values(in))
	require.ErrorContains(t, err, "nil filter")
}

func TestWarmStopsOnAddErrorAndContext(t *testing.T) {
	in := randomKeys(21, 2500, "w")
	n, err := Warm(context.Background(), &recorder{failAt: 2}, slices.Values(in))
	require.ErrorContains(t, err, "boom")
	require.ErrorContains(t, err, "after 1000 keys")
	require.Equal(t, WarmBatch, n)

	// The iterator cancels the context midway: Warm stops at the next batch and pulls no more keys.
	ctx, cancel := context.WithCancel(context.Background())
	pulled := 0
	keys := func(yield func(string) bool) {
		for _, k := range in {
			pulled++
			if pulled == 1500 {
				cancel()
			}
			if !yield(k) {
				return
			}
		}
	}
	n, err = Warm(ctx, &recorder{}, keys)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, WarmBatch, n)
	require.Equal(t, 2*WarmBatch, pulled)
}

func TestWarmRedisOneRoundTripPerBatch(t *testing.T) {
	ctx := context.Background()
	_, rdb := redistest.Mini(t)
	r, err := NewRedis(rdb, "warm", 3000, 0.01, &RedisOptions{Shards: 4})
	require.NoError(t, err)
	in := randomKeys(22, 2100, "w")
	// Load the script and create every shard (a shard's first write costs two more round trips).
	require.NoError(t, r.Add(ctx, in[:100]...))
	var trips atomic.Int64
	rdb.AddHook(countScripts{&trips})
	n, err := Warm(ctx, r, slices.Values(in))
	require.NoError(t, err)
	require.Equal(t, len(in), n)
	require.Equal(t, int64(3), trips.Load(), "one pipelined round trip per batch")
	got, err := r.MightContainMany(ctx, in)
	require.NoError(t, err)
	require.NotContains(t, got, false)
}

// countScripts is a go-redis hook counting round trips that carry scripts.
type countScripts struct{ n *atomic.Int64 }

func isScript(cmd redis.Cmder) bool { return cmd.Name() == "evalsha" || cmd.Name() == "eval" }

func (c countScripts) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c countScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isScript(cmd) {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (c countScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if slices.ContainsFunc(cmds, isScript) {
			c.n.Add(1)
		}
		return next(ctx, cmds)
	}
}
func TestLiveRebuildDualWritesAndSwitches(t *testing.T) {
	ctx := context.Background()
	old, err := NewLocal(1000, 0.01)
	require.NoError(t, err)
	live, err := NewLive(old)
	require.NoError(t, err)
	source := randomKeys(30, 3000, "src:") // the source of truth, already in old
	mustAdd(t, old, source[:1000])
	next, err := NewLocal(10_000, 0.01)
	require.NoError(t, err)

	// Writers add (source first, then filter) while the rebuild runs. The warm-up scans a
	// snapshot of the source, then lets the writers go and waits until they have written half
	// their keys before it ends: those are in next only through dual-writing. The other half
	// races with the switch.
	var mu sync.Mutex
	written := slices.Clone(source[:1000])
	start := make(chan struct{})
	var wg, firstHalf sync.WaitGroup
	firstHalf.Add(2)
	for w := range 2 {
		wg.Go(func() {
			<-start
			for j, i := 0, 1000+w; i < len(source); i, j = i+2, j+1 {
				mu.Lock()
				written = append(written, source[i])
				mu.Unlock()
				if err := live.Add(ctx, source[i]); err != nil {
					panic(err)
				}
				if j == 500 {
					firstHalf.Done()
				}
			}
		})
	}
	n, replaced, err := live.Rebuild(ctx, next, func(yield func(string) bool) {
		mu.Lock()
		snapshot := slices.Clone(written)
		mu.Unlock()
		close(start)
		for _, k := range snapshot {
			if !yield(k) {
				return
			}
		}
		firstHalf.Wait()
	})
	wg.Wait()
	require.NoError(t, err)
	require.Equal(t, 1000, n)
	require.Same(t, old, replaced)
	require.Same(t, next, live.Current())
	for i, ok := range answers(t, live, source) {
		require.True(t, ok, "key %q lost in the rebuild", source[i])
	}
	require.Nil(t, live.Switch(), "no rebuild running")
}

func TestLiveRebuildFailureKeepsCurrent(t *testing.T) {
	ctx := context.Background()
	old, err := NewLocal(100, 0.01)
	require.NoError(t, err)
	live, err := NewLive(old)
	require.NoError(t, err)
	bad := &recorder{failAt: 1}
	_, _, err = live.Rebuild(ctx, bad, slices.Values([]string{"a"}))
	require.ErrorContains(t, err, "boom")
	require.Same(t, old, live.Current())
	require.NoError(t, live.Add(ctx, "b"))
	require.Empty(t, bad.batches, "dual-writing continued after the failed rebuild")

	rec := &recorder{}
	require.NoError(t, live.BeginRebuild(rec))
	require.ErrorIs(t, live.BeginRebuild(&recorder{}), ErrRebuilding)
	_, _, err = live.Rebuild(ctx, &recorder{}, slices.Values([]string{"a"}))
	require.ErrorIs(t, err, ErrRebuilding)
	require.NoError(t, live.Add(ctx, "c"))
	require.Equal(t, [][]string{{"c"}}, rec.batches)
	ok, err := old.MightContain(ctx, "c")
	require.NoError(t, err)
	require.True(t, ok, "dual-write skipped the current filter")
	live.AbortRebuild()
	require.NoError(t, live.Add(ctx, "d"))
	require.Len(t, rec.batches, 1)

	_, err = NewLive(nil)
	require.Error(t, err)
	require.Error(t, live.BeginRebuild(nil))
}
