package events

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/surgekit/surge/internal/kafkatest"
	"github.com/surgekit/surge/internal/oteltest"
	"github.com/surgekit/surge/internal/redistest"
)

// inlineConsumer is a Consumer whose dispatch works without a client or Run, with inline
// handling as Run has it (bareConsumer turns it off).
func inlineConsumer(t *testing.T, cfg ConsumerConfig) *Consumer {
	t.Helper()
	cfg.Brokers, cfg.Group, cfg.Topics = []string{"b:1"}, "g", []string{"t"}
	c, err := NewConsumer(cfg)
	require.NoError(t, err)
	c.work = sync.NewCond(&c.mu)
	c.hctx, c.hcancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		c.hcancel()
		c.mu.Lock()
		if c.inl.timer != nil {
			c.inl.timer.Stop()
		}
		c.mu.Unlock()
	})
	return c
}

// keyedFetch is one fetch of partition t/0: event e<i> at offset i with key keys[i].
func keyedFetch(keys ...string) kgo.Fetches {
	recs := make([]*kgo.Record, len(keys))
	for i, k := range keys {
		recs[i] = &kgo.Record{Topic: "t", Offset: int64(i), Key: []byte(k),
			Headers: []kgo.RecordHeader{{Key: HeaderID, Value: []byte("e" + strconv.Itoa(i))}}}
	}
	return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "t", Partitions: []kgo.FetchPartition{{Records: recs}}}}}}
}

// holdAt returns a handler that returns at once, but for the event id closes entered and
// waits for release or the end of its ctx (a failed test's clean-up cancels).
func holdAt(id string, entered chan<- struct{}, release <-chan struct{}) Handler {
	return func(ctx context.Context, ev Event) error {
		if ev.ID == id {
			close(entered)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
}

// blockAt returns a handler that adds each event's ID to done, after release is closed (or
// its ctx ends) for the event id.
func blockAt(id string, release <-chan struct{}, done *idSet) Handler {
	return func(ctx context.Context, ev Event) error {
		if ev.ID == id {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		done.add(ev.ID)
		return nil
	}
}

// dispatchUntil adds fetch to c's backlog and dispatches it on another goroutine, whose
// result the returned channel gets, once entered is closed (what: a handler runs).
func dispatchUntil(t *testing.T, c *Consumer, fetch kgo.Fetches, entered <-chan struct{}, what string) <-chan bool {
	t.Helper()
	c.addFetches(fetch)
	done := make(chan bool, 1)
	go func() { done <- c.dispatch(context.Background(), 100) }()
	waitClosed(t, entered, what)
	return done
}

// loseWhileItRuns calls onLost for partition t/0 (p) while a call of it runs (what) and returns
// a channel closed when onLost returns, once it is seen waiting for p's run (p.idle).
func loseWhileItRuns(t *testing.T, c *Consumer, p *part, what string) <-chan struct{} {
	t.Helper()
	lost := make(chan struct{})
	go func() {
		c.onLost(context.Background(), nil, map[string][]int32{"t": {0}})
		close(lost)
	}()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return p.idle != nil
	}, 30*time.Second, time.Millisecond, "onLost waits for p's run")
	select {
	case <-lost:
		t.Fatalf("onLost returned while %s ran", what)
	default:
	}
	return lost
}

// waitClosed waits for ch to close, failing the test after 30 s.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatal("never happened: " + what)
	}
}

// readyKeys returns the keys of c.ready in order; c.mu is held.
func readyKeys(c *Consumer) []string {
	var out []string
	for _, q := range c.ready {
		out = append(out, q.key)
	}
	return out
}

