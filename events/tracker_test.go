package events

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// bareConsumer is a Consumer whose dispatch state works without a client or Run.
func bareConsumer(t *testing.T) *Consumer {
	c, err := NewConsumer(ConsumerConfig{Brokers: []string{"b:1"}, Group: "g", Topics: []string{"t"},
		Handler: func(context.Context, Event) error { return nil }})
	require.NoError(t, err)
	c.work = sync.NewCond(&c.mu)
	c.hctx, c.hcancel = context.WithCancel(context.Background())
	t.Cleanup(c.hcancel)
	c.inl.until = time.Now().Add(time.Hour) // these tests are about the workers' queues: no inline handling
	return c
}

// keyedPart adds partition t/0 with n records of key "k" at offsets 0 to n-1; c.mu is held.
func keyedPart(c *Consumer, n int64) *part {
	p := c.newPart(tp{"t", 0})
	for off := range n {
		c.enqueue(p, &kgo.Record{Topic: "t", Offset: off, Key: []byte("k")}, [16]byte{})
	}
	return p
}

// takeNext takes the first ready key out of line and its run, as a worker would; c.mu is held.
func takeNext(c *Consumer) (*keyQueue, []item) {
	q := c.ready[0]
	c.ready = c.ready[1:]
	return q, c.take(q)
}

// twoPartitions is one fetch of topic t: n0 records of partition 0 and n1 of partition 1, each
// from offset first on, their keys alternating "a" and "b".
func twoPartitions(first int64, n0, n1 int) kgo.Fetches {
	recs := func(part int32, n int) []*kgo.Record {
		out := make([]*kgo.Record, n)
		for i := range out {
			out[i] = &kgo.Record{Topic: "t", Partition: part, Offset: first + int64(i), Key: []byte{byte('a' + i%2)}}
		}
		return out
	}
	return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "t", Partitions: []kgo.FetchPartition{
		{Partition: 0, Records: recs(0, n0)}, {Partition: 1, Records: recs(1, n1)}}}}}}
}

func TestCommitPointCoversOnlyContiguousDoneOffsets(t *testing.T) {
	c := bareConsumer(t)
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.newPart(tp{"t", 0})
	// Offsets with holes, as compaction and transaction markers leave them.
	for i, off := range []int64{10, 11, 13, 17, 18} {
		c.enqueue(p, &kgo.Record{Topic: "t", Offset: off, LeaderEpoch: int32(i), Key: []byte{byte('a' + i)}}, [16]byte{})
	}
	require.Equal(t, 5, c.buffered)
	require.Len(t, c.ready, 5, "five keys, all ready at once")

	c.markDone(p, 2) // offset 13
	c.markDone(p, 4) // offset 18
	require.EqualValues(t, -1, p.commit.Offset, "nothing before 10 is done")
	c.markDone(p, 0) // offset 10
	require.EqualValues(t, 11, p.commit.Offset)
	c.markDone(p, 1) // offset 11: 13 was done already
	require.EqualValues(t, 14, p.commit.Offset)
	require.EqualValues(t, 2, p.commit.Epoch, "the epoch of the last record covered")
	c.markDone(p, 3)
	require.EqualValues(t, 19, p.commit.Offset)
	require.Empty(t, p.pending)
	require.Zero(t, c.buffered)
}

func TestSameKeyQueuesBehindItsRun(t *testing.T) {
	c := bareConsumer(t)
	c.mu.Lock()
	p := keyedPart(c, 3)
	c.enqueue(p, &kgo.Record{Topic: "t", Offset: 3}, [16]byte{}) // null key: its own per-partition queue
	require.Len(t, c.ready, 2, "one entry per key, not per record")
	q, run := takeNext(c)
	require.Len(t, run, 3, "a worker takes the key's queued records as one run")
	for i, it := range run {
		require.EqualValues(t, i, it.r.Offset, "in offset order")
	}
	c.enqueue(p, &kgo.Record{Topic: "t", Offset: 4, Key: []byte("k")}, [16]byte{})
	require.Len(t, c.ready, 1, "a record of a running key waits behind its run, not in line")
	c.mu.Unlock()

	c.finish(q, run, len(run), result{out: outDone})
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Len(t, c.ready, 2, "the key went back in line for its next record")
	require.Same(t, q, c.ready[1])
	require.EqualValues(t, 4, q.front().r.Offset)
	require.EqualValues(t, 3, p.commit.Offset)
	require.Equal(t, 2, c.buffered)
}

