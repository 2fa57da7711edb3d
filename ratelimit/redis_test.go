package ratelimit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// miniTime moves miniredis's TIME (what the script reads) in steps.
type miniTime struct {
	m *miniredis.Miniredis
	t time.Time
}

func newMiniTime(m *miniredis.Miniredis) *miniTime {
	mt := &miniTime{m: m, t: time.Unix(1_750_000_000, 0)}
	m.SetTime(mt.t)
	return mt
}

func (mt *miniTime) Add(d time.Duration) {
	mt.t = mt.t.Add(d)
	mt.m.SetTime(mt.t)
}

// failFast returns a client of addr that gives up at once when the server is gone.
func failFast(t *testing.T, addr string) redis.UniversalClient {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newMiniRedis builds a Redis limiter on a fresh miniredis with a settable server clock.
func newMiniRedis(t *testing.T, opt *RedisOptions, limits ...Limit) (*Redis, *miniredis.Miniredis, *miniTime) {
	t.Helper()
	m, _ := redistest.Mini(t)
	r, err := NewRedis(failFast(t, m.Addr()), opt, limits...)
	require.NoError(t, err)
	return r, m, newMiniTime(m)
}

func TestRedisBurstThenRate(t *testing.T) {
	r, _, mt := newMiniRedis(t, nil, Limit{Rate: 2, Burst: 5, Name: "b"})
	testBurstThenRate(t, stepper{lim: r, advance: mt.Add})
}

func TestRedisFractionalRate(t *testing.T) {
	r, _, mt := newMiniRedis(t, nil, Limit{Rate: 0.5, Burst: 1})
	testFractionalRate(t, stepper{lim: r, advance: mt.Add})
}

func TestRedisPeekAndN(t *testing.T) {
	r, m, mt := newMiniRedis(t, nil, Limit{Rate: 1, Burst: 4})
	// Peeking at a fresh key writes nothing.
	allowN(t, r, "k", 0)
	require.Empty(t, m.Keys())
	testPeekAndN(t, stepper{lim: r, advance: mt.Add})
}

func TestRedisMultiLimitAtomic(t *testing.T) {
	r, _, mt := newMiniRedis(t, nil, Limit{Rate: 0.001, Burst: 5, Name: "slow"}, Limit{Rate: 1, Burst: 2, Name: "fast"})
	testMultiLimitAtomic(t, stepper{lim: r, advance: mt.Add})
}

func TestRedisKeysAndTTL(t *testing.T) {
	r, m, _ := newMiniRedis(t, &RedisOptions{Prefix: "app:rl:"},
		Limit{Rate: 2, Burst: 5, Name: "fast"}, Limit{Rate: 0.3, Burst: 7, Name: "slow"})
	key := "user:{1}}"
	allowN(t, r, key, 1)
	fast, slow := "app:rl:{user:{1%7D%7D}:fast", "app:rl:{user:{1%7D%7D}:slow"
	require.ElementsMatch(t, []string{fast, slow}, m.Keys())
	// TTL = time until the bucket is full again, rounded up to the millisecond.
	require.Equal(t, 500*time.Millisecond, m.TTL(fast))
	require.Equal(t, 3334*time.Millisecond, m.TTL(slow)) // 1 token at 0.3/s = 3333.33 ms
	allowN(t, r, key, 4)
	require.Equal(t, 2500*time.Millisecond, m.TTL(fast))
	require.Equal(t, 16667*time.Millisecond, m.TTL(slow))
	// Fractional tokens survive the round trip as strings.
	v, err := m.Get(slow)
	require.NoError(t, err)
	require.Equal(t, "2 1750000000000000", v, "tokens and the server time in µs")

	// A denied call changes nothing, including the TTL.
	res := allowN(t, r, key, 1)
	require.False(t, res.Allowed)
	require.Equal(t, 2500*time.Millisecond, m.TTL(fast))

	// After a full refill the keys are gone.
	m.FastForward(16667 * time.Millisecond)
	require.Empty(t, m.Keys())

	require.NoError(t, r.Reset(context.Background(), key))
}

func TestRedisTTLNeverZero(t *testing.T) {
	// A refill time far below a millisecond still gives a TTL of 1 ms, never 0 (no expiry).
	r, m, _ := newMiniRedis(t, nil, Limit{Rate: 1e6, Burst: 1, Name: "x"})
	allowN(t, r, "k", 1)
	require.Equal(t, time.Millisecond, m.TTL("surge:rl:{k}:x"))
}

func TestRedisClockStepBack(t *testing.T) {
	r, m, mt := newMiniRedis(t, nil, Limit{Rate: 1, Burst: 3, Name: "b"})
	allowN(t, r, "k", 2) // one token left
	mt.Add(-time.Hour)
	res := allowN(t, r, "k", 1)
	require.True(t, res.Allowed, "tokens held before the step back are kept")
	res = allowN(t, r, "k", 1)
	require.False(t, res.Allowed)
	require.InDelta(t, float64(time.Second), float64(res.RetryAfter), float64(time.Microsecond))
	mt.Add(time.Second)
	require.True(t, allowN(t, r, "k", 1).Allowed, "locked out longer than one refill after the clock went back an hour")

	// Empty bucket stamped in the future and a denied call: refilling restarts at once.
	allowN(t, r, "j", 3)
	mt.Add(-time.Hour)
	require.False(t, allowN(t, r, "j", 1).Allowed)
	mt.Add(time.Second)
	require.True(t, allowN(t, r, "j", 1).Allowed)
	v, err := m.Get("surge:rl:{j}:b")
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("0 %d", mt.t.UnixMicro()), v, "the bucket was taken at the current time")
}

