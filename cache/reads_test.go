package cache

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// getCalls returns how many GETs the server has run since its stats were reset.
func getCalls(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	for line := range strings.Lines(info) {
		if rest, ok := strings.CutPrefix(line, "cmdstat_get:calls="); ok {
			n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			require.NoError(t, err)
			return n
		}
	}
	return 0
}

// A paused server holds the first GET; every concurrent Fetch of the key joins it, so the server
// sees one GET for all of them.
func TestConcurrentReadsOfOneKeyShareOneGET(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	c, err := New[user](srv.Client(), &Options{Prefix: "reads:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.Set(ctx, "k", user{ID: "k", Name: "v"}))
	admin := srv.NewClient(nil)
	require.NoError(t, admin.ConfigResetStat(ctx).Err())

	const readers = 20
	srv.Pause(time.Minute)
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			u, err := c.Fetch(ctx, "k", func(context.Context, string) (user, error) {
				t.Error("loader called for a cached key")
				return user{}, nil
			})
			if err == nil && u.Name != "v" {
				t.Errorf("got %+v", u)
			}
		})
	}
	require.Eventually(t, func() bool { return c.Stats().SharedReads == 0 && joined(c) == readers-1 },
		10*time.Second, time.Millisecond, "every reader but the first must be waiting on the first GET")
	srv.Resume()
	wg.Wait()
	require.EqualValues(t, readers-1, c.Stats().SharedReads)
	require.EqualValues(t, readers, c.Stats().RedisHits)
	require.Equal(t, 1, getCalls(t, admin), "one GET for all concurrent readers")
}

// A read that starts after an invalidation must not join a GET sent before it: that GET may
// return the value the Delete removed.
func TestReadAfterInvalidationDoesNotJoinOlderGET(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	c, err := New[user](srv.Client(), &Options{Prefix: "reads:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.Set(ctx, "k", user{ID: "k", Name: "old"}))

	srv.Pause(time.Minute)
	first := make(chan struct{})
	go func() {
		defer close(first)
		_, _ = c.Get(ctx, "k")
	}()
	require.Eventually(t, func() bool { return inFlight(c, "k") }, 10*time.Second, time.Millisecond)
	c.epochOf("k").Add(1) // what a Delete or Set of this process does once it has written

	second := make(chan struct{})
	go func() {
		defer close(second)
		_, _ = c.Get(ctx, "k")
	}()
	require.Eventually(t, func() bool { return joined(c) == 0 && inFlightEpoch(c, "k") == c.snapshot("k") },
		10*time.Second, time.Millisecond, "the second read must send its own GET")
	srv.Resume()
	<-first
	<-second
	require.Zero(t, c.Stats().SharedReads)
}

// joined counts readers blocked on another reader's GET: goroutines parked in get's select are
// not visible directly, so tests count them through the waiting room below.
func joined(c *Cache[user]) int { return int(c.rd.waiting.Load()) }

func inFlight(c *Cache[user], key string) bool {
	c.rd.mu.Lock()
	defer c.rd.mu.Unlock()
	_, ok := c.rd.m[key]
	return ok
}

func inFlightEpoch(c *Cache[user], key string) uint64 {
	c.rd.mu.Lock()
	defer c.rd.mu.Unlock()
	if rc, ok := c.rd.m[key]; ok {
		return rc.epoch
	}
	return 0
}
