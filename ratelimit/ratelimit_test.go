package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// After a failed dial go-redis retries in the background once a second until the pool is
	// closed, and Close does not wait: the cluster test's killed master leaves one such goroutine.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

// fakeClock is a settable clock for Local.now and Redis.now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_750_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newLocal builds a Local on a fake clock, closed at cleanup.
func newLocal(t testing.TB, opt *LocalOptions, limits ...Limit) (*Local, *fakeClock) {
	t.Helper()
	l, err := NewLocal(opt, limits...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	clk := newFakeClock()
	l.now, l.epoch = clk.Now, clk.Now()
	return l, clk
}

// stepper abstracts "a limiter and a way to move its clock" so one behavioural test runs on
// Local (fake clock) and on Redis (miniredis time).
type stepper struct {
	lim interface {
		Limiter
		Reset(context.Context, string) error
	}
	advance func(time.Duration)
}

func allowN(t *testing.T, l Limiter, key string, n int) Result {
	t.Helper()
	res, err := l.AllowN(context.Background(), key, n)
	require.NoError(t, err)
	return res
}

// countAllowed calls Allow until the first denial (at most max times) and returns how many passed.
func countAllowed(t *testing.T, l Limiter, key string, max int) (int, Result) {
	t.Helper()
	for i := 0; i < max; i++ {
		res := allowN(t, l, key, 1)
		if !res.Allowed {
			return i, res
		}
	}
	return max, Result{}
}

// testBurstThenRate: exactly Burst at t0, then Rate per second.
func testBurstThenRate(t *testing.T, s stepper) {
	lim := Limit{Rate: 2, Burst: 5, Name: "b"}
	got, denied := countAllowed(t, s.lim, "user:1", 100)
	require.Equal(t, 5, got, "burst at t0")
	require.False(t, denied.Allowed)
	require.Equal(t, 0, denied.Remaining)
	require.InDelta(t, float64(500*time.Millisecond), float64(denied.RetryAfter), float64(time.Microsecond))
	require.InDelta(t, float64(2500*time.Millisecond), float64(denied.ResetAfter), float64(time.Microsecond))
	require.Equal(t, lim, denied.Limit)

	// Each second brings exactly Rate tokens.
	for sec := 0; sec < 3; sec++ {
		s.advance(time.Second)
		got, _ = countAllowed(t, s.lim, "user:1", 100)
		require.Equal(t, 2, got, "second %d", sec)
	}
	// Half a token is not enough; the other half is.
	s.advance(250 * time.Millisecond)
	res := allowN(t, s.lim, "user:1", 1)
	require.False(t, res.Allowed)
	require.InDelta(t, float64(250*time.Millisecond), float64(res.RetryAfter), float64(time.Microsecond))
	s.advance(250 * time.Millisecond)
	require.True(t, allowN(t, s.lim, "user:1", 1).Allowed)

	// Other keys are independent, and a long pause refills only up to Burst.
	got, _ = countAllowed(t, s.lim, "user:2", 100)
	require.Equal(t, 5, got)
	s.advance(time.Hour)
	got, _ = countAllowed(t, s.lim, "user:1", 100)
	require.Equal(t, 5, got)

	// Reset makes the key full at once.
	require.NoError(t, s.lim.Reset(context.Background(), "user:2"))
	got, _ = countAllowed(t, s.lim, "user:2", 100)
	require.Equal(t, 5, got)
}

// testFractionalRate: 0.5/s means one token every two seconds.
func testFractionalRate(t *testing.T, s stepper) {
	require.True(t, allowN(t, s.lim, "k", 1).Allowed)
	res := allowN(t, s.lim, "k", 1)
	require.False(t, res.Allowed)
	require.InDelta(t, float64(2*time.Second), float64(res.RetryAfter), float64(time.Microsecond))
	s.advance(1999 * time.Millisecond)
	require.False(t, allowN(t, s.lim, "k", 1).Allowed)
	s.advance(time.Millisecond)
	require.True(t, allowN(t, s.lim, "k", 1).Allowed)
}

// testPeekAndN: n == 0 takes nothing; n > 1 takes n at once or nothing.
func testPeekAndN(t *testing.T, s stepper) {
	for i := 0; i < 3; i++ {
		res := allowN(t, s.lim, "k", 0)
		require.True(t, res.Allowed)
		require.Equal(t, 4, res.Remaining)
		require.Zero(t, res.ResetAfter)
	}
	res := allowN(t, s.lim, "k", 3)
	require.True(t, res.Allowed)
	require.Equal(t, 1, res.Remaining)
	res = allowN(t, s.lim, "k", 2) // one token left: denied, nothing taken
	require.False(t, res.Allowed)
	require.Equal(t, 1, res.Remaining)
	require.InDelta(t, float64(time.Second), float64(res.RetryAfter), float64(time.Microsecond))
	res = allowN(t, s.lim, "k", 0)
	require.True(t, res.Allowed, "one token is still there")
	require.Equal(t, 1, res.Remaining)
	require.True(t, allowN(t, s.lim, "k", 1).Allowed)
	res = allowN(t, s.lim, "k", 0)
	require.False(t, res.Allowed, "a peek on an empty bucket says no")
	require.InDelta(t, float64(time.Second), float64(res.RetryAfter), float64(time.Microsecond))
}

// testMultiLimitAtomic: a call denied by one limit takes nothing from the others, and the Result
// reports the binding limit.
func testMultiLimitAtomic(t *testing.T, s stepper) {
	slow := Limit{Rate: 0.001, Burst: 5, Name: "slow"}
	fast := Limit{Rate: 1, Burst: 2, Name: "fast"}
	res := allowN(t, s.lim, "k", 2)
	require.True(t, res.Allowed)
	require.Equal(t, fast, res.Limit, "fast has the fewest tokens left")
	require.Equal(t, 0, res.Remaining)
	for i := 0; i < 3; i++ {
		res = allowN(t, s.lim, "k", 1)
		require.False(t, res.Allowed)
		require.Equal(t, fast, res.Limit)
		require.InDelta(t, float64(time.Second), float64(res.RetryAfter), float64(time.Microsecond))
	}
	s.advance(2 * time.Second)
	// slow still holds 3 tokens only if the denied calls took none of them.
	res = allowN(t, s.lim, "k", 2)
	require.True(t, res.Allowed)
	require.Equal(t, 0, res.Remaining)
	s.advance(2 * time.Second)
	res = allowN(t, s.lim, "k", 1)
	require.True(t, res.Allowed, "slow has its last token")
	require.Equal(t, slow, res.Limit)
	require.Equal(t, 0, res.Remaining)
	res = allowN(t, s.lim, "k", 1)
	require.False(t, res.Allowed)
	require.Equal(t, slow, res.Limit, "slow binds: its retry is the longest")
	require.InDelta(t, float64(996*time.Second), float64(res.RetryAfter), float64(time.Millisecond), "1 token at 0.001/s, 4 s after the bucket was emptied")
}

func TestLocalBurstThenRate(t *testing.T) {
	l, clk := newLocal(t, nil, Limit{Rate: 2, Burst: 5, Name: "b"})
	testBurstThenRate(t, stepper{lim: l, advance: clk.Add})
}

func TestLocalFractionalRate(t *testing.T) {
	l, clk := newLocal(t, nil, Limit{Rate: 0.5, Burst: 1})
	testFractionalRate(t, stepper{lim: l, advance: clk.Add})
}

func TestLocalPeekAndN(t *testing.T) {
	l, clk := newLocal(t, nil, Limit{Rate: 1, Burst: 4})
	testPeekAndN(t, stepper{lim: l, advance: clk.Add})
}

func TestLocalMultiLimitAtomic(t *testing.T) {
	l, clk := newLocal(t, nil, Limit{Rate: 0.001, Burst: 5, Name: "slow"}, Limit{Rate: 1, Burst: 2, Name: "fast"})
	testMultiLimitAtomic(t, stepper{lim: l, advance: clk.Add})
}

func TestLocalClockBack(t *testing.T) {
	l, clk := newLocal(t, nil, Limit{Rate: 1, Burst: 2})
	got, _ := countAllowed(t, l, "k", 10)
	require.Equal(t, 2, got)
	clk.Add(-time.Hour)
	require.False(t, allowN(t, l, "k", 1).Allowed)
	clk.Add(time.Second)
	require.True(t, allowN(t, l, "k", 1).Allowed, "locked out longer than one refill after a clock step back")
}

func TestLocalConcurrentExactBurst(t *testing.T) {
	l, _ := newLocal(t, nil, Limit{Rate: 1e-6, Burst: 37})
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for g := 0; g < 50; g++ {
		wg.Go(func() {
			for i := 0; i < 10; i++ {
				res, err := l.Allow(context.Background(), "hot")
				if err == nil && res.Allowed {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	require.Equal(t, 37, allowed)
}

func TestLocalMaxKeysBounded(t *testing.T) {
	for _, max := range []int{1, 100, 1000, 5000} {
		l, clk := newLocal(t, &LocalOptions{MaxKeys: max}, Limit{Rate: 1e-3, Burst: 1})
		for i := 0; i < 3*max+100; i++ {
			_, err := l.Allow(context.Background(), fmt.Sprint("k", i))
			require.NoError(t, err)
			clk.Add(time.Millisecond)
			require.LessOrEqual(t, l.Len(), max, "MaxKeys %d, after %d keys", max, i+1)
		}
		require.Greater(t, l.Len(), max/2, "MaxKeys %d: the store should fill most of its room", max)
	}
}

// TestLocalHotKeyKeepsState: a key in use keeps its (empty) bucket however many new keys pass
// through a full store, so flooding with fresh keys does not refill it.
func TestLocalHotKeyKeepsState(t *testing.T) {
	l, clk := newLocal(t, &LocalOptions{MaxKeys: 100}, Limit{Rate: 1e-6, Burst: 1})
	require.True(t, allowN(t, l, "hot", 1).Allowed)
	for i := 0; i < 5000; i++ {
		_, err := l.Allow(context.Background(), fmt.Sprint("k", i))
		require.NoError(t, err)
		clk.Add(time.Millisecond)
		require.False(t, allowN(t, l, "hot", 1).Allowed, "hot key refilled after %d new keys", i+1)
	}
}

func TestLocalExpiresAfterRefill(t *testing.T) {
	l, clk := newLocal(t, &LocalOptions{MaxKeys: 64}, Limit{Rate: 1000, Burst: 1}, Limit{Rate: 1, Burst: 2, Name: "slow"})
	_, err := l.Allow(context.Background(), "k")
	require.NoError(t, err)
	require.Equal(t, 1, l.Len())
	// Peeking at a missing key does not create it.
	_, err = l.AllowN(context.Background(), "other", 0)
	require.NoError(t, err)
	require.Equal(t, 1, l.Len())
	// Not yet full again (the slow limit takes 2s): a new key keeps it.
	clk.Add(1999 * time.Millisecond)
	_, err = l.Allow(context.Background(), "k2")
	require.NoError(t, err)
	require.Equal(t, 2, l.Len())
	// Full again: the next new key in its shard sweeps it away (here one shard holds them all).
	clk.Add(time.Millisecond)
	_, err = l.Allow(context.Background(), "k3")
	require.NoError(t, err)
	require.Equal(t, 2, l.Len(), "k went, k2 and k3 stay")
	clk.Add(time.Hour)
	l.buckets.sweepAll(l.clock())
	require.Zero(t, l.Len())
}

func TestArgumentErrors(t *testing.T) {
	l, _ := newLocal(t, nil, Limit{Rate: 1, Burst: 3}, Limit{Rate: 10, Burst: 10, Name: "x"})
	ctx := context.Background()
	_, err := l.AllowN(ctx, "k", 4)
	require.ErrorIs(t, err, ErrExceedsBurst)
	require.ErrorContains(t, err, "Burst 3")
	_, err = l.AllowN(ctx, "k", -1)
	require.ErrorIs(t, err, ErrInvalidArgument)
	_, err = l.Allow(ctx, "")
	require.ErrorIs(t, err, ErrInvalidArgument)
	require.ErrorIs(t, l.Reset(ctx, ""), ErrInvalidArgument)
	require.ErrorIs(t, l.WaitN(ctx, "k", 4), ErrExceedsBurst)
	res := allowN(t, l, "k", 3)
	require.True(t, res.Allowed, "n == Burst is fine")
}

func TestConstructorValidation(t *testing.T) {
	cases := []struct {
		name   string
		opt    *LocalOptions
		limits []Limit
		field  string
	}{
		{"no limits", nil, nil, "at least one Limit"},
		{"zero rate", nil, []Limit{{Rate: 0, Burst: 1}}, "Rate"},
		{"negative rate", nil, []Limit{{Rate: -1, Burst: 1}}, "Rate"},
		{"NaN rate", nil, []Limit{{Rate: math.NaN(), Burst: 1}}, "Rate"},
		{"inf rate", nil, []Limit{{Rate: math.Inf(1), Burst: 1}}, "Rate"},
		{"zero burst", nil, []Limit{{Rate: 1, Burst: 0}}, "Burst"},
		{"refill too long", nil, []Limit{{Rate: 1e-9, Burst: 1}}, "Burst/Rate"},
		{"duplicate", nil, []Limit{PerSecond(1), PerSecond(1)}, "duplicate"},
		{"second bad", nil, []Limit{PerSecond(1), {Rate: 1, Burst: -2}}, "limits[1]"},
		{"max keys", &LocalOptions{MaxKeys: -1}, []Limit{PerSecond(1)}, "MaxKeys"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewLocal(c.opt, c.limits...)
			require.ErrorIs(t, err, ErrInvalidOptions)
			require.ErrorContains(t, err, c.field)
		})
	}
}

func TestHelpers(t *testing.T) {
	require.Equal(t, Limit{Rate: 10, Burst: 10, Name: "10/s"}, PerSecond(10))
	require.Equal(t, Limit{Rate: 2, Burst: 120, Name: "120/min"}, PerMinute(120))
	require.Equal(t, Limit{Rate: 0.5, Burst: 1800, Name: "1800/h"}, PerHour(1800))
	require.Equal(t, "0.5/s burst 3", Limit{Rate: 0.5, Burst: 3}.String())
}

func TestBuildResultBinding(t *testing.T) {
	a := Limit{Rate: 1, Burst: 10, Name: "a"}
	b := Limit{Rate: 10, Burst: 10, Name: "b"}
	// Allowed: smallest Remaining binds.
	res := buildResult([]Limit{a, b}, []float64{7, 3}, true, 1)
	require.Equal(t, Result{Allowed: true, Remaining: 3, ResetAfter: 700 * time.Millisecond, Limit: b}, res)
	// Allowed, equal Remaining: longest ResetAfter binds.
	res = buildResult([]Limit{b, a}, []float64{3.5, 3}, true, 1)
	require.Equal(t, a, res.Limit)
	// Denied: longest RetryAfter binds, even with more tokens left.
	res = buildResult([]Limit{a, b}, []float64{0.5, 0}, false, 1)
	require.Equal(t, Result{Remaining: 0, RetryAfter: 500 * time.Millisecond, ResetAfter: 9500 * time.Millisecond, Limit: a}, res)
	// Denied for n=3: only limits short of 3 tokens have a RetryAfter.
	res = buildResult([]Limit{a, b}, []float64{5, 1}, false, 3)
	require.Equal(t, b, res.Limit)
	require.Equal(t, 200*time.Millisecond, res.RetryAfter)
}

func TestWaitLocal(t *testing.T) {
	l, err := NewLocal(nil, Limit{Rate: 50, Burst: 1})
	require.NoError(t, err)
	defer l.Close()
	ctx := context.Background()
	start := time.Now()
	require.NoError(t, l.Wait(ctx, "k"))
	require.NoError(t, l.Wait(ctx, "k"), "second token comes after 20ms")
	require.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)

	// A deadline before the next token fails before sleeping (a sleep would end in ctx's error).
	dctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, l.Wait(dctx, "k"), ErrWaitDeadline)

	// Cancellation while sleeping returns the context's error.
	slow, err := NewLocal(nil, Limit{Rate: 0.01, Burst: 1})
	require.NoError(t, err)
	defer slow.Close()
	require.NoError(t, slow.Wait(ctx, "k"))
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- slow.Wait(cctx, "k") }()
	ccancel()
	err = <-done
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, errors.Is(err, ErrWaitDeadline))
}

func TestLocalCloseIdempotentAndUsable(t *testing.T) {
	l, err := NewLocal(nil, PerSecond(2))
	require.NoError(t, err)
	require.NoError(t, l.Close())
	require.NoError(t, l.Close())
	got, _ := countAllowed(t, l, "k", 10)
	require.Equal(t, 2, got, "still limits after Close")
}

func TestLimitsReturnsACopy(t *testing.T) {
	l, _ := newLocal(t, nil, PerSecond(5), PerHour(100))
	got := l.Limits()
	require.Equal(t, []Limit{PerSecond(5), PerHour(100)}, got)
	got[0].Burst = 1000
	require.Equal(t, 5, l.Limits()[0].Burst)
	countAllowedN, _ := countAllowed(t, l, "k", 10)
	require.Equal(t, 5, countAllowedN, "changing the copy changes nothing")
}