// While nothing is queued or running, the poll loop handles cheap records itself, in offset
// order, and moves the commit point past them without a key queue or a tracker entry.
func TestCheapRecordsAreHandledInlineInOffsetOrder(t *testing.T) {
	var order []string // appended to by the poll loop only: the test's goroutine
	c := inlineConsumer(t, ConsumerConfig{Handler: func(_ context.Context, ev Event) error {
		order = append(order, ev.ID+"/"+ev.Key)
		return nil
	}})
	c.inl.slowest, c.inl.promote = time.Hour, time.Hour // no timing in this test
	c.addFetches(keyedFetch("a", "b", "a", "c", "b", "a", "d", "e", "f", "a"))
	require.False(t, c.dispatch(context.Background(), 100))
	require.Equal(t, []string{"e0/a", "e1/b", "e2/a", "e3/c", "e4/b", "e5/a", "e6/d", "e7/e", "e8/f", "e9/a"}, order)
	c.mu.Lock()
	p := c.parts[tp{"t", 0}]
	require.Zero(t, c.buffered)
	require.Zero(t, c.running)
	require.Zero(t, p.running)
	require.Empty(t, c.ready)
	require.Empty(t, p.keys, "no key queue")
	require.Equal(t, p.phead, len(p.pending), "no tracker entry")
	require.EqualValues(t, 10, p.commit.Offset, "the commit point passes the last handled")
	require.EqualValues(t, 10, p.fetched)
	c.mu.Unlock()
	require.EqualValues(t, 10, c.st.inlined.Load())
	require.EqualValues(t, 10, c.Stats().Handled)
}

// A record whose inline first try fails is queued and its outcome applied as a worker's: one
// attempt used, a retry timer, its key's later records behind it; the records after it go to
// the workers, and the commit point stays before it.
func TestFailedInlineTryIsQueuedWithItsOutcome(t *testing.T) {
	var calls idSet
	c := inlineConsumer(t, ConsumerConfig{MaxAttempts: 3, Backoff: func(int) time.Duration { return time.Hour },
		Handler: func(_ context.Context, ev Event) error {
			calls.add(ev.ID)
			if ev.ID == "e3" {
				return errors.New("boom")
			}
			return nil
		}})
	c.inl.slowest, c.inl.promote = time.Hour, time.Hour
	c.addFetches(keyedFetch("a", "b", "c", "k", "k", "d"))
	require.False(t, c.dispatch(context.Background(), 100))
	require.Equal(t, map[string]int{"e0": 1, "e1": 1, "e2": 1, "e3": 1}, calls.snapshot(), "e4 and e5 are the workers'")
	require.EqualValues(t, 4, c.st.inlined.Load())
	st := c.Stats()
	require.EqualValues(t, 1, st.Failed)
	require.EqualValues(t, 1, st.Retried)
	require.EqualValues(t, 3, st.Handled)
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.parts[tp{"t", 0}]
	q := p.keys["k"]
	require.NotNil(t, q)
	require.Equal(t, 1, q.attempt, "one attempt used")
	require.EqualError(t, q.lastErr, "boom")
	require.NotNil(t, q.timer, "waiting for its retry")
	require.True(t, q.scheduled)
	require.Equal(t, 2, q.len(), "e4 queued behind e3")
	require.Equal(t, []string{"d"}, readyKeys(c), "k is not ready before its retry")
	require.Equal(t, 3, c.buffered)
	require.Zero(t, c.running)
	require.EqualValues(t, 3, p.commit.Offset, "committable up to e3, not past it")
	q.timer.Stop()
}

// Two slow calls or groups of calls in a row end inline handling: the rest of the chunk goes
// to the workers, and inline handling stays off for the back-off.
func TestSlowHandlersTurnInlineHandlingOff(t *testing.T) {
	c := inlineConsumer(t, ConsumerConfig{Handler: func(context.Context, Event) error {
		time.Sleep(200 * time.Microsecond) // slower than inlineSlow, each call
		return nil
	}})
	c.inl.promote = time.Hour
	keys := make([]string, 20)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	c.addFetches(keyedFetch(keys...))
	before := time.Now()
	require.False(t, c.dispatch(context.Background(), 100))
	// The clock is read after e0 (one slow call: a strike) and after e1 (the second).
	require.EqualValues(t, 2, c.st.inlined.Load())
	c.mu.Lock()
	require.Equal(t, 18, c.buffered)
	require.Len(t, c.ready, 18)
	require.True(t, c.inl.until.After(before), "off for a while")
	require.Equal(t, 2*inlineOffMin, c.inl.backoff, "longer next time")
	c.mu.Unlock()

	// The back-off doubles up to inlineOffMax while the handler stays slow, and the first all-cheap
	// chunk resets it.
	s := &inlineState{}
	now := time.Now()
	require.False(t, s.slow(now), "one slow call or group alone does not turn it off")
	require.True(t, s.slow(now))
	require.Equal(t, now.Add(inlineOffMin), s.until)
	for range 40 {
		s.slow(now)
	}
	require.Equal(t, inlineOffMax, s.backoff)
	require.Equal(t, now.Add(inlineOffMax), s.until)
}

