package lock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/surgekit/surge/internal/keys"
	"github.com/surgekit/surge/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestObtainStoresTokenFenceAndMetadata(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)

	l, err := c.Obtain(ctx, "order:1", time.Minute, &ObtainOptions{Metadata: "worker-7:pid=42"})
	require.NoError(t, err)
	assert.Equal(t, "order:1", l.Key())
	assert.Equal(t, "worker-7:pid=42", l.Metadata())
	assert.GreaterOrEqual(t, len(l.Token()), 22, "128-bit token")
	assert.Equal(t, int64(1), l.Fence())

	v, err := mr.Get("surge:lock:{order:1}")
	require.NoError(t, err)
	assert.Equal(t, l.Token()+":1:worker-7:pid=42", v)
	assert.Equal(t, time.Minute, mr.TTL("surge:lock:{order:1}"))
	fence, err := mr.Get("surge:lock:{order:1}:fence")
	require.NoError(t, err)
	assert.Equal(t, "1", fence)
	assert.Zero(t, mr.TTL("surge:lock:{order:1}:fence"), "fence counter never expires")

	require.NoError(t, l.Release(ctx))
	assert.False(t, mr.Exists("surge:lock:{order:1}"))
	assert.True(t, mr.Exists("surge:lock:{order:1}:fence"), "release keeps the fence counter")

	l2, err := c.Obtain(ctx, "order:1", time.Minute, nil)
	require.NoError(t, err)
	assert.Equal(t, int64(2), l2.Fence())
	assert.NotEqual(t, l.Token(), l2.Token())
}

func TestTokensAreUnique(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	seen := map[string]bool{}
	for i := range 200 {
		l, err := c.Obtain(ctx, fmt.Sprint("k", i), time.Minute, nil)
		require.NoError(t, err)
		require.False(t, seen[l.Token()])
		seen[l.Token()] = true
	}
}

func TestCustomPrefix(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	l, err := New(rdb, &Options{Prefix: "app:"}).Obtain(ctxT(t), "a}b", time.Minute, nil)
	require.NoError(t, err)
	assert.True(t, mr.Exists("app:{a%7Db}"), "keys: %v", mr.Keys())
	assert.True(t, mr.Exists("app:{a%7Db}:fence"))
	require.NoError(t, l.Release(ctxT(t)))
}

func TestHeldLockIsNotObtained(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	a, err := c.Obtain(ctx, "k", time.Minute, nil)
	require.NoError(t, err)

	_, err = c.Obtain(ctx, "k", time.Minute, nil)
	require.ErrorIs(t, err, ErrNotObtained)
	assert.NotErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), `"k"`)

	_, err = c.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: 30 * time.Millisecond})
	require.ErrorIs(t, err, ErrNotObtained)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "the wait ran out, not ctx")

	require.NoError(t, a.Release(ctx))
	b, err := c.Obtain(ctx, "k", time.Minute, nil)
	require.NoError(t, err)
	assert.Greater(t, b.Fence(), a.Fence())
}

func TestWaitEndedByContextWrapsBoth(t *testing.T) {
	_, rdb := redistest.Mini(t)
	c := New(rdb, nil)
	_, err := c.Obtain(ctxT(t), "k", time.Minute, nil)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(ctxT(t), 40*time.Millisecond)
	defer cancel()
	_, err = c.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: time.Hour})
	require.ErrorIs(t, err, ErrNotObtained)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	// The server drops that waiter's subscription when it sees its connection closed, maybe
	// after the waiter returned: waitSubscribed below must not see that one.
	ch := releaseChannel(keys.Tagged(DefaultPrefix, "k"))
	require.Eventually(t, func() bool { return rdb.PubSubNumSub(context.Background(), ch).Val()[ch] == 0 }, 10*time.Second, time.Millisecond)

	ctx, cancel = context.WithCancel(ctxT(t))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: time.Hour})
		errc <- err
	}()
	waitSubscribed(t, rdb, keys.Tagged(DefaultPrefix, "k")) // the waiter is blocked now
	cancel()
	err = <-errc
	require.ErrorIs(t, err, ErrNotObtained)
	require.ErrorIs(t, err, context.Canceled)
}

