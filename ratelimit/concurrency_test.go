package ratelimit

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// testConcurrencyMax: many goroutines acquire at once; never more than max hold a permit, and
// every refusal is a *ConcurrencyError wrapping ErrConcurrencyLimited.
func testConcurrencyMax(t *testing.T, lims []ConcurrencyLimiter, max int) {
	t.Helper()
	var held, peak, acquired, refused atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := 0; g < 24; g++ {
		wg.Go(func() {
			<-start
			for i := 0; i < 40; i++ {
				p, err := lims[g%len(lims)].Acquire(context.Background(), "hot")
				if err != nil {
					var ce *ConcurrencyError
					if !errors.As(err, &ce) || !errors.Is(err, ErrConcurrencyLimited) || ce.Max != max {
						t.Errorf("acquire: %v", err)
						return
					}
					refused.Add(1)
					continue
				}
				acquired.Add(1)
				h := held.Add(1)
				for {
					old := peak.Load()
					if h <= old || peak.CompareAndSwap(old, h) {
						break
					}
				}
				runtime.Gosched() // hold the slot a moment, so holders overlap
				held.Add(-1)      // before Release: a new holder may count itself once the slot is free
				if err := p.Release(context.Background()); err != nil {
					t.Errorf("release: %v", err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	require.LessOrEqual(t, peak.Load(), int64(max), "more holders than max at once")
	require.Positive(t, acquired.Load())
	t.Logf("acquired %d, refused %d, peak %d of %d", acquired.Load(), refused.Load(), peak.Load(), max)

	// Exactly max can be held at once, and a release lets exactly one more in.
	ps := make([]*Permit, 0, max)
	for i := 0; i < max; i++ {
		p, err := lims[i%len(lims)].Acquire(context.Background(), "hot")
		require.NoError(t, err, "slot %d", i)
		ps = append(ps, p)
	}
	for _, l := range lims {
		_, err := l.Acquire(context.Background(), "hot")
		require.ErrorIs(t, err, ErrConcurrencyLimited)
	}
	other, err := lims[0].Acquire(context.Background(), "other")
	require.NoError(t, err, "keys are independent")
	require.NoError(t, other.Release(context.Background()))
	require.NoError(t, ps[0].Release(context.Background()))
	p, err := lims[len(lims)-1].Acquire(context.Background(), "hot")
	require.NoError(t, err)
	_, err = lims[0].Acquire(context.Background(), "hot")
	require.ErrorIs(t, err, ErrConcurrencyLimited)
	require.NoError(t, p.Release(context.Background()))
	for _, p := range ps[1:] {
		require.NoError(t, p.Release(context.Background()))
	}
}

// testReleaseTwice: a second Release (even concurrent) does not free another holder's slot.
func testReleaseTwice(t *testing.T, l ConcurrencyLimiter) {
	ctx := context.Background()
	a, err := l.Acquire(ctx, "k")
	require.NoError(t, err)
	b, err := l.Acquire(ctx, "k")
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Go(func() { require.NoError(t, a.Release(ctx)) })
	}
	wg.Wait()
	require.NoError(t, a.Release(ctx))
	_, err = l.Acquire(ctx, "k") // b and this one: 2 of 2
	require.NoError(t, err)
	_, err = l.Acquire(ctx, "k")
	require.ErrorIs(t, err, ErrConcurrencyLimited, "a's repeated Release freed b's slot")
	require.ErrorIs(t, a.Renew(ctx), ErrPermitLost)
	require.NoError(t, b.Renew(ctx))
	var nilPermit *Permit
	require.NoError(t, nilPermit.Release(ctx))
}

// testCancelled: an ended context takes no slot.
func testCancelled(t *testing.T, l ConcurrencyLimiter) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p, err := l.Acquire(ctx, "k")
	require.ErrorIs(t, err, context.Canceled)
	require.Nil(t, p)
	_, err = l.Acquire(context.Background(), "")
	require.ErrorIs(t, err, ErrInvalidArgument)
	// Both slots are still free.
	for i := 0; i < 2; i++ {
		_, err := l.Acquire(context.Background(), "k")
		require.NoError(t, err)
	}
}

func TestLocalConcurrencyMax(t *testing.T) {
	l, err := NewLocalConcurrency(3, nil)
	require.NoError(t, err)
	testConcurrencyMax(t, []ConcurrencyLimiter{l}, 3)
	require.Zero(t, l.InFlight("hot"))
	require.Zero(t, len(l.inFlight), "no memory kept for keys without permits")
}

func TestLocalConcurrencyReleaseTwice(t *testing.T) {
	l, err := NewLocalConcurrency(2, nil)
	require.NoError(t, err)
	testReleaseTwice(t, l)
}

func TestLocalConcurrencyCancelled(t *testing.T) {
	l, err := NewLocalConcurrency(2, nil)
	require.NoError(t, err)
	testCancelled(t, l)
}

func TestConcurrencyValidation(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	for name, tc := range map[string]struct {
		max  int
		opt  *ConcurrencyOptions
		want string
	}{
		"zero max":       {0, nil, "max must be at least 1"},
		"negative max":   {-1, nil, "max must be at least 1"},
		"brace prefix":   {1, &ConcurrencyOptions{Prefix: "a{"}, "ConcurrencyOptions.Prefix"},
		"short lease":    {1, &ConcurrencyOptions{Lease: time.Microsecond}, "ConcurrencyOptions.Lease"},
		"negative lease": {1, &ConcurrencyOptions{Lease: -time.Second}, "ConcurrencyOptions.Lease"},
		"negative retry": {1, &ConcurrencyOptions{RetryAfter: -1}, "ConcurrencyOptions.RetryAfter"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewConcurrency(rdb, tc.max, tc.opt)
			require.ErrorIs(t, err, ErrInvalidOptions)
			require.ErrorContains(t, err, tc.want)
			if tc.opt == nil || tc.opt.Prefix == "" && tc.opt.Lease == 0 {
				_, err = NewLocalConcurrency(tc.max, tc.opt)
				require.ErrorIs(t, err, ErrInvalidOptions)
				require.ErrorContains(t, err, tc.want)
			}
		})
	}
	_, err := NewConcurrency(nil, 1, nil)
	require.ErrorIs(t, err, ErrInvalidOptions)
	l, err := NewLocalConcurrency(1, &ConcurrencyOptions{RetryAfter: 3 * time.Second})
	require.NoError(t, err)
	_, err = l.Acquire(context.Background(), "k")
	require.NoError(t, err)
	_, err = l.Acquire(context.Background(), "k")
	var ce *ConcurrencyError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, 3*time.Second, ce.RetryAfter)
	require.Equal(t, "k", ce.Key)
}

func newMiniConcurrency(t *testing.T, max int, opt *ConcurrencyOptions) (*Concurrency, *miniTime) {
	t.Helper()
	m, _ := redistest.Mini(t)
	c, err := NewConcurrency(failFast(t, m.Addr()), max, opt)
	require.NoError(t, err)
	return c, newMiniTime(m)
}

func TestRedisConcurrencyReleaseTwice(t *testing.T) {
	c, _ := newMiniConcurrency(t, 2, nil)
	testReleaseTwice(t, c)
}

func TestRedisConcurrencyCancelled(t *testing.T) {
	c, _ := newMiniConcurrency(t, 2, nil)
	testCancelled(t, c)
}

// TestRedisConcurrencyLeaseEnds: a holder that never releases (it crashed) frees its slot when
// its lease ends on the server's clock; a renewed one keeps it; a lost one cannot renew.
func TestRedisConcurrencyLeaseEnds(t *testing.T) {
	ctx := context.Background()
	c, mt := newMiniConcurrency(t, 2, &ConcurrencyOptions{Lease: 10 * time.Second})
	crashed, err := c.Acquire(ctx, "k")
	require.NoError(t, err)
	renewed, err := c.Acquire(ctx, "k")
	require.NoError(t, err)
	_, err = c.Acquire(ctx, "k")
	require.ErrorIs(t, err, ErrConcurrencyLimited)

	mt.Add(6 * time.Second)
	require.NoError(t, renewed.Renew(ctx))
	_, err = c.Acquire(ctx, "k")
	require.ErrorIs(t, err, ErrConcurrencyLimited, "6s into a 10s lease both are held")
	n, err := c.InFlight(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, 2, n)

	mt.Add(5 * time.Second) // crashed's lease ended 1s ago; renewed's runs 5s more
	n, err = c.InFlight(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	late, err := c.Acquire(ctx, "k")
	require.NoError(t, err, "the crashed holder's slot is free")
	_, err = c.Acquire(ctx, "k")
	require.ErrorIs(t, err, ErrConcurrencyLimited)
	require.ErrorIs(t, crashed.Renew(ctx), ErrPermitLost, "a holder whose lease ended cannot renew")
	require.NoError(t, crashed.Release(ctx), "releasing a lost permit is harmless")
	_, err = c.Acquire(ctx, "k")
	require.ErrorIs(t, err, ErrConcurrencyLimited, "releasing the lost permit freed nobody's slot")
	require.NoError(t, late.Release(ctx))
	require.NoError(t, renewed.Release(ctx))
	n, err = c.InFlight(ctx, "k")
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestServerConcurrencyMax(t *testing.T) {
	srv := redistest.Server(t)
	// Two limiters on one server stand for two processes.
	var lims []ConcurrencyLimiter
	for i := 0; i < 2; i++ {
		c, err := NewConcurrency(srv.NewClient(&redis.Options{PoolSize: 16}), 5, nil)
		require.NoError(t, err)
		lims = append(lims, c)
	}
	testConcurrencyMax(t, lims, 5)
	n, err := lims[0].(*Concurrency).InFlight(context.Background(), "hot")
	require.NoError(t, err)
	require.Zero(t, n)
}

// TestServerConcurrencyCrashedHolder: on a real server's clock a slot whose holder never releases
// comes back once the lease has passed, and the set itself expires.
func TestServerConcurrencyCrashedHolder(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client()
	c, err := NewConcurrency(rdb, 1, &ConcurrencyOptions{Lease: 300 * time.Millisecond, Prefix: "t:"})
	require.NoError(t, err)
	ctx := context.Background()
	_, err = c.Acquire(ctx, "k") // never released
	require.NoError(t, err)
	_, err = c.Acquire(ctx, "k")
	require.ErrorIs(t, err, ErrConcurrencyLimited)
	pttl, err := rdb.PTTL(ctx, "t:{k}").Result()
	require.NoError(t, err)
	require.Greater(t, pttl, time.Duration(0))
	require.LessOrEqual(t, pttl, 300*time.Millisecond)
	var p *Permit
	require.Eventually(t, func() bool {
		p, err = c.Acquire(ctx, "k")
		return err == nil
	}, 5*time.Second, 20*time.Millisecond, "the slot never came back")
	require.NoError(t, p.Release(ctx))
}

// TestServerConcurrencyPausedHonoursContext: Acquire returns the caller's deadline error when
// Redis does not answer, and Release reports its failure so the caller can retry.
func TestServerConcurrencyPausedHonoursContext(t *testing.T) {
	srv := redistest.Server(t)
	c, err := NewConcurrency(srv.NewClient(&redis.Options{MaxRetries: -1, ContextTimeoutEnabled: true}), 1, nil)
	require.NoError(t, err)
	ctx := context.Background()
	p, err := c.Acquire(ctx, "k")
	require.NoError(t, err)
	srv.Pause(10 * time.Second)
	defer srv.Resume()

	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Acquire(cctx, "other")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 5*time.Second)

	rctx, rcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer rcancel()
	require.Error(t, p.Release(rctx), "a Release that did not reach Redis says so")
	srv.Resume()
	require.NoError(t, p.Release(ctx), "and a later Release tries again")
	n, err := c.InFlight(ctx, "k")
	require.NoError(t, err)
	require.Zero(t, n)
	require.NoError(t, p.Release(ctx))
}