// A handler call that runs on past promoteAfter becomes a worker's run of one: the records
// after it are queued for the workers (its key's behind it) while it runs, and when it returns
// its outcome is applied as a worker's and the poll loop's goroutine leaves the loop (Run's
// poll loop goes on on a new goroutine).
func TestLongInlineCallIsPromotedToAWorkersRun(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	c := inlineConsumer(t, ConsumerConfig{Handler: func(_ context.Context, ev Event) error {
		if ev.ID == "e1" {
			close(entered)
			<-release
		}
		return nil
	}})
	c.inl.promote = time.Millisecond
	before := time.Now()
	moved := dispatchUntil(t, c, keyedFetch("z", "a", "b", "c", "a", "d"), entered, "e1's handler runs")
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.ready) == 3
	}, 30*time.Second, time.Millisecond, "e2, e3 and e5 are queued while e1 runs")
	c.mu.Lock()
	p := c.parts[tp{"t", 0}]
	require.Equal(t, []string{"b", "c", "d"}, readyKeys(c))
	require.Equal(t, 2, p.keys["a"].len(), "e4 is queued behind e1")
	require.Equal(t, 1, p.keys["a"].inRun, "e1 is a's run")
	require.Equal(t, 5, c.buffered)
	require.Equal(t, 1, p.running)
	require.EqualValues(t, 1, p.commit.Offset, "e0 is done; e1 runs")
	require.True(t, c.inl.until.After(before), "a promoted call turns inline handling off")
	c.mu.Unlock()

	close(release)
	require.True(t, <-moved, "the poll loop is another goroutine's now")
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Zero(t, p.running)
	require.Equal(t, 4, c.buffered, "e1 is done")
	require.EqualValues(t, 2, p.commit.Offset)
	require.Equal(t, []string{"b", "c", "d", "a"}, readyKeys(c), "a is ready again for e4")
	c.mu.Unlock()
	require.EqualValues(t, 2, c.Stats().Handled)
	c.mu.Lock()
}

// A lost partition waits for the handler the poll loop runs inline, as for a worker's: with
// the partition back, one key never has two handlers at once. The rest of the chunk is dropped.
func TestLostPartitionWaitsForAnInlineHandler(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var returned atomic.Bool
	c := inlineConsumer(t, ConsumerConfig{Handler: func(_ context.Context, ev Event) error {
		if ev.ID == "e1" {
			close(entered)
			<-release // ignores its context, as a careless handler may
			returned.Store(true)
		}
		return nil
	}})
	c.inl.promote = time.Hour
	dispatched := dispatchUntil(t, c, keyedFetch("a", "b", "c", "d"), entered, "e1's handler runs")
	c.mu.Lock()
	p := c.parts[tp{"t", 0}]
	c.mu.Unlock()
	lost := loseWhileItRuns(t, c, p, "the inline handler")
	close(release)
	<-lost
	require.True(t, returned.Load())
	require.False(t, <-dispatched)
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Zero(t, c.buffered, "e2 and e3 are dropped: the next owner fetches them")
	require.Empty(t, c.parts)
}

// A Deduper, tracing or the duration metric need a worker's full processing: no inline handling.
func TestInlineHandlingNeedsAPlainConsumer(t *testing.T) {
	_, rc := redistest.Mini(t)
	sdk := oteltest.New(t)
	for name, cfg := range map[string]ConsumerConfig{
		"deduper":  {Deduper: NewRedisDeduper(rc, time.Hour)},
		"tracing":  {TracerProvider: sdk.TracerProvider},
		"duration": {MeterProvider: sdk.MeterProvider},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.Handler = func(context.Context, Event) error { return nil }
			c := inlineConsumer(t, cfg)
			c.addFetches(keyedFetch("a", "b", "c"))
			require.False(t, c.dispatch(context.Background(), 100))
			require.Zero(t, c.st.inlined.Load())
			c.mu.Lock()
			defer c.mu.Unlock()
			require.Equal(t, 3, c.buffered, "all queued for the workers")
		})
	}
}