// A run that fails part-way commits what it did. A record stuck for good (its partition is
// paused) is dropped with the records behind it, freeing their buffer room: the commit point
// stays before it and whoever owns the partition next fetches them again.
func TestRunStopsAtItsFirstFailure(t *testing.T) {
	c := bareConsumer(t)
	c.mu.Lock()
	p := keyedPart(c, 4)
	q, run := takeNext(c)
	c.mu.Unlock()

	c.finish(q, run, 2, result{out: outStuck, attempts: 3})
	c.mu.Lock()
	defer c.mu.Unlock()
	require.EqualValues(t, 2, p.commit.Offset, "the two records before the failure are done")
	require.Zero(t, q.len(), "the stuck record and those behind it are dropped")
	require.Zero(t, c.buffered, "and no longer take buffer room")
	require.Equal(t, 3, q.attempt)
	require.True(t, q.scheduled, "stuck: nothing behind it runs")
	require.Empty(t, c.ready)
}

// A revoke while a run runs keeps the run for its worker and drops the rest; what the run did
// not do is dropped when it returns, so the next owner fetches it again.
func TestRevokeDuringARunKeepsOnlyWhatRan(t *testing.T) {
	c := bareConsumer(t)
	c.mu.Lock()
	p := keyedPart(c, 3)
	q, run := takeNext(c)
	c.enqueue(p, &kgo.Record{Topic: "t", Offset: 3, Key: []byte("k")}, [16]byte{})
	c.dropQueued(p)
	require.True(t, p.halt.Load(), "the worker sees the revoke between records")
	require.Equal(t, 3, c.buffered, "the run stays; the record behind it is dropped")
	c.mu.Unlock()

	c.finish(q, run, 1, result{out: outAbandon})
	c.mu.Lock()
	defer c.mu.Unlock()
	require.EqualValues(t, 1, p.commit.Offset, "the record handled before the revoke is committed")
	require.Zero(t, c.buffered)
	require.Zero(t, q.len())
	require.Zero(t, p.running)
}

func TestLostPartitionsCommitNothing(t *testing.T) {
	c := bareConsumer(t)
	c.mu.Lock()
	p := c.newPart(tp{"t", 0})
	for off := range int64(4) {
		c.enqueue(p, &kgo.Record{Topic: "t", Offset: off, Key: []byte{byte(off)}}, [16]byte{})
	}
	c.mu.Unlock()
	finishNext(c, outDone)
	finishNext(c, outDone)
	require.EqualValues(t, 2, p.commit.Offset, "there is something to commit")

	c.onLost(context.Background(), nil, map[string][]int32{"t": {0}})
	require.True(t, p.gone)
	require.Error(t, p.ctx.Err(), "handlers of a lost partition are cancelled")
	require.Empty(t, c.parts)
	require.Zero(t, c.buffered)
	require.Empty(t, c.ready)
	// No client is set: a commit attempt would panic, so returning nil proves nothing was sent.
	require.NoError(t, c.commit(context.Background(), nil))
	require.NoError(t, c.commit(context.Background(), []*part{p}))
}

// finishNext takes the first ready key's run as a worker would and finishes it: every record
// done with outDone, else the first record with out.
func finishNext(c *Consumer, out outcome) *keyQueue {
	c.mu.Lock()
	q, run := takeNext(c)
	c.mu.Unlock()
	if out == outDone {
		c.finish(q, run, len(run), result{out: outDone})
	} else {
		c.finish(q, run, 0, result{out: out})
	}
	return q
}

// TestLostPartitionWaitsForItsHandlers: onLost cancels a lost partition's handlers and must
// not return before they are gone, or a partition that comes back could run one key twice.
func TestLostPartitionWaitsForItsHandlers(t *testing.T) {
	c := bareConsumer(t)
	c.mu.Lock()
	p := keyedPart(c, 1)
	q, run := takeNext(c)
	c.mu.Unlock()

	lost := make(chan struct{})
	go func() {
		c.onLost(context.Background(), nil, map[string][]int32{"t": {0}})
		close(lost)
	}()
	<-p.ctx.Done() // the handler sees the cancellation...
	select {
	case <-lost:
		t.Fatal("onLost returned while the lost partition's handler was still running")
	case <-time.After(100 * time.Millisecond): // ...and takes a moment to return
	}
	c.finish(q, run, 0, result{out: outAbandon})
	<-lost
	require.Zero(t, c.running)
}

