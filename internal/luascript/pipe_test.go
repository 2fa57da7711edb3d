package luascript_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/luascript"
	"github.com/surgekit/surge/internal/redistest"
)

// eventually polls cond every millisecond for at most 10 s.
func eventually(t *testing.T, cond func() bool, msg string, args ...any) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, time.Millisecond, fmt.Sprintf(msg, args...))
}

// pausable returns a real server and a client of it that waits out a paused server.
func pausable(t *testing.T) (*redistest.RedisServer, *redis.Client) {
	srv := redistest.Server(t)
	rdb := srv.NewClient(&redis.Options{MaxRetries: -1, ContextTimeoutEnabled: true, ReadTimeout: 20 * time.Second})
	// Connect and load the script before the server is paused.
	require.NoError(t, incrBy.Run(context.Background(), rdb, []string{"warm"}, 1).Err())
	return srv, rdb
}

// batchOnWire pauses a real server with call "a" (incr by 1) in flight on its own through a new
// Pipe and call "b" (incr by 1) sent behind it in the Pipe's first batch, so the next calls
// queue; the answers of a, b and the calls the test adds go to out, with room for n.
func batchOnWire(t *testing.T, n int) (*redistest.RedisServer, *redis.Client, *luascript.Pipe, chan string) {
	srv, rdb := pausable(t)
	p := luascript.NewPipe(rdb)
	ctx := context.Background()
	out := make(chan string, n)
	srv.Pause(20 * time.Second)
	incr(p, ctx, "a", 1, out) // direct, in flight
	eventually(t, func() bool { return p.InFlight() == 1 }, "a is in flight")
	incr(p, ctx, "b", 1, out) // queues; the flusher sends it at once, as a batch
	eventually(t, func() bool { return p.Stats().Batches == 1 }, "b's batch is on the wire")
	return srv, rdb, p, out
}

// incr runs incrBy through p in a goroutine and sends its answer (or error) to out.
func incr(p *luascript.Pipe, ctx context.Context, key string, by int, out chan<- string) {
	go func() {
		n, err := p.Run(ctx, incrBy, []string{key}, by).Int64()
		if err != nil {
			out <- key + ": " + err.Error()
			return
		}
		out <- key + "=" + strconv.FormatInt(n, 10)
	}()
}

func TestPipeLoneCallerGoesDirect(t *testing.T) {
	_, rdb := redistest.Mini(t)
	p := luascript.NewPipe(rdb)
	for i := range 5 {
		n, err := p.Run(context.Background(), incrBy, []string{"k"}, 2).Int64()
		require.NoError(t, err)
		require.EqualValues(t, 2*(i+1), n)
	}
	require.Equal(t, luascript.PipeStats{Direct: 5}, p.Stats(), "one caller at a time: nothing queues")
}

// TestPipeConcurrentCallsShareRoundTrips: while one call is in flight on a paused server, ten
// more queue; they leave in at most two batches (whatever had queued when the flusher started,
// then the rest), and each caller gets its own answer.
func TestPipeConcurrentCallsShareRoundTrips(t *testing.T) {
	srv, rdb := pausable(t)
	p := luascript.NewPipe(rdb)
	ctx := context.Background()
	out := make(chan string, 11)
	srv.Pause(20 * time.Second)
	incr(p, ctx, "first", 1, out)
	eventually(t, func() bool { return p.InFlight() == 1 }, "the first call is in flight")
	want := []string{"first=1"}
	for i := range 10 {
		key := "k" + strconv.Itoa(i)
		incr(p, ctx, key, i+1, out)
		want = append(want, fmt.Sprintf("%s=%d", key, i+1))
	}
	eventually(t, func() bool { return p.Queued() == 10 }, "10 callers queue")
	srv.Resume()
	var got []string
	for range 11 {
		got = append(got, <-out)
	}
	require.ElementsMatch(t, want, got)
	st := p.Stats()
	require.EqualValues(t, 1, st.Direct)
	require.EqualValues(t, 10, st.Batched)
	require.LessOrEqual(t, st.Batches, uint64(2), "10 queued calls in %d round trips", st.Batches)
	require.Zero(t, st.Dropped)
}

// TestPipeQueuedCallerCtxEndsSendsNothing: a call queued behind a batch on the wire returns its
// ctx error when its ctx ends, and its script never runs.
func TestPipeQueuedCallerCtxEndsSendsNothing(t *testing.T) {
	srv, rdb, p, out := batchOnWire(t, 2)
	ctx := context.Background()
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := p.Run(cctx, incrBy, []string{"c"}, 100).Err()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.EqualValues(t, 1, p.Stats().Dropped)

	srv.Resume()
	require.ElementsMatch(t, []string{"a=1", "b=1"}, []string{<-out, <-out})
	eventually(t, func() bool { return p.Queued() == 0 }, "the flusher is done")
	require.ErrorIs(t, rdb.Get(ctx, "c").Err(), redis.Nil, "the dropped call never ran")
	st := p.Stats()
	require.EqualValues(t, 1, st.Batched, "only b went out in a batch")
	require.EqualValues(t, 1, st.Batches)
}

