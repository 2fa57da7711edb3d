package ratelimit

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// Integration tests on a real redis-server: timing, concurrency and failures that miniredis does
// not model faithfully.

func TestServerConcurrentExactBurst(t *testing.T) {
	srv := redistest.Server(t)
	for _, algo := range []Algorithm{TokenBucket, GCRA} {
		for _, pipe := range []bool{false, true} {
			opt := &RedisOptions{Algorithm: algo, Pipeline: pipe, Prefix: fmt.Sprintf("t%v:", pipe)}
			t.Run(fmt.Sprintf("%v/pipeline=%v", algo, pipe), func(t *testing.T) { testServerConcurrentExactBurst(t, srv, opt) })
		}
	}
}

func testServerConcurrentExactBurst(t *testing.T, srv *redistest.RedisServer, opt *RedisOptions) {
	// Two limiters on one server stand for two processes; the rate is so low that nothing refills.
	lims := make([]*Redis, 2)
	for i := range lims {
		var err error
		lims[i], err = NewRedis(srv.NewClient(&redis.Options{PoolSize: 25}), opt, Limit{Rate: 1e-4, Burst: 37})
		require.NoError(t, err)
	}
	var allowed, errs atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 50; g++ {
		wg.Go(func() {
			for i := 0; i < 10; i++ {
				res, err := lims[g%2].Allow(context.Background(), "hot")
				switch {
				case err != nil:
					errs.Add(1)
				case res.Allowed:
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	require.Zero(t, errs.Load())
	require.Equal(t, int64(37), allowed.Load())
}

func TestServerExpiresAfterRefill(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client()
	r, err := NewRedis(rdb, nil, Limit{Rate: 50, Burst: 5, Name: "b"})
	require.NoError(t, err)
	ctx := context.Background()
	res, err := r.AllowN(ctx, "k", 5)
	require.NoError(t, err)
	require.True(t, res.Allowed)
	require.Equal(t, 100*time.Millisecond, res.ResetAfter)
	key := "surge:rl:{k}:b"
	ttl, err := rdb.PTTL(ctx, key).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, time.Duration(0))
	require.LessOrEqual(t, ttl, 100*time.Millisecond)
	require.Eventually(t, func() bool { return rdb.Exists(ctx, key).Val() == 0 }, 2*time.Second, 10*time.Millisecond)
	res, err = r.Allow(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, 4, res.Remaining, "a key that expired starts full")
}

func TestServerScriptFlushHeals(t *testing.T) {
	srv := redistest.Server(t)
	r, err := NewRedis(srv.Client(), nil, PerSecond(3))
	require.NoError(t, err)
	ctx := context.Background()
	_, err = r.Allow(ctx, "k")
	require.NoError(t, err)
	require.NoError(t, srv.Client().ScriptFlush(ctx).Err())
	res, err := r.Allow(ctx, "k")
	require.NoError(t, err, "NOSCRIPT must fall back to EVAL")
	require.Equal(t, 1, res.Remaining)
}

func TestServerWait(t *testing.T) {
	srv := redistest.Server(t)
	r, err := NewRedis(srv.Client(), nil, Limit{Rate: 20, Burst: 1})
	require.NoError(t, err)
	ctx := context.Background()
	start := time.Now()
	require.NoError(t, r.Wait(ctx, "k"))
	require.NoError(t, r.Wait(ctx, "k"))
	require.GreaterOrEqual(t, time.Since(start), 49*time.Millisecond, "the second token comes 50 ms after the first")
	dctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, r.Wait(dctx, "k"), ErrWaitDeadline)
}

// TestServerPipelineBatches: calls made while one is in flight go out together, each gets its own
// answer and the budget stays exact; a queued caller whose ctx ends returns at once.
func TestServerPipelineBatches(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.NewClient(&redis.Options{MaxRetries: -1, ContextTimeoutEnabled: true, ReadTimeout: 20 * time.Second})
	h := &tripHook{}
	rdb.AddHook(h)
	r, err := NewRedis(rdb, &RedisOptions{Pipeline: true}, Limit{Rate: 1e-4, Burst: 5})
	require.NoError(t, err)
	ctx := context.Background()
	_, err = r.Allow(ctx, "warm") // connects and loads the script
	require.NoError(t, err)
	h.n.Store(0)

	// inFlight starts a call that stays in flight on the paused server.
	inFlight := func() <-chan Result {
		out := make(chan Result, 1)
		go func() {
			res, err := r.Allow(ctx, "k")
			if err != nil {
				t.Error(err)
			}
			out <- res
		}()
		require.Eventually(t, func() bool { return r.pipe.InFlight() == 1 }, 5*time.Second, time.Millisecond)
		return out
	}

	srv.Pause(20 * time.Second)
	first := inFlight()
	const callers = 10
	results := make(chan Result, callers)
	for range callers {
		go func() {
			res, err := r.Allow(ctx, "k")
			if err != nil {
				t.Error(err)
			}
			results <- res
		}()
	}
	require.Eventually(t, func() bool { return r.pipe.Queued() == callers }, 5*time.Second, time.Millisecond)
	srv.Resume()
	allowed := 0
	if (<-first).Allowed {
		allowed++
	}
	for range callers {
		if (<-results).Allowed {
			allowed++
		}
	}
	require.Equal(t, 5, allowed, "exactly Burst of the 11 pass")
	require.InDelta(t, 0, bucketTokens(t, rdb, "surge:rl:{k}:0.0001:5"), 0.01, "the bucket is empty")
	// The direct call, then the flusher's first batch (whatever had queued when it started) and
	// one more with all the rest.
	require.LessOrEqual(t, h.n.Load(), int64(3), "round trips for %d calls", callers+1)

	// A queued caller whose ctx ends returns its ctx error at once, whatever the batch does.
	require.NoError(t, r.Reset(ctx, "k"))
	srv.Pause(20 * time.Second)
	first = inFlight()
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	start := time.Now()
	_, err = r.Allow(cctx, "k")
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Zero(t, r.Stats().RedisErrors, "the caller's deadline is not a Redis failure")
	srv.Resume()
	require.True(t, (<-first).Allowed)
}

func isEval(cmd redis.Cmder) bool { return cmd.Name() == "evalsha" || cmd.Name() == "eval" }

// tripHook counts the round trips that run scripts (a pipeline is one), not the connection
// handshakes.
type tripHook struct{ n atomic.Int64 }

func (h *tripHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *tripHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isEval(cmd) {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *tripHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if slices.ContainsFunc(cmds, isEval) {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

func TestServerPausedHonoursContext(t *testing.T) {
	srv := redistest.Server(t)
	// go-redis bounds a round trip by ctx only with ContextTimeoutEnabled.
	r, err := NewRedis(srv.NewClient(&redis.Options{MaxRetries: -1, ContextTimeoutEnabled: true}), nil, PerSecond(3))
	require.NoError(t, err)
	ctx := context.Background()
	_, err = r.Allow(ctx, "k") // connect first
	require.NoError(t, err)
	srv.Pause(5 * time.Second)
	defer srv.Resume()
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = r.Allow(cctx, "k")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 2*time.Second)
	require.Zero(t, r.Stats().RedisErrors, "the caller's deadline is not a Redis failure")
}

// TestServerKillFallbackBack: Redis killed -> the local twin answers -> Redis back -> the budget
// is shared again between processes.
func TestServerKillFallbackBack(t *testing.T) {
	srv := redistest.Server(t)
	opts := &redis.Options{MaxRetries: -1, DialerRetries: 1, DialTimeout: 200 * time.Millisecond}
	limit := Limit{Rate: 1e-4, Burst: 4, Name: "b"}
	local, err := NewLocal(nil, Limit{Rate: 1e-4, Burst: 2, Name: "b"})
	require.NoError(t, err)
	defer local.Close()
	r, err := NewRedis(srv.NewClient(opts), &RedisOptions{OnRedisError: Fallback(local), ProbeInterval: 20 * time.Millisecond}, limit)
	require.NoError(t, err)
	other, err := NewRedis(srv.NewClient(opts), nil, limit) // a second process, no fallback
	require.NoError(t, err)
	ctx := context.Background()

	res, err := r.Allow(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, 3, res.Remaining)

	srv.Kill()
	for i, want := range []bool{true, true, false} { // the local twin's burst of 2
		res, err := r.Allow(ctx, "k")
		require.NoError(t, err, "call %d", i)
		require.Equal(t, want, res.Allowed, "call %d", i)
	}
	require.Positive(t, r.Stats().Fallback)
	require.Positive(t, r.Stats().RedisErrors)
	_, err = other.Allow(ctx, "k")
	require.Error(t, err, "fail closed without a fallback")

	srv.Restart() // empty data
	require.Eventually(t, func() bool {
		_, err := r.Allow(ctx, "j")
		return err == nil && r.Stats().Recoveries == 1
	}, 5*time.Second, 10*time.Millisecond)
	// Shared again: what r takes, other no longer gets.
	for i := 0; i < 4; i++ {
		res, err := r.Allow(ctx, "shared")
		require.NoError(t, err)
		require.True(t, res.Allowed)
	}
	res, err = other.Allow(ctx, "shared")
	require.NoError(t, err)
	require.False(t, res.Allowed)
	require.Equal(t, limit, res.Limit)
}

// TestServerConcurrentMultiLimit: under contention a call takes from all buckets or from none,
// so each bucket ends with exactly Burst minus the number of allowed calls.
func TestServerConcurrentMultiLimit(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.NewClient(&redis.Options{PoolSize: 50})
	r, err := NewRedis(rdb, nil, Limit{Rate: 1e-4, Burst: 30, Name: "a"}, Limit{Rate: 1e-4, Burst: 12, Name: "b"})
	require.NoError(t, err)
	ctx := context.Background()
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 50; g++ {
		wg.Go(func() {
			for i := 0; i < 4; i++ {
				// n alternates 1 and 2 so that some calls fit one bucket but not the other.
				res, err := r.AllowN(ctx, "hot", 1+(g+i)%2)
				if err == nil && res.Allowed {
					allowed.Add(int64(1 + (g+i)%2))
				}
			}
		})
	}
	wg.Wait()
	a, b := bucketTokens(t, rdb, "surge:rl:{hot}:a"), bucketTokens(t, rdb, "surge:rl:{hot}:b")
	taken := float64(allowed.Load())
	require.InDelta(t, 30-taken, a, 0.01)
	require.InDelta(t, 12-taken, b, 0.01)
	require.GreaterOrEqual(t, taken, 11.0, "b was drained to below 2 tokens")
}

// bucketTokens reads the tokens stored in a bucket key ("<tokens> <µs>").
func bucketTokens(t *testing.T, rdb redis.UniversalClient, key string) float64 {
	t.Helper()
	v, err := rdb.Get(context.Background(), key).Result()
	require.NoError(t, err)
	tk, _, ok := strings.Cut(v, " ")
	require.True(t, ok, "bucket %q", v)
	f, err := strconv.ParseFloat(tk, 64)
	require.NoError(t, err)
	return f
}

// TestServerGCRAResults: on real Redis (its Lua, its number formatting) GCRA answers as a token
// bucket would, fractions included.
func TestServerGCRAResults(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client()
	r, err := NewRedis(rdb, &RedisOptions{Algorithm: GCRA}, Limit{Rate: 1e-3, Burst: 3, Name: "x"}, Limit{Rate: 0.3, Burst: 7, Name: "y"})
	require.NoError(t, err)
	ctx := context.Background()
	res, err := r.AllowN(ctx, "k", 2)
	require.NoError(t, err)
	require.True(t, res.Allowed)
	require.Equal(t, 1, res.Remaining)
	require.Equal(t, "x", res.Limit.Name)
	require.InDelta(t, float64(2000*time.Second), float64(res.ResetAfter), float64(100*time.Millisecond))
	res, err = r.AllowN(ctx, "k", 2)
	require.NoError(t, err)
	require.False(t, res.Allowed)
	require.Equal(t, 1, res.Remaining)
	require.InDelta(t, float64(1000*time.Second), float64(res.RetryAfter), float64(100*time.Millisecond))
	res, err = r.AllowN(ctx, "k", 0)
	require.NoError(t, err)
	require.True(t, res.Allowed, "a peek: one token is there")
	// The slow limit's TAT holds a fraction (1/0.3 s per token) and survives the round trip.
	v, err := rdb.Get(ctx, "surge:rl:{k}:gcra:y").Result()
	require.NoError(t, err)
	tat, err := strconv.ParseFloat(v, 64)
	require.NoError(t, err)
	now, err := rdb.Time(ctx).Result()
	require.NoError(t, err)
	debt := tat - float64(now.UnixMicro()-1577836800e6)
	require.InDelta(t, 2e6/0.3, debt, 1e5, "TAT %q: 2 tokens at 0.3/s ahead of now", v)
	ttl, err := rdb.PTTL(ctx, "surge:rl:{k}:gcra:y").Result()
	require.NoError(t, err)
	require.InDelta(t, 2e9/0.3, float64(ttl), float64(200*time.Millisecond))
}

// TestServerOneLimitScripts: on real Redis (its Lua, its number formatting), the one-limit
// scripts answer as the general ones do, with fractional tokens and TATs, and write values both
// read back.
func TestServerOneLimitScripts(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client()
	ctx := context.Background()
	for _, algo := range []Algorithm{TokenBucket, GCRA} {
		t.Run(algo.String(), func(t *testing.T) {
			lim := Limit{Rate: 0.3, Burst: 7, Name: "y"}
			one, err := NewRedis(rdb, &RedisOptions{Algorithm: algo, Prefix: "one:"}, lim)
			require.NoError(t, err)
			require.True(t, oneLimitScript(one))
			gen, err := NewRedis(rdb, &RedisOptions{Algorithm: algo, Prefix: "gen:"}, lim)
			require.NoError(t, err)
			generalScript(gen)
			suffix := ":y"
			if algo == GCRA {
				suffix = ":gcra:y"
			}
			// Both limiters run each call within microseconds of each other: at 0.3/s that
			// refills far less than the tolerances below.
			for i, n := range []int{2, 2, 0, 3, 1, 0, 1, 7, 0} {
				a, err := one.AllowN(ctx, "k", n)
				require.NoError(t, err)
				b, err := gen.AllowN(ctx, "k", n)
				require.NoError(t, err)
				msg := fmt.Sprintf("call %d (n %d): one-limit %+v, general %+v", i, n, a, b)
				require.Equal(t, b.Allowed, a.Allowed, msg)
				require.Equal(t, b.Remaining, a.Remaining, msg)
				require.InDelta(t, float64(b.RetryAfter), float64(a.RetryAfter), float64(50*time.Millisecond), msg)
				require.InDelta(t, float64(b.ResetAfter), float64(a.ResetAfter), float64(50*time.Millisecond), msg)
				// Each script reads what the other writes: the values have one format.
				va, err := rdb.Get(ctx, "one:{k}"+suffix).Result()
				require.NoError(t, err)
				vb, err := rdb.Get(ctx, "gen:{k}"+suffix).Result()
				require.NoError(t, err)
				if algo == TokenBucket {
					require.InDelta(t, bucketTokens(t, rdb, "gen:{k}"+suffix), bucketTokens(t, rdb, "one:{k}"+suffix), 1e-3, "%s: %q vs %q", msg, va, vb)
				} else {
					fa, err := strconv.ParseFloat(va, 64)
					require.NoError(t, err, "%q", va)
					fb, err := strconv.ParseFloat(vb, 64)
					require.NoError(t, err, "%q", vb)
					require.InDelta(t, fb, fa, 1e4, "%s: TAT %q vs %q", msg, va, vb)
				}
				pa, pb := rdb.PTTL(ctx, "one:{k}"+suffix).Val(), rdb.PTTL(ctx, "gen:{k}"+suffix).Val()
				require.InDelta(t, float64(pb), float64(pa), float64(50*time.Millisecond), msg)
			}
			// The last calls drained the bucket: 2+2+3 then 7 denied; 0 tokens after the 1.
			res, err := one.AllowN(ctx, "k", 1)
			require.NoError(t, err)
			require.False(t, res.Allowed)
			require.InDelta(t, float64(time.Second/3*10), float64(res.RetryAfter), float64(100*time.Millisecond))
		})
	}
}
