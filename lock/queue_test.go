package lock

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// hourBackoff leaves only release messages (and the queue lease) to move a waiter on.
var hourBackoff = &ObtainOptions{Wait: time.Hour, Backoff: func(int) time.Duration { return time.Hour }}

// queued waits until n tokens are queued for key.
func queued(t *testing.T, mr *miniredis.Miniredis, key string, n int) {
	require.Eventually(t, func() bool {
		l, err := mr.List("surge:lock:{" + key + "}:queue")
		return (err == nil && len(l) == n) || (n == 0 && !mr.Exists("surge:lock:{"+key+"}:queue"))
	}, 10*time.Second, time.Millisecond)
}

// queuedBehind waits until n waiters are queued in Redis for the key l holds (on any server,
// unlike queued).
func queuedBehind(t *testing.T, ctx context.Context, rdb redis.UniversalClient, l *Lock, n int64) {
	t.Helper()
	require.Eventually(t, func() bool {
		got, err := rdb.LLen(ctx, l.keys[keyQueue]).Result()
		return err == nil && got == n
	}, 10*time.Second, time.Millisecond)
}

// The release hands the lock to the queued waiter in Redis: the key carries the waiter's token
// and the next fence before the waiter has done anything more.
func TestReleaseHandsTheLockToTheFirstWaiter(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	holder, err := c.Obtain(ctx, "k", time.Hour, nil)
	require.NoError(t, err)
	got := make(chan *Lock, 1)
	go func() {
		l, err := c.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: time.Hour, Metadata: "w", Backoff: hourBackoff.Backoff})
		assert.NoError(t, err)
		got <- l
	}()
	queued(t, mr, "k", 1)
	waitSubscribed(t, rdb, holder.keys[keyLock])
	require.NoError(t, holder.Release(ctx))
	v, err := mr.Get("surge:lock:{k}")
	require.NoError(t, err, "not deleted: handed over")
	assert.False(t, strings.HasPrefix(v, holder.Token()))
	assert.Equal(t, time.Minute, mr.TTL("surge:lock:{k}"), "with the waiter's ttl")

	l := <-got
	require.NotNil(t, l)
	assert.Equal(t, l.Token()+":2:w", v)
	assert.Equal(t, holder.Fence()+1, l.Fence())
	assert.False(t, mr.Exists("surge:lock:{k}:queue"), "out of the queue")
	d, err := l.TTL(ctx)
	require.NoError(t, err)
	assert.Equal(t, time.Minute, d)
	require.NoError(t, l.Release(ctx))
	assert.False(t, mr.Exists("surge:lock:{k}"), "no waiter left: deleted")
}

// Waiters of different Clients (processes) queue in Redis, in arrival order.
func TestWaitersObtainInArrivalOrder(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	holder, err := New(rdb, nil).Obtain(ctx, "k", time.Hour, nil)
	require.NoError(t, err)
	order := make(chan string, 3)
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range 3 {
		c := New(rdb, nil)
		wg.Go(func() {
			l, err := c.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: time.Hour, Backoff: hourBackoff.Backoff})
			if !assert.NoError(t, err) {
				order <- "error"
				return
			}
			order <- fmt.Sprint(i)
			assert.NoError(t, l.Release(ctx))
		})
		queued(t, mr, "k", i+1) // the next waiter arrives after this one is queued
	}
	require.NoError(t, holder.Release(ctx))
	assert.Equal(t, "0", <-order)
	assert.Equal(t, "1", <-order)
	assert.Equal(t, "2", <-order)
}

// A waiter that gives up leaves the queue: the next release does not hand it the lock.
func TestWaiterThatGaveUpDoesNotBlockTheQueue(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	holder, err := c.Obtain(ctx, "k", time.Hour, nil)
	require.NoError(t, err)

	_, err = c.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: 50 * time.Millisecond, Backoff: hourBackoff.Backoff})
	require.ErrorIs(t, err, ErrNotObtained)
	wctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Obtain(wctx, "k", time.Minute, hourBackoff)
		errc <- err
	}()
	queued(t, mr, "k", 1)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	queued(t, mr, "k", 0)

	// A waiter that died without leaving: its lease ran out, the release skips it.
	mr.RPush("surge:lock:{k}:queue", "DEAD")
	mr.HSet("surge:lock:{k}:waiters", "DEAD", "1000 60000  ")
	require.NoError(t, holder.Release(ctx))
	assert.False(t, mr.Exists("surge:lock:{k}"), "free, not handed to a waiter that left")
	assert.False(t, mr.Exists("surge:lock:{k}:queue"))
	assert.False(t, mr.Exists("surge:lock:{k}:waiters"))
}