// On Kafka: cheap handlers run inline, and the commit reaches the last handled event + 1, never
// past one that failed for good.
func TestInlineHandlingCommitsUpToTheFirstUnhandledEvent(t *testing.T) {
	kc := oneTopic(t, "in")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 30*time.Second)
	require.NoError(t, p.Publish(ctx, "in", idEvents(10, nil)...))
	var done idSet
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, Concurrency: 4,
		MaxAttempts: 1, CommitInterval: 20 * time.Millisecond,
		Handler: func(_ context.Context, ev Event) error {
			if ev.ID == "e5" {
				return errors.New("poison pill")
			}
			done.add(ev.ID)
			return nil
		}})
	require.Eventually(t, func() bool { return r.c.Stats().Paused == 1 }, 20*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return committed(t, kc, "g", "in")[0] == 5 }, 20*time.Second, 10*time.Millisecond)
	require.Positive(t, r.c.st.inlined.Load(), "the first records are the poll loop's")
	require.NoError(t, r.stop())
	require.EqualValues(t, 5, committed(t, kc, "g", "in")[0], "never committed past e5")
	for i := range 5 {
		require.Equal(t, 1, done.count(fmt.Sprintf("e%d", i)))
	}
}

// On Kafka: a record whose first try ran inline and failed is retried and dead-lettered
// exactly as a worker's (the same attempts).
func TestFailingInlineRecordIsRetriedAndDeadLetteredAsBefore(t *testing.T) {
	kc := oneTopic(t, "in", "in.dlq")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 30*time.Second)
	require.NoError(t, p.Publish(ctx, "in", idEvents(3, nil)...)) // e0 first: its first try is inline
	var attempts atomic.Int64
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, Concurrency: 2,
		MaxAttempts: 3, Backoff: func(int) time.Duration { return time.Millisecond }, DeadLetterTopic: "in.dlq",
		CommitInterval: 20 * time.Millisecond,
		Handler: func(_ context.Context, ev Event) error {
			if ev.ID == "e0" {
				attempts.Add(1)
				return errors.New("bad")
			}
			return nil
		}})
	recs := readAll(t, kc, "in.dlq", 1)
	require.Equal(t, "3", string(headerValue(recs[0], HeaderDLQAttempts)))
	require.Eventually(t, func() bool { return committed(t, kc, "g", "in")[0] == 3 }, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, r.stop())
	st := r.c.Stats()
	require.EqualValues(t, 3, attempts.Load())
	require.EqualValues(t, 3, st.Failed)
	require.EqualValues(t, 2, st.Retried)
	require.EqualValues(t, 1, st.DeadLettered)
	require.EqualValues(t, 2, st.Handled)
	require.Positive(t, r.c.st.inlined.Load(), "e0's first try was the poll loop's")
}

// On Kafka: per-key order holds, and no key runs twice at once, while handling switches
// between the poll loop and the workers (slow handlers turn inline handling off, and it comes
// back), with failures and retries on both sides.
func TestPerKeyOrderAcrossInlineAndWorkerHandling(t *testing.T) {
	const keys = 6
	kc := oneTopic(t, "in")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 60*time.Second)
	log := newOrderLog()
	var slow atomic.Bool
	var failedOnce sync.Map
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, Concurrency: 4,
		MaxAttempts: 1 << 20, Backoff: func(int) time.Duration { return time.Millisecond },
		CommitInterval: 20 * time.Millisecond,
		Handler: func(_ context.Context, ev Event) error {
			defer log.enter(ev.Key)()
			if slow.Load() {
				time.Sleep(300 * time.Microsecond)
			}
			var seq int
			if err := ev.Decode(&seq); err == nil && seq%5 == 2 {
				if _, again := failedOnce.LoadOrStore(ev.ID, true); !again {
					return errors.New("first try fails")
				}
			}
			log.add(t, ev)
			return nil
		}})
	handledAll := func(n int64) {
		t.Helper()
		require.Eventually(t, func() bool { return log.distinct() == n }, 30*time.Second, time.Millisecond)
	}
	evs := seqEvents(t, 1200, keys) // sequence numbers 0-199 per key
	require.NoError(t, p.Publish(ctx, "in", evs[:60]...))
	handledAll(60)
	inlined := r.c.st.inlined.Load()
	require.Positive(t, inlined, "cheap handlers run inline")

	slow.Store(true)
	require.NoError(t, p.Publish(ctx, "in", evs[60:120]...))
	handledAll(120)
	byWorkers := r.c.Stats().Handled - r.c.st.handled[len(r.c.st.handled)-1].n.Load()
	require.Positive(t, byWorkers, "slow handlers run on the workers")

	// Cheap again: once the back-off has passed and nothing is queued, inline handling returns.
	slow.Store(false)
	next := 120
	for r.c.st.inlined.Load() == inlined && next < len(evs) {
		require.NoError(t, p.Publish(ctx, "in", evs[next:next+keys]...))
		next += keys
		handledAll(int64(next))
	}
	require.Greater(t, r.c.st.inlined.Load(), inlined, "inline handling comes back for cheap handlers")
	require.NoError(t, p.Publish(ctx, "in", evs[next:]...))
	handledAll(int64(len(evs)))
	require.Eventually(t, func() bool { return committed(t, kc, "g", "in")[0] == int64(len(evs)) }, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, r.stop())
	log.requireOnceInOrder(t)
}

