package cache

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// slowLoader returns user{ID: key, Name: name}, signalling started and waiting for release.
func slowLoader(name string, started chan<- string, release <-chan struct{}) Loader[user] {
	return func(ctx context.Context, key string) (user, error) {
		select {
		case started <- key:
		default: // an unexpected extra call must not block (the test's assertions report it)
		}
		if err := await(ctx, release); err != nil {
			return user{}, err
		}
		return user{ID: key, Name: name}, nil
	}
}

func TestFencedFillDeleteDuringLoad(t *testing.T) {
	for _, lease := range []time.Duration{0, time.Minute} {
		t.Run(fmt.Sprint("lease=", lease), func(t *testing.T) {
			c, m, _ := newCache(t, &Options{Lease: lease})
			ctx := context.Background()
			started, release := make(chan string, 1), make(chan struct{})
			done := make(chan user, 1)
			go func() {
				u, err := c.Fetch(ctx, "k", slowLoader("stale", started, release))
				assert.NoError(t, err) // not require: FailNow would skip the send and hang the test
				done <- u
			}()
			<-started // the loader read the old record
			require.NoError(t, c.Delete(ctx, "k"))
			close(release)
			require.Equal(t, "stale", (<-done).Name, "the caller still gets what it loaded")
			require.False(t, m.Exists("{k}"), "but the stale value does not land in Redis")
			require.EqualValues(t, 1, c.Stats().FenceRejects)
		})
	}
}

func TestFencedFillSetDuringLoad(t *testing.T) {
	c, _, _ := newCache(t, nil)
	ctx := context.Background()
	started, release := make(chan string, 1), make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Fetch(ctx, "k", slowLoader("stale", started, release))
	}()
	<-started
	require.NoError(t, c.Set(ctx, "k", user{ID: "k", Name: "new"}))
	close(release)
	<-done
	u, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "new", u.Name, "the slow load did not overwrite the newer Set")
}

func TestFailOpenServesFromLoaderOnce(t *testing.T) {
	c, m := newOutageCache(t, nil)
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "k", user{ID: "k", Name: "cached"}))
	m.Close()

	release := make(chan struct{})
	var calls atomic.Int64
	load := gatedLoader(&calls, release, "db")
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			u, err := c.Fetch(ctx, "k", load)
			require.NoError(t, err)
			require.Equal(t, "db", u.Name)
		})
	}
	require.Eventually(t, func() bool { return c.Stats().SharedLoads == 49 }, 5*time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	require.EqualValues(t, 1, calls.Load(), "an outage does not become a stampede on the source")
	require.GreaterOrEqual(t, c.Stats().RedisErrors, uint64(50))

	require.NoError(t, m.Restart())
	require.Eventually(t, func() bool {
		u, err := c.Fetch(ctx, "k", load)
		return err == nil && u.Name == "cached"
	}, 10*time.Second, 10*time.Millisecond, "after the restart Redis serves again, same Cache")
}

func TestFailClosedReturnsRedisErrors(t *testing.T) {
	c, m := newOutageCache(t, &Options{OnRedisError: FailClosed})
	m.Close()
	var calls atomic.Int64
	_, err := c.Fetch(context.Background(), "k", countingLoader(&calls))
	require.Error(t, err)
	require.ErrorContains(t, err, `cache: fetch "k"`)
	require.Zero(t, calls.Load())
	_, err = c.FetchMany(context.Background(), []string{"a", "b"}, func(ctx context.Context, keys []string) (map[string]user, error) {
		calls.Add(1)
		return nil, nil
	})
	require.Error(t, err)
	require.Zero(t, calls.Load())
}

func TestDoubleDelete(t *testing.T) {
	c, m, _ := newCache(t, &Options{DoubleDelete: 30 * time.Millisecond})
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "k", user{ID: "k"}))
	require.NoError(t, c.Delete(ctx, "k"))
	require.False(t, m.Exists("{k}"))
	// A reader that read a lagging replica puts the old value back right after the delete.
	require.NoError(t, m.Set("{k}", "stale"))
	require.Eventually(t, func() bool { return !m.Exists("{k}") }, 5*time.Second, time.Millisecond,
		"the second delete removes it")
}

