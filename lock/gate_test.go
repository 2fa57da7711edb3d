package lock

import (
	"context"
	"slices"
	"strconv"
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

// contend runs goroutines goroutines per Client, each obtaining key (with a wait) and releasing
// it rounds times, checking that no two hold it at once and that fences increase in holding
// order; it returns the number of acquisitions.
func contend(t *testing.T, clients []*Client, key string, goroutines, rounds int) int {
	ctx := ctxT(t)
	var mu sync.Mutex
	var last int64
	var inside atomic.Int32
	var n atomic.Int64
	var wg sync.WaitGroup
	for _, c := range clients {
		for range goroutines {
			wg.Go(func() {
				for range rounds {
					l, err := c.Obtain(ctx, key, 5*time.Second, &ObtainOptions{Wait: 20 * time.Second})
					if !assert.NoError(t, err) {
						return
					}
					if inside.Add(1) != 1 {
						t.Error("two holders at once")
					}
					mu.Lock() // in holding order: the lock serialises these
					if l.Fence() <= last {
						t.Errorf("fence %d after %d", l.Fence(), last)
					}
					last = l.Fence()
					mu.Unlock()
					n.Add(1)
					inside.Add(-1)
					assert.NoError(t, l.Release(ctx))
				}
			})
		}
	}
	wg.Wait()
	return int(n.Load())
}

// scriptCalls returns how many scripts the server has run (EVALSHA and EVAL).
func scriptCalls(t *testing.T, rdb *redis.Client) int {
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	total := 0
	for line := range strings.Lines(info) {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (name != "cmdstat_evalsha" && name != "cmdstat_eval") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		n, err := strconv.Atoi(calls)
		require.NoError(t, err)
		total += n
	}
	return total
}

// Goroutines of one Client contending for a key take turns in process: a release hands the lock
// straight to the next of them, so each acquisition costs one script (the release), not two (the
// release, and the releaser's next Obtain queueing itself in Redis).
func TestServerOneScriptPerHandOverWithinAClient(t *testing.T) {
	s := redistest.Server(t)
	c := New(s.NewClient(&redis.Options{PoolSize: 16}), nil)
	before := scriptCalls(t, s.Client())
	n := contend(t, []*Client{c}, "gate", 8, 50)
	scripts := scriptCalls(t, s.Client()) - before
	t.Logf("%d acquisitions, %d scripts", n, scripts)
	assert.LessOrEqual(t, float64(scripts), 1.2*float64(n)+8, "scripts per acquisition: %.2f", float64(scripts)/float64(n))
}

// At most one goroutine of a Client waits in Redis for a key at a time: the queue never holds two
// waiters of one Client (the waiters hash names each waiter's Client).
func TestServerOneQueueEntryPerClient(t *testing.T) {
	s := redistest.Server(t)
	clients := []*Client{New(s.NewClient(&redis.Options{PoolSize: 16}), nil), New(s.NewClient(&redis.Options{PoolSize: 16}), nil)}
	probe := s.Client()
	stop, done := make(chan struct{}), make(chan struct{})
	var worst int
	go func() {
		defer close(done)
		for range 100000 { // bounded; the contention below ends first
			select {
			case <-stop:
				return
			default:
			}
			entries, err := probe.HVals(context.Background(), "surge:lock:{gate}:waiters").Result()
			if err != nil {
				continue
			}
			perClient := map[string]int{}
			for _, e := range entries {
				if f := strings.Fields(e); len(f) >= 3 {
					perClient[f[2]]++
					worst = max(worst, perClient[f[2]])
				}
			}
		}
	}()
	n := contend(t, clients, "gate", 8, 30)
	close(stop)
	<-done
	t.Logf("%d acquisitions", n)
	assert.LessOrEqual(t, worst, 1, "waiters of one Client queued in Redis at once")
}

// Two Clients of 8 goroutines each: mutual exclusion and fences increasing in holding order.
func TestServerGatedMutualExclusionAndFences(t *testing.T) {
	s := redistest.Server(t)
	clients := []*Client{New(s.NewClient(&redis.Options{PoolSize: 16}), nil), New(s.NewClient(&redis.Options{PoolSize: 16}), nil)}
	assert.Equal(t, 2*8*40, contend(t, clients, "mx2", 8, 40))
}

// A lock lost without Release (its ttl ran out, nobody watching it) frees its Client's gate:
// the next goroutine of that Client obtains the key.
func TestLostLockFreesTheGate(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	first, err := c.Obtain(ctx, "k", 50*time.Millisecond, &ObtainOptions{Wait: time.Second})
	require.NoError(t, err)
	first.mu.Lock()
	assert.Nil(t, first.expiry, "nobody waits nor watches: no validity timer")
	first.mu.Unlock()
	// miniredis expires keys only when told: the lock stays in Redis, but its holder's validity
	// runs out, which passes the gate on; the next one then finds the key held and waits in Redis.
	next, err := c.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: 300 * time.Millisecond, Backoff: func(int) time.Duration { return time.Millisecond }})
	require.ErrorIs(t, err, ErrNotObtained, "the key is still held in Redis")
	require.Nil(t, next)
	assert.Zero(t, c.g.gates.size(), "the gate was freed (no holder, no waiter)")
	select {
	case <-first.Lost():
	default:
		t.Fatal("the lock was not marked lost")
	}
}

