package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/surgekit/surge/internal/redistest"
)

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{}) // outage tests make go-redis log every failed dial
	goleak.VerifyTestMain(m,
		// go-redis probes a dead server from a goroutine of the client's pool (dial, then sleep
		// 1s) that returns only at its next look at the closed pool, up to DialTimeout+1s after
		// the client closed: tests that kill servers leave one behind for a moment.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

type user struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// newCache returns a Cache on a fresh miniredis, closed at cleanup.
func newCache(t *testing.T, opt *Options) (*Cache[user], *miniredis.Miniredis, redis.UniversalClient) {
	t.Helper()
	m, rdb := redistest.Mini(t)
	c, err := New[user](rdb, opt)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c, m, rdb
}

// newOutageCache is newCache with a client that fails fast once the server is gone (no
// retries), as a service tuned for outages would configure it.
func newOutageCache(t *testing.T, opt *Options) (*Cache[user], *miniredis.Miniredis) {
	t.Helper()
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	c, err := New[user](rdb, opt)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c, m
}

// await blocks until ch is closed or ctx ends: test loaders use it so that Close (which
// cancels running loads) ends them even when a test fails before releasing them.
func await(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// gatedLoader counts its calls, waits for release, and returns user{ID: key, Name: name}.
func gatedLoader(calls *atomic.Int64, release <-chan struct{}, name string) Loader[user] {
	return func(ctx context.Context, key string) (user, error) {
		calls.Add(1)
		if err := await(ctx, release); err != nil {
			return user{}, err
		}
		return user{ID: key, Name: name}, nil
	}
}

// countingLoader returns a loader that counts its calls and returns user{ID: key}.
func countingLoader(n *atomic.Int64) Loader[user] {
	return func(ctx context.Context, key string) (user, error) {
		n.Add(1)
		return user{ID: key, Name: "name-" + key}, nil
	}
}

func TestNewValidatesOptions(t *testing.T) {
	_, rdb := redistest.Mini(t)
	cases := []struct {
		field string
		opt   Options
	}{
		{"Prefix", Options{Prefix: "a{b"}},
		{"TTL", Options{TTL: -time.Second}},
		{"Jitter", Options{Jitter: 1}},
		{"Jitter", Options{Jitter: math.NaN()}},
		{"RefreshAfter", Options{TTL: time.Minute, RefreshAfter: time.Minute}},
		// 10m ± 10%: a quarter of the values would expire before turning stale.
		{"RefreshAfter", Options{TTL: 10 * time.Minute, RefreshAfter: 9*time.Minute + 30*time.Second}},
		{"RefreshAfter", Options{TTL: time.Minute, Jitter: 0.5, RefreshAfter: 30 * time.Second}},
		{"RefreshAfter", Options{RefreshAfter: -1}},
		{"EarlyRefreshBeta", Options{EarlyRefreshBeta: -1}},
		{"Lease", Options{Lease: -1}},
		{"LoadTimeout", Options{LoadTimeout: -1}},
		{"OnRedisError", Options{OnRedisError: 7}},
		{"DoubleDelete", Options{DoubleDelete: -1}},
		{"Local.MaxEntries", Options{Local: &LocalOptions{MaxEntries: -1}}},
		{"Local.TTL", Options{Local: &LocalOptions{TTL: -1}}},
	}
	for _, tc := range cases {
		_, err := New[user](rdb, &tc.opt)
		require.ErrorIs(t, err, ErrInvalidOptions, tc.field)
		require.Contains(t, err.Error(), "Options."+tc.field)
	}
	_, err := New[user](nil, nil)
	require.ErrorContains(t, err, "nil redis client")
	c, err := New[user](rdb, nil)
	require.NoError(t, err)
	require.Equal(t, DefaultTTL, c.cfg.TTL)
	require.Equal(t, DefaultJitter, c.cfg.Jitter)
	require.Equal(t, DefaultNegativeTTL, c.cfg.NegativeTTL)
	require.Equal(t, DefaultLoadTimeout, c.cfg.LoadTimeout)
	require.Equal(t, DefaultOnRedisError, c.cfg.OnRedisError)
	require.NoError(t, c.Close())

	// A negative Jitter turns it off; then RefreshAfter may come as close to TTL as it likes.
	c, err = New[user](rdb, &Options{TTL: time.Minute, Jitter: -1, RefreshAfter: 59 * time.Second})
	require.NoError(t, err)
	require.Zero(t, c.cfg.Jitter)
	for range 10 {
		require.Equal(t, time.Minute, c.ttl(time.Minute))
	}
	require.NoError(t, c.Close())
}

func TestFetchLoadsThenServesFromRedis(t *testing.T) {
	c, m, _ := newCache(t, &Options{Prefix: "u:"})
	ctx := context.Background()
	var calls atomic.Int64
	for range 3 {
		u, err := c.Fetch(ctx, "42", countingLoader(&calls))
		require.NoError(t, err)
		require.Equal(t, user{ID: "42", Name: "name-42"}, u)
	}
	require.EqualValues(t, 1, calls.Load())
	require.True(t, m.Exists("u:{42}"), "value key")
	require.False(t, m.Exists("u:{42}:lease"), "the lease is dropped by the fill")
	st := c.Stats()
	require.EqualValues(t, 1, st.Misses)
	require.EqualValues(t, 1, st.Loads)
	require.EqualValues(t, 2, st.RedisHits)
}

func TestFetchSingleflight1000(t *testing.T) {
	c, _, _ := newCache(t, nil)
	release := make(chan struct{})
	var calls atomic.Int64
	load := gatedLoader(&calls, release, "")
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			u, err := c.Fetch(context.Background(), "hot", load)
			if err == nil && u.ID != "hot" {
				err = fmt.Errorf("got %+v", u)
			}
			errs <- err
		})
	}
	require.Eventually(t, func() bool { return c.Stats().SharedLoads == n-1 }, 10*time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, calls.Load())
	require.EqualValues(t, n-1, c.Stats().SharedLoads)
}