func TestBadInputFailsWithoutRedisCall(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	before := mr.CommandCount()
	fn := func(context.Context) error { return nil }

	cases := []struct {
		name, want string
		err        error
	}{
		{"empty key", "empty key", func() error { _, err := c.Obtain(ctx, "", time.Second, nil); return err }()},
		{"ttl below 1ms", "below 1ms", func() error { _, err := c.Obtain(ctx, "k", time.Microsecond, nil); return err }()},
		{"zero ttl", "below 1ms", func() error { _, err := c.Obtain(ctx, "k", 0, nil); return err }()},
		{"negative wait", "Wait", func() error {
			_, err := c.Obtain(ctx, "k", time.Second, &ObtainOptions{Wait: -1})
			return err
		}()},
		{"do empty key", "empty key", c.Do(ctx, "", time.Second, nil, fn)},
		{"do nil fn", "nil function", c.Do(ctx, "k", time.Second, nil, nil)},
		{"do tiny ttl", "AutoRenew", c.Do(ctx, "k", time.Millisecond, nil, fn)},
		{"nil rdb", "nil redis client", func() error { _, err := New(nil, nil).Obtain(ctx, "k", time.Second, nil); return err }()},
		{"bad prefix", "Options.Prefix", func() error {
			_, err := New(rdb, &Options{Prefix: "a{"}).Obtain(ctx, "k", time.Second, nil)
			return err
		}()},
		{"negative WaitReplicas", "Options.WaitReplicas", New(rdb, &Options{WaitReplicas: -1}).Do(ctx, "k", time.Second, nil, fn)},
		{"negative WaitTimeout", "Options.WaitTimeout", New(rdb, &Options{WaitTimeout: -1}).Do(ctx, "k", time.Second, nil, fn)},
		{"negative NodeTimeout", "Options.NodeTimeout", New(rdb, &Options{NodeTimeout: -1}).Do(ctx, "k", time.Second, nil, fn)},
		{"nil lock release", "nil *Lock", (*Lock)(nil).Release(ctx)},
		{"nil lock refresh", "nil *Lock", (*Lock)(nil).Refresh(ctx, time.Second)},
		{"nil lock ttl", "nil *Lock", func() error { _, err := (*Lock)(nil).TTL(ctx); return err }()},
		{"redlock no clients", "no clients", func() error { _, err := NewRedlock(nil, nil).Obtain(ctx, "k", time.Second, nil); return err }()},
		{"redlock nil client", "client 1 is nil", func() error {
			_, err := NewRedlock([]redis.UniversalClient{rdb, nil}, nil).Obtain(ctx, "k", time.Second, nil)
			return err
		}()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Error(t, tc.err)
			assert.Contains(t, tc.err.Error(), tc.want)
			assert.NotErrorIs(t, tc.err, ErrNotObtained)
			if strings.Contains(tc.want, "Options") || tc.want == "Wait" || tc.want == "AutoRenew" {
				assert.ErrorIs(t, tc.err, ErrInvalidOptions)
			}
		})
	}
	assert.Equal(t, before, mr.CommandCount(), "no call reached Redis")
	l, err := c.Obtain(ctx, "k", time.Second, nil)
	require.NoError(t, err)
	before = mr.CommandCount()
	assert.ErrorContains(t, l.Refresh(ctx, 0), "below 1ms")
	assert.Equal(t, before, mr.CommandCount())
}

// ABA: A's lock expires, B obtains it; A's Release and Refresh must fail and leave B's key alone.
func TestExpiredHolderCannotTouchNextHolder(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	a, err := c.Obtain(ctx, "k", time.Second, nil)
	require.NoError(t, err)
	mr.FastForward(2 * time.Second)
	b, err := c.Obtain(ctx, "k", 10*time.Second, nil)
	require.NoError(t, err)

	require.ErrorIs(t, a.Refresh(ctx, time.Hour), ErrNotHeld)
	require.ErrorIs(t, a.Release(ctx), ErrNotHeld)
	_, err = a.TTL(ctx)
	require.ErrorIs(t, err, ErrNotHeld)
	select {
	case <-a.Lost():
	default:
		t.Fatal("Refresh found A's lock gone but Lost is open")
	}

	v, err := mr.Get("surge:lock:{k}")
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(v, b.Token()+":"), "B's key intact: %q", v)
	assert.Equal(t, 10*time.Second, mr.TTL("surge:lock:{k}"), "B's TTL untouched")
	d, err := b.TTL(ctx)
	require.NoError(t, err)
	assert.Equal(t, 10*time.Second, d)
	require.NoError(t, b.Release(ctx))
	require.ErrorIs(t, b.Release(ctx), ErrNotHeld, "second release")
}