func TestCloseCancelsPendingDoubleDelete(t *testing.T) {
	c, m, _ := newCache(t, &Options{DoubleDelete: time.Hour})
	ctx := context.Background()
	require.NoError(t, c.Delete(ctx, "k"))
	require.NoError(t, m.Set("{k}", "x"))
	closed := make(chan struct{})
	go func() { _ = c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for an hour-long second delete")
	}
	require.True(t, m.Exists("{k}"), "the cancelled second delete did not run")
}

func TestLeaseAcrossInstances(t *testing.T) {
	a, _, rdb := newCache(t, &Options{Lease: time.Minute})
	b, err := New[user](rdb, &Options{Lease: time.Minute})
	require.NoError(t, err)
	defer b.Close()
	ctx := context.Background()
	started, release := make(chan string, 2), make(chan struct{})
	load := slowLoader("v", started, release)

	doneA := make(chan user, 1)
	go func() { u, _ := a.Fetch(ctx, "k", load); doneA <- u }()
	<-started
	doneB := make(chan error, 1)
	go func() {
		u, err := b.Fetch(ctx, "k", load)
		if err == nil && u.Name != "v" {
			err = fmt.Errorf("got %+v", u)
		}
		doneB <- err
	}()
	require.Eventually(t, func() bool { return b.Stats().LeaseWaits == 1 }, 5*time.Second, time.Millisecond)
	close(release)
	require.Equal(t, "v", (<-doneA).Name)
	require.NoError(t, <-doneB)
	require.Len(t, started, 0, "b waited for a's value instead of loading")
	require.EqualValues(t, 0, b.Stats().Loads)
}

func TestLeaseHolderFailureHandsOver(t *testing.T) {
	a, _, rdb := newCache(t, &Options{Lease: time.Minute})
	b, err := New[user](rdb, &Options{Lease: time.Minute})
	require.NoError(t, err)
	defer b.Close()
	ctx := context.Background()
	started, release := make(chan struct{}, 1), make(chan struct{})
	failing := func(ctx context.Context, key string) (user, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		if err := await(ctx, release); err != nil {
			return user{}, err
		}
		return user{}, errors.New("db hiccup")
	}
	doneA := make(chan error, 1)
	go func() { _, err := a.Fetch(ctx, "k", failing); doneA <- err }()
	<-started
	doneB := make(chan user, 1)
	var bCalls atomic.Int64
	go func() { u, _ := b.Fetch(ctx, "k", countingLoader(&bCalls)); doneB <- u }()
	require.Eventually(t, func() bool { return b.Stats().LeaseWaits == 1 }, 5*time.Second, time.Millisecond)
	close(release)
	require.Error(t, <-doneA)
	select {
	case u := <-doneB:
		require.Equal(t, "k", u.ID)
	case <-time.After(3 * time.Second):
		t.Fatal("b kept waiting after a released its lease") // LoadTimeout is 5s
	}
	require.EqualValues(t, 1, bCalls.Load(), "b took the freed lease and loaded")
}