// TestLocalAndRedisAgree runs one sequence of calls on both limiters and compares the Results,
// for each Redis algorithm, with two limits (the general scripts) and with one (the one-limit
// scripts).
func TestLocalAndRedisAgree(t *testing.T) {
	two := []Limit{{Rate: 3, Burst: 4, Name: "a"}, {Rate: 1.5, Burst: 9, Name: "b"}}
	for _, algo := range []Algorithm{TokenBucket, GCRA} {
		t.Run(algo.String(), func(t *testing.T) { testLocalAndRedisAgree(t, algo, two) })
		t.Run(algo.String()+"/one-limit", func(t *testing.T) { testLocalAndRedisAgree(t, algo, two[:1]) })
	}
}

// agreeStep is one call of an agreement walk: wait, then AllowN(n).
type agreeStep struct {
	wait time.Duration
	n    int
}

// agreeSteps is a fixed start, then a long seeded random walk: waits in whole milliseconds, n
// from 0 to 3.
func agreeSteps() []agreeStep {
	steps := []agreeStep{{0, 1}, {0, 2}, {0, 2}, {0, 0}, {100 * time.Millisecond, 1}, {400 * time.Millisecond, 1},
		{0, 4}, {time.Second, 3}, {0, 0}, {3 * time.Second, 4}, {0, 1}, {10 * time.Second, 4}, {0, 4}, {0, 0}}
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		steps = append(steps, agreeStep{time.Duration(rnd.IntN(1000)) * time.Millisecond, rnd.IntN(4)})
	}
	return steps
}

func testLocalAndRedisAgree(t *testing.T, algo Algorithm, limits []Limit) {
	l, clk := newLocal(t, nil, limits...)
	r, _, mt := newMiniRedis(t, &RedisOptions{Algorithm: algo}, limits...)
	require.Equal(t, len(limits) == 1, oneLimitScript(r), "the script for the number of limits")
	outcomes, bindings := map[bool]int{}, map[string]int{}
	for i, s := range agreeSteps() {
		clk.Add(s.wait)
		mt.Add(s.wait)
		lr := allowN(t, l, "k", s.n)
		rr := allowN(t, r, "k", s.n)
		msg := fmt.Sprintf("step %d (wait %v, n %d): local %+v redis %+v", i, s.wait, s.n, lr, rr)
		require.Equal(t, lr.Allowed, rr.Allowed, msg)
		outcomes[lr.Allowed]++
		bindings[lr.Limit.Name]++
		require.Equal(t, lr.Remaining, rr.Remaining, msg)
		require.Equal(t, lr.Limit, rr.Limit, msg)
		require.InDelta(t, float64(lr.RetryAfter), float64(rr.RetryAfter), float64(time.Microsecond), msg)
		require.InDelta(t, float64(lr.ResetAfter), float64(rr.ResetAfter), float64(time.Microsecond), msg)
	}
	// The walk is only worth something if it visits both answers and both binding limits.
	t.Logf("outcomes %v bindings %v", outcomes, bindings)
	require.Greater(t, outcomes[true], 30, "%v", outcomes)
	require.Greater(t, outcomes[false], 30, "%v", outcomes)
	for _, l := range limits {
		require.Greater(t, bindings[l.Name], 30, "%v", bindings)
	}
}