// On Kafka: a handler that blocks until another key's handler runs does not block the
// consumer: the poll loop's call is promoted, and the other key runs on a worker.
func TestBlockingInlineHandlerDoesNotStopOtherKeys(t *testing.T) {
	kc := oneTopic(t, "in")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 60*time.Second)
	require.NoError(t, p.Publish(ctx, "in", idEvents(2, nil)...))
	var running atomic.Int32
	bothRan := make(chan struct{})
	var once sync.Once
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, Concurrency: 4,
		Handler: func(ctx context.Context, ev Event) error {
			if running.Add(1) == 2 {
				once.Do(func() { close(bothRan) })
			}
			defer running.Add(-1)
			select { // a barrier: each waits until both run at once
			case <-bothRan:
				return nil
			case <-time.After(30 * time.Second):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}})
	select {
	case <-bothRan:
	case <-ctx.Done():
		t.Fatal("e0 and e1 never ran at once")
	}
	require.Eventually(t, func() bool { return r.c.Stats().Handled == 2 }, 30*time.Second, time.Millisecond)
	require.NoError(t, r.stop())
}

// On Kafka: Run ends within ShutdownTimeout also while the poll loop runs a handler inline
// that waits for its context, and commits nothing of it.
func TestShutdownCancelsAnInlineHandler(t *testing.T) {
	requireShutdownCancelsAWaitingHandler(t, "inline",
		func(c *Consumer) { c.inl.promote = time.Hour }, // stays the poll loop's call
		func(ctx context.Context, _ *Consumer, entered <-chan struct{}) {
			select {
			case <-entered:
			case <-ctx.Done():
				t.Fatal("the handler never ran")
			}
		})
}

// requireShutdownCancelsAWaitingHandler publishes one event to a consumer (ShutdownTimeout 50
// ms) whose handler waits for its context, has prepare adjust the consumer before Run and
// running wait until the call is where the test wants it (entered closes when it starts), then
// stops Run and requires that it ends, the handler cancelled, with nothing committed, handled,
// in flight or buffered. which names the call in the failure message.
func requireShutdownCancelsAWaitingHandler(t *testing.T, which string, prepare func(*Consumer),
	running func(ctx context.Context, c *Consumer, entered <-chan struct{})) {
	t.Helper()
	kc := oneTopic(t, "in")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 30*time.Second)
	require.NoError(t, p.Publish(ctx, "in", idEvents(1, nil)...))
	entered, giveUp := make(chan struct{}), make(chan struct{})
	var enter sync.Once
	c, err := NewConsumer(ConsumerConfig{Brokers: kc.Seeds(), Group: "g", Topics: []string{"in"},
		KafkaOptions: groupOpts(), ShutdownTimeout: 50 * time.Millisecond,
		Handler: func(ctx context.Context, _ Event) error {
			enter.Do(func() { close(entered) })
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-giveUp: // the test failed: let Run end
				return errors.New("never cancelled")
			}
		}})
	require.NoError(t, err)
	prepare(c)
	r := runConsumer(t, c)
	running(ctx, c, entered)
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		close(giveUp)
		t.Fatalf("Run did not end: the %s handler's context was never cancelled", which)
	}
	require.Empty(t, committed(t, kc, "g", "in"))
	st := c.Stats()
	require.Zero(t, st.Handled)
	require.Zero(t, st.InFlight)
	require.Zero(t, st.Buffered)
}

