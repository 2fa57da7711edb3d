package cache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// roundTrips counts the reads a client sends: single GETs, and round trips of several reads
// (an MGET or a pipeline of GETs) with the keys they carry.
type roundTrips struct {
	single    atomic.Int64
	mgets     atomic.Int64
	pipelines atomic.Int64 // round trips of several reads: MGETs and pipelines of GETs
	piped     atomic.Int64 // keys read in them
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		switch cmd.Name() { // not the HELLO of a new connection
		case "get":
			r.single.Add(1)
		case "mget":
			r.mgets.Add(1)
			r.pipelines.Add(1)
			r.piped.Add(int64(len(cmd.Args()) - 1))
		}
		return next(ctx, cmd)
	}
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if cmds[0].Name() == "get" { // not a new connection's handshake
			r.pipelines.Add(1)
			r.piped.Add(int64(len(cmds)))
		}
		return next(ctx, cmds)
	}
}

// Reads of different keys that arrive while reads are in flight (pipeMaxInFlight round trips)
// ride one shared round trip when one returns, instead of one round trip each.
func TestConcurrentReadsOfDifferentKeysShareRoundTrips(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	rdb := srv.NewClient(nil)
	c, err := New[user](rdb, &Options{Prefix: "pipe:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	const first, queued = 2, 10 // first: reads sent alone before the server is paused (pipeMaxInFlight)
	for i := range first + queued {
		require.NoError(t, c.Set(ctx, strconv.Itoa(i), user{ID: strconv.Itoa(i)}))
	}
	var rt roundTrips
	rdb.AddHook(&rt)

	srv.Pause(time.Minute)
	var wg sync.WaitGroup
	read := func(i int) {
		wg.Go(func() {
			u, err := c.Get(ctx, strconv.Itoa(i))
			if err != nil || u.ID != strconv.Itoa(i) {
				t.Errorf("key %d: got %+v, %v", i, u, err)
			}
		})
	}
	for i := range first {
		read(i)
		require.Eventually(t, func() bool { return rt.single.Load() == int64(i+1) }, 10*time.Second, time.Millisecond)
	}
	for i := first; i < first+queued; i++ {
		read(i)
	}
	require.Eventually(t, func() bool { return int(rt.single.Load())-first+queuedReads(c) == queued },
		10*time.Second, time.Millisecond, "every later reader must have sent or queued its read")
	srv.Resume()
	wg.Wait()
	require.EqualValues(t, first, rt.single.Load(), "only the first reads go alone")
	require.EqualValues(t, 1, rt.pipelines.Load(), "the queued reads share one round trip")
	require.EqualValues(t, 1, rt.mgets.Load(), "on a *redis.Client that round trip is one MGET")
	require.EqualValues(t, queued, rt.piped.Load())
	require.EqualValues(t, first+queued, c.Stats().RedisHits)
	require.EqualValues(t, queued, c.Stats().PipelinedReads)
}

// A queued read whose caller gives up leaves the queue at once, and the pipe keeps serving: the
// next queued read sends the batch.
func TestQueuedReadLeavesWhenItsContextEnds(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	c := usersCache(t, srv.NewClient(nil), "pipe:", "a", "a2", "b", "c")

	srv.Pause(time.Minute)
	first, third := make(chan error, 2), make(chan error, 1)
	go func() { _, err := c.Get(ctx, "a"); first <- err }()
	go func() { _, err := c.Get(ctx, "a2"); first <- err }()
	require.Eventually(t, func() bool { return inFlightReads(c) == pipeMaxInFlight }, 10*time.Second, time.Millisecond)
	cctx, cancel := context.WithCancel(ctx)
	second := make(chan error, 1)
	go func() { _, err := c.Get(cctx, "b"); second <- err }()
	require.Eventually(t, func() bool { return queuedReads(c) == 1 }, 10*time.Second, time.Millisecond)
	go func() { u, err := c.Get(ctx, "c"); third <- errors.Join(err, checkID(u, "c")) }()
	require.Eventually(t, func() bool { return queuedReads(c) == 2 }, 10*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-second, context.Canceled, "a queued reader returns when its ctx ends")
	require.EqualValues(t, 1, queuedReads(c))
	srv.Resume()
	require.NoError(t, <-first)
	require.NoError(t, <-first)
	require.NoError(t, <-third)
	u, err := c.Get(ctx, "b")
	require.NoError(t, err)
	require.Equal(t, "b", u.ID)
	require.Zero(t, inFlightReads(c), "the pipe goes idle")
}

// Once callers share round trips, one round trip is in flight at a time and every read that
// arrives meanwhile waits for it (the batches grow instead of splitting in two); once reads go
// alone again, two concurrent callers each get a round trip at once again.
func TestSharedReadsKeepOneRoundTripInFlight(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	rdb := srv.NewClient(nil)
	c, err := New[user](rdb, &Options{Prefix: "pipe:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	const n = 12
	for i := range n {
		require.NoError(t, c.Set(ctx, strconv.Itoa(i), user{ID: strconv.Itoa(i)}))
	}
	var rt roundTrips
	rdb.AddHook(&rt)
	read := func(wg *sync.WaitGroup, i int) {
		wg.Go(func() {
			u, err := c.Get(ctx, strconv.Itoa(i))
			if err != nil || u.ID != strconv.Itoa(i) {
				t.Errorf("key %d: got %+v, %v", i, u, err)
			}
		})
	}

	// Many callers at once: two reads in flight, the other ten share the next round trip.
	srv.Pause(time.Minute)
	var wg sync.WaitGroup
	for i := range n {
		read(&wg, i)
	}
	require.Eventually(t, func() bool { return inFlightReads(c) == pipeMaxInFlight && queuedReads(c) == n-pipeMaxInFlight },
		10*time.Second, time.Millisecond)
	srv.Resume()
	wg.Wait()
	require.EqualValues(t, 1, rt.pipelines.Load())

	// Now reads share round trips: a second caller waits for the round trip in flight.
	srv.Pause(time.Minute)
	read(&wg, 0)
	require.Eventually(t, func() bool { return inFlightReads(c) == 1 }, 10*time.Second, time.Millisecond)
	read(&wg, 1)
	require.Eventually(t, func() bool { return queuedReads(c) == 1 }, 10*time.Second, time.Millisecond,
		"the second read must queue behind the round trip in flight")
	require.Equal(t, 1, inFlightReads(c))
	srv.Resume()
	wg.Wait()

	// Reads one at a time: after a few, two concurrent callers each go at once again.
	for i := range 8 {
		_, err := c.Get(ctx, strconv.Itoa(i))
		require.NoError(t, err)
	}
	srv.Pause(time.Minute)
	read(&wg, 0)
	read(&wg, 1)
	require.Eventually(t, func() bool { return inFlightReads(c) == pipeMaxInFlight }, 10*time.Second, time.Millisecond,
		"lone reads again: two callers get two round trips")
	require.Zero(t, queuedReads(c))
	srv.Resume()
	wg.Wait()
}

func checkID(u user, id string) error {
	if u.ID != id {
		return fmt.Errorf("got %+v, want ID %q", u, id)
	}
	return nil
}

func queuedReads(c *Cache[user]) int {
	c.rd.pipe.mu.Lock()
	defer c.rd.pipe.mu.Unlock()
	return len(c.rd.pipe.queue)
}

func inFlightReads(c *Cache[user]) int {
	c.rd.pipe.mu.Lock()
	defer c.rd.pipe.mu.Unlock()
	return c.rd.pipe.inflight
}

// getsStarted counts the GETs a client starts, per key.
type getsStarted struct {
	mu sync.Mutex
	n  map[string]int
}

func (g *getsStarted) DialHook(next redis.DialHook) redis.DialHook { return next }
func (g *getsStarted) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "get" {
			g.mu.Lock()
			g.n[fmt.Sprint(cmd.Args()[1])]++
			g.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}
func (g *getsStarted) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (g *getsStarted) started(key string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n[key] > 0
}

// On Redis Cluster every master has its own pipe: reads stuck on a hung master do not hold up
// the reads of keys on the other masters (with one pipe for the Cache, two stuck reads filled
// the round trips allowed in flight and every other read queued behind them until they timed
// out).
func TestClusterHungMasterHoldsUpOnlyItsKeys(t *testing.T) {
	cl := redistest.Cluster(t, 3, 0)
	ctx := context.Background()
	rdb := cl.Client()
	c, err := New[user](rdb, &Options{Prefix: "pn:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })

	// Two keys on one master, one on another.
	var slowKeys []string
	var fastKey string
	slow := cl.MasterOf(c.valueKey("k0"))
	for i := 0; len(slowKeys) < 2 || fastKey == ""; i++ {
		require.Less(t, i, 1000)
		k := "k" + strconv.Itoa(i)
		if cl.MasterOf(c.valueKey(k)) == slow {
			if len(slowKeys) < 2 {
				slowKeys = append(slowKeys, k)
			}
		} else if fastKey == "" {
			fastKey = k
		}
	}
	for _, k := range append(slowKeys, fastKey) {
		require.NoError(t, c.Set(ctx, k, user{ID: k}))
		_, err := c.Get(ctx, k) // loads the cluster state into the client
		require.NoError(t, err)
	}
	gets := &getsStarted{n: map[string]int{}}
	rdb.AddHook(gets)

	slow.Pause(time.Minute)
	t.Cleanup(slow.Resume)
	var wg sync.WaitGroup
	var slowDone atomic.Int64
	for _, k := range slowKeys {
		wg.Go(func() {
			defer slowDone.Add(1)
			if err := getID(ctx, c, k); err != nil {
				t.Errorf("%s after the master resumed: %v", k, err)
			}
		})
		require.Eventually(t, func() bool { return gets.started(c.valueKey(k)) }, 10*time.Second, time.Millisecond)
	}
	u, err := c.Get(ctx, fastKey)
	require.NoError(t, err)
	require.Equal(t, fastKey, u.ID)
	require.Zero(t, slowDone.Load(), "the read of a key on another master must not wait for the hung one")
	slow.Resume()
	wg.Wait()
}

// blockReads holds the GETs of chosen keys and the first MGET until released, so a test can
// keep round trips in flight.
type blockReads struct {
	keys    map[string]chan struct{} // value key -> closed to release its GET
	mget    chan struct{}            // closed to release the first MGET
	mgetIn  chan struct{}            // closed when the first MGET arrived
	mgetOne sync.Once
}

func (h *blockReads) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *blockReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		switch cmd.Name() {
		case "get":
			if ch, ok := h.keys[fmt.Sprint(cmd.Args()[1])]; ok {
				<-ch
			}
		case "mget":
			first := false
			h.mgetOne.Do(func() { first = true })
			if first {
				close(h.mgetIn)
				<-h.mget
			}
		}
		return next(ctx, cmd)
	}
}
func (h *blockReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// usersCache returns a Cache with Prefix prefix over rdb, closed at cleanup, that holds
// user{ID: k} under each of keys.
func usersCache(t *testing.T, rdb redis.UniversalClient, prefix string, keys ...string) *Cache[user] {
	t.Helper()
	c, err := New[user](rdb, &Options{Prefix: prefix})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	for _, k := range keys {
		require.NoError(t, c.Set(context.Background(), k, user{ID: k}))
	}
	return c
}

// holdReads adds to rdb a blockReads that holds the GETs of keys (of c) and the first MGET.
func holdReads(rdb redis.UniversalClient, c *Cache[user], keys ...string) *blockReads {
	h := &blockReads{keys: map[string]chan struct{}{}, mget: make(chan struct{}), mgetIn: make(chan struct{})}
	for _, k := range keys {
		h.keys[c.valueKey(k)] = make(chan struct{})
	}
	rdb.AddHook(h)
	return h
}

// readsInFlight starts a read of each of keys (their GETs held, at most pipeMaxInFlight of them)
// and waits until they are all in flight, so that the reads after them queue. The reads'
// errors arrive on the channel it returns.
func readsInFlight(t *testing.T, ctx context.Context, c *Cache[user],
	read func(context.Context, *Cache[user], string) error, keys ...string) <-chan error {
	t.Helper()
	out := make(chan error, len(keys))
	for _, k := range keys {
		go func() { out <- read(ctx, c, k) }()
	}
	require.Eventually(t, func() bool { return inFlightReads(c) == len(keys) }, 10*time.Second, time.Millisecond)
	return out
}

// getID is Get that checks the value read is k's own.
func getID(ctx context.Context, c *Cache[user], k string) error {
	u, err := c.Get(ctx, k)
	if err == nil {
		err = checkID(u, k)
	}
	return err
}

// getErr is Get for its error alone.
func getErr(ctx context.Context, c *Cache[user], k string) error {
	_, err := c.Get(ctx, k)
	return err
}

// A read whose caller gives up while another caller sends its batch is filled later by that
// sender: its request must not serve another read meanwhile (requests are pooled), and the
// batch and the reads after it get their own values.
func TestReadAbandonedInASentBatchIsNotReused(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	rdb := srv.NewClient(nil)
	keys := []string{"a", "d", "b", "gone"}
	for i := range 40 {
		keys = append(keys, "x"+strconv.Itoa(i))
	}
	c := usersCache(t, rdb, "pipe:", keys...)
	h := holdReads(rdb, c, "a", "d")

	first := readsInFlight(t, ctx, c, getID, "a", "d")
	b, gone := make(chan error, 1), make(chan error, 1)
	go func() { b <- getID(ctx, c, "b") }()
	require.Eventually(t, func() bool { return queuedReads(c) == 1 }, 10*time.Second, time.Millisecond)
	cctx, cancel := context.WithCancel(ctx)
	go func() { gone <- getID(cctx, c, "gone") }()
	require.Eventually(t, func() bool { return queuedReads(c) == 2 }, 10*time.Second, time.Millisecond)
	close(h.keys[c.valueKey("a")]) // a returns: b sends the queue (b, gone) as one MGET, held
	<-h.mgetIn
	cancel()
	require.ErrorIs(t, <-gone, context.Canceled)

	// Reads that go on meanwhile take requests from the pool.
	close(h.keys[c.valueKey("d")])
	require.NoError(t, <-first)
	require.NoError(t, <-first)
	others := make(chan error, 40)
	for _, k := range keys[4:] {
		go func() { others <- getID(ctx, c, k) }()
	}
	close(h.mget)
	require.NoError(t, <-b)
	for range keys[4:] {
		require.NoError(t, <-others)
	}
}

// mgetSizes records the key count of every MGET a client sends, alone or in a pipeline.
type mgetSizes struct {
	mu    sync.Mutex
	sizes []int
}

// eachCmd is a redis.Hook that calls f with every command the client sends, alone or in a
// pipeline, before sending it.
type eachCmd func(cmd redis.Cmder)

func (f eachCmd) DialHook(next redis.DialHook) redis.DialHook { return next }
func (f eachCmd) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		f(cmd)
		return next(ctx, cmd)
	}
}
func (f eachCmd) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			f(cmd)
		}
		return next(ctx, cmds)
	}
}