// With a real server the key expires: the second goroutine obtains after the first lock ran out
// without Release.
func TestServerLostLockFreesTheGate(t *testing.T) {
	s := redistest.Server(t)
	ctx := ctxT(t)
	c := New(s.Client(), nil)
	first, err := c.Obtain(ctx, "k", 100*time.Millisecond, &ObtainOptions{Wait: time.Second})
	require.NoError(t, err)
	next, err := c.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: 10 * time.Second})
	require.NoError(t, err)
	assert.Greater(t, next.Fence(), first.Fence())
	require.NoError(t, next.Release(ctx))

	// The same when the next one arrives after the first lock expired: the Client's gate timer
	// passed the gate on when its validity ran out, with nobody waiting.
	first, err = c.Obtain(ctx, "k", 50*time.Millisecond, &ObtainOptions{Wait: time.Second})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.Client().Exists(ctx, first.keys[keyLock]).Val() == 0 }, 10*time.Second, time.Millisecond)
	next, err = c.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: 10 * time.Second})
	require.NoError(t, err)
	assert.Greater(t, next.Fence(), first.Fence())
	require.ErrorIs(t, first.Release(ctx), ErrNotHeld)
	require.NoError(t, next.Release(ctx))
}

// gateState returns whether key's gate of c is held and how many wait for it.
func gateState(c *Client, key string) (held bool, waiting int) {
	gs := c.g.gates
	gs.mu.Lock()
	defer gs.mu.Unlock()
	gt := gs.m["surge:lock:{"+key+"}"]
	if gt == nil {
		return false, 0
	}
	return gt.held, len(gt.q)
}

// holdK starts a miniredis and a Client on it whose lock on "k", obtained with wait, lasts an
// hour; it returns them with the test's context and that lock.
func holdK(t *testing.T, wait *ObtainOptions) (*miniredis.Miniredis, redis.UniversalClient, context.Context, *Client, *Lock) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	holder, err := c.Obtain(ctx, "k", time.Hour, wait)
	require.NoError(t, err)
	return mr, rdb, ctx, c, holder
}

// obtainAsync obtains key with c in a goroutine, which asserts it did and sends the lock on got.
func obtainAsync(t *testing.T, ctx context.Context, c *Client, key string, ttl time.Duration, opts *ObtainOptions, got chan<- *Lock) {
	go func() {
		l, err := c.Obtain(ctx, key, ttl, opts)
		assert.NoError(t, err)
		got <- l
	}()
}