// On Kafka: when a promoted call returns, its key's next record, queued behind it while it
// ran, goes to a worker even when nothing else arrives to wake one (the call's goroutine is
// not a worker: it must wake one for the key it makes ready).
func TestPromotedCallWakesAWorkerForItsKeysNextRecord(t *testing.T) {
	kc := oneTopic(t, "in")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 60*time.Second)
	require.NoError(t, p.Publish(ctx, "in", idEvents(2, map[int]string{0: "k", 1: "k"})...))
	release := make(chan struct{})
	var done idSet
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, Concurrency: 2,
		Handler: blockAt("e0", release, &done)})
	// e1 is queued for the workers, behind e0, only once e0's call is promoted.
	require.Eventually(t, func() bool { return r.c.Stats().Buffered == 2 }, 30*time.Second, time.Millisecond,
		"e0's call is promoted and e1 queued behind it")
	close(release)
	require.Eventually(t, func() bool { return done.len() == 2 }, 30*time.Second, time.Millisecond,
		"e1 is handled after e0")
	require.Equal(t, map[string]int{"e0": 1, "e1": 1}, done.snapshot())
	require.NoError(t, r.stop())
}

// The events a section handled before a call that is promoted count in Stats.Handled at the
// promotion, not only when the promoted call returns: it may run for as long as its handler
// likes, and their commit point has passed them already.
func TestHandledCountsASectionsEventsWhenItsCallIsPromoted(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	c := inlineConsumer(t, ConsumerConfig{Handler: holdAt("e2", entered, release)})
	c.inl.slowest, c.inl.promote = time.Hour, time.Millisecond
	moved := dispatchUntil(t, c, keyedFetch("a", "b", "c", "d"), entered, "e2's handler runs")
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.buffered == 2
	}, 30*time.Second, time.Millisecond, "e2's call is promoted: e2 and e3 are queued")
	c.mu.Lock()
	require.EqualValues(t, 2, c.parts[tp{"t", 0}].commit.Offset, "e0 and e1 are done")
	c.mu.Unlock()
	require.EqualValues(t, 2, c.Stats().Handled, "e0 and e1 were handled")
	close(release)
	require.True(t, <-moved)
	require.EqualValues(t, 3, c.Stats().Handled, "and e2")
}

// CommitLag counts the records of a section as fetched and not committed while the poll loop
// handles them, and after, until a commit: as it counts a worker's.
func TestCommitLagCountsInlineRecords(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	c := inlineConsumer(t, ConsumerConfig{Handler: holdAt("e1", entered, release)})
	c.inl.slowest, c.inl.promote = time.Hour, time.Hour // e1 stays the poll loop's call
	moved := dispatchUntil(t, c, keyedFetch("a", "b", "c"), entered, "e1's handler runs")
	require.EqualValues(t, 3, c.Stats().CommitLag, "e0 done, e1 running, e2 held: none committed")
	close(release)
	require.False(t, <-moved)
	require.EqualValues(t, 3, c.Stats().CommitLag, "all done, none committed")
	c.mu.Lock()
	p := c.parts[tp{"t", 0}]
	p.committed = p.commit.Offset // as a commit would
	c.mu.Unlock()
	require.Zero(t, c.Stats().CommitLag)
}

// On Kafka: after a promotion the group can still rebalance while nothing more arrives. The
// poll that fetched the promoted call's records must be allowed to end (kgo blocks rebalances
// from a poll until AllowRebalance): the goroutine that made it leaves the poll loop, and the
// new one waits in its own poll for records that do not come.
func TestGroupRebalancesAfterAPromotionWhileIdle(t *testing.T) {
	kc := kafkatest.ClusterWith(t, kafkatest.Config{Brokers: 1, Partitions: 2, Topics: []string{"in"}})
	pr := kc.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx := testCtx(t, 60*time.Second)
	rec := func(part int32, id string) *kgo.Record {
		return &kgo.Record{Topic: "in", Partition: part, Key: []byte("k"), Value: []byte("{}"),
			Headers: []kgo.RecordHeader{{Key: HeaderID, Value: []byte(id)}}}
	}
	release := make(chan struct{})
	var done idSet
	a := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, Concurrency: 2,
		Handler: blockAt("b0", release, &done)})
	require.NoError(t, pr.ProduceSync(ctx, rec(1, "a0")).FirstErr())
	require.Eventually(t, func() bool { return done.count("a0") == 1 }, 30*time.Second, time.Millisecond)
	// b0 alone: its call is promoted (it is queued then, as its own run) and nothing follows,
	// so the new poll loop's poll waits.
	require.NoError(t, pr.ProduceSync(ctx, rec(0, "b0")).FirstErr())
	require.Eventually(t, func() bool { return a.c.Stats().Buffered == 1 }, 30*time.Second, time.Millisecond,
		"b0's call is promoted")
	close(release)
	require.Eventually(t, func() bool { return done.len() == 2 }, 30*time.Second, time.Millisecond)
	a.c.mu.Lock()
	require.Len(t, a.c.parts, 2)
	a.c.mu.Unlock()

	// A second member joins: one of a's partitions moves to it, through a's onRevoked.
	startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"},
		Handler: func(context.Context, Event) error { return nil }})
	require.Eventually(t, func() bool {
		a.c.mu.Lock()
		defer a.c.mu.Unlock()
		return len(a.c.parts) == 1
	}, 30*time.Second, 5*time.Millisecond, "a hands a partition over")
	require.NoError(t, a.stop())
}

