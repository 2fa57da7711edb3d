package lock

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// The holder's network freezes: its renewals hang (a plain client: no ContextTimeoutEnabled,
// 3s ReadTimeout, retries). Its fn's context and Lost must end from its own clock, at the
// validity it knows, before the key expires in Redis and a second client can take the lock.
func TestServerFrozenNetworkEndsHolderBeforeOthersObtain(t *testing.T) {
	s := redistest.Server(t)
	px := newProxy(t, s.Addr())
	ctx := ctxT(t)
	plain := redis.NewClient(&redis.Options{Addr: px.Addr()}) // the README's client, all defaults
	t.Cleanup(func() { _ = plain.Close() })
	holder := New(plain, nil)
	other := New(s.Client(), nil)

	const ttl = 600 * time.Millisecond
	var frozeAt, fnDoneAt, lostAt atomic.Int64
	fnCtxs := make(chan context.Context, 1)
	doErr := make(chan error, 1)
	go func() {
		doErr <- holder.Do(ctx, "frozen", ttl, nil, func(fctx context.Context) error {
			dl, ok := fctx.Deadline()
			assert.True(t, ok, "fn's ctx carries the lock's validity as deadline")
			assert.WithinDuration(t, time.Now().Add(ttl), dl, ttl/2)
			l := FromContext(fctx)
			go func() {
				<-l.Lost()
				lostAt.Store(time.Now().UnixNano())
			}()
			fnCtxs <- fctx
			<-fctx.Done()
			fnDoneAt.Store(time.Now().UnixNano())
			return fctx.Err()
		})
	}()
	fctx := <-fnCtxs
	// Let one renewal through, so "the last renewal" is a real one, then freeze.
	time.Sleep(ttl / 2)
	frozeAt.Store(time.Now().UnixNano())
	px.Freeze()

	l, err := other.Obtain(ctx, "frozen", time.Minute, &ObtainOptions{Wait: 20 * time.Second})
	require.NoError(t, err)
	select {
	case <-fctx.Done():
	default:
		t.Error("a second holder obtained the lock while the first fn's context was live")
	}
	require.NoError(t, l.Release(ctx))
	px.Thaw()
	<-doErr
	require.NotZero(t, lostAt.Load(), "Lost closed")
	lost := time.Duration(lostAt.Load() - frozeAt.Load())
	t.Logf("Lost closed %v after the freeze; fn ctx done %v after it", lost, time.Duration(fnDoneAt.Load()-frozeAt.Load()))
	assert.Less(t, lost, ttl+ttl/2, "Lost closes within about ttl of the last renewal")
}

// A Release that met a transient error did not release anything: it can be retried.
func TestReleaseCanBeRetriedAfterATransientError(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	l, err := New(rdb, nil).Obtain(ctx, "k", time.Minute, nil)
	require.NoError(t, err)
	mr.SetError("ERR transient")
	err = l.Release(ctx)
	require.ErrorContains(t, err, "transient")
	require.NotErrorIs(t, err, ErrNotHeld)
	mr.SetError("")
	require.True(t, mr.Exists("surge:lock:{k}"), "still held in Redis")
	require.NoError(t, l.Release(ctx), "the retry releases")
	assert.False(t, mr.Exists("surge:lock:{k}"))
	require.ErrorIs(t, l.Release(ctx), ErrNotHeld, "released once")
}

// lostReplies returns a Client whose connections go through a proxy, each opened beforehand
// (no handshake needs an answer later), with short read timeouts, no retries and its scripts
// loaded.
func lostReplies(t *testing.T, s *redistest.RedisServer) (*Client, *proxy) {
	px := newProxy(t, s.Addr())
	rdb := redis.NewClient(&redis.Options{Addr: px.Addr(), Protocol: 2, DisableIdentity: true,
		ReadTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	c := New(rdb, nil)
	// Load the scripts, so that a frozen EVALSHA runs rather than answers NOSCRIPT.
	ctx := ctxT(t)
	l, err := c.Obtain(ctx, "warm-up", time.Minute, nil)
	require.NoError(t, err)
	require.NoError(t, l.Refresh(ctx, time.Minute))
	require.NoError(t, l.Release(ctx))
	// Open and initialise (HELLO) three connections at once: each BLPOP holds one for 100ms (a
	// blocking command's read timeout is its own plus 10s).
	require.Eventually(t, func() bool {
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() { assert.ErrorIs(t, rdb.BLPop(ctx, 100*time.Millisecond, "warm-up:list").Err(), redis.Nil) })
		}
		wg.Wait()
		return rdb.PoolStats().IdleConns >= 3
	}, 10*time.Second, time.Millisecond)
	return c, px
}

