package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/surgekit/surge/internal/oteltest"
	"github.com/surgekit/surge/internal/redistest"
)

// tally is what a test expects surge.ratelimit.decisions to hold: calls per (limit, decision).
type tally struct {
	mu sync.Mutex
	m  map[[2]string]int
}

func (t *tally) add(limit, decision string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[[2]string]int{}
	}
	t.m[[2]string{limit, decision}]++
}

// answer tallies one AllowN answer as the package doc says it is counted (no failure policy).
func (t *tally) answer(res Result, err error, errLabel string) {
	switch {
	case err != nil:
		t.add(errLabel, "error")
	case res.Allowed:
		t.add(res.Limit.String(), "allowed")
	default:
		t.add(res.Limit.String(), "denied")
	}
}

// check asserts that the SDK holds exactly the tallied points: each one's count, and no others
// (the total matches), in the package's scope.
func (t *tally) check(tb testing.TB, sdk *oteltest.SDK) {
	tb.Helper()
	total := 0
	for k, n := range t.m {
		got := sdk.Sum(tb, metricDecisions, attribute.String(attrLimit, k[0]), attribute.String(attrDecision, k[1]))
		require.EqualValues(tb, n, got, "surge.ratelimit.decisions{limit=%q, decision=%q}", k[0], k[1])
		total += n
	}
	require.EqualValues(tb, total, sdk.Sum(tb, metricDecisions), "every call counted once, nothing else: %v", t.m)
	_, scope, ok := sdk.Metric(tb, metricDecisions)
	require.True(tb, ok)
	require.Equal(tb, "github.com/surgekit/surge/ratelimit", scope)
}

func TestTelemetryLocalDecisions(t *testing.T) {
	sdk := oteltest.New(t)
	ctx := context.Background()
	// One named limit and one without a Name, which is labelled by its String.
	limits := []Limit{{Rate: 1, Burst: 2, Name: "burst"}, {Rate: 0.5, Burst: 3}}
	l, clk := newLocal(t, &LocalOptions{MeterProvider: sdk.MeterProvider}, limits...)
	var want tally
	call := func(key string, n int) {
		res, err := l.AllowN(ctx, key, n)
		want.answer(res, err, "burst,0.5/s burst 3")
	}
	call("k", 2) // allowed: "burst" binds (0 left, against 1)
	call("k", 1) // denied: "burst" binds (the longer wait)
	call("k", 0) // a peek is counted too
	clk.Add(2 * time.Second)
	call("k", 1) // allowed, 1 left in each: the unnamed limit binds (the longer reset)
	call("k", 1)
	call("", 1) // errors: no limit binds
	call("k", 3)
	call("k", -1)
	require.NoError(t, l.Wait(ctx, "w")) // Wait counts its tries
	want.add("burst", "allowed")

	for _, k := range [][2]string{{"0.5/s burst 3", "allowed"}, {"burst", "allowed"}, {"burst", "denied"}} {
		require.Positive(t, want.m[k], "the walk must reach %v: %v", k, want.m)
	}
	require.Equal(t, 3, want.m[[2]string{"burst,0.5/s burst 3", "error"}])
	want.check(t, sdk)
}