// On Kafka: Run ends within ShutdownTimeout also while a promoted call waits for its context,
// commits nothing of it, and leaves no poll loop behind (goleak checks the package).
func TestShutdownCancelsAPromotedHandler(t *testing.T) {
	requireShutdownCancelsAWaitingHandler(t, "promoted", func(*Consumer) {},
		func(_ context.Context, c *Consumer, _ <-chan struct{}) {
			require.Eventually(t, func() bool { return c.Stats().Buffered == 1 }, 30*time.Second, time.Millisecond,
				"e0's call is promoted")
		})
}

// On Kafka: per-key order holds, no key runs twice at once, and every event is handled once
// and committed, while calls are promoted now and then (some handlers block past
// promoteAfter) and handling moves between the poll loop, promoted calls and the workers.
func TestPerKeyOrderAcrossPromotions(t *testing.T) {
	const keys = 4
	kc := oneTopic(t, "in")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 60*time.Second)
	log := newOrderLog()
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, Concurrency: 3,
		MaxAttempts: 1 << 20, Backoff: func(int) time.Duration { return time.Millisecond },
		CommitInterval: 20 * time.Millisecond,
		Handler: func(_ context.Context, ev Event) error {
			defer log.enter(ev.Key)()
			var seq int
			if err := ev.Decode(&seq); err == nil && seq%7 == 1 {
				time.Sleep(3 * promoteAfter) // long enough to be promoted, most times
			}
			log.add(t, ev)
			return nil
		}})
	evs := seqEvents(t, 480, keys)
	for i := 0; i < len(evs); i += 12 { // bursts: inline handling comes back between them
		require.NoError(t, p.Publish(ctx, "in", evs[i:i+12]...))
		require.Eventually(t, func() bool { return log.distinct() == int64(i+12) }, 30*time.Second, 100*time.Microsecond)
	}
	require.Eventually(t, func() bool { return committed(t, kc, "g", "in")[0] == int64(len(evs)) }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, r.stop())
	st := r.c.Stats()
	require.EqualValues(t, len(evs), st.Handled)
	require.Zero(t, st.InFlight)
	log.requireOnceInOrder(t)
}

// A lost partition waits for a promoted call as for the poll loop's or a worker's, and drops
// the records queued behind it and after it.
func TestLostPartitionWaitsForAPromotedCall(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	c := inlineConsumer(t, ConsumerConfig{Handler: func(_ context.Context, ev Event) error {
		if ev.ID == "e1" {
			close(entered)
			<-release // ignores its context, as a careless handler may
		}
		return nil
	}})
	c.inl.slowest, c.inl.promote = time.Hour, time.Millisecond
	moved := dispatchUntil(t, c, keyedFetch("a", "b", "b", "c"), entered, "e1's handler runs")
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.buffered == 3
	}, 30*time.Second, time.Millisecond, "e1's call is promoted: e1, e2 and e3 are queued")
	c.mu.Lock()
	p := c.parts[tp{"t", 0}]
	c.mu.Unlock()
	lost := loseWhileItRuns(t, c, p, "the promoted call")
	close(release)
	waitClosed(t, lost, "onLost returns once the call does")
	require.True(t, <-moved)
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Zero(t, c.buffered, "e2 and e3 are dropped: the next owner fetches them")
	require.Zero(t, c.running)
	require.Empty(t, c.parts)
}