// forged returns a handle on l's key with another token, as a buggy or malicious caller would hold.
func forged(l *Lock, token string) *Lock {
	return &Lock{g: l.g, key: l.key, keys: l.keys, channel: l.channel, token: token, ttl: l.ttl}
}

func TestOnlyTheWholeTokenOwnsTheLock(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	l, err := New(rdb, nil).Obtain(ctx, "k", 5*time.Second, &ObtainOptions{Metadata: "m"})
	require.NoError(t, err)
	tok := l.Token()
	for _, bad := range []string{"", tok[:1], tok[:len(tok)-1], tok + "X", tok + ":", tok + ":1", tok + ":1:m", ":", "*", ".*"} {
		f := forged(l, bad)
		assert.ErrorIs(t, f.Refresh(ctx, time.Hour), ErrNotHeld, "token %q", bad)
		_, err := f.TTL(ctx)
		assert.ErrorIs(t, err, ErrNotHeld, "token %q", bad)
		assert.ErrorIs(t, f.Release(ctx), ErrNotHeld, "token %q", bad)
	}
	assert.True(t, mr.Exists("surge:lock:{k}"))
	assert.Equal(t, 5*time.Second, mr.TTL("surge:lock:{k}"))
	require.NoError(t, l.Release(ctx))
}

func TestRefreshAndTTL(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	l, err := New(rdb, nil).Obtain(ctx, "k", time.Second, nil)
	require.NoError(t, err)
	require.NoError(t, l.Refresh(ctx, time.Minute))
	assert.Equal(t, time.Minute, mr.TTL("surge:lock:{k}"))
	d, err := l.TTL(ctx)
	require.NoError(t, err)
	assert.Equal(t, time.Minute, d)
	assert.Equal(t, int64(1), l.Fence(), "refresh keeps the fence")
	f, _ := mr.Get("surge:lock:{k}:fence")
	assert.Equal(t, "1", f)

	mr.Del("surge:lock:{k}")
	require.ErrorIs(t, l.Refresh(ctx, time.Minute), ErrNotHeld)
	assert.False(t, mr.Exists("surge:lock:{k}"), "refresh does not resurrect")
	<-l.Lost()
}

func TestRedisErrorIsReturnedNotHidden(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	l, err := c.Obtain(ctx, "k", time.Minute, nil)
	require.NoError(t, err)
	mr.SetError("ERR boom")
	_, err = c.Obtain(ctx, "j", time.Minute, &ObtainOptions{Wait: time.Hour})
	require.ErrorContains(t, err, "boom")
	assert.NotErrorIs(t, err, ErrNotObtained)
	err = l.Refresh(ctx, time.Minute)
	require.ErrorContains(t, err, "boom")
	assert.NotErrorIs(t, err, ErrNotHeld)
	select {
	case <-l.Lost():
		t.Fatal("an error is not a loss")
	default:
	}
	mr.SetError("")
	require.NoError(t, l.Release(ctx))
}

func TestDoRunsUnderTheLockAndReleases(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	boom := errors.New("boom")
	var fence int64
	err := c.Do(ctx, "k", time.Minute, nil, func(ctx context.Context) error {
		l := FromContext(ctx)
		require.NotNil(t, l)
		fence = l.Fence()
		v, _ := mr.Get("surge:lock:{k}")
		assert.True(t, strings.HasPrefix(v, l.Token()+":"))
		return boom
	})
	require.ErrorIs(t, err, boom)
	assert.Equal(t, int64(1), fence)
	assert.False(t, mr.Exists("surge:lock:{k}"), "released")
	assert.Nil(t, FromContext(ctx))

	// A cancelled parent must not leave the lock held.
	pctx, cancel := context.WithCancel(ctx)
	err = c.Do(pctx, "k", time.Minute, nil, func(ctx context.Context) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	})
	require.ErrorIs(t, err, context.Canceled)
	assert.False(t, mr.Exists("surge:lock:{k}"), "released despite the cancelled parent")

	// A panic releases too.
	assert.Panics(t, func() {
		_ = c.Do(ctx, "k", time.Minute, nil, func(context.Context) error { panic("x") })
	})
	assert.False(t, mr.Exists("surge:lock:{k}"))

	// Held by someone else: fn never runs.
	_, err = c.Obtain(ctx, "k", time.Minute, nil)
	require.NoError(t, err)
	err = c.Do(ctx, "k", time.Minute, nil, func(context.Context) error { t.Fatal("ran"); return nil })
	require.ErrorIs(t, err, ErrNotObtained)
}