// A release that hands the lock to a waiter of the same Client tells that waiter from its own
// reply: the waiter holds the lock although no pub/sub message reaches it.
func TestReleaseHandsOverToAWaiterOfTheSameClientWithoutPubSub(t *testing.T) {
	_, rdb := redistest.Mini(t)
	testLocalHandOver(t, rdb)
}

func TestServerReleaseHandsOverToAWaiterOfTheSameClientWithoutPubSub(t *testing.T) {
	s := redistest.Server(t)
	testLocalHandOver(t, s.Client())
}

func testLocalHandOver(t *testing.T, rdb redis.UniversalClient) {
	ctx := ctxT(t)
	c := New(rdb, nil)
	c.g.queueLease = time.Hour // no renewal of the queue place may stand in for the hand-over
	var dropped atomic.Int32
	c.g.nodes[0].hub.dropMessage = func(string) bool { dropped.Add(1); return true }
	holder, err := c.Obtain(ctx, "k", time.Hour, nil)
	require.NoError(t, err)
	got := make(chan *Lock, 1)
	obtainAsync(t, ctx, c, "k", time.Minute, hourBackoff, got)
	queuedBehind(t, ctx, rdb, holder, 1)
	waitSubscribed(t, rdb, holder.keys[keyLock])

	require.NoError(t, holder.Release(ctx))
	select {
	case l := <-got:
		require.NotNil(t, l)
		assert.Equal(t, holder.Fence()+1, l.Fence())
		v, err := rdb.Get(ctx, holder.keys[keyLock]).Result()
		require.NoError(t, err)
		assert.True(t, strings.HasPrefix(v, l.Token()+":"), "the key is the waiter's")
		assert.Zero(t, dropped.Load(), "nothing was published for a waiter of the releasing Client")
		require.NoError(t, l.Release(ctx))
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter did not learn of the hand-over with pub/sub delivery held back")
	}
}

// commandHook passes dials and pipelines through: a test hook embeds it and has only its
// ProcessHook to write.
type commandHook struct{}