// The acquisition ran on the server but its reply was lost: not a ctx error, yet the key may be
// ours. Obtain gives it back instead of leaving it orphaned for a full ttl.
func TestServerAcquireWithLostReplyLeavesNoOrphan(t *testing.T) {
	s := redistest.Server(t)
	ctx := ctxT(t)
	c, px := lostReplies(t, s)
	px.FreezeReplies()
	_, err := c.Obtain(ctx, "orphan", time.Minute, nil)
	require.Error(t, err)
	assert.NotErrorIs(t, err, ErrNotObtained)
	n, err := s.Client().Exists(ctx, "surge:lock:{orphan}").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the lock whose reply was lost was given back")
}

// A Refresh to a shorter ttl whose reply was lost may have been applied: the holder must assume
// the shorter validity, not keep believing in the longer one.
func TestServerRefreshWithLostReplyShortensKnownValidity(t *testing.T) {
	s := redistest.Server(t)
	ctx := ctxT(t)
	c, px := lostReplies(t, s)
	l, err := c.Obtain(ctx, "short", time.Minute, nil)
	require.NoError(t, err)
	px.FreezeReplies()
	err = l.Refresh(ctx, 300*time.Millisecond)
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrNotHeld)

	l2, err := New(s.Client(), nil).Obtain(ctx, "short", time.Minute, &ObtainOptions{Wait: 10 * time.Second})
	require.NoError(t, err, "the shorter ttl was applied")
	select {
	case <-l.Lost():
	default:
		t.Error("another holder obtained the lock while the first still believed it held it")
	}
	require.NoError(t, l2.Release(ctx))
}

// Do's context has the lock's validity as deadline, and each renewal moves it on.
func TestDoContextDeadlineFollowsRenewals(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	const ttl = 300 * time.Millisecond
	err := New(rdb, nil).Do(ctx, "k", ttl, nil, func(fctx context.Context) error {
		first, ok := fctx.Deadline()
		require.True(t, ok)
		assert.WithinDuration(t, time.Now().Add(ttl), first, ttl/3)
		// Renewals every ttl/3 move it on; without them it would pass and end fctx.
		require.Eventually(t, func() bool {
			d, _ := fctx.Deadline()
			return d.After(first.Add(ttl / 2))
		}, 10*time.Second, time.Millisecond)
		assert.NoError(t, fctx.Err(), "alive past its first deadline")
		short, cancel := context.WithTimeout(fctx, time.Hour)
		defer cancel()
		d, _ := short.Deadline()
		assert.False(t, d.After(time.Now().Add(ttl)), "a derived context inherits the validity")
		return nil
	})
	require.NoError(t, err)
}

// Redis keeps a lock's ttl in whole milliseconds: the validity a holder counts on (after Obtain,
// after Refresh) is no longer than the PX Redis was given, so that nobody can take the key while
// its holder still believes it holds it.
func TestValidityCountsOnlyTheMillisecondsRedisKeeps(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	at := time.Now()
	c.g.now = func() time.Time { return at } // every call starts at at
	l, err := c.Obtain(ctx, "k", 10*time.Millisecond+900*time.Microsecond, nil)
	require.NoError(t, err)
	px := mr.TTL("surge:lock:{k}")
	require.Equal(t, 10*time.Millisecond, px)
	assert.LessOrEqual(t, l.validity().Sub(at), px, "validity past the key's expiry")

	require.NoError(t, l.Refresh(ctx, 20*time.Millisecond+900*time.Microsecond))
	px = mr.TTL("surge:lock:{k}")
	require.Equal(t, 20*time.Millisecond, px)
	assert.LessOrEqual(t, l.validity().Sub(at), px, "validity past the key's expiry after Refresh")
}