// lateCtx is a ctx whose deadline has passed but whose Done has not fired yet, as on a loaded
// machine where the caller's timer, or the caller itself, has not run yet.
type lateCtx struct {
	context.Context
	done chan struct{}
}

func (c lateCtx) Deadline() (time.Time, bool) { return time.Now().Add(-time.Second), true }
func (c lateCtx) Done() <-chan struct{}       { return c.done }
func (c lateCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// TestPipeCallWhoseCtxEndedIsNotSent: a queued call whose ctx has ended by the time the flusher
// builds its batch is not sent, even when its caller has not yet run to notice, and the flusher
// answers it with the ctx's error; the calls queued with it still go.
func TestPipeCallWhoseCtxEndedIsNotSent(t *testing.T) {
	srv, rdb, p, out := batchOnWire(t, 4)
	ctx := context.Background()
	late := lateCtx{Context: ctx, done: make(chan struct{})}
	incr(p, late, "late", 1, out)
	incr(p, ctx, "c", 1, out)
	eventually(t, func() bool { return p.Queued() == 3 }, "b, late and c wait")

	defer close(late.done)
	srv.Resume()
	// The late caller is answered by the flusher, though its ctx's Done never fired.
	require.ElementsMatch(t, []string{"a=1", "b=1", "c=1", "late: " + context.DeadlineExceeded.Error()},
		[]string{<-out, <-out, <-out, <-out})
	require.ErrorIs(t, rdb.Get(ctx, "late").Err(), redis.Nil, "the late call never ran")
	require.EqualValues(t, 1, p.Stats().Dropped)
	eventually(t, func() bool { return p.Queued() == 0 }, "every caller returned")
}

// evalCalls returns how many script calls each node ran, by address.
func evalCalls(t *testing.T, nodes []*redistest.RedisServer) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, n := range nodes {
		info, err := n.Client().Info(context.Background(), "commandstats").Result()
		require.NoError(t, err)
		for line := range strings.Lines(info) {
			for _, name := range []string{"cmdstat_evalsha:", "cmdstat_eval:"} {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+"calls="); ok {
					c, _, _ := strings.Cut(v, ",")
					k, err := strconv.Atoi(c)
					require.NoError(t, err)
					out[n.Addr()] += k
				}
			}
		}
	}
	return out
}

// TestPipeClusterSplitsPerNode: on a cluster client a batch is split per node; every call runs
// once, on the master of its key, and gets its own answer.
func TestPipeClusterSplitsPerNode(t *testing.T) {
	c := redistest.Cluster(t, 3, 0)
	// A client that waits out paused masters (the shared one gives up after 3s, which a loaded
	// CI machine can reach before every caller has queued).
	var addrs []string
	for _, n := range c.Nodes() {
		addrs = append(addrs, n.Addr())
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, MaxRetries: -1,
		ContextTimeoutEnabled: true, ReadTimeout: 30 * time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	keys := make([]string, 60)
	perNode := map[string]int{}
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
		perNode[c.MasterOf(keys[i]).Addr()]++
	}
	require.Len(t, perNode, 3, "the keys reach every master")
	// Load the script on every master and learn the slots.
	for _, k := range keys {
		require.NoError(t, incrBy.Run(ctx, rdb, []string{k}, 0).Err())
	}
	before := evalCalls(t, c.Nodes())

	// Every master paused holds the first call in flight and any batch sent meanwhile, so the
	// rest queue and leave in at most two batches spanning all three masters. (Pausing one
	// master alone would let the others declare it failed after the cluster's node timeout and
	// answer CLUSTERDOWN; redistest now sets that timeout long for clusters without replicas.)
	p := luascript.NewPipe(rdb)
	out := make(chan string, len(keys))
	for _, n := range c.Nodes() {
		n.Pause(20 * time.Second)
	}
	incr(p, ctx, keys[0], 1, out)
	eventually(t, func() bool { return p.InFlight() == 1 }, "the first call is in flight")
	var wg sync.WaitGroup
	for _, k := range keys[1:] {
		wg.Go(func() {
			n, err := p.Run(ctx, incrBy, []string{k}, 1).Int64()
			if err != nil {
				out <- k + ": " + err.Error()
				return
			}
			out <- k + "=" + strconv.FormatInt(n, 10)
		})
	}
	eventually(t, func() bool { return p.Queued() == len(keys)-1 }, "%d callers queue", len(keys)-1)
	for _, n := range c.Nodes() {
		n.Resume()
	}
	wg.Wait()
	want := make([]string, len(keys))
	got := make([]string, len(keys))
	for i, k := range keys {
		want[i] = k + "=1"
		got[i] = <-out
	}
	require.ElementsMatch(t, want, got)
	st := p.Stats()
	require.EqualValues(t, len(keys)-1, st.Batched)
	require.LessOrEqual(t, st.Batches, uint64(2))

	after := evalCalls(t, c.Nodes())
	for addr, n := range perNode {
		require.Equal(t, n, after[addr]-before[addr], "node %s ran the calls of its own keys, once each", addr)
	}
}