// A promoted call holds one of the Concurrency slots: with Concurrency 1, the other keys'
// records queued at its promotion wait for it, so handlers still run one at a time.
func TestPromotedCallTakesAConcurrencySlot(t *testing.T) {
	kc := oneTopic(t, "in")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 60*time.Second)
	require.NoError(t, p.Publish(ctx, "in", idEvents(3, nil)...)) // three keys, one fetch
	var running, most atomic.Int32
	entered, release := make(chan struct{}), make(chan struct{})
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, Concurrency: 1,
		Handler: func(ctx context.Context, ev Event) error {
			n := running.Add(1)
			defer running.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			if ev.ID == "e0" {
				close(entered)
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}})
	waitClosed(t, entered, "e0's handler runs")
	// e0 runs inline and is promoted within a few ms; e1 and e2 are then queued for the worker.
	require.Eventually(t, func() bool {
		r.c.mu.Lock()
		defer r.c.mu.Unlock()
		return r.c.inl.q != nil
	}, 30*time.Second, time.Millisecond, "e0's call is promoted")
	require.Never(t, func() bool { return most.Load() > 1 }, 200*time.Millisecond, time.Millisecond,
		"a second handler ran beside the promoted one with Concurrency 1")
	close(release)
	require.Eventually(t, func() bool { return r.c.Stats().Handled == 3 }, 30*time.Second, time.Millisecond)
	require.EqualValues(t, 1, most.Load())
	require.NoError(t, r.stop())
}

// fakeClocks replaces c's shutdown clocks with ones that expire only when the test says so.
type fakeClocks struct {
	mu   sync.Mutex
	ch   []chan time.Time
	done bool // expireAll was called: clocks expire at once
}

func (f *fakeClocks) install(c *Consumer) {
	c.clock = func(time.Duration) (<-chan time.Time, func() bool) {
		f.mu.Lock()
		defer f.mu.Unlock()
		ch := make(chan time.Time)
		if f.done {
			close(ch)
		}
		f.ch = append(f.ch, ch)
		return ch, func() bool { return true }
	}
}

func (f *fakeClocks) started() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ch)
}

// expire makes the i-th clock started expire.
func (f *fakeClocks) expire(i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.ch[i])
}

// expireAll makes every clock expire, those started later at once.
func (f *fakeClocks) expireAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return
	}
	f.done = true
	for _, ch := range f.ch {
		select {
		case <-ch:
		default:
			close(ch)
		}
	}
}

// On Kafka: ShutdownTimeout is one clock from the end of Run's ctx. A promoted call that
// returns after ctx ended (before the clock expires) does not start a second one for the
// workers: when the clock started at ctx end expires, a worker's handler still running is
// cancelled (it waited up to twice ShutdownTimeout).
func TestShutdownTimeoutIsOneClockFromCtxEnd(t *testing.T) {
	kc := oneTopic(t, "in")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 60*time.Second)
	require.NoError(t, p.Publish(ctx, "in", idEvents(2, nil)...)) // two keys, one fetch
	e0In, e1In, release, e1Cancelled := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	c, err := NewConsumer(ConsumerConfig{Brokers: kc.Seeds(), Group: "g", Topics: []string{"in"},
		KafkaOptions: groupOpts(), Concurrency: 2,
		Handler: func(ctx context.Context, ev Event) error {
			switch ev.ID {
			case "e0": // runs inline, is promoted, returns when released
				close(e0In)
				<-release
			case "e1": // on a worker beside the promoted call, until cancelled
				close(e1In)
				<-ctx.Done()
				close(e1Cancelled)
				return ctx.Err()
			}
			return nil
		}})
	require.NoError(t, err)
	var clocks fakeClocks
	clocks.install(c)
	r := runConsumer(t, c)
	t.Cleanup(clocks.expireAll) // before runConsumer's stop: whatever happens, Run ends
	waitClosed(t, e0In, "e0's handler runs")
	waitClosed(t, e1In, "e1's handler runs on a worker beside e0's promoted call")
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	require.Eventually(t, func() bool { return clocks.started() == 1 }, 30*time.Second, time.Millisecond,
		"the shutdown clock starts when ctx ends")
	close(release) // the promoted call returns after ctx ended, before the clock expired
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.stopping
	}, 30*time.Second, time.Millisecond, "the poll loop ends and Run drains")
	clocks.expire(0)
	select {
	case <-e1Cancelled:
	case <-time.After(30 * time.Second):
		t.Fatalf("e1's handler was not cancelled when the clock started at ctx end expired (%d clocks started)", clocks.started())
	}
	require.NoError(t, <-stopped)
	require.Equal(t, 1, clocks.started())
}
