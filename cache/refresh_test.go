package cache

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// clock is a movable time source for Cache.now.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }

// versionLoader returns user{Name: n} where n counts calls; calls after the first block on gate.
func versionLoader(calls *atomic.Int64, gate <-chan struct{}) Loader[user] {
	return func(ctx context.Context, key string) (user, error) {
		n := calls.Add(1)
		if n > 1 {
			if err := await(ctx, gate); err != nil {
				return user{}, err
			}
		}
		return user{ID: key, Name: string(rune('0' + n))}, nil
	}
}

func TestStaleWhileRevalidate(t *testing.T) {
	c, _, _ := newCache(t, &Options{TTL: 10 * time.Minute, RefreshAfter: time.Minute})
	var clk clock
	c.now = clk.now
	ctx := context.Background()
	var calls atomic.Int64
	gate := make(chan struct{})
	load := versionLoader(&calls, gate)

	u, err := c.Fetch(ctx, "k", load)
	require.NoError(t, err)
	require.Equal(t, "1", u.Name)

	clk.advance(2 * time.Minute)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			u, err := c.Fetch(ctx, "k", load)
			require.NoError(t, err)
			require.Equal(t, "1", u.Name, "the stale value is served at once")
		})
	}
	wg.Wait() // all returned while the refresh is (or will be) blocked on gate
	require.Eventually(t, func() bool { return calls.Load() == 2 }, 5*time.Second, time.Millisecond)
	require.EqualValues(t, 20, c.Stats().StaleServed)

	close(gate)
	require.Eventually(t, func() bool {
		u, err := c.Get(ctx, "k")
		return err == nil && u.Name == "2"
	}, 5*time.Second, time.Millisecond)
	u, err = c.Fetch(ctx, "k", load)
	require.NoError(t, err)
	require.Equal(t, "2", u.Name)
	require.EqualValues(t, 2, calls.Load(), "exactly one refresh ran, and its value is fresh again")
}

func TestXFetchProbabilityOrder(t *testing.T) {
	c, _, _ := newCache(t, &Options{EarlyRefreshBeta: 1})
	const n = 1000
	delta := time.Second
	now := time.Now().UnixMilli()
	fired := func(left time.Duration) int {
		i := 0
		c.rand = func() float64 { i++; return (float64(i) - 0.5) / n } // a uniform grid over (0,1)
		count := 0
		for range n {
			if c.xfetch(now, header{hard: now + left.Milliseconds(), loadDur: delta}) {
				count++
			}
		}
		return count
	}
	prev := n + 1
	for _, left := range []time.Duration{0, 100 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second} {
		got := fired(left)
		want := n * math.Exp(-float64(left)/float64(delta)) // P(-delta·ln(r) >= left)
		require.InDelta(t, want, got, 2, "time left %v", left)
		require.Less(t, got, prev, "fewer early refreshes the further expiry is (left %v)", left)
		prev = got
	}
	require.Zero(t, func() int {
		c.rand = func() float64 { return 0.5 }
		if c.xfetch(now, header{hard: now + 1, loadDur: 0}) {
			return 1
		}
		return 0
	}(), "no recorded load duration, no early refresh")
}

func TestXFetchRefreshesEarly(t *testing.T) {
	c, m, _ := newCache(t, &Options{TTL: 5 * time.Second, EarlyRefreshBeta: 1})
	ctx := context.Background()
	var calls atomic.Int64
	load := func(ctx context.Context, key string) (user, error) {
		n := calls.Add(1)
		time.Sleep(20 * time.Millisecond) // the load duration XFetch scales by
		return user{ID: key, Name: string(rune('0' + n))}, nil
	}
	c.rand = func() float64 { return 0.999999 } // never early
	_, err := c.Fetch(ctx, "k", load)
	require.NoError(t, err)
	raw, err := m.Get("{k}")
	require.NoError(t, err)
	h, _, err := decodeEnvelope([]byte(raw))
	require.NoError(t, err)
	require.GreaterOrEqual(t, h.loadDur, 20*time.Millisecond, "the envelope records the load duration")

	_, err = c.Fetch(ctx, "k", load)
	require.NoError(t, err)
	require.EqualValues(t, 1, calls.Load())

	c.rand = func() float64 { return 1e-300 } // -ln(r)·delta ≈ 690·20ms, past the 5s TTL: refresh now
	u, err := c.Fetch(ctx, "k", load)
	require.NoError(t, err)
	require.Equal(t, "1", u.Name, "the current value is served while the refresh runs")
	require.Eventually(t, func() bool { return calls.Load() == 2 }, 5*time.Second, time.Millisecond)
	require.EqualValues(t, 1, c.Stats().EarlyRefreshes)
}

func TestStaleRefreshOnceAcrossInstancesWithLease(t *testing.T) {
	opt := Options{TTL: 10 * time.Minute, RefreshAfter: time.Minute, Lease: time.Minute}
	a, _, rdb := newCache(t, &opt)
	b, err := New[user](rdb, &opt)
	require.NoError(t, err)
	defer b.Close()
	var clk clock
	a.now, b.now = clk.now, clk.now
	ctx := context.Background()
	var calls atomic.Int64
	gate := make(chan struct{})
	load := versionLoader(&calls, gate)
	_, err = a.Fetch(ctx, "k", load)
	require.NoError(t, err)

	clk.advance(2 * time.Minute)
	u, err := a.Fetch(ctx, "k", load) // a starts the refresh and holds the lease
	require.NoError(t, err)
	require.Equal(t, "1", u.Name)
	require.Eventually(t, func() bool { return calls.Load() == 2 }, 5*time.Second, time.Millisecond)
	u, err = b.Fetch(ctx, "k", load) // b sees the same stale value; its refresh finds a's lease
	require.NoError(t, err)
	require.Equal(t, "1", u.Name)
	require.Eventually(t, func() bool { return b.Stats().LeaseWaits == 1 }, 5*time.Second, time.Millisecond)
	close(gate)
	require.Eventually(t, func() bool {
		u, err := b.Get(ctx, "k")
		return err == nil && u.Name == "2"
	}, 5*time.Second, time.Millisecond)
	require.EqualValues(t, 2, calls.Load(), "one refresh across both instances")
	require.Zero(t, b.Stats().Loads)
}

// A local-tier entry must not hide staleness: once RefreshAfter passes, a Fetch reaches Redis,
// serves the stale value and starts the refresh, even though Local.TTL is far longer.
func TestStaleWhileRevalidateWithLocalTier(t *testing.T) {
	c, _, _ := newCache(t, &Options{TTL: time.Minute, RefreshAfter: 200 * time.Millisecond,
		Local: &LocalOptions{TTL: time.Hour}})
	ctx := context.Background()
	var calls atomic.Int64
	open := make(chan struct{})
	close(open)
	load := versionLoader(&calls, open)

	u, err := c.Fetch(ctx, "k", load)
	require.NoError(t, err)
	require.Equal(t, "1", u.Name)
	u, err = c.Fetch(ctx, "k", load)
	require.NoError(t, err)
	require.Equal(t, "1", u.Name)
	require.EqualValues(t, 1, c.Stats().LocalHits, "a fresh value is served from the local tier")

	require.Eventually(t, func() bool {
		u, err := c.Fetch(ctx, "k", load)
		return err == nil && u.Name == "2"
	}, 10*time.Second, 5*time.Millisecond, "the refreshed value must replace the locally held one")
	require.GreaterOrEqual(t, c.Stats().StaleServed, uint64(1))
	require.EqualValues(t, 2, calls.Load(), "one refresh")
}
