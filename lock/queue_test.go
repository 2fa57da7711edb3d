package lock

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
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

func TestWaitersObtainInArrivalOrder(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := ctxT(t)
	c := New(rdb, nil)
	holder, err := c.Obtain(ctx, "k", time.Hour, nil)
	require.NoError(t, err)
	order := make(chan string, 3)
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range 3 {
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
	mr.HSet("surge:lock:{k}:waiters", "DEAD", "1000 60000 ")
	require.NoError(t, holder.Release(ctx))
	assert.False(t, mr.Exists("surge:lock:{k}"), "free, not handed to a waiter that left")
	assert.False(t, mr.Exists("surge:lock:{k}:queue"))
	assert.False(t, mr.Exists("surge:lock:{k}:waiters"))
}