// add records cmd's key count if it is an MGET (its hook: eachCmd(m.add)).
func (m *mgetSizes) add(cmd redis.Cmder) {
	if cmd.Name() == "mget" {
		m.mu.Lock()
		m.sizes = append(m.sizes, len(cmd.Args())-1)
		m.mu.Unlock()
	}
}

// A round trip of many keys (a large FetchMany) sends MGETs of at most mgetMaxKeys keys, so
// Redis serves other clients in between, and every key gets its own value or its load.
func TestLargeFetchManySplitsMGET(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	rdb := srv.NewClient(nil)
	c, err := New[user](rdb, &Options{Prefix: "mget:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	const n = 2*mgetMaxKeys + 88
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
		if i%100 != 7 { // every 100th key (from 7 on) is missing
			require.NoError(t, c.Set(ctx, keys[i], user{ID: keys[i]}))
		}
	}
	var sizes mgetSizes
	rdb.AddHook(eachCmd(sizes.add))
	var loaded []string
	got, err := c.FetchMany(ctx, keys, func(_ context.Context, ks []string) (map[string]user, error) {
		loaded = append(loaded, ks...)
		m := map[string]user{}
		for _, k := range ks {
			m[k] = user{ID: k, Name: "loaded"}
		}
		return m, nil
	})
	require.NoError(t, err)
	require.Len(t, got, n)
	for _, k := range keys {
		require.Equal(t, k, got[k].ID)
	}
	require.Len(t, loaded, (n+92)/100, "only the missing keys load")
	require.Equal(t, []int{mgetMaxKeys, mgetMaxKeys, 88}, sizes.sizes)
}

// Callers in a closed loop (each reads again as soon as it has its value, the way the served
// callers of a shared round trip send the next batch themselves), some giving up mid-read, and
// FetchMany batches in between: every read gets its own value or its own ctx's error, and once
// they are all done the pipe is idle (no round trip counted in flight, no hand-on pending), so
// the next read goes out at once.
func TestClosedLoopReadersLeaveThePipeIdle(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	c, err := New[user](srv.NewClient(nil), &Options{Prefix: "loop:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	const keys, readers, reads = 40, 16, 150
	for i := range keys {
		require.NoError(t, c.Set(ctx, strconv.Itoa(i), user{ID: strconv.Itoa(i)}))
	}
	bound, stop := context.WithTimeout(ctx, time.Minute) // a pipe that stalls fails, not hangs
	defer stop()
	var wg sync.WaitGroup
	for r := range readers {
		wg.Go(func() {
			for i := range reads {
				k := strconv.Itoa((r*7 + i) % keys)
				rctx, cancel := context.WithCancel(bound)
				if (r+i)%9 == 0 {
					cancel() // this caller gives up at once: queued, in a batch or never sent
				}
				u, err := c.Get(rctx, k)
				switch {
				case rctx.Err() != nil && bound.Err() == nil:
					// Its own ctx ended: an error is fine, a value must still be the right one.
					if err == nil && u.ID != k {
						t.Errorf("reader %d key %s: got %+v", r, k, u)
					}
				case err != nil || u.ID != k:
					t.Errorf("reader %d key %s: got %+v, %v", r, k, u, err)
				}
				cancel()
				if i%25 == 0 {
					ks := []string{k, strconv.Itoa((r + i + 1) % keys)}
					got, err := c.FetchMany(bound, ks, func(context.Context, []string) (map[string]user, error) {
						return nil, errors.New("loader called on a hit")
					})
					if err != nil || got[ks[0]].ID != ks[0] || got[ks[1]].ID != ks[1] {
						t.Errorf("reader %d FetchMany %v: got %v, %v", r, ks, got, err)
					}
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, bound.Err(), "the readers must finish well within the bound")
	requireReadsIdle(t, c)
}

// requireReadsIdle checks, once every read is done, that the pipe is idle (no round trip
// counted in flight, no hand-on pending, nothing queued), no GET stays joinable and nobody
// waits on one, and that the next read gets its value.
func requireReadsIdle(t *testing.T, c *Cache[user]) {
	t.Helper()
	p := &c.rd.pipe
	p.mu.Lock()
	inflight, returned, queued, out := p.inflight, p.returned, len(p.queue), p.out
	p.mu.Unlock()
	require.Zero(t, inflight, "no round trip may stay counted in flight")
	require.Zero(t, out, "no caller may stay counted as out")
	require.Zero(t, returned, "no hand-on may stay pending")
	require.Zero(t, queued)
	require.Zero(t, c.rd.waiting.Load())
	c.rd.mu.Lock()
	require.Empty(t, c.rd.m, "no GET may stay joinable")
	c.rd.mu.Unlock()
	u, err := c.Get(context.Background(), "1")
	require.NoError(t, err)
	require.Equal(t, "1", u.ID)
}

// A client with ContextTimeoutEnabled ends a round trip at its sender's deadline with an i/o
// timeout, not a ctx error. The other callers a shared round trip carried still have their
// ctx: they must read again for themselves (and get their values once Redis answers), not
// fail with the sender's timeout as if Redis were down.
func TestSenderDeadlineDoesNotFailTheReadsItCarries(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	rdb := srv.NewClient(&redis.Options{ContextTimeoutEnabled: true, ReadTimeout: time.Minute, MaxRetries: -1})
	c := usersCache(t, rdb, "pipe:", "a", "d", "s", "m")
	h := holdReads(rdb, c, "a", "d")

	first := readsInFlight(t, ctx, c, getID, "a", "d")
	// s queues first, so it sends the next batch (s, m); its deadline ends that round trip.
	sctx := &lateDeadline{Context: ctx}
	s, m := make(chan error, 1), make(chan error, 1)
	go func() { s <- getID(sctx, c, "s") }()
	require.Eventually(t, func() bool { return queuedReads(c) == 1 }, 10*time.Second, time.Millisecond)
	go func() { m <- getID(ctx, c, "m") }()
	require.Eventually(t, func() bool { return queuedReads(c) == 2 }, 10*time.Second, time.Millisecond)
	close(h.keys[c.valueKey("a")]) // a returns: s sends (s, m) as one MGET, held
	<-h.mgetIn
	srv.Pause(time.Minute)
	t.Cleanup(srv.Resume)
	sctx.set(100 * time.Millisecond)
	close(h.mget) // the MGET reaches the paused server and times out at s's deadline
	require.Error(t, <-s, "s's own deadline ends its read")
	srv.Resume()
	require.NoError(t, <-m, "m's ctx is alive: the sender's timeout is not m's")
	close(h.keys[c.valueKey("d")])
	require.NoError(t, <-first)
	require.NoError(t, <-first)
}

// lateDeadline is a ctx whose deadline the test sets once the round trip it sends is out, so a
// busy machine cannot end it before (its Done never closes: only the deadline a client with
// ContextTimeoutEnabled puts on its connection ends the round trip).
type lateDeadline struct {
	context.Context
	d atomic.Pointer[time.Time]
}

func (l *lateDeadline) set(in time.Duration) {
	d := time.Now().Add(in)
	l.d.Store(&d)
}

func (l *lateDeadline) Deadline() (time.Time, bool) {
	if d := l.d.Load(); d != nil {
		return *d, true
	}
	return time.Time{}, false
}

// The same for a reader that joined another caller's GET of the key: the GET's deadline is not
// the joiner's.
func TestJoinedGETOwnersDeadlineIsNotTheJoiners(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	rdb := srv.NewClient(&redis.Options{ContextTimeoutEnabled: true, ReadTimeout: time.Minute, MaxRetries: -1})
	c := usersCache(t, rdb, "join:", "k")
	h := &blockReads{keys: map[string]chan struct{}{c.valueKey("k"): make(chan struct{})}}
	rdb.AddHook(h)

	octx := &lateDeadline{Context: ctx}
	owner, joiner := make(chan error, 1), make(chan error, 1)
	go func() { owner <- getErr(octx, c, "k") }()
	require.Eventually(t, func() bool { return inFlightReads(c) == 1 }, 10*time.Second, time.Millisecond)
	go func() { joiner <- getID(ctx, c, "k") }()
	require.Eventually(t, func() bool { return c.rd.waiting.Load() == 1 }, 10*time.Second, time.Millisecond)
	srv.Pause(time.Minute)
	t.Cleanup(srv.Resume)
	octx.set(100 * time.Millisecond)
	close(h.keys[c.valueKey("k")]) // the GET reaches the paused server and times out at the owner's deadline
	require.Error(t, <-owner, "the owner's deadline ends its GET")
	srv.Resume()
	require.NoError(t, <-joiner, "the joiner's ctx is alive: the owner's timeout is not the joiner's")
}

// When the sender of a shared round trip gives up while it is out, its callers whose ctx is
// alive read again: a FetchMany's keys go again in one round trip, not one GET after another
// (600 keys were 600 round trips in a row).
func TestReadsOfAGivenUpRoundTripGoAgainTogether(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	rdb := srv.NewClient(nil)
	many := make([]string, 10)
	for i := range many {
		many[i] = "m" + strconv.Itoa(i)
	}
	c := usersCache(t, rdb, "pipe:", append([]string{"a", "d", "x"}, many...)...)
	h := holdReads(rdb, c, "a", "d")
	gets := &getsStarted{n: map[string]int{}}
	rdb.AddHook(gets)

	first := readsInFlight(t, ctx, c, getErr, "a", "d")
	xctx, cancel := context.WithCancel(ctx)
	x := make(chan error, 1)
	go func() { x <- getErr(xctx, c, "x") }()
	require.Eventually(t, func() bool { return queuedReads(c) == 1 }, 10*time.Second, time.Millisecond)
	type result struct {
		got map[string]user
		err error
	}
	fm := make(chan result, 1)
	go func() {
		got, err := c.FetchMany(ctx, many, func(context.Context, []string) (map[string]user, error) {
			return nil, errors.New("loader called on a hit")
		})
		fm <- result{got, err}
	}()
	require.Eventually(t, func() bool { return queuedReads(c) == 2 }, 10*time.Second, time.Millisecond)
	close(h.keys[c.valueKey("a")]) // a returns: x sends (x, many) as one MGET, held
	<-h.mgetIn
	cancel() // x gives up while its round trip is out: it fails for everyone in it
	close(h.mget)
	require.ErrorIs(t, <-x, context.Canceled)
	r := <-fm
	require.NoError(t, r.err)
	for _, k := range many {
		require.Equal(t, k, r.got[k].ID)
		require.False(t, gets.started(c.valueKey(k)), "%s: the keys go again in one round trip, not a GET each", k)
	}
	close(h.keys[c.valueKey("d")])
	require.NoError(t, <-first)
	require.NoError(t, <-first)
}

// A caller whose ctx has already ended sends nothing: it must not take the queued reads of
// others with it into a round trip that fails at once (each of them then paid a round trip of
// its own instead of sharing the next one).
func TestEndedCallerTakesNoQueuedReads(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	rdb := srv.NewClient(nil)
	many := []string{"m0", "m1", "m2"}
	c := usersCache(t, rdb, "pipe:", append([]string{"a", "x"}, many...)...)
	h := holdReads(rdb, c, "a")
	close(h.mget) // MGETs are not held
	setAvg := func(v int) {
		c.rd.pipe.mu.Lock()
		c.rd.pipe.avgBatch = v
		c.rd.pipe.mu.Unlock()
	}

	first := readsInFlight(t, ctx, c, getErr, "a")
	setAvg(pipeShared) // callers share round trips: one in flight, the FetchMany queues
	fm := make(chan error, 1)
	go func() {
		got, err := c.FetchMany(ctx, many, func(context.Context, []string) (map[string]user, error) {
			return nil, errors.New("loader called on a hit")
		})
		for _, k := range many {
			err = errors.Join(err, checkID(got[k], k))
		}
		fm <- err
	}()
	require.Eventually(t, func() bool { return queuedReads(c) == 1 }, 10*time.Second, time.Millisecond)
	setAvg(0) // reads go alone again: a second round trip may start
	xctx, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, getErr(xctx, c, "x"), context.Canceled)
	require.Equal(t, 1, queuedReads(c), "the FetchMany waits for the round trip in flight, not sent on an ended ctx")
	close(h.keys[c.valueKey("a")])
	require.NoError(t, <-first)
	require.NoError(t, <-fm)
}

// panicReads panics, once released, in the first read (a GET, or an MGET) of key it sees: a
// buggy hook of the caller's Redis client.
type panicReads struct {
	key     string
	in      chan struct{} // closed when that read arrived
	release chan struct{}
	once    sync.Once
}

func (h *panicReads) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *panicReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n == "get" || n == "mget" {
			for _, a := range cmd.Args()[1:] {
				fire := false
				if a == h.key {
					h.once.Do(func() { fire = true })
				}
				if fire {
					close(h.in)
					<-h.release
					panic("a buggy hook")
				}
			}
		}
		return next(ctx, cmd)
	}
}
func (h *panicReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// getRecovering is Get that reports a panic as an error.
func getRecovering(ctx context.Context, c *Cache[user], k string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return getID(ctx, c, k)
}

// A panic in the Redis client (a hook of the caller's) while it reads for several callers must
// not wedge the reads: the callers it carried and those who joined its GET end with an error at
// once instead of at the end of their ctx, and the pipe goes on (a panic recovered by an HTTP
// server left a round trip counted in flight for good, and the key's GET joinable for good).
func TestRedisClientPanicDoesNotWedgeReads(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	rdb := srv.NewClient(nil)
	c := usersCache(t, rdb, "pipe:", "a", "d", "boom", "m", "boom2")
	bound, stop := context.WithTimeout(ctx, time.Minute) // the others' patience
	defer stop()

	// A lone GET, which another reader joined.
	p := &panicReads{key: c.valueKey("boom"), in: make(chan struct{}), release: make(chan struct{})}
	rdb.AddHook(p)
	owner, joiner := make(chan error, 1), make(chan error, 1)
	go func() { owner <- getRecovering(ctx, c, "boom") }()
	<-p.in
	go func() { joiner <- getRecovering(bound, c, "boom") }()
	require.Eventually(t, func() bool { return c.rd.waiting.Load() == 1 }, 10*time.Second, time.Millisecond)
	close(p.release)
	require.Error(t, <-owner)
	err := <-joiner
	require.Error(t, err)
	require.NotErrorIs(t, err, context.DeadlineExceeded, "the joiner must not wait for its ctx to end")
	require.Zero(t, inFlightReads(c), "the panicked GET must not stay counted in flight")
	require.NoError(t, getRecovering(ctx, c, "boom"))

	// A shared round trip.
	h := holdReads(rdb, c, "a", "d")
	close(h.mget)
	p2 := &panicReads{key: c.valueKey("boom2"), in: make(chan struct{}), release: make(chan struct{})}
	close(p2.release)
	rdb.AddHook(p2)
	first := readsInFlight(t, ctx, c, getRecovering, "a", "d")
	sender, member := make(chan error, 1), make(chan error, 1)
	go func() { sender <- getRecovering(ctx, c, "boom2") }()
	require.Eventually(t, func() bool { return queuedReads(c) == 1 }, 10*time.Second, time.Millisecond)
	go func() { member <- getRecovering(bound, c, "m") }()
	require.Eventually(t, func() bool { return queuedReads(c) == 2 }, 10*time.Second, time.Millisecond)
	close(h.keys[c.valueKey("a")]) // a returns: boom2 sends (boom2, m), which panics
	require.Error(t, <-sender)
	err = <-member
	require.Error(t, err)
	require.NotErrorIs(t, err, context.DeadlineExceeded, "a caller carried by the round trip must not wait for its ctx to end")
	close(h.keys[c.valueKey("d")])
	require.NoError(t, <-first)
	require.NoError(t, <-first)
	require.Zero(t, inFlightReads(c), "the pipe goes idle")
	require.NoError(t, getRecovering(ctx, c, "m"))
}

// A queued caller handed the next batch just as its ctx ends does not send it on that ended
// ctx (the round trip would fail at once for every caller in it, each then paying a round trip
// of its own): it hands the batch on to the next caller waiting in it.
func TestCallerHandedABatchAfterItsCtxEndedHandsItOn(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	rdb := srv.NewClient(nil)
	many := []string{"hand:m0", "hand:m1", "hand:m2"}
	for _, k := range append([]string{"hand:x"}, many...) {
		require.NoError(t, rdb.Set(ctx, k, k, 0).Err())
	}
	var sizes mgetSizes
	rdb.AddHook(eachCmd(sizes.add))
	p := &pipe{}
	queued := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.queue)
	}
	p.mu.Lock()
	p.inflight = pipeMaxInFlight // two round trips out: the reads below queue
	p.mu.Unlock()

	xctx, cancel := context.WithCancel(ctx)
	x := make(chan error, 1)
	go func() { _, err := p.getOne(xctx, rdb, "hand:x"); x <- err }()
	require.Eventually(t, func() bool { return queued() == 1 }, 10*time.Second, time.Millisecond)
	type result struct {
		vals [][]byte
		errs []error
	}
	m := make(chan result, 1)
	go func() { vals, errs := p.get(ctx, rdb, many); m <- result{vals, errs} }()
	require.Eventually(t, func() bool { return queued() == 2 }, 10*time.Second, time.Millisecond)
	p.mu.Lock()
	cancel()         // x's ctx ends while it waits; x cannot act on it before the hand-on below
	p.handOnLocked() // a round trip returns: (x, many) is handed to x
	require.ErrorIs(t, <-x, context.Canceled)
	r := <-m
	for i, k := range many {
		require.NoError(t, r.errs[i])
		require.Equal(t, k, string(r.vals[i]))
	}
	require.Equal(t, []int{len(many)}, sizes.sizes, "many's keys go in one MGET, x's not at all")
	p.handOn(0) // the other round trip (set up above, carrying no caller) returns
	p.mu.Lock()
	defer p.mu.Unlock()
	require.Zero(t, p.inflight)
	require.Zero(t, p.out, "x, which gave up, and many are no longer counted out")
	require.Empty(t, p.queue)
}

// Callers in a closed loop giving up at any point (cancelled at once, cancelled by another
// goroutine a few yields later, short deadlines that a client with ContextTimeoutEnabled
// enforces on the connection itself), with FetchMany batches in between: a read whose ctx is
// alive always gets its own value (a sender's end is never its callers'), any read gets its own
// value or its own ctx's end, and once they are all done the pipe is idle.
func TestReadersGivingUpAtAnyPoint(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	rdb := srv.NewClient(&redis.Options{ContextTimeoutEnabled: true, PoolSize: 32})
	c, err := New[user](rdb, &Options{Prefix: "giveup:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	const keys, readers, reads = 30, 16, 120
	for i := range keys {
		require.NoError(t, c.Set(ctx, strconv.Itoa(i), user{ID: strconv.Itoa(i)}))
	}
	ended := func(cctx context.Context) bool {
		d, ok := cctx.Deadline()
		return cctx.Err() != nil || ok && !time.Now().Before(d)
	}
	bound, stop := context.WithTimeout(ctx, time.Minute) // a pipe that stalls fails, not hangs
	defer stop()
	var wg sync.WaitGroup
	for r := range readers {
		wg.Go(func() {
			for i := range reads {
				k := strconv.Itoa((r*7 + i) % keys)
				rctx, cancel := context.WithCancel(bound)
				switch (r + i) % 6 {
				case 1:
					cancel()
				case 2, 3:
					go func() {
						for range (r + i) % 4 {
							runtime.Gosched()
						}
						cancel()
					}()
				case 4:
					rctx, cancel = context.WithTimeout(bound, time.Duration(20+(r*31+i*17)%400)*time.Microsecond)
				}
				u, err := c.Get(rctx, k)
				switch {
				case err == nil && u.ID != k:
					t.Errorf("reader %d key %s: got %+v", r, k, u)
				case err != nil && (!ended(rctx) || bound.Err() != nil):
					t.Errorf("reader %d key %s, ctx alive: %v", r, k, err)
				}
				cancel()
				if i%20 == 0 {
					ks := []string{k, strconv.Itoa((r + i + 1) % keys), strconv.Itoa((r + i + 2) % keys)}
					got, err := c.FetchMany(bound, ks, func(context.Context, []string) (map[string]user, error) {
						return nil, errors.New("loader called on a hit")
					})
					if err != nil || got[ks[0]].ID != ks[0] || got[ks[1]].ID != ks[1] || got[ks[2]].ID != ks[2] {
						t.Errorf("reader %d FetchMany %v: got %v, %v", r, ks, got, err)
					}
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, bound.Err(), "the readers must finish well within the bound")
	requireReadsIdle(t, c)
}

// keyReads counts the reads of one value key (in GETs and MGETs, alone or pipelined) and holds
// its first GETs, the i-th until holds[i] closes. Its hook is eachCmd(h.see).
type keyReads struct {
	key   string
	holds []chan struct{}
	gets  atomic.Int64
	seen  atomic.Int64
}

func (h *keyReads) see(cmd redis.Cmder) {
	if n := cmd.Name(); n == "get" || n == "mget" {
		for _, a := range cmd.Args()[1:] {
			if a == h.key {
				h.seen.Add(1)
			}
		}
	}
	if cmd.Name() == "get" && cmd.Args()[1] == h.key {
		if i := int(h.gets.Add(1)) - 1; i < len(h.holds) {
			<-h.holds[i]
		}
	}
}

// When the reader whose GET others joined gives up, the joiners whose ctx is alive share one
// GET again instead of each reading the key (a hot key read by a thousand callers, whose
// owner's client went away, was read a thousand times in one MGET, its value a thousand
// times in the reply).
func TestJoinersOfAGivenUpGETShareTheNextOne(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	rdb := srv.NewClient(nil)
	c := usersCache(t, rdb, "rejoin:", "k")
	h := &keyReads{key: c.valueKey("k"), holds: []chan struct{}{make(chan struct{}), make(chan struct{})}}
	rdb.AddHook(eachCmd(h.see))

	octx, cancel := context.WithCancel(ctx)
	owner := make(chan error, 1)
	go func() { owner <- getErr(octx, c, "k") }()
	require.Eventually(t, func() bool { return h.gets.Load() == 1 }, 10*time.Second, time.Millisecond)
	const joiners = 4
	joined := make(chan error, joiners)
	for range joiners {
		go func() { joined <- getID(ctx, c, "k") }()
	}
	require.Eventually(t, func() bool { return c.rd.waiting.Load() == joiners }, 10*time.Second, time.Millisecond)
	cancel()
	close(h.holds[0]) // the owner's GET fails with its ctx's end
	require.ErrorIs(t, <-owner, context.Canceled)
	require.Eventually(t, func() bool { return c.rd.waiting.Load() == joiners-1 }, 10*time.Second, time.Millisecond,
		"one joiner reads again, the others join it")
	close(h.holds[1])
	for range joiners {
		require.NoError(t, <-joined)
	}
	require.EqualValues(t, 2, h.seen.Load(), "the key is read twice: the owner's GET and the joiners' one")
}

// Once many callers keep the pipe busy (pipeOverlap), two round trips are in flight, but the
// second leaves only with about half of the callers (secondAt), and a returned sender leaves
// fewer queued reads than that to the other round trip's end instead of sending them: the
// callers never split into round trips of a read or two.
func TestSecondRoundTripCarriesHalfTheCallers(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	rdb := srv.NewClient(nil)
	p := &pipe{}
	p.mu.Lock()
	p.inflight = 1      // a round trip of other callers is out
	p.avgBatch = 8 * 16 // callers share round trips...
	p.avgOut = 16 * 16  // ...and 16 of them keep the pipe busy
	require.Equal(t, 2, p.limitLocked())
	second := p.secondAtLocked()
	p.mu.Unlock()
	require.Greater(t, second, 16/2-1, "the second round trip waits for about half the callers")
	require.Less(t, second, 16, "the second round trip does not wait for every caller")

	keys := make([]string, second+1)
	for i := range keys {
		keys[i] = "half:" + strconv.Itoa(i)
		require.NoError(t, rdb.Set(ctx, keys[i], keys[i], 0).Err())
	}
	var sizes mgetSizes
	mgetIn, release := make(chan struct{}), make(chan struct{})
	rdb.AddHook(eachCmd(func(cmd redis.Cmder) {
		sizes.add(cmd)
		if cmd.Name() == "mget" {
			close(mgetIn)
			<-release
		}
	}))
	state := func() (inflight, queued int) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.inflight, len(p.queue)
	}
	read := func(k string) chan error {
		done := make(chan error, 1)
		go func() {
			b, err := p.getOne(ctx, rdb, k)
			if err == nil && string(b) != k {
				err = fmt.Errorf("read %q, got %q", k, b)
			}
			done <- err
		}()
		return done
	}
	var group []chan error
	for i, k := range keys[:second-1] {
		group = append(group, read(k))
		require.Eventually(t, func() bool { _, q := state(); return q == i+1 }, 10*time.Second, time.Millisecond)
	}
	inflight, _ := state()
	require.Equal(t, 1, inflight, "fewer reads do not start the second round trip")
	group = append(group, read(keys[second-1])) // this one sends them all in one MGET
	<-mgetIn
	x := read(keys[second])
	require.Eventually(t, func() bool { _, q := state(); return q == 1 }, 10*time.Second, time.Millisecond)
	close(release)
	for _, done := range group {
		require.NoError(t, <-done)
	}
	// The sender of the MGET returns and leaves x to the other round trip.
	require.Eventually(t, func() bool { n, _ := state(); return n == 1 }, 10*time.Second, time.Millisecond)
	_, queued := state()
	require.Equal(t, 1, queued, "x waits for the other round trip's end")
	select {
	case err := <-x:
		t.Fatalf("x was read before the other round trip ended: %v", err)
	default:
	}
	p.handOn(0) // the other round trip (set up above, carrying no caller) returns: x goes
	require.NoError(t, <-x)
	require.Equal(t, []int{second}, sizes.sizes, "one MGET of the group; x alone is a GET")
	p.mu.Lock()
	defer p.mu.Unlock()
	require.Zero(t, p.inflight)
	require.Zero(t, p.out)
	require.Empty(t, p.queue)
}

// The pipe alone under 24 closed-loop callers, enough to keep two shared round trips in flight
// (pipeOverlap) most of the time, while callers give up at every point, FetchMany-sized reads
// mix with single ones and the client panics now and then (a hook): every read returns its own
// key's value, or its own ctx's end, or the panic; and the pipe ends idle, nobody counted out.
func TestPipeStressWithTwoRoundTripsInFlight(t *testing.T) {
	srv := redistest.Server(t)
	ctx := context.Background()
	rdb := srv.NewClient(&redis.Options{ContextTimeoutEnabled: true, PoolSize: 64})
	const keys, readers, reads = 50, 24, 300
	for i := range keys {
		require.NoError(t, rdb.Set(ctx, "k"+strconv.Itoa(i), "k"+strconv.Itoa(i), 0).Err())
	}
	var cmds atomic.Int64
	rdb.AddHook(eachCmd(func(redis.Cmder) {
		if cmds.Add(1)%97 == 0 {
			panic("a buggy hook")
		}
	}))
	ended := func(cctx context.Context) bool {
		d, ok := cctx.Deadline()
		return cctx.Err() != nil || ok && !time.Now().Before(d)
	}
	p := &pipe{}
	bound, stop := context.WithTimeout(ctx, time.Minute) // a pipe that stalls fails, not hangs
	defer stop()
	var wg sync.WaitGroup
	for r := range readers {
		wg.Go(func() {
			for i := range reads {
				ks := []string{"k" + strconv.Itoa((r*7+i)%keys)}
				if i%13 == 0 {
					ks = append(ks, "k"+strconv.Itoa((r+i+1)%keys))
				}
				rctx, cancel := context.WithCancel(bound)
				switch (r + i) % 11 {
				case 1:
					cancel()
				case 2:
					go func() { runtime.Gosched(); cancel() }()
				case 3:
					rctx, cancel = context.WithTimeout(bound, time.Duration(20+(r*31+i*17)%400)*time.Microsecond)
				}
				var vals [][]byte
				var errs []error
				if len(ks) == 1 {
					b, err := p.getOne(rctx, rdb, ks[0])
					vals, errs = [][]byte{b}, []error{err}
				} else {
					vals, errs = p.get(rctx, rdb, ks)
				}
				for j, k := range ks {
					switch err := errs[j]; {
					case err == nil && string(vals[j]) != k:
						t.Errorf("reader %d read %q, got %q", r, k, vals[j])
					case err != nil && !ended(rctx) && !strings.Contains(err.Error(), "a buggy hook"):
						t.Errorf("reader %d read %q, ctx alive: %v", r, k, err)
					}
				}
				cancel()
			}
		})
	}
	wg.Wait()
	require.NoError(t, bound.Err(), "the readers must finish well within the bound")
	p.mu.Lock()
	defer p.mu.Unlock()
	require.Zero(t, p.inflight, "no round trip may stay counted in flight")
	require.Zero(t, p.out, "no caller may stay counted as out")
	require.Zero(t, p.returned, "no hand-on may stay pending")
	require.Empty(t, p.queue)
}