func TestTelemetryRedisDecisions(t *testing.T) {
	for _, algo := range []Algorithm{TokenBucket, GCRA} {
		for _, pipe := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/pipeline=%v", algo, pipe), func(t *testing.T) {
				sdk := oteltest.New(t)
				ctx := context.Background()
				limits := []Limit{{Rate: 1e-3, Burst: 5, Name: "a"}, {Rate: 1e-3, Burst: 8, Name: "b"}}
				r, m, _ := newMiniRedis(t, &RedisOptions{Algorithm: algo, Pipeline: pipe, MeterProvider: sdk.MeterProvider}, limits...)
				var want tally
				// Concurrent callers, so that with Pipeline some calls go out in batches.
				var wg sync.WaitGroup
				for g := range 4 {
					wg.Go(func() {
						for i := range 6 {
							key := "k" + fmt.Sprint((g+i)%2)
							n := 1 + i%2
							res, err := r.AllowN(ctx, key, n)
							want.answer(res, err, "a,b")
						}
					})
				}
				wg.Wait()
				res, err := r.AllowN(ctx, "k0", 9) // beyond every burst: an error
				want.answer(res, err, "a,b")
				m.Close() // FailClosed: the Redis error is returned and counted as an error
				res, err = r.Allow(ctx, "k0")
				require.Error(t, err)
				want.answer(res, err, "a,b")

				for _, k := range [][2]string{{"a", "allowed"}, {"a", "denied"}, {"a,b", "error"}} {
					require.Positive(t, want.m[k], "%v: %v", k, want.m)
				}
				want.check(t, sdk)
			})
		}
	}
}