func TestDoCancelsFnWhenLockIsLost(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	err := c.Do(ctx, "k", 60*time.Millisecond, nil, func(ctx context.Context) error {
		mr.Del("surge:lock:{k}") // someone deletes it; the next renewal finds it gone
		<-ctx.Done()
		require.ErrorIs(t, context.Cause(ctx), ErrLost)
		<-FromContext(ctx).Lost()
		return ctx.Err()
	})
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, err, ErrNotHeld, "the release reports the loss")
}

func TestWatchdogRenewsAndStopsAtRelease(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	l, err := New(rdb, nil).Obtain(ctx, "k", 300*time.Millisecond, &ObtainOptions{AutoRenew: true})
	require.NoError(t, err)
	// miniredis time stands still, so see renewals by moving its clock: each renewal resets TTL.
	for range 3 {
		mr.FastForward(200 * time.Millisecond)
		require.Eventually(t, func() bool { return mr.TTL("surge:lock:{k}") == 300*time.Millisecond }, 2*time.Second, time.Millisecond)
	}
	require.NoError(t, l.Release(ctx))
	n := mr.CommandCount()
	time.Sleep(250 * time.Millisecond) // over two renewal periods: none may happen
	assert.Equal(t, n, mr.CommandCount(), "no command after Release")
}

func TestWatchdogRetriesTransientErrors(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	logs := &logRecorder{}
	l, err := New(rdb, &Options{Logger: slog.New(logs)}).Obtain(ctx, "k", 600*time.Millisecond, &ObtainOptions{AutoRenew: true})
	require.NoError(t, err)
	mr.SetError("ERR transient") // not LOADING: go-redis would retry that itself
	require.Eventually(t, func() bool { return logs.count("lock renewal failed, retrying") >= 2 }, 2*time.Second, time.Millisecond)
	mr.SetError("")
	mr.FastForward(400 * time.Millisecond)
	require.Eventually(t, func() bool { return mr.TTL("surge:lock:{k}") == 600*time.Millisecond }, time.Second, time.Millisecond, "ttl %v logs %v", mr.TTL("surge:lock:{k}"), logs.msgs)
	select {
	case <-l.Lost():
		t.Fatal("lost after transient errors within validity")
	default:
	}
	require.NoError(t, l.Release(ctx))
}

func TestWatchdogLosesWhenValidityRunsOut(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	l, err := New(rdb, nil).Obtain(ctx, "k", 60*time.Millisecond, &ObtainOptions{AutoRenew: true})
	require.NoError(t, err)
	mr.SetError("LOADING down")
	select {
	case <-l.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("Lost not closed after validity ran out")
	}
	mr.SetError("")
	mr.FastForward(time.Second)
	require.ErrorIs(t, l.Release(ctx), ErrNotHeld)
}

func TestWaiterWakesOnRelease(t *testing.T) {
	_, rdb := redistest.Mini(t)
	testWakeOnRelease(t, New(rdb, nil), rdb)
}

// testWakeOnRelease blocks a waiter of c whose only timer is an hour away, releases from another
// Client (another process), and checks that the waiter obtains the lock: only the release
// message can have woken it.
func testWakeOnRelease(t *testing.T, c *Client, rdb redis.UniversalClient) {
	ctx := ctxT(t)
	holder, err := New(rdb, nil).Obtain(ctx, "wake", time.Hour, nil)
	require.NoError(t, err)
	got := make(chan *Lock, 1)
	go func() {
		l, err := c.Obtain(ctx, "wake", time.Minute, &ObtainOptions{
			Wait:    time.Hour,
			Backoff: func(int) time.Duration { return time.Hour },
		})
		assert.NoError(t, err)
		got <- l
	}()
	waitSubscribed(t, rdb, holder.keys[0])
	require.NoError(t, holder.Release(ctx))
	select {
	case l := <-got:
		require.NotNil(t, l)
		assert.Greater(t, l.Fence(), holder.Fence())
		require.NoError(t, l.Release(ctx))
	case <-time.After(10 * time.Second):
		t.Fatal("waiter not woken by the release")
	}
}