// obtainErrAsync obtains key with c in a goroutine, which sends Obtain's error on errs.
func obtainErrAsync(ctx context.Context, c *Client, key string, ttl time.Duration, opts *ObtainOptions, errs chan<- error) {
	go func() {
		_, err := c.Obtain(ctx, key, ttl, opts)
		errs <- err
	}()
}

// waitGateQueue waits until n goroutines wait at key's gate of c.
func waitGateQueue(t *testing.T, c *Client, key string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { _, w := gateState(c, key); return w == n }, 10*time.Second, time.Millisecond)
}

// assertGateFree asserts that key's gate of c is neither held nor waited for.
func assertGateFree(t *testing.T, c *Client, key string) {
	t.Helper()
	held, n := gateState(c, key)
	assert.False(t, held)
	assert.Zero(t, n)
}

// The gate passes on exactly once per lock: a lock lost (validity ran out) hands it to the next
// waiter, and its later Release does not hand it again to the one after.
func TestGatePassesOnOnce(t *testing.T) {
	wait := &ObtainOptions{Wait: time.Minute, Backoff: func(int) time.Duration { return time.Millisecond }}
	mr, _, ctx, c, first := holdK(t, wait)
	got := make(chan *Lock, 2)
	for i := range 2 {
		obtainAsync(t, ctx, c, "k", time.Minute, wait, got)
		waitGateQueue(t, c, "k", i+1)
	}
	first.markLost("test") // as the validity timer does
	waitGateQueue(t, c, "k", 1)
	mr.Del("surge:lock:{k}") // as the key's expiry would
	second := <-got
	require.ErrorIs(t, first.Release(ctx), ErrNotHeld)
	held, n := gateState(c, "k")
	assert.True(t, held)
	assert.Equal(t, 1, n, "the third still waits: the lost lock passed the gate once")
	select {
	case l := <-got:
		t.Fatalf("two holders: %v", l.Fence())
	default:
	}
	require.NoError(t, second.Release(ctx))
	third := <-got
	assert.Equal(t, second.Fence()+1, third.Fence(), "handed over by the release")
	require.NoError(t, third.Release(ctx))
	assertGateFree(t, c, "k")
}

// A gate waiter that gives up leaves the queue; one that gives up after a release named it as
// successor hands on what it got: the releaser releases the lock in its place, to the next.
func TestGateWaiterThatGivesUp(t *testing.T) {
	wait := &ObtainOptions{Wait: time.Minute}
	mr, rdb, ctx, c, holder := holdK(t, wait)

	_, err := c.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: 20 * time.Millisecond})
	require.ErrorIs(t, err, ErrNotObtained)
	_, n := gateState(c, "k")
	require.Zero(t, n, "left the gate's queue")

	// quitter is named successor by the holder's release, and gives up before the script runs.
	qctx, cancel := context.WithCancel(ctx)
	quit := make(chan error, 1)
	obtainErrAsync(qctx, c, "k", time.Minute, wait, quit)
	waitGateQueue(t, c, "k", 1)
	got := make(chan *Lock, 1)
	obtainAsync(t, ctx, c, "k", time.Minute, wait, got)
	waitGateQueue(t, c, "k", 2)

	rdb.AddHook(&beforeScript{token: holder.Token(), fn: func() {
		cancel()
		require.ErrorIs(t, <-quit, context.Canceled)
	}})
	require.NoError(t, holder.Release(ctx))
	l := <-got
	assert.Equal(t, holder.Fence()+2, l.Fence(), "the quitter's hand-over drew a fence, then the next")
	v, err := mr.Get("surge:lock:{k}")
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(v, l.Token()+":"))
	require.NoError(t, l.Release(ctx))
	assert.False(t, mr.Exists("surge:lock:{k}"))
}

// beforeScript runs fn once, before the first script call naming token.
type beforeScript struct {
	commandHook
	token string
	once  sync.Once
	fn    func()
}