func TestFetchCallerCancelDoesNotFailOthers(t *testing.T) {
	c, _, _ := newCache(t, nil)
	release := make(chan struct{})
	started := make(chan struct{})
	load := func(ctx context.Context, key string) (user, error) {
		close(started)
		select {
		case <-release:
		case <-ctx.Done():
			return user{}, ctx.Err()
		}
		return user{ID: key}, nil
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	done1 := make(chan error, 1)
	go func() { _, err := c.Fetch(ctx1, "k", load); done1 <- err }()
	<-started
	done2 := make(chan error, 1)
	go func() { _, err := c.Fetch(context.Background(), "k", load); done2 <- err }()
	require.Eventually(t, func() bool { return c.Stats().SharedLoads == 1 }, 5*time.Second, time.Millisecond)
	cancel1()
	require.ErrorIs(t, <-done1, context.Canceled, "the leader's caller returns at once")
	close(release)
	require.NoError(t, <-done2, "the load went on for the other waiter")
}

func TestFetchLoaderPanicIsAnErrorForAll(t *testing.T) {
	c, _, _ := newCache(t, nil)
	release := make(chan struct{})
	load := func(ctx context.Context, key string) (user, error) {
		if err := await(ctx, release); err != nil {
			return user{}, err
		}
		panic("boom")
	}
	errs := make(chan error, 3)
	for range 3 {
		go func() { _, err := c.Fetch(context.Background(), "p", load); errs <- err }()
	}
	require.Eventually(t, func() bool { return c.Stats().SharedLoads == 2 }, 5*time.Second, time.Millisecond)
	close(release)
	for range 3 {
		err := <-errs
		require.ErrorIs(t, err, ErrLoaderPanic)
		require.ErrorContains(t, err, "boom")
	}
	require.EqualValues(t, 1, c.Stats().LoadErrors)
}

// failingLoader counts its calls and returns err.
func failingLoader(calls *atomic.Int64, err error) Loader[user] {
	return func(ctx context.Context, key string) (user, error) {
		calls.Add(1)
		return user{}, err
	}
}

func TestFetchLoaderErrorIsNotCached(t *testing.T) {
	c, m, _ := newCache(t, nil)
	boom := errors.New("db down")
	var calls atomic.Int64
	load := failingLoader(&calls, boom)
	for range 2 {
		_, err := c.Fetch(context.Background(), "e", load)
		require.ErrorIs(t, err, boom)
	}
	require.EqualValues(t, 2, calls.Load())
	require.False(t, m.Exists("{e}"))
	require.False(t, m.Exists("{e}:lease"), "a failed load releases its lease")
}

func TestNegativeCaching(t *testing.T) {
	c, m, _ := newCache(t, &Options{NegativeTTL: 30 * time.Second})
	var calls atomic.Int64
	load := failingLoader(&calls, fmt.Errorf("no row: %w", ErrNotFound))
	for range 3 {
		_, err := c.Fetch(context.Background(), "ghost", load)
		require.ErrorIs(t, err, ErrNotFound)
	}
	require.EqualValues(t, 1, calls.Load())
	require.EqualValues(t, 2, c.Stats().NegativeHits)
	ttl := m.TTL("{ghost}")
	require.Greater(t, ttl, 26*time.Second)
	require.LessOrEqual(t, ttl, 33*time.Second)
	_, err := c.Get(context.Background(), "ghost")
	require.ErrorIs(t, err, ErrNotFound)

	m.FastForward(34 * time.Second)
	_, err = c.Fetch(context.Background(), "ghost", load)
	require.ErrorIs(t, err, ErrNotFound)
	require.EqualValues(t, 2, calls.Load(), "the negative entry expired")
}

func TestNegativeCachingDisabled(t *testing.T) {
	c, m, _ := newCache(t, &Options{NegativeTTL: -1})
	var calls atomic.Int64
	load := failingLoader(&calls, ErrNotFound)
	for range 2 {
		_, err := c.Fetch(context.Background(), "ghost", load)
		require.ErrorIs(t, err, ErrNotFound)
	}
	require.EqualValues(t, 2, calls.Load())
	require.False(t, m.Exists("{ghost}"))
}

func TestGetSetDelete(t *testing.T) {
	c, m, _ := newCache(t, &Options{Prefix: "p:"})
	ctx := context.Background()
	_, err := c.Get(ctx, "a")
	require.ErrorIs(t, err, ErrMiss)
	require.NoError(t, c.Set(ctx, "a", user{ID: "a", Name: "x"}))
	u, err := c.Get(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, "x", u.Name)
	var calls atomic.Int64
	u, err = c.Fetch(ctx, "a", countingLoader(&calls))
	require.NoError(t, err)
	require.Equal(t, "x", u.Name, "Fetch serves what Set stored")
	require.Zero(t, calls.Load())

	require.NoError(t, c.Set(ctx, "b", user{ID: "b"}))
	require.NoError(t, c.Delete(ctx, "a", "b", "never-set"))
	require.False(t, m.Exists("p:{a}"))
	require.False(t, m.Exists("p:{b}"))
	_, err = c.Get(ctx, "a")
	require.ErrorIs(t, err, ErrMiss)
	require.NoError(t, c.Delete(ctx))
}

func TestJitterSpreadsTTLs(t *testing.T) {
	c, m, _ := newCache(t, &Options{TTL: 100 * time.Second, Jitter: 0.2})
	ctx := context.Background()
	lo, hi := time.Duration(1<<62), time.Duration(0)
	seen := map[time.Duration]bool{}
	for i := range 1000 {
		k := fmt.Sprint(i)
		require.NoError(t, c.Set(ctx, k, user{ID: k}))
		ttl := m.TTL("{" + k + "}")
		lo, hi = min(lo, ttl), max(hi, ttl)
		seen[ttl.Round(time.Second)] = true
	}
	require.GreaterOrEqual(t, lo, 80*time.Second-time.Millisecond)
	require.LessOrEqual(t, hi, 120*time.Second)
	require.Less(t, lo, 82*time.Second, "spread reaches the low end")
	require.Greater(t, hi, 118*time.Second, "spread reaches the high end")
	require.Greater(t, len(seen), 30, "TTLs spread across the window, not a few values")
}

type guardFunc func(ctx context.Context, key string) (bool, error)

func (g guardFunc) MightContain(ctx context.Context, key string) (bool, error) { return g(ctx, key) }

func TestGuard(t *testing.T) {
	var asked atomic.Int64
	guard := guardFunc(func(ctx context.Context, key string) (bool, error) {
		asked.Add(1)
		switch key {
		case "absent":
			return false, nil
		case "flaky":
			return false, errors.New("bloom unavailable")
		}
		return true, nil
	})
	c, m, _ := newCache(t, &Options{Guard: guard})
	var calls atomic.Int64
	_, err := c.Fetch(context.Background(), "absent", countingLoader(&calls))
	require.ErrorIs(t, err, ErrNotFound)
	require.Zero(t, calls.Load(), "the loader is not called for a key the guard rules out")
	require.False(t, m.Exists("{absent}"), "nor is Redis written")
	_, err = c.Fetch(context.Background(), "flaky", countingLoader(&calls))
	require.NoError(t, err, "a guard error means maybe")
	_, err = c.Fetch(context.Background(), "present", countingLoader(&calls))
	require.NoError(t, err)
	require.EqualValues(t, 2, calls.Load())
	st := c.Stats()
	require.EqualValues(t, 1, st.GuardRejects)
	require.EqualValues(t, 1, st.GuardErrors)
	require.EqualValues(t, 3, asked.Load())
}

func TestGarbageInRedisIsAMiss(t *testing.T) {
	c, m, _ := newCache(t, nil)
	var calls atomic.Int64
	future := appendEnvelope(nil, header{hard: time.Now().Add(time.Hour).UnixMilli()}, []byte(`{"id":"x"}`))
	future[0] = envelopeVersion + 1
	for i, raw := range []string{"garbage", string(future), string(appendEnvelope(nil, header{}, []byte("{not json")))} {
		k := fmt.Sprint("g", i)
		require.NoError(t, m.Set("{"+k+"}", raw))
		_, err := c.Get(context.Background(), k)
		require.ErrorIs(t, err, ErrMiss)
		u, err := c.Fetch(context.Background(), k, countingLoader(&calls))
		require.NoError(t, err)
		require.Equal(t, k, u.ID)
		u, err = c.Get(context.Background(), k)
		require.NoError(t, err, "the load replaced the undecodable entry")
		require.Equal(t, k, u.ID)
	}
	require.EqualValues(t, 3, calls.Load())
	// Per key: Get, Fetch's read, and the claim's second look before it takes the lease.
	require.EqualValues(t, 9, c.Stats().DecodeErrors)
}

func TestCloseCancelsRunningLoads(t *testing.T) {
	c, _, _ := newCache(t, nil)
	started := make(chan struct{})
	load := func(ctx context.Context, key string) (user, error) {
		close(started)
		<-ctx.Done() // a loader that honours its ctx
		return user{}, ctx.Err()
	}
	done := make(chan error, 1)
	go func() { _, err := c.Fetch(context.Background(), "k", load); done <- err }()
	<-started
	require.NoError(t, c.Close()) // returns once the load has ended
	require.ErrorIs(t, <-done, context.Canceled)
}

func TestEmptyKey(t *testing.T) {
	c, _, _ := newCache(t, nil)
	ctx := context.Background()
	var calls atomic.Int64
	_, err := c.Fetch(ctx, "", countingLoader(&calls))
	require.ErrorIs(t, err, ErrEmptyKey)
	_, err = c.FetchMany(ctx, []string{"a", ""}, func(context.Context, []string) (map[string]user, error) { return nil, nil })
	require.ErrorIs(t, err, ErrEmptyKey)
	_, err = c.Get(ctx, "")
	require.ErrorIs(t, err, ErrEmptyKey)
	require.ErrorIs(t, c.Set(ctx, "", user{}), ErrEmptyKey)
	require.ErrorIs(t, c.Delete(ctx, "a", ""), ErrEmptyKey)
	require.Zero(t, calls.Load())
}

func TestClosed(t *testing.T) {
	c, _, _ := newCache(t, nil)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "idempotent")
	var calls atomic.Int64
	_, err := c.Fetch(context.Background(), "k", countingLoader(&calls))
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, c.Set(context.Background(), "k", user{}), ErrClosed)
	require.ErrorIs(t, c.Delete(context.Background(), "k"), ErrClosed)
	_, err = c.Get(context.Background(), "k")
	require.ErrorIs(t, err, ErrClosed)
	_, err = c.Fetch(context.Background(), "k", nil)
	require.True(t, err != nil && !strings.Contains(err.Error(), "panic"))
}

