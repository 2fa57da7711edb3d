package cache

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// countingCodec is JSON counting Unmarshal calls.
type countingCodec struct{ decodes atomic.Int64 }

func (c *countingCodec) Marshal(v any) ([]byte, error) { return JSONCodec{}.Marshal(v) }
func (c *countingCodec) Unmarshal(b []byte, v any) error {
	c.decodes.Add(1)
	return JSONCodec{}.Unmarshal(b, v)
}

// newLocal returns a Cache with a local tier on rdb whose listener is subscribed.
func newLocal(t *testing.T, rdb redis.UniversalClient, opt Options) *Cache[user] {
	t.Helper()
	if opt.Local == nil {
		opt.Local = &LocalOptions{}
	}
	c, err := New[user](rdb, &opt)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	select {
	case <-c.sub.ready:
	case <-time.After(5 * time.Second):
		t.Fatal("the invalidation listener did not subscribe")
	}
	return c
}

func TestLocalHitDoesNotDecode(t *testing.T) {
	_, m, rdb := newCache(t, nil)
	codec := &countingCodec{}
	a := newLocal(t, rdb, Options{Codec: codec})
	b := newLocal(t, rdb, Options{Codec: codec})
	ctx := context.Background()
	var calls atomic.Int64
	_, err := a.Fetch(ctx, "k", countingLoader(&calls))
	require.NoError(t, err)
	require.Zero(t, codec.decodes.Load(), "the loader's value goes to the local tier as is")

	for range 3 {
		u, err := b.Fetch(ctx, "k", countingLoader(&calls))
		require.NoError(t, err)
		require.Equal(t, "k", u.ID)
	}
	require.EqualValues(t, 1, codec.decodes.Load(), "b decoded the Redis copy once, then hit locally")
	require.EqualValues(t, 2, b.Stats().LocalHits)
	require.EqualValues(t, 1, b.Stats().RedisHits)

	m.Del("{k}") // behind the caches' backs: the local tier still answers, up to Local.TTL
	u, err := a.Fetch(ctx, "k", countingLoader(&calls))
	require.NoError(t, err)
	require.Equal(t, "k", u.ID)
	require.EqualValues(t, 1, calls.Load())
}

func TestLocalTTLNeverOutlivesRedis(t *testing.T) {
	_, _, rdb := newCache(t, nil)
	c := newLocal(t, rdb, Options{TTL: time.Second, Local: &LocalOptions{TTL: time.Hour}})
	require.NoError(t, c.Set(context.Background(), "k", user{ID: "k"}))
	e, ok := c.local.GetEntry("k")
	require.True(t, ok)
	require.LessOrEqual(t, e.ExpiresAfter(), 1100*time.Millisecond)
}

func TestLocalInvalidationAcrossInstances(t *testing.T) {
	_, _, rdb := newCache(t, nil)
	a := newLocal(t, rdb, Options{Prefix: "u:"})
	b := newLocal(t, rdb, Options{Prefix: "u:"})
	ctx := context.Background()
	var calls atomic.Int64
	for _, c := range []*Cache[user]{a, b} {
		_, err := c.Fetch(ctx, "k", countingLoader(&calls))
		require.NoError(t, err)
	}
	_, ok := b.local.GetIfPresent("k")
	require.True(t, ok)

	require.NoError(t, a.Set(ctx, "k", user{ID: "k", Name: "new"}))
	require.Eventually(t, func() bool {
		u, err := b.Fetch(ctx, "k", countingLoader(&calls))
		return err == nil && u.Name == "new"
	}, 5*time.Second, time.Millisecond, "b's local copy was invalidated by a's Set")
	u, err := a.Fetch(ctx, "k", countingLoader(&calls))
	require.NoError(t, err)
	require.Equal(t, "new", u.Name, "a keeps what it set locally")

	require.NoError(t, b.Delete(ctx, "k"))
	require.Eventually(t, func() bool {
		_, ok := a.local.GetIfPresent("k")
		return !ok
	}, 5*time.Second, time.Millisecond, "a's local copy was invalidated by b's Delete")
	require.EqualValues(t, 1, a.Stats().Invalidations)
	require.EqualValues(t, 1, b.Stats().Invalidations, "each ignores its own notices")
}

func TestLocalFlushAfterReconnect(t *testing.T) {
	_, m, rdb := newCache(t, nil)
	c := newLocal(t, rdb, Options{})
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "k", user{ID: "k"}))
	_, ok := c.local.GetIfPresent("k")
	require.True(t, ok)

	// At least once: on a loaded machine go-redis may reconnect twice (the first new connection
	// can meet the restarting server), and two flushes within one poll would never read as 1.
	// Up to three restarts: a CI run under full load once saw no re-subscription within 20s of
	// one restart (not reproduced in 70 runs under load here); without the flush every restart
	// fails alike.
	for restarts := 0; restarts < 3 && c.Stats().LocalFlushes == 0; restarts++ {
		m.Close() // the subscription connection drops; notices sent meanwhile would be lost
		require.NoError(t, m.Restart())
		for deadline := time.Now().Add(10 * time.Second); c.Stats().LocalFlushes == 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond) // polling a counter, not waiting for an event
		}
	}
	require.GreaterOrEqual(t, c.Stats().LocalFlushes, uint64(1), "no flush after three reconnects; stats %+v", c.Stats())
	_, ok = c.local.GetIfPresent("k")
	require.False(t, ok, "the local tier was flushed once the channel re-subscribed")
}

func TestLocalNegativeEntries(t *testing.T) {
	_, _, rdb := newCache(t, nil)
	c := newLocal(t, rdb, Options{})
	var calls atomic.Int64
	load := failingLoader(&calls, ErrNotFound)
	for range 3 {
		_, err := c.Fetch(context.Background(), "ghost", load)
		require.ErrorIs(t, err, ErrNotFound)
	}
	require.EqualValues(t, 1, calls.Load())
	require.EqualValues(t, 2, c.Stats().LocalHits)
}

func TestLocalStaleReadDoesNotLand(t *testing.T) {
	_, _, rdb := newCache(t, nil)
	c := newLocal(t, rdb, Options{})
	// A read that started before an invalidation must not store what it read.
	snap := c.snapshot("k")
	c.handleNotice(encodeNotice(noticeInvalidate, "other-process", []string{"k"}))
	c.storeLocal(snap, "k", user{ID: "old"}, header{hard: time.Now().Add(time.Minute).UnixMilli()})
	_, ok := c.local.GetIfPresent("k")
	require.False(t, ok)
}