// generalScript makes r, a limiter with one limit, run the general script of its algorithm
// instead of the one-limit script, as a reference for the one-limit scripts.
func generalScript(r *Redis) {
	if r.script == gcra1Script {
		r.script, r.result = gcraScript, (*Redis).gcraResult
	} else {
		r.script, r.result = tokenBucketScript, (*Redis).tokenBucketResult
	}
}

// oneLimitScript reports whether r runs a one-limit script (with a scalar reply).
func oneLimitScript(r *Redis) bool {
	return r.script == tokenBucket1Script || r.script == gcra1Script
}

// TestRedisOneLimitScriptsMatchGeneral: on one limit, tokenbucket1.lua and gcra1.lua answer
// exactly as the general scripts do and leave the same values and TTLs in Redis, along a walk
// with peeks, denials, fractional tokens and a clock that steps back.
func TestRedisOneLimitScriptsMatchGeneral(t *testing.T) {
	for _, algo := range []Algorithm{TokenBucket, GCRA} {
		t.Run(algo.String(), func(t *testing.T) {
			lim := Limit{Rate: 1.5, Burst: 4, Name: "a"}
			one, m, mt := newMiniRedis(t, &RedisOptions{Algorithm: algo, Prefix: "one:"}, lim)
			gen, err := NewRedis(failFast(t, m.Addr()), &RedisOptions{Algorithm: algo, Prefix: "gen:"}, lim)
			require.NoError(t, err)
			generalScript(gen)
			require.True(t, oneLimitScript(one))
			suffix := ":a"
			if algo == GCRA {
				suffix = ":gcra:a"
			}
			// Midway the bucket is drained and the server clock goes back an hour: a denied call
			// then rewrites the bucket, and refilling restarts from the new time.
			steps := slices.Insert(agreeSteps(), 40, agreeStep{0, 1}, agreeStep{0, 1}, agreeStep{0, 1},
				agreeStep{0, 1}, agreeStep{-time.Hour, 1}, agreeStep{time.Second, 1}, agreeStep{time.Second, 1})
			outcomes := map[bool]int{}
			for i, s := range steps {
				mt.Add(s.wait)
				a, b := allowN(t, one, "k", s.n), allowN(t, gen, "k", s.n)
				require.Equal(t, b, a, "step %d (wait %v, n %d)", i, s.wait, s.n)
				outcomes[a.Allowed]++
				va, erra := m.Get("one:{k}" + suffix)
				vb, errb := m.Get("gen:{k}" + suffix)
				require.Equal(t, errb, erra, "step %d", i)
				if algo == GCRA && erra == nil {
					// gcra1.lua has redis.call format the TAT: the same number, though
					// miniredis writes it in another notation than string.format('%.17g').
					fa, err := strconv.ParseFloat(va, 64)
					require.NoError(t, err, "step %d: %q", i, va)
					fb, err := strconv.ParseFloat(vb, 64)
					require.NoError(t, err, "step %d: %q", i, vb)
					require.Equal(t, fb, fa, "step %d: stored TAT %q, general %q", i, va, vb)
				} else {
					require.Equal(t, vb, va, "step %d: stored value", i)
				}
				require.Equal(t, m.TTL("gen:{k}"+suffix), m.TTL("one:{k}"+suffix), "step %d: TTL", i)
			}
			require.Greater(t, outcomes[true], 30, "%v", outcomes)
			require.Greater(t, outcomes[false], 30, "%v", outcomes)
		})
	}
}