func (h *beforeScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		for _, a := range cmd.Args() {
			if a == any(h.token) {
				h.once.Do(h.fn)
				break
			}
		}
		return next(ctx, cmd)
	}
}

// The goroutines of one Client waiting for a key get it in arrival order, each from the release
// of the one before, with the next fence.
func TestGateWaitersObtainInArrivalOrder(t *testing.T) {
	wait := &ObtainOptions{Wait: time.Minute}
	mr, _, ctx, c, holder := holdK(t, wait)
	got := make([]chan *Lock, 3)
	for i := range got {
		got[i] = make(chan *Lock, 1)
		obtainAsync(t, ctx, c, "k", time.Minute, wait, got[i])
		waitGateQueue(t, c, "k", i+1)
	}
	assert.False(t, mr.Exists("surge:lock:{k}:queue"), "none of them queued in Redis")
	prev := holder
	for i := range got {
		require.NoError(t, prev.Release(ctx))
		l := <-got[i]
		assert.Equal(t, prev.Fence()+1, l.Fence(), "waiter %d", i)
		v, err := mr.Get("surge:lock:{k}")
		require.NoError(t, err)
		assert.Equal(t, l.Token()+":"+strconv.FormatInt(l.Fence(), 10)+":", v)
		prev = l
	}
	require.NoError(t, prev.Release(ctx))
	assert.False(t, mr.Exists("surge:lock:{k}"))
}

// A waiter of another Client queued in Redis comes before the releasing Client's next waiter,
// which then takes the gate and queues in Redis itself.
func TestGateYieldsToAnotherClientQueuedInRedis(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	a, b := New(rdb, nil), New(rdb, nil)
	wait := &ObtainOptions{Wait: time.Minute, Backoff: hourBackoff.Backoff}
	holder, err := a.Obtain(ctx, "k", time.Hour, wait)
	require.NoError(t, err)
	gotB := make(chan *Lock, 1)
	obtainAsync(t, ctx, b, "k", time.Minute, wait, gotB)
	queued(t, mr, "k", 1)
	waitSubscribed(t, rdb, holder.keys[keyLock])
	gotA := make(chan *Lock, 1)
	obtainAsync(t, ctx, a, "k", time.Minute, wait, gotA)
	waitGateQueue(t, a, "k", 1)

	require.NoError(t, holder.Release(ctx))
	lb := <-gotB
	assert.Equal(t, holder.Fence()+1, lb.Fence(), "the other Client's waiter first")
	queued(t, mr, "k", 1) // a's next waiter, now in Redis
	require.NoError(t, lb.Release(ctx))
	la := <-gotA
	assert.Equal(t, holder.Fence()+2, la.Fence())
	require.NoError(t, la.Release(ctx))
}

// A key that expires within 1ms is answered with a PTTL of 1ms, not 0 ("unknown"), so that its
// waiter looks again then rather than after half the queue lease. A lost lock passes the gate
// at its validity, when about that much is left.
func TestAcquireAnswersAKeyAboutToExpireWithOneMillisecond(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	require.NoError(t, mr.Set("surge:lock:{k}", "other:1:"))
	mr.SetTTL("surge:lock:{k}", 500*time.Microsecond)
	l := &Lock{g: &c.g, key: "k", keys: [4]string{"surge:lock:{k}", "surge:lock:{k}:fence", "surge:lock:{k}:queue", "surge:lock:{k}:waiters"}, token: "me"}
	gr, err := l.runAcquire(ctx, rdb, time.Minute, queueLease)
	require.NoError(t, err)
	assert.Zero(t, gr.fence)
	assert.Equal(t, time.Millisecond, gr.pttl)
}