func (commandHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (commandHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// scriptHook counts the EVALSHA calls of a script on a client (runs when sent, answered once
// their answer came back) and, for one whose arguments include loseReply and which ran, loses its
// answer (a connection that broke after the write).
type scriptHook struct {
	commandHook
	hash      string
	runs      atomic.Int32
	answered  atomic.Int32
	loseReply atomic.Pointer[string]
}

func (h *scriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if len(args) < 2 || args[1] != h.hash {
			return next(ctx, cmd)
		}
		h.runs.Add(1)
		err := next(ctx, cmd)
		defer h.answered.Add(1)
		if lose := h.loseReply.Load(); err == nil && lose != nil && slices.Contains(args, any(*lose)) {
			err = errors.New("connection reset (test)")
			cmd.SetErr(err)
		}
		return err
	}
}

// A hand-over told by the releaser's reply gives the waiter the validity the release's send
// time allows (it cannot have started earlier), so the waiter needs no further round trip, even
// when it has waited so long that its own queueing is more than half a ttl ago.
func TestLocalHandOverValidityStartsWhenTheReleaseWasSent(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	acquires := &scriptHook{hash: acquireScript.Hash()}
	rdb.AddHook(acquires)
	c := New(rdb, nil)
	c.g.queueLease = time.Hour
	var clock atomic.Pointer[time.Time]
	t0 := time.Now()
	clock.Store(&t0)
	c.g.now = func() time.Time { return *clock.Load() }

	holder, err := c.Obtain(ctx, "k", time.Hour, nil)
	require.NoError(t, err)
	got := make(chan *Lock, 1)
	obtainAsync(t, ctx, c, "k", time.Minute, hourBackoff, got)
	queuedBehind(t, ctx, rdb, holder, 1)
	// The holder's try, the waiter's, and the waiter's look once its subscription is confirmed,
	// answered: a look still on its way when the release runs would find the lock handed over
	// and, rightly, date it from its own start.
	require.Eventually(t, func() bool { return acquires.answered.Load() == 3 }, 10*time.Second, time.Millisecond)

	sent := t0.Add(40 * time.Second) // more than half of the waiter's ttl after it queued
	clock.Store(&sent)
	require.NoError(t, holder.Release(ctx))
	l := <-got
	require.NotNil(t, l)
	assert.Equal(t, sent.Add(time.Minute-c.g.drift(time.Minute)), l.validity())
	assert.EqualValues(t, 3, acquires.runs.Load(), "no further round trip")
	require.NoError(t, l.Release(ctx))
}

// When a release's answer is lost, the script may have handed the lock to a waiter of the same
// Client, which no message tells: every waiter of that Client on the key looks again.
func TestReleaseWithLostAnswerWakesWaitersOfTheSameClient(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	releases := &scriptHook{hash: releaseScript.Hash()}
	rdb.AddHook(releases)
	c := New(rdb, nil)
	c.g.queueLease = time.Hour // no renewal of the queue place may stand in for the wake-up
	holder, err := c.Obtain(ctx, "k", time.Hour, nil)
	require.NoError(t, err)
	got := make(chan *Lock, 1)
	obtainAsync(t, ctx, c, "k", time.Minute, hourBackoff, got)
	queuedBehind(t, ctx, rdb, holder, 1)
	waitSubscribed(t, rdb, holder.keys[keyLock])

	require.ErrorIs(t, forged(holder, "other").Release(ctx), ErrNotHeld) // loads the script: EVALSHA from now on
	token := holder.Token()
	releases.loseReply.Store(&token)
	require.Error(t, holder.Release(ctx), "the answer was lost")
	select {
	case l := <-got:
		require.NotNil(t, l)
		assert.Equal(t, holder.Fence()+1, l.Fence())
		require.NoError(t, l.Release(ctx))
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter the lock was handed to was not told")
	}
	releases.loseReply.Store(nil)
	require.ErrorIs(t, holder.Release(ctx), ErrNotHeld, "a retry finds the lock handed over")
}

// A waiter joining a channel whose subscription is active (the steady state of a contended lock)
// allocates nothing: not one copy per recent hand-over it looks through.
func TestJoinAnActiveSubscriptionAllocatesNothing(t *testing.T) {
	other := &waiter{token: "other", wake: make(chan struct{}, 1)}
	h := &hub{chans: map[string]*subscription{"ch": {activeAt: time.Now().Add(-time.Hour), waiters: []*waiter{other}}}}
	for i := range h.chans["ch"].recent {
		h.chans["ch"].recent[i] = handover{token: fmt.Sprint("gone", i), fence: int64(i + 1)}
	}
	w := &waiter{token: "w", wake: make(chan struct{}, 1)}
	queuedAt := time.Now()
	allocs := testing.AllocsPerRun(100, func() {
		h.join(context.Background(), nil, "ch", w, queuedAt)
		h.leave("ch", w)
	})
	assert.Zero(t, allocs)
	assert.Nil(t, w.handedOver.Load(), "no hand-over named w")
}

// Like sync.Mutex in starvation mode, a release that hands the lock to a parked waiter of the
// same Client lets that waiter run before it returns: the lock moves on at once instead of after
// the releaser's next blocking call. With a single processor nothing else can run it first.
func TestReleaseLetsTheWaiterItHandedTheLockToRunFirst(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	_, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	holder, err := c.Obtain(ctx, "k", time.Hour, nil)
	require.NoError(t, err)
	other, err := c.Obtain(ctx, "k2", time.Hour, nil)
	require.NoError(t, err)
	got := make(chan *Lock, 2)
	// The waiter on k2 keeps the pub/sub connection open when the waiter on k leaves.
	for _, l := range []*Lock{holder, other} {
		obtainAsync(t, ctx, c, l.key, time.Minute, hourBackoff, got)
		queuedBehind(t, ctx, rdb, l, 1)
		waitSubscribed(t, rdb, l.keys[keyLock])
	}
	h := &c.g.nodes[0].hub
	require.Eventually(t, func() bool { // both parked in their wait
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, l := range []*Lock{holder, other} {
			s := h.chans[l.channel]
			if s == nil || len(s.waiters) != 1 || !s.waiters[0].parked.Load() {
				return false
			}
		}
		return true
	}, 10*time.Second, time.Millisecond)

	require.NoError(t, holder.Release(ctx))
	var l *Lock
	select {
	case l = <-got:
	default:
		t.Fatal("Release returned before the waiter it handed the lock to ran")
	}
	require.NotNil(t, l)
	assert.Equal(t, holder.Fence()+1, l.Fence())
	require.NoError(t, l.Release(ctx))
	require.NoError(t, other.Release(ctx))
	require.NoError(t, (<-got).Release(ctx))
}

// A waiter queued by an earlier version of this package ("<expiry> <ttl> <metadata>", without
// the Client's hub) is still handed the lock, by a message, with its metadata intact.
func TestReleaseHandsOverToAWaiterQueuedByAnEarlierVersion(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	holder, err := New(rdb, nil).Obtain(ctx, "k", time.Hour, nil)
	require.NoError(t, err)
	mr.RPush("surge:lock:{k}:queue", "OLD")
	mr.HSet("surge:lock:{k}:waiters", "OLD", "99999999999999 60000 worker-7")
	require.NoError(t, holder.Release(ctx))
	v, err := mr.Get("surge:lock:{k}")
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("OLD:%d:worker-7", holder.Fence()+1), v)
}