// TestRedisGCRA runs the shared behaviour tests on the GCRA algorithm.
func TestRedisGCRA(t *testing.T) {
	gcra := &RedisOptions{Algorithm: GCRA}
	t.Run("burst-then-rate", func(t *testing.T) {
		r, _, mt := newMiniRedis(t, gcra, Limit{Rate: 2, Burst: 5, Name: "b"})
		testBurstThenRate(t, stepper{lim: r, advance: mt.Add})
	})
	t.Run("fractional-rate", func(t *testing.T) {
		r, _, mt := newMiniRedis(t, gcra, Limit{Rate: 0.5, Burst: 1})
		testFractionalRate(t, stepper{lim: r, advance: mt.Add})
	})
	t.Run("peek-and-n", func(t *testing.T) {
		r, m, mt := newMiniRedis(t, gcra, Limit{Rate: 1, Burst: 4})
		allowN(t, r, "k", 0)
		require.Empty(t, m.Keys(), "a peek at a fresh key writes nothing")
		testPeekAndN(t, stepper{lim: r, advance: mt.Add})
	})
	t.Run("multi-limit-atomic", func(t *testing.T) {
		r, _, mt := newMiniRedis(t, gcra, Limit{Rate: 0.001, Burst: 5, Name: "slow"}, Limit{Rate: 1, Burst: 2, Name: "fast"})
		testMultiLimitAtomic(t, stepper{lim: r, advance: mt.Add})
	})
	t.Run("keys-and-ttl", func(t *testing.T) {
		r, m, mt := newMiniRedis(t, &RedisOptions{Prefix: "app:rl:", Algorithm: GCRA},
			Limit{Rate: 2, Burst: 5, Name: "fast"}, Limit{Rate: 0.3, Burst: 7, Name: "slow"})
		key := "user:{1}}"
		allowN(t, r, key, 1)
		fast, slow := "app:rl:{user:{1%7D%7D}:gcra:fast", "app:rl:{user:{1%7D%7D}:gcra:slow"
		require.ElementsMatch(t, []string{fast, slow}, m.Keys())
		require.Equal(t, 500*time.Millisecond, m.TTL(fast))
		require.Equal(t, 3334*time.Millisecond, m.TTL(slow))
		allowN(t, r, key, 4)
		require.Equal(t, 2500*time.Millisecond, m.TTL(fast))
		require.Equal(t, 16667*time.Millisecond, m.TTL(slow))
		v, err := m.Get(fast)
		require.NoError(t, err)
		require.Equal(t, strconv.FormatInt(mt.t.UnixMicro()-1577836800e6+2_500_000, 10), v, "TAT in µs since 2020")
		res := allowN(t, r, key, 1)
		require.False(t, res.Allowed)
		require.Equal(t, 2500*time.Millisecond, m.TTL(fast), "a denied call writes nothing")
		m.FastForward(16667 * time.Millisecond)
		require.Empty(t, m.Keys())
	})
	t.Run("clock-step-back", func(t *testing.T) {
		r, _, mt := newMiniRedis(t, gcra, Limit{Rate: 1, Burst: 3, Name: "b"})
		allowN(t, r, "k", 2)
		mt.Add(-time.Hour)
		res := allowN(t, r, "k", 1)
		require.False(t, res.Allowed, "GCRA counts the bucket as empty after a step back")
		require.InDelta(t, float64(time.Second), float64(res.RetryAfter), float64(time.Microsecond))
		mt.Add(time.Second)
		require.True(t, allowN(t, r, "k", 1).Allowed, "locked out longer than one token after the clock went back an hour")
	})
	t.Run("max-rate", func(t *testing.T) {
		m, _ := redistest.Mini(t)
		_, err := NewRedis(failFast(t, m.Addr()), gcra, Limit{Rate: MaxGCRARate * 2, Burst: 1})
		require.ErrorIs(t, err, ErrInvalidOptions)
		require.ErrorContains(t, err, "MaxGCRARate")
		_, err = NewRedis(failFast(t, m.Addr()), &RedisOptions{Algorithm: 7}, PerSecond(1))
		require.ErrorIs(t, err, ErrInvalidOptions)
		require.ErrorContains(t, err, "RedisOptions.Algorithm")
		r, _, _ := newMiniRedis(t, gcra, Limit{Rate: MaxGCRARate, Burst: 1000})
		got, _ := countAllowed(t, r, "k", 2000)
		require.Equal(t, 1000, got)
	})
}