// A release whose answer never came (the caller's context ended meanwhile) may have handed the
// lock to the gate waiter it named, which gave up: the lock is released in that waiter's place
// all the same, so the next waiter gets it at once rather than after the quitter's ttl.
func TestGateWaiterThatGivesUpWhileTheReleaseAnswerIsLost(t *testing.T) {
	wait := &ObtainOptions{Wait: time.Minute}
	mr, rdb, ctx, c, holder := holdK(t, wait)
	qctx, cancelQuit := context.WithCancel(ctx)
	quit := make(chan error, 1)
	obtainErrAsync(qctx, c, "k", time.Hour, wait, quit)
	waitGateQueue(t, c, "k", 1)
	got := make(chan *Lock, 1)
	obtainAsync(t, ctx, c, "k", time.Minute, &ObtainOptions{Wait: 3 * time.Second}, got)
	waitGateQueue(t, c, "k", 2)

	rctx, cancelRelease := context.WithCancel(ctx)
	rdb.AddHook(&beforeScript{token: holder.Token(), fn: func() {
		cancelQuit()
		require.ErrorIs(t, <-quit, context.Canceled)
	}})
	rdb.AddHook(&afterScript{token: holder.Token(), fn: cancelRelease})
	require.ErrorIs(t, holder.Release(rctx), context.Canceled, "the answer was lost")
	l := <-got
	require.NotNil(t, l, "the lock stayed with the waiter that gave up")
	assert.Equal(t, holder.Fence()+2, l.Fence(), "the quitter's hand-over drew a fence, then the next")
	require.NoError(t, l.Release(ctx))
	assert.False(t, mr.Exists("surge:lock:{k}"))
}

// afterScript runs fn once, after the first script naming token ran, and then fails that call
// with its context's error, as if the context had ended before the answer came.
type afterScript struct {
	commandHook
	token string
	once  sync.Once
	fn    func()
}

func (h *afterScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil || !slices.Contains(cmd.Args(), any(h.token)) {
			return err
		}
		fired := false
		h.once.Do(func() { h.fn(); fired = true })
		if fired {
			err = ctx.Err()
			cmd.SetErr(err)
		}
		return err
	}
}

// A release whose answer was lost may have handed the lock to the gate waiter it named, which is
// not told so: it takes the gate without the lock, and its first round finds the lock its own.
func TestGateWaiterGetsTheLockWhenTheReleaseAnswerIsLost(t *testing.T) {
	wait := &ObtainOptions{Wait: time.Minute, Backoff: hourBackoff.Backoff}
	_, rdb, ctx, c, holder := holdK(t, wait)
	got := make(chan *Lock, 1)
	obtainAsync(t, ctx, c, "k", time.Hour, wait, got)
	waitGateQueue(t, c, "k", 1)
	rctx, cancelRelease := context.WithCancel(ctx)
	rdb.AddHook(&afterScript{token: holder.Token(), fn: cancelRelease})
	require.ErrorIs(t, holder.Release(rctx), context.Canceled, "the answer was lost")
	l := <-got
	require.NotNil(t, l)
	assert.Equal(t, holder.Fence()+1, l.Fence(), "the fence the lost release drew")
	require.ErrorIs(t, holder.Release(ctx), ErrNotHeld, "a retry finds the lock handed over")
	require.NoError(t, l.Release(ctx))
	assertGateFree(t, c, "k")
}

// size returns how many keys have a gate in the Client.
func (gs *gates) size() int {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	return len(gs.m)
}

// A lock obtained with a wait and never released, whose key nobody uses again, does not leave
// its gate in its Client for good: the gate is freed once the lock's validity runs out (the lock
// is then lost), also when no goroutine ever waited for it.
func TestUnreleasedLockFreesItsGateWhenItExpires(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	lost := make([]<-chan struct{}, 0, 20)
	for i := range 20 {
		l, err := c.Obtain(ctx, "unreleased"+strconv.Itoa(i), time.Duration(20+i)*time.Millisecond, &ObtainOptions{Wait: time.Second})
		require.NoError(t, err)
		if i%2 == 0 {
			lost = append(lost, l.Lost()) // watched or not, the gate goes
		}
	}
	assert.Eventually(t, func() bool { return c.g.gates.size() == 0 }, 10*time.Second, 5*time.Millisecond)
	require.Zero(t, c.g.gates.size(), "gates left in the Client by locks lost without Release")
	for _, ch := range lost {
		select {
		case <-ch:
		default:
			t.Fatal("a watched lock whose gate went was not marked lost")
		}
	}
}