func TestFetchMany(t *testing.T) {
	c, m, _ := newCache(t, &Options{Prefix: "u:"})
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "cached", user{ID: "cached", Name: "redis"}))
	var batches [][]string
	var mu sync.Mutex
	load := func(ctx context.Context, keys []string) (map[string]user, error) {
		mu.Lock()
		batches = append(batches, append([]string(nil), keys...))
		mu.Unlock()
		out := map[string]user{}
		for _, k := range keys {
			if k != "ghost" {
				out[k] = user{ID: k, Name: "db"}
			}
		}
		return out, nil
	}
	got, err := c.FetchMany(ctx, []string{"cached", "a", "b", "ghost", "a"}, load)
	require.NoError(t, err)
	require.Equal(t, map[string]user{
		"cached": {ID: "cached", Name: "redis"},
		"a":      {ID: "a", Name: "db"},
		"b":      {ID: "b", Name: "db"},
	}, got)
	require.Len(t, batches, 1, "one loader call for all misses")
	sort.Strings(batches[0])
	require.Equal(t, []string{"a", "b", "ghost"}, batches[0])
	require.True(t, m.Exists("u:{a}"))
	require.True(t, m.Exists("u:{ghost}"), "a negative entry for the key the loader left out")

	_, err = c.Fetch(ctx, "ghost", func(ctx context.Context, key string) (user, error) {
		t.Fatal("the negative entry should answer")
		return user{}, nil
	})
	require.ErrorIs(t, err, ErrNotFound)
	got, err = c.FetchMany(ctx, []string{"a", "ghost", "b"}, load)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Len(t, batches, 1, "everything was cached")
}

func TestFetchManySharesLoadsWithFetch(t *testing.T) {
	c, _, _ := newCache(t, nil)
	ctx := context.Background()
	started, release := make(chan string, 1), make(chan struct{})
	fetched := make(chan user, 1)
	go func() { u, _ := c.Fetch(ctx, "a", slowLoader("from-fetch", started, release)); fetched <- u }()
	<-started
	var batch []string
	got := make(chan map[string]user, 1)
	go func() {
		m, err := c.FetchMany(ctx, []string{"a", "b"}, func(ctx context.Context, keys []string) (map[string]user, error) {
			batch = keys
			return map[string]user{"b": {ID: "b", Name: "from-batch"}}, nil
		})
		assert.NoError(t, err)
		got <- m
	}()
	require.Eventually(t, func() bool { return c.Stats().SharedLoads == 1 }, 5*time.Second, time.Millisecond)
	close(release)
	m := <-got
	require.Equal(t, []string{"b"}, batch, "the batch loader skips the key Fetch is loading")
	require.Equal(t, "from-fetch", m["a"].Name)
	require.Equal(t, "from-batch", m["b"].Name)
	require.Equal(t, "from-fetch", (<-fetched).Name)
}

func TestFetchManyLoaderError(t *testing.T) {
	c, _, _ := newCache(t, nil)
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "hit", user{ID: "hit"}))
	boom := errors.New("db down")
	got, err := c.FetchMany(ctx, []string{"hit", "miss"}, func(ctx context.Context, keys []string) (map[string]user, error) {
		return nil, boom
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, map[string]user{"hit": {ID: "hit"}}, got, "values found are still returned")
}

func TestFetchManyWaitsForOtherInstancesLease(t *testing.T) {
	a, _, rdb := newCache(t, &Options{Lease: time.Minute})
	b, err := New[user](rdb, &Options{Lease: time.Minute})
	require.NoError(t, err)
	defer b.Close()
	ctx := context.Background()
	started, release := make(chan string, 1), make(chan struct{})
	go func() { _, _ = a.Fetch(ctx, "x", slowLoader("from-a", started, release)) }()
	<-started // a holds x's lease

	var mu sync.Mutex
	var batches [][]string
	got := make(chan map[string]user, 1)
	go func() {
		m, err := b.FetchMany(ctx, []string{"x", "y"}, func(ctx context.Context, keys []string) (map[string]user, error) {
			mu.Lock()
			batches = append(batches, keys)
			mu.Unlock()
			out := map[string]user{}
			for _, k := range keys {
				out[k] = user{ID: k, Name: "from-b"}
			}
			return out, nil
		})
		assert.NoError(t, err)
		got <- m
	}()
	// y is loaded while x waits for a.
	require.Eventually(t, func() bool { return b.Stats().Loads == 1 && b.Stats().LeaseWaits == 1 }, 5*time.Second, time.Millisecond)
	close(release)
	m := <-got
	require.Equal(t, "from-a", m["x"].Name)
	require.Equal(t, "from-b", m["y"].Name)
	require.Equal(t, [][]string{{"y"}}, batches)
}