func TestManyWaitersShareOneSubscription(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	var held, inside atomic.Int32
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			err := c.Do(ctx, fmt.Sprint("k", i%3), time.Minute, &ObtainOptions{Wait: 20 * time.Second}, func(ctx context.Context) error {
				if inside.Add(1) > 3 {
					t.Error("more holders than keys")
				}
				time.Sleep(2 * time.Millisecond)
				inside.Add(-1)
				held.Add(1)
				return nil
			})
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	assert.Equal(t, int32(12), held.Load())
	h := &c.g.nodes[0].hub
	h.mu.Lock()
	defer h.mu.Unlock()
	assert.Nil(t, h.ps, "the last waiter closed the subscription")
	assert.Empty(t, h.chans)
}

func TestBackoffIsCappedByHolderTTL(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	holder, err := c.Obtain(ctx, "k", 50*time.Millisecond, nil)
	require.NoError(t, err)
	go func() {
		// miniredis expires keys only when its clock moves: move it once the waiter waits.
		waitSubscribed(t, rdb, holder.keys[0])
		mr.FastForward(time.Second)
	}()
	start := time.Now()
	l, err := c.Obtain(ctx, "k", time.Minute, &ObtainOptions{
		Wait:    time.Hour,
		Backoff: func(int) time.Duration { return time.Hour },
	})
	require.NoError(t, err, "woken by the holder's PTTL, not the hour-long backoff")
	assert.Less(t, time.Since(start), 10*time.Second)
	require.NoError(t, l.Release(ctx))
}

// waitSubscribed returns once someone listens on lockKey's release channel.
func waitSubscribed(t *testing.T, rdb redis.UniversalClient, lockKey string) {
	ch := releaseChannel(lockKey)
	ctx := context.Background()
	require.Eventually(t, func() bool {
		if cl, ok := rdb.(*redis.ClusterClient); ok { // sharded pub/sub: ask the slot's master
			m, err := cl.MasterForKey(ctx, ch)
			if err != nil {
				return false
			}
			n, err := m.PubSubShardNumSub(ctx, ch).Result()
			return err == nil && n[ch] > 0
		}
		n, err := rdb.PubSubNumSub(ctx, ch).Result()
		return err == nil && n[ch] > 0
	}, 10*time.Second, time.Millisecond)
}

// logRecorder is a slog.Handler that counts messages.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}

func (r *logRecorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

func TestNilLockAndEndedContext(t *testing.T) {
	var l *Lock
	assert.Empty(t, l.Key())
	assert.Empty(t, l.Token())
	assert.Empty(t, l.Metadata())
	assert.Zero(t, l.Fence())
	<-l.Lost() // closed: a nil lock holds nothing

	mr, rdb := redistest.Mini(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := mr.CommandCount()
	_, err := New(rdb, nil).Obtain(ctx, "k", time.Second, &ObtainOptions{Wait: time.Second})
	require.ErrorIs(t, err, ErrNotObtained)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, before, mr.CommandCount())
}

// The lost wake-up race, made deterministic: the holder releases after the waiter's failed try
// and before its subscription exists, so no message reaches it; it must retry once subscribed.
func TestReleaseBeforeSubscriptionIsNotLost(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	holder, err := c.Obtain(ctx, "k", time.Hour, nil)
	require.NoError(t, err)
	c.g.beforeSubscribe = func() { assert.NoError(t, holder.Release(ctx)) }
	c.g.queueLease = time.Hour                              // no renewal of the queue place may stand in for the wake-up
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second) // only a lost wake-up gets here
	defer cancel()
	l, err := c.Obtain(wctx, "k", time.Minute, &ObtainOptions{
		Wait:    time.Hour,
		Backoff: func(int) time.Duration { return time.Hour },
	})
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))
}

func TestWatchdogRenewsWithTheLastRefreshedTTL(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	l, err := New(rdb, nil).Obtain(ctx, "k", 150*time.Millisecond, &ObtainOptions{AutoRenew: true})
	require.NoError(t, err)
	require.NoError(t, l.Refresh(ctx, 600*time.Millisecond))
	mr.FastForward(100 * time.Millisecond)
	// The next renewal (within 200ms) must set 600ms again, not the 150ms of Obtain.
	require.Eventually(t, func() bool { return mr.TTL("surge:lock:{k}") == 600*time.Millisecond }, 2*time.Second, time.Millisecond)
	require.NoError(t, l.Release(ctx))
}
