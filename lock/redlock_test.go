package lock

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

func miniNodes(t *testing.T, n int) ([]*miniredis.Miniredis, []redis.UniversalClient) {
	mrs := make([]*miniredis.Miniredis, n)
	rdbs := make([]redis.UniversalClient, n)
	for i := range n {
		mrs[i], rdbs[i] = redistest.Mini(t)
	}
	return mrs, rdbs
}

func TestRedlockQuorum(t *testing.T) {
	mrs, rdbs := miniNodes(t, 3)
	ctx := ctxT(t)
	r := NewRedlock(rdbs, nil)

	l, err := r.Obtain(ctx, "k", time.Minute, &ObtainOptions{Metadata: "m"})
	require.NoError(t, err)
	for _, mr := range mrs {
		assert.True(t, mr.Exists("surge:lock:{k}"))
	}
	d, err := l.TTL(ctx)
	require.NoError(t, err)
	assert.Equal(t, time.Minute, d)
	_, err = r.Obtain(ctx, "k", time.Minute, nil)
	require.ErrorIs(t, err, ErrNotObtained)
	require.NoError(t, l.Refresh(ctx, 2*time.Minute))
	require.NoError(t, l.Release(ctx))
	for _, mr := range mrs {
		assert.False(t, mr.Exists("surge:lock:{k}"))
	}

	// A minority held by someone else: still a quorum.
	_, err = New(rdbs[0], nil).Obtain(ctx, "k", time.Minute, nil)
	require.NoError(t, err)
	l, err = r.Obtain(ctx, "k", time.Minute, nil)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))

	// A majority held by someone else: not obtained, and nothing left behind on the free node.
	_, err = New(rdbs[1], nil).Obtain(ctx, "k", time.Minute, nil)
	require.NoError(t, err)
	_, err = r.Obtain(ctx, "k", time.Minute, nil)
	require.ErrorIs(t, err, ErrNotObtained)
	assert.False(t, mrs[2].Exists("surge:lock:{k}"), "the failed quorum released its node")
}

func TestRedlockNodeErrors(t *testing.T) {
	mrs, rdbs := miniNodes(t, 3)
	ctx := ctxT(t)
	r := NewRedlock(rdbs, nil)
	mrs[0].SetError("ERR node down")
	l, err := r.Obtain(ctx, "k", time.Minute, nil)
	require.NoError(t, err, "two of three")

	// Refresh with one node failing: the answer is open while a quorum may still hold it...
	mrs[1].Del("surge:lock:{k}")
	err = l.Refresh(ctx, time.Minute)
	require.ErrorContains(t, err, "node down")
	require.NotErrorIs(t, err, ErrNotHeld)
	// ... and settled once it cannot.
	mrs[2].Del("surge:lock:{k}")
	err = l.Refresh(ctx, time.Minute)
	require.ErrorIs(t, err, ErrNotHeld)

	mrs[1].SetError("ERR node down")
	_, err = r.Obtain(ctx, "j", time.Minute, nil)
	require.ErrorIs(t, err, ErrNotObtained)
	assert.ErrorContains(t, err, "node down")
	assert.False(t, mrs[2].Exists("surge:lock:{j}"), "released after the failed quorum")
}

func TestRedlockValidityExpiredMeansNotObtained(t *testing.T) {
	mrs, rdbs := miniNodes(t, 3)
	r := NewRedlock(rdbs, nil)
	var calls atomic.Int32
	start := time.Now()
	r.g.now = func() time.Time {
		if calls.Add(1) == 1 {
			return start
		}
		return start.Add(time.Second) // the round "took" as long as the ttl
	}
	_, err := r.Obtain(ctxT(t), "k", time.Second, nil)
	require.ErrorIs(t, err, ErrNotObtained)
	for _, mr := range mrs {
		assert.False(t, mr.Exists("surge:lock:{k}"), "released on every node")
	}
}

// Fences stay increasing although the nodes' counters differ and quorums change.
func TestRedlockFenceIncreasesAcrossQuorums(t *testing.T) {
	mrs, rdbs := miniNodes(t, 3)
	ctx := ctxT(t)
	r := NewRedlock(rdbs, nil)
	require.NoError(t, mrs[2].Set("surge:lock:{k}:fence", "100"))

	var last int64
	for _, down := range []int{-1, 2, 0, 1, 2, -1} {
		for i, mr := range mrs {
			if i == down {
				mr.SetError("ERR down")
			} else {
				mr.SetError("")
			}
		}
		l, err := r.Obtain(ctx, "k", time.Minute, nil)
		require.NoError(t, err)
		assert.Greater(t, l.Fence(), last, "node %d down", down)
		last = l.Fence()
		require.NoError(t, l.Release(ctx))
	}
}