func TestRedisArgumentErrors(t *testing.T) {
	r, m, _ := newMiniRedis(t, nil, Limit{Rate: 1, Burst: 3})
	ctx := context.Background()
	_, err := r.AllowN(ctx, "k", 4)
	require.ErrorIs(t, err, ErrExceedsBurst)
	_, err = r.AllowN(ctx, "k", -1)
	require.ErrorIs(t, err, ErrInvalidArgument)
	_, err = r.Allow(ctx, "")
	require.ErrorIs(t, err, ErrInvalidArgument)
	require.ErrorIs(t, r.Reset(ctx, ""), ErrInvalidArgument)
	require.Empty(t, m.Keys(), "rejected calls reach Redis")
	require.Zero(t, r.Stats())
}

func TestNewRedisValidation(t *testing.T) {
	_, rdb := redistest.Mini(t)
	cases := []struct {
		name  string
		rdb   redis.UniversalClient
		opt   *RedisOptions
		field string
	}{
		{"nil client", nil, nil, "nil redis client"},
		{"brace prefix", rdb, &RedisOptions{Prefix: "a{b"}, "Prefix"},
		{"nil fallback", rdb, &RedisOptions{OnRedisError: Fallback(nil)}, "OnRedisError"},
		{"negative probe", rdb, &RedisOptions{ProbeInterval: -time.Second}, "ProbeInterval"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewRedis(c.rdb, c.opt, PerSecond(1))
			require.ErrorIs(t, err, ErrInvalidOptions)
			require.ErrorContains(t, err, c.field)
		})
	}
	_, err := NewRedis(rdb, nil, Limit{Rate: 0, Burst: 1})
	require.ErrorContains(t, err, "Rate")
}

func TestRedisErrorPolicies(t *testing.T) {
	ctx := context.Background()
	limit := Limit{Rate: 1, Burst: 3, Name: "b"}
	t.Run("fail closed", func(t *testing.T) {
		var logs bytes.Buffer
		r, m, _ := newMiniRedis(t, &RedisOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, limit)
		m.Close()
		res, err := r.Allow(ctx, "k")
		require.Error(t, err)
		require.Empty(t, logs.String(), "a returned error is not logged too")
		require.False(t, errors.Is(err, ErrInvalidArgument))
		require.False(t, res.Allowed)
		require.Equal(t, uint64(1), r.Stats().RedisErrors)
	})
	t.Run("fail open", func(t *testing.T) {
		r, m, _ := newMiniRedis(t, &RedisOptions{OnRedisError: FailOpen}, limit)
		m.Close()
		for i := 0; i < 5; i++ {
			res, err := r.Allow(ctx, "k")
			require.NoError(t, err)
			require.True(t, res.Allowed)
			require.Equal(t, 2, res.Remaining)
		}
		st := r.Stats()
		require.Equal(t, uint64(5), st.RedisErrors)
		require.Equal(t, uint64(5), st.FailOpen)
		require.Equal(t, uint64(5), st.Allowed)
	})
	t.Run("cancelled context is not a redis error", func(t *testing.T) {
		r, _, _ := newMiniRedis(t, &RedisOptions{OnRedisError: FailOpen}, limit)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := r.Allow(cctx, "k")
		require.ErrorIs(t, err, context.Canceled)
		require.Zero(t, r.Stats().RedisErrors)
	})
}