// A Refresh that shortens the validity of a lock holding its gate moves the Client's gate timer
// earlier: the gate is freed when the shorter validity runs out, not at the first one.
func TestRefreshToAShorterTTLMovesTheGateTimer(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	l, err := c.Obtain(ctx, "k", time.Hour, &ObtainOptions{Wait: time.Second})
	require.NoError(t, err)
	require.NoError(t, l.Refresh(ctx, 20*time.Millisecond))
	assert.Eventually(t, func() bool { return c.g.gates.size() == 0 }, 10*time.Second, 5*time.Millisecond)
	require.Zero(t, c.g.gates.size(), "the gate waits for the validity the lock had before the Refresh")
	select {
	case <-l.Lost():
	default:
		t.Fatal("the lock whose gate went was not marked lost")
	}
}

// waiting returns how many goroutines wait for the gate of lockKey.
func (gs *gates) waiting(lockKey string) int {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gt := gs.m[lockKey]; gt != nil {
		return len(gt.q)
	}
	return 0
}

// A lock that holds its gate while goroutines of its Client wait for it gets no validity timer of
// its own (one was created and stopped per contended acquisition): the Client's gate timer
// watches it.
func TestGateWaitersArmNoTimerPerLock(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	first, err := c.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: time.Second})
	require.NoError(t, err)
	got := make(chan *Lock, 1)
	obtainAsync(t, ctx, c, "k", time.Minute, &ObtainOptions{Wait: 20 * time.Second}, got)
	require.Eventually(t, func() bool { return c.g.gates.waiting(first.keys[keyLock]) == 1 }, 10*time.Second, time.Millisecond)
	first.mu.Lock()
	assert.Nil(t, first.expiry, "a waiter at the gate armed the holder's own timer")
	first.mu.Unlock()
	require.NoError(t, first.Release(ctx))
	second := <-got
	require.NotNil(t, second)
	assert.Greater(t, second.Fence(), first.Fence())
	require.NoError(t, second.Release(ctx))
}

// A gate waiter given the gate by a release whose answer was lost, as its own wait ends, gives
// back the lock the script may have handed it: it does not stay taken, for its whole ttl, by a
// goroutine that returned, while the next waiters time out.
func TestGateWaiterGivenTheGateByALostReleaseAsItGivesUp(t *testing.T) {
	wait := &ObtainOptions{Wait: time.Minute, Backoff: hourBackoff.Backoff}
	mr, rdb, ctx, c, holder := holdK(t, wait)
	released := make(chan struct{})
	c.g.gates.waitEnded = func() { <-released } // looks at what it got once the release returned
	qctx, cancelQuit := context.WithCancel(ctx)
	quit := make(chan error, 1)
	obtainErrAsync(qctx, c, "k", time.Hour, wait, quit)
	waitGateQueue(t, c, "k", 1)
	cancelQuit() // its wait ends, but it is still first at the gate: the release names it

	rctx, cancelRelease := context.WithCancel(ctx)
	rdb.AddHook(&afterScript{token: holder.Token(), fn: cancelRelease})
	require.ErrorIs(t, holder.Release(rctx), context.Canceled, "the answer was lost")
	close(released)
	require.ErrorIs(t, <-quit, context.Canceled)
	assert.False(t, mr.Exists("surge:lock:{k}"), "the lock handed to the waiter that gave up stayed taken")
	assertGateFree(t, c, "k")
}