// A corrupt entry whose []string field claims 2^31 elements is a miss like any undecodable
// entry, and reading it allocates little: the general decoder, which the entry falls back to
// (the direct path takes only what it decodes exactly), allocated a million strings (16 MB)
// for the claim on every read.
func TestCorruptEntryClaimingAHugeSliceIsAMiss(t *testing.T) {
	type tagged struct {
		ID   string   `json:"id"`
		Tags []string `json:"tags"`
	}
	m, rdb := redistest.Mini(t)
	c, err := New[tagged](rdb, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	payload := append([]byte{0x81, 0xa4}, "tags"...)
	payload = append(payload, 0xdd, 0x7f, 0xff, 0xff, 0xff) // array32 of 2^31-1, and nothing after
	require.NoError(t, m.Set("{k}", string(appendEnvelope(nil, header{}, payload))))
	allocated := allocatedBy(func() { _, err = c.Get(context.Background(), "k") })
	require.ErrorIs(t, err, ErrMiss)
	require.Less(t, allocated, uint64(1<<20))
	require.EqualValues(t, 1, c.Stats().DecodeErrors)
	v, err := c.Fetch(context.Background(), "k", func(context.Context, string) (tagged, error) {
		return tagged{ID: "k", Tags: []string{"a"}}, nil
	})
	require.NoError(t, err, "the load replaces the corrupt entry")
	require.Equal(t, tagged{ID: "k", Tags: []string{"a"}}, v)
}

// An S2-compressed entry claiming to decode to 4 GiB is a miss like any undecodable entry, and
// reading it allocates little: S2 decoding allocated what the entry claimed before it found the
// data short, on every read.
func TestCompressedEntryClaimingAHugeLengthIsAMiss(t *testing.T) {
	c, m, _ := newCache(t, nil)
	payload := binary.AppendUvarint(nil, 1<<32-1) // S2's largest claim, and nothing after
	payload = append(payload, 0, 1, 2, 3)
	require.NoError(t, m.Set("{k}", string(appendEnvelope(nil, header{compressed: true}, payload))))
	var err error
	allocated := allocatedBy(func() { _, err = c.Get(context.Background(), "k") })
	require.ErrorIs(t, err, ErrMiss)
	require.Less(t, allocated, uint64(1<<20))
	require.EqualValues(t, 1, c.Stats().DecodeErrors)
	var calls atomic.Int64
	u, err := c.Fetch(context.Background(), "k", countingLoader(&calls))
	require.NoError(t, err, "the load replaces the corrupt entry")
	require.Equal(t, "k", u.ID)
}