func TestRedisFallbackAndProbe(t *testing.T) {
	limit := Limit{Rate: 0.001, Burst: 3, Name: "b"}
	local, _ := newLocal(t, nil, Limit{Rate: 0.001, Burst: 2, Name: "b"})
	m, _ := redistest.Mini(t)
	var logs bytes.Buffer
	r, err := NewRedis(failFast(t, m.Addr()), &RedisOptions{OnRedisError: Fallback(local), ProbeInterval: time.Minute,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, limit)
	require.NoError(t, err)
	clk := newFakeClock()
	r.now = clk.Now

	require.True(t, allowN(t, r, "k", 1).Allowed) // Redis: 2 left
	m.Close()
	// Redis down: the local twin (burst 2) answers, with its full Result.
	res := allowN(t, r, "k", 1)
	require.True(t, res.Allowed)
	require.Equal(t, 1, res.Remaining)
	require.True(t, allowN(t, r, "k", 1).Allowed)
	res = allowN(t, r, "k", 1)
	require.False(t, res.Allowed)
	require.Positive(t, res.RetryAfter)
	st := r.Stats()
	require.Equal(t, uint64(1), st.RedisErrors, "only the first call tried Redis")
	require.Equal(t, uint64(3), st.Fallback)

	// Redis is back, but no probe before the interval: still local.
	require.NoError(t, m.Restart())
	require.False(t, allowN(t, r, "k", 1).Allowed)
	require.Zero(t, r.Stats().Probes)

	// After the interval one request probes Redis, which still remembers 2 tokens.
	clk.Add(time.Minute)
	res = allowN(t, r, "k", 1)
	require.True(t, res.Allowed)
	require.Equal(t, 1, res.Remaining)
	st = r.Stats()
	require.Equal(t, uint64(1), st.Probes)
	require.Equal(t, uint64(1), st.Recoveries)
	require.True(t, allowN(t, r, "k", 1).Allowed)
	require.False(t, allowN(t, r, "k", 1).Allowed)
	require.Equal(t, uint64(1), r.Stats().Probes, "no probes once Redis is back")

	// A failed probe keeps the fallback and waits another interval.
	m.Close()
	allowN(t, r, "x", 1)
	clk.Add(time.Minute)
	allowN(t, r, "x", 1)
	st = r.Stats()
	require.Equal(t, uint64(2), st.Probes)
	require.Equal(t, uint64(3), st.RedisErrors)
	allowN(t, r, "x", 1)
	require.Equal(t, uint64(3), r.Stats().RedisErrors)

	// One line per change of state, not one per failed call.
	require.Equal(t, 2, strings.Count(logs.String(), "level=WARN msg=\"ratelimit: redis failing\""), logs.String())
	require.Equal(t, 1, strings.Count(logs.String(), "level=INFO msg=\"ratelimit: redis answers again\""), logs.String())
}

func TestWaitRedis(t *testing.T) {
	r, _, _ := newMiniRedis(t, nil, Limit{Rate: 50, Burst: 1})
	ctx := context.Background()
	// miniredis time is fixed by SetTime in newMiniRedis: move it forward from another goroutine
	// is not needed; a fixed clock means Wait can only end by its deadline check.
	require.NoError(t, r.Wait(ctx, "k"))
	dctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, r.Wait(dctx, "k"), ErrWaitDeadline)
}

// countHook counts the commands a client sends.
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func TestRedisOneRoundTrip(t *testing.T) {
	m, _ := redistest.Mini(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	h := &countHook{}
	rdb.AddHook(h)
	r, err := NewRedis(rdb, nil, PerSecond(10), PerHour(100))
	require.NoError(t, err)
	allowN(t, r, "k", 1) // loads the script: EVALSHA, NOSCRIPT, EVAL
	h.n.Store(0)
	for i := 0; i < 5; i++ {
		allowN(t, r, "k", i%2)
	}
	require.Equal(t, int64(5), h.n.Load())
}

// TestOneLimitRepliesUnexpected: a reply the one-limit scripts never send (another script under
// the same SHA, a proxy's answer) is an error naming it, never a panic or a wrong Result.
func TestOneLimitRepliesUnexpected(t *testing.T) {
	lim := Limit{Rate: 1, Burst: 3}
	tb, _, _ := newMiniRedis(t, nil, lim)
	gcra, _, _ := newMiniRedis(t, &RedisOptions{Algorithm: GCRA}, lim)
	reply := func(v any) *redis.Cmd {
		cmd := redis.NewCmd(context.Background())
		cmd.SetVal(v)
		return cmd
	}
	for _, v := range []any{"", "-", "abc", "--1", "NaN", "+Inf", int64(2), []any{int64(1), "2"}} {
		_, _, err := tb.tokenBucket1Result(reply(v), 1)
		require.Error(t, err, "token bucket reply %#v", v)
	}
	for _, v := range []any{"x", []any{int64(1), int64(2)}} {
		_, _, err := gcra.gcra1Result(reply(v), 1)
		require.Error(t, err, "GCRA reply %#v", v)
	}
	res, _, err := tb.tokenBucket1Result(reply("-0.5"), 1)
	require.NoError(t, err)
	require.False(t, res.Allowed)
	require.Equal(t, 500*time.Millisecond, res.RetryAfter)
	res, _, err = gcra.gcra1Result(reply(int64(-1-2_000_000_000)), 2)
	require.NoError(t, err)
	require.False(t, res.Allowed, "denied, 2 s of debt: 1 token left")
	require.Equal(t, 1, res.Remaining)
	require.Equal(t, time.Second, res.RetryAfter)
}