// A Refresh in flight when the Client's gate timer marks the lock lost (its validity ran out)
// answers ErrNotHeld, and gives back the key it extended meanwhile: told it lost the lock, its
// holder releases nothing, and the next waiter would wait for the whole ttl of that Refresh.
func TestRefreshThatLosesTheRaceWithTheGateTimerGivesTheKeyBack(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	l, err := c.Obtain(ctx, "k", 50*time.Millisecond, &ObtainOptions{Wait: time.Second})
	require.NoError(t, err)
	rdb.AddHook(&beforeScript{token: l.Token(), fn: func() {
		// The Refresh is sent once the gate timer marked the lock lost (miniredis keeps the key).
		require.Eventually(t, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.isLost }, 10*time.Second, time.Millisecond)
	}})
	require.ErrorIs(t, l.Refresh(ctx, time.Hour), ErrNotHeld)
	assert.False(t, mr.Exists("surge:lock:{k}"), "the key the late Refresh extended stayed taken for its ttl")
	assert.Zero(t, c.g.gates.size())
}

// A Refresh whose answer came after the ttl it set had run out answers ErrNotHeld, the lock is
// lost, and the key it extended in Redis is given back rather than left taken for that ttl.
func TestRefreshAnsweredTooLateGivesTheKeyBack(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	var skew atomic.Int64
	c.g.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	l, err := c.Obtain(ctx, "k", time.Hour, &ObtainOptions{Wait: time.Second})
	require.NoError(t, err)
	rdb.AddHook(&afterScript{token: l.Token(), fn: func() { skew.Store(int64(2 * time.Minute)) }})
	require.ErrorIs(t, l.Refresh(ctx, time.Minute), ErrNotHeld)
	assert.False(t, mr.Exists("surge:lock:{k}"), "the key the late Refresh extended stayed taken for its ttl")
	assert.Zero(t, c.g.gates.size())
}

// A release that gets no answer from a frozen server (its context ends; the server runs the
// script, or not, once it wakes) still passes the gate on: each goroutine waiting at the gate
// obtains the lock in turn once the server answers again (at the latest when the unreleased key
// expires), with increasing fences. ContextTimeoutEnabled: the release's context bounds its wait.
func TestServerGateWaitersGoOnAfterAReleaseToAFrozenServer(t *testing.T) {
	s := redistest.Server(t)
	ctx := ctxT(t)
	c := New(s.NewClient(&redis.Options{PoolSize: 8, ContextTimeoutEnabled: true}), nil)
	wait := &ObtainOptions{Wait: 30 * time.Second}
	holder, err := c.Obtain(ctx, "k", 2*time.Second, wait)
	require.NoError(t, err)
	got := make(chan *Lock, 2)
	for i := range 2 {
		obtainAsync(t, ctx, c, "k", 10*time.Second, wait, got)
		waitGateQueue(t, c, "k", i+1)
	}
	s.Pause(time.Minute)
	rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = holder.Release(rctx)
	cancel()
	s.Resume()
	require.Error(t, err, "a frozen server answers nothing")
	first := <-got
	require.NotNil(t, first)
	assert.Greater(t, first.Fence(), holder.Fence())
	require.NoError(t, first.Release(ctx))
	second := <-got
	require.NotNil(t, second)
	assert.Greater(t, second.Fence(), first.Fence())
	require.NoError(t, second.Release(ctx))
	assertGateFree(t, c, "k")
}

// Closing the redis client while goroutines wait for a key (one in Redis, the others at the
// Client's gate) ends every wait with an error, and leaves no gate behind.
func TestClosedRedisClientEndsEveryGateWaiter(t *testing.T) {
	wait := &ObtainOptions{Wait: time.Minute}
	_, rdb, ctx, c, holder := holdK(t, wait)
	errs := make(chan error, 3)
	for i := range 3 {
		obtainErrAsync(ctx, c, "k", time.Minute, wait, errs)
		waitGateQueue(t, c, "k", i+1)
	}
	require.NoError(t, rdb.Close())
	require.Error(t, holder.Release(ctx))
	for range 3 {
		require.ErrorIs(t, <-errs, redis.ErrClosed)
	}
	assert.Zero(t, c.g.gates.size())
}