func TestRedlockWaitsAndWakesOnRelease(t *testing.T) {
	_, rdbs := miniNodes(t, 3)
	ctx := ctxT(t)
	r := NewRedlock(rdbs, nil)
	holder, err := r.Obtain(ctx, "k", time.Hour, nil)
	require.NoError(t, err)
	got := make(chan error, 1)
	go func() {
		l, err := r.Obtain(ctx, "k", time.Minute, &ObtainOptions{Wait: time.Hour, Backoff: func(int) time.Duration { return time.Hour }})
		if err == nil {
			err = l.Release(ctx)
		}
		got <- err
	}()
	for _, rdb := range rdbs {
		waitSubscribed(t, rdb, holder.keys[0])
	}
	require.NoError(t, holder.Release(ctx))
	require.NoError(t, <-got)
}

func TestRedlockDo(t *testing.T) {
	mrs, rdbs := miniNodes(t, 3)
	ctx := ctxT(t)
	ran := false
	err := NewRedlock(rdbs, nil).Do(ctx, "k", time.Minute, nil, func(ctx context.Context) error {
		ran = FromContext(ctx) != nil && mrs[1].Exists("surge:lock:{k}")
		return nil
	})
	require.NoError(t, err)
	assert.True(t, ran)
	assert.False(t, mrs[1].Exists("surge:lock:{k}"))
}

// One node of three hangs (SIGSTOP: connections open, nothing answered) and the clients are
// plain ones, whose reads wait for ReadTimeout (3s) and retry: every Redlock round still answers
// within NodeTimeout, counting the hung node as a failure instead of waiting for it.
func TestServerRedlockAnswersWithinNodeTimeoutWhenANodeHangs(t *testing.T) {
	ctx := ctxT(t)
	var servers []*redistest.RedisServer
	var rdbs []redis.UniversalClient
	for range 3 {
		s := redistest.Server(t)
		servers = append(servers, s)
		rdb := redis.NewClient(&redis.Options{Addr: s.Addr()}) // all defaults
		t.Cleanup(func() { _ = rdb.Close() })
		// Connected before the first round: dialling on a loaded machine can take longer than
		// the node timeout, and that is not what these tests are about.
		require.NoError(t, rdb.Ping(ctx).Err())
		rdbs = append(rdbs, rdb)
	}
	const nodeTimeout = 100 * time.Millisecond
	r := NewRedlock(rdbs, &Options{NodeTimeout: nodeTimeout})
	l, err := r.Obtain(ctx, "hung", 5*time.Second, nil) // loads the scripts everywhere
	require.NoError(t, err)
	require.NoError(t, l.Refresh(ctx, 5*time.Second))
	require.NoError(t, l.Release(ctx))

	servers[0].Pause(time.Minute)
	t.Cleanup(servers[0].Resume) // before the servers' own cleanup, so stragglers end
	bound := 5 * nodeTimeout     // two rounds (acquire, raise fences), with room for a busy machine

	start := time.Now()
	l, err = r.Obtain(ctx, "hung", 5*time.Second, nil)
	took := time.Since(start)
	require.NoError(t, err, "two of three")
	assert.Less(t, took, bound, "Obtain")

	start = time.Now()
	require.NoError(t, l.Refresh(ctx, 5*time.Second))
	assert.Less(t, time.Since(start), bound, "Refresh")

	start = time.Now()
	require.NoError(t, l.Release(ctx))
	assert.Less(t, time.Since(start), bound, "Release")
}

// A waiter subscribes on every node; the hung node's subscription must not hold it up either.
func TestServerRedlockWaiterIsNotHeldUpByAHungNode(t *testing.T) {
	ctx := ctxT(t)
	var servers []*redistest.RedisServer
	var rdbs []redis.UniversalClient
	for range 3 {
		s := redistest.Server(t)
		servers = append(servers, s)
		rdb := redis.NewClient(&redis.Options{Addr: s.Addr()}) // all defaults
		t.Cleanup(func() { _ = rdb.Close() })
		// Connected before the first round: dialling on a loaded machine can take longer than
		// the node timeout, and that is not what these tests are about.
		require.NoError(t, rdb.Ping(ctx).Err())
		rdbs = append(rdbs, rdb)
	}
	const nodeTimeout = 100 * time.Millisecond
	r := NewRedlock(rdbs, &Options{NodeTimeout: nodeTimeout})
	holder, err := r.Obtain(ctx, "hung-wait", time.Hour, nil)
	require.NoError(t, err)

	servers[0].Pause(time.Minute)
	t.Cleanup(servers[0].Resume)
	got := make(chan time.Time, 1)
	var l *Lock
	go func() {
		var err error
		l, err = r.Obtain(ctx, "hung-wait", 5*time.Second, &ObtainOptions{Wait: 20 * time.Second})
		if assert.NoError(t, err) {
			got <- time.Now()
		}
		close(got)
	}()
	for _, rdb := range rdbs[1:] {
		waitSubscribed(t, rdb, holder.keys[keyLock])
	}
	released := time.Now()
	require.NoError(t, holder.Release(ctx))
	at, ok := <-got
	require.True(t, ok)
	assert.Less(t, at.Sub(released), 10*nodeTimeout, "woken by the release on the live nodes")
	require.NoError(t, l.Release(ctx))
}