func TestTelemetryRedisFailurePolicies(t *testing.T) {
	ctx := context.Background()
	limits := []Limit{{Rate: 1e-3, Burst: 3, Name: "a"}, {Rate: 1e-3, Burst: 9}}
	t.Run("fail open", func(t *testing.T) {
		sdk := oteltest.New(t)
		r, m, _ := newMiniRedis(t, &RedisOptions{OnRedisError: FailOpen, MeterProvider: sdk.MeterProvider}, limits...)
		var want tally
		res, err := r.Allow(ctx, "k")
		want.answer(res, err, "")
		m.Close()
		for range 4 {
			res, err := r.Allow(ctx, "k")
			require.NoError(t, err)
			require.True(t, res.Allowed)
			want.add(res.Limit.String(), "fallback") // as if full: the smallest burst binds
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		res, err = r.Allow(cctx, "k") // a context that ended is an error, not a Redis failure
		require.ErrorIs(t, err, context.Canceled)
		want.answer(res, err, "a,0.001/s burst 9")
		require.Equal(t, 4, want.m[[2]string{"a", "fallback"}], "%v", want.m)
		want.check(t, sdk)
	})
	t.Run("fallback", func(t *testing.T) {
		sdk := oteltest.New(t)
		// The fallback shares the provider: a call it answers for the Redis limiter is still
		// counted once, as "fallback" under the fallback's binding limit.
		local, _ := newLocal(t, &LocalOptions{MeterProvider: sdk.MeterProvider}, Limit{Rate: 1e-3, Burst: 2, Name: "local"})
		r, m, _ := newMiniRedis(t, &RedisOptions{OnRedisError: Fallback(local), ProbeInterval: time.Hour,
			MeterProvider: sdk.MeterProvider}, limits...)
		var want tally
		res, err := r.Allow(ctx, "k")
		want.answer(res, err, "")
		m.Close()
		allowed := 0
		for range 3 {
			res, err := r.Allow(ctx, "k")
			require.NoError(t, err)
			if res.Allowed {
				allowed++
			}
			want.add("local", "fallback")
		}
		require.Equal(t, 2, allowed, "the fallback answered, denials included")
		peek, err := local.AllowN(ctx, "k", 0) // its answers for r took the fallback's own tokens
		require.NoError(t, err)
		require.False(t, peek.Allowed)
		want.add("local", "denied")
		res, err = r.AllowN(ctx, "k", 3) // within Redis's limits, beyond the fallback's burst
		require.ErrorIs(t, err, ErrExceedsBurst)
		want.answer(res, err, "a,0.001/s burst 9")
		res, err = local.Allow(ctx, "direct") // the fallback counts the calls made on it directly
		want.answer(res, err, "")
		want.check(t, sdk)
		require.EqualValues(t, 3, sdk.Sum(t, metricDecisions, attribute.String(attrDecision, "fallback")))
	})
}

func TestTelemetryConcurrencyDecisions(t *testing.T) {
	ctx := context.Background()
	run := func(t *testing.T, sdk *oteltest.SDK, l ConcurrencyLimiter, name string) {
		var want tally
		p1, err := l.Acquire(ctx, "k")
		require.NoError(t, err)
		want.add(name, "allowed")
		_, err = l.Acquire(ctx, "k")
		require.ErrorIs(t, err, ErrConcurrencyLimited)
		want.add(name, "denied")
		_, err = l.Acquire(ctx, "")
		require.ErrorIs(t, err, ErrInvalidArgument)
		want.add(name, "error")
		require.NoError(t, p1.Release(ctx)) // releases and renewals are not decisions
		p2, err := l.Acquire(ctx, "k")
		require.NoError(t, err)
		require.NoError(t, p2.Renew(ctx))
		require.NoError(t, p2.Release(ctx))
		want.add(name, "allowed")
		want.check(t, sdk)
	}
	t.Run("local", func(t *testing.T) {
		sdk := oteltest.New(t)
		l, err := NewLocalConcurrency(1, &ConcurrencyOptions{MeterProvider: sdk.MeterProvider})
		require.NoError(t, err)
		run(t, sdk, l, DefaultConcurrencyName)
	})
	t.Run("redis", func(t *testing.T) {
		sdk := oteltest.New(t)
		_, rdb := redistest.Mini(t)
		c, err := NewConcurrency(rdb, 1, &ConcurrencyOptions{Name: "exports", MeterProvider: sdk.MeterProvider})
		require.NoError(t, err)
		run(t, sdk, c, "exports")
	})
	t.Run("redis error", func(t *testing.T) {
		sdk := oteltest.New(t)
		m, _ := redistest.Mini(t)
		c, err := NewConcurrency(failFast(t, m.Addr()), 1, &ConcurrencyOptions{MeterProvider: sdk.MeterProvider})
		require.NoError(t, err)
		m.Close()
		_, err = c.Acquire(ctx, "k")
		require.Error(t, err)
		require.False(t, errors.Is(err, ErrConcurrencyLimited))
		require.EqualValues(t, 1, sdk.Sum(t, metricDecisions,
			attribute.String(attrLimit, "concurrency"), attribute.String(attrDecision, "error")))
	})
}

// TestTelemetryGlobalProvider: a nil MeterProvider means the global one, resolved when the
// limiter is built (an SDK installed later still receives the counts through the global
// delegate).
func TestTelemetryGlobalProvider(t *testing.T) {
	sdk := oteltest.New(t)
	otel.SetMeterProvider(sdk.MeterProvider)
	t.Cleanup(func() { otel.SetMeterProvider(noop.NewMeterProvider()) })
	l, err := NewLocal(nil, PerSecond(1))
	require.NoError(t, err)
	_, _ = l.Allow(context.Background(), "k")
	_, _ = l.Allow(context.Background(), "k")
	require.EqualValues(t, 1, sdk.Sum(t, metricDecisions, attribute.String(attrLimit, "1/s"), attribute.String(attrDecision, "allowed")))
	require.EqualValues(t, 1, sdk.Sum(t, metricDecisions, attribute.String(attrLimit, "1/s"), attribute.String(attrDecision, "denied")))
}

// TestTelemetryLocalAllocs: counting adds no allocation to Local.Allow, with no SDK (the global
// no-op) and with one.
func TestTelemetryLocalAllocs(t *testing.T) {
	ctx := context.Background()
	sdk := oteltest.New(t)
	for name, opt := range map[string]*LocalOptions{"no sdk": nil, "sdk": {MeterProvider: sdk.MeterProvider}} {
		l, err := NewLocal(opt, PerSecond(100), PerHour(1000))
		require.NoError(t, err)
		_, _ = l.Allow(ctx, "k") // insert the key and the SDK's series first
		allocs := testing.AllocsPerRun(200, func() { _, _ = l.Allow(ctx, "k") })
		require.Zero(t, allocs, name)
	}
}