// A run of slow records starts no more of them after maxRunTime: the records done commit, and
// the key goes back in line for the rest.
func TestSlowRunYieldsSoItsDoneRecordsCommit(t *testing.T) {
	c := bareConsumer(t)
	c.cfg.Handler = func(context.Context, Event) error {
		time.Sleep(maxRunTime * 2 / 5) // three records take longer than maxRunTime
		return nil
	}
	c.mu.Lock()
	p := keyedPart(c, 8)
	q, run := takeNext(c)
	c.mu.Unlock()

	done, res := c.processRun(0, p, q.key, run, 0, nil, nil)
	require.Equal(t, 3, done, "the clock is read before the fourth record")
	require.Equal(t, outYield, res.out)
	c.finish(q, run, done, res)
	c.mu.Lock()
	defer c.mu.Unlock()
	require.EqualValues(t, 3, p.commit.Offset, "the records done can commit")
	require.Equal(t, []*keyQueue{q}, c.ready, "the key is back in line")
	require.Equal(t, 5, q.len())
	require.EqualValues(t, 3, q.front().r.Offset)
}

// A run checks between records: a revoke during one record's handler, or a handler that
// panics, ends the run there, and only the records handled before commit.
func TestRunStopsAtRevokeOrPanic(t *testing.T) {
	for _, tc := range []struct {
		name    string
		at      int // the handler call that revokes or panics
		revoke  bool
		done    int
		out     outcome
		handled int
	}{
		{name: "revoke", at: 1, revoke: true, done: 2, out: outAbandon, handled: 2},
		{name: "panic", at: 1, done: 1, out: outRetry, handled: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := bareConsumer(t)
			c.cfg.MaxAttempts = 3
			var p *part
			handled := 0
			c.cfg.Handler = func(context.Context, Event) error {
				handled++
				if handled-1 == tc.at {
					if tc.revoke {
						c.mu.Lock()
						c.dropQueued(p)
						c.mu.Unlock()
					} else {
						panic("boom")
					}
				}
				return nil
			}
			c.mu.Lock()
			p = keyedPart(c, 5)
			q, run := takeNext(c)
			c.mu.Unlock()

			done, res := c.processRun(0, p, q.key, run, 0, nil, nil)
			require.Equal(t, tc.handled, handled, "records started")
			require.Equal(t, tc.done, done)
			require.Equal(t, tc.out, res.out)
			c.finish(q, run, done, res)
			c.mu.Lock()
			defer c.mu.Unlock()
			require.EqualValues(t, tc.done, p.commit.Offset, "only the records handled commit")
		})
	}
}

// The poll loop holds what kgo returned and dispatches it in order as room allows; a revoke
// drops the held records of the partitions it takes, those never dispatched too, so that only
// their next owner handles them.
func TestBacklogIsDispatchedAsRoomAllowsAndARevokeDropsIt(t *testing.T) {
	c := bareConsumer(t)
	ctx := context.Background()
	c.addFetches(twoPartitions(0, 5, 5))
	c.dispatch(ctx, 3)
	c.mu.Lock()
	require.Equal(t, 3, c.buffered, "no more than the room")
	require.EqualValues(t, 3, c.parts[tp{"t", 0}].fetched, "the oldest first")
	require.Nil(t, c.parts[tp{"t", 1}])
	c.mu.Unlock()

	c.revoke(map[string][]int32{"t": {1}})
	c.dispatch(ctx, 10)
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Equal(t, 5, c.buffered, "partition 0's last two came after the revoke; partition 1's none")
	require.EqualValues(t, 5, c.parts[tp{"t", 0}].fetched)
	require.Nil(t, c.parts[tp{"t", 1}], "a revoked partition's held records are never dispatched")
	require.Empty(t, c.backlog)
}

// CommitLag counts the records the poll loop holds besides those it dispatched: they were
// fetched and are not committed, whether their partition has dispatched records or not.
func TestCommitLagCountsHeldRecords(t *testing.T) {
	c := bareConsumer(t)
	c.addFetches(twoPartitions(100, 6, 4))
	c.dispatch(context.Background(), 2)
	st := c.Stats()
	require.Equal(t, 2, st.Buffered)
	require.EqualValues(t, 10, st.CommitLag, "2 dispatched and 8 held, none committed")

	c.mu.Lock()
	p := c.parts[tp{"t", 0}]
	c.markDone(p, 0)
	c.markDone(p, 1)
	p.committed = p.commit.Offset // as a commit would
	c.mu.Unlock()
	require.EqualValues(t, 8, c.Stats().CommitLag, "offsets 102-105 of partition 0 and 100-103 of 1")
}
