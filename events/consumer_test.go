package events

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/surgekit/surge/internal/kafkatest"
	"github.com/surgekit/surge/internal/redistest"
)

func TestNewConsumerValidates(t *testing.T) {
	ok := ConsumerConfig{Brokers: []string{"b:1"}, Group: "g", Topics: []string{"t"}, Handler: func(context.Context, Event) error { return nil }}
	cases := map[string]func(*ConsumerConfig){
		"Brokers":         func(c *ConsumerConfig) { c.Brokers = nil },
		"Group":           func(c *ConsumerConfig) { c.Group = "" },
		"Topics":          func(c *ConsumerConfig) { c.Topics = nil },
		"Handler":         func(c *ConsumerConfig) { c.Handler = nil },
		"Concurrency":     func(c *ConsumerConfig) { c.Concurrency = -1 },
		"MaxAttempts":     func(c *ConsumerConfig) { c.MaxAttempts = -1 },
		"DedupeLease":     func(c *ConsumerConfig) { c.DedupeLease = -time.Second },
		"CommitInterval":  func(c *ConsumerConfig) { c.CommitInterval = -time.Second },
		"MaxBuffered":     func(c *ConsumerConfig) { c.MaxBuffered = -1 },
		"ShutdownTimeout": func(c *ConsumerConfig) { c.ShutdownTimeout = -1 },
		"DeadLetterTopic": func(c *ConsumerConfig) { c.DeadLetterTopic = "t" },
	}
	for field, mutate := range cases {
		cfg := ok
		mutate(&cfg)
		_, err := NewConsumer(cfg)
		require.ErrorIs(t, err, ErrInvalidOptions, field)
		require.ErrorContains(t, err, field)
	}
	dlq := ok
	dlq.DeadLetterTopic, dlq.KafkaOptions = "t.dlq", []kgo.Opt{kgo.DisableIdempotentWrite()}
	_, err := NewConsumer(dlq)
	require.ErrorIs(t, err, ErrInvalidOptions)
	require.ErrorContains(t, err, "DisableIdempotentWrite")
	bad := ok
	bad.KafkaOptions = []kgo.Opt{kgo.RequiredAcks(kgo.LeaderAck())}
	_, err = NewConsumer(bad)
	require.ErrorIs(t, err, ErrInvalidOptions, "a kgo option kgo itself refuses")
	require.ErrorContains(t, err, "KafkaOptions")

	c, err := NewConsumer(ok)
	require.NoError(t, err)
	require.Equal(t, 16, c.cfg.Concurrency)
	require.Equal(t, 3, c.cfg.MaxAttempts)
}

func TestConsumerKeepsPerKeyOrderWithParallelism(t *testing.T) {
	const n, keys = 10000, 50
	kc := kafkatest.Cluster(t, "orders")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 60*time.Second)
	require.NoError(t, p.Publish(ctx, "orders", seqEvents(t, n, keys)...))

	log := newOrderLog()
	var running, peak atomic.Int64
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"orders"}, Concurrency: 16,
		CommitInterval: 50 * time.Millisecond,
		Handler: func(ctx context.Context, ev Event) error {
			now := running.Add(1)
			defer running.Add(-1)
			for old := peak.Load(); now > old && !peak.CompareAndSwap(old, now); old = peak.Load() {
			}
			time.Sleep(time.Duration(rand.IntN(2001)) * time.Microsecond)
			log.add(t, ev)
			return nil
		}})
	require.Eventually(t, func() bool { return log.distinct() == n }, 50*time.Second, 10*time.Millisecond)
	require.NoError(t, r.stop())

	require.Empty(t, log.bad, "per-key order broken")
	require.Greater(t, peak.Load(), int64(8), "handlers must run in parallel")
	require.Equal(t, endOffsets(kc, "orders"), committed(t, kc, "g", "orders"), "committed offsets equal the end offsets")
	st := r.c.Stats()
	require.EqualValues(t, n, st.Handled)
	require.Zero(t, st.Buffered)
	require.Zero(t, st.InFlight)
}

// idEvents makes events e0..e(n-1), each with its own key unless keys maps an index to one.
func idEvents(n int, keys map[int]string) []Event {
	evs := make([]Event, n)
	for i := range evs {
		k := fmt.Sprintf("k%d", i)
		if s, ok := keys[i]; ok {
			k = s
		}
		evs[i] = Event{ID: fmt.Sprintf("e%d", i), Type: "t", Key: k, Data: []byte("{}")}
	}
	return evs
}

// idSet is a concurrency-safe set of handled event IDs with counts.
type idSet struct {
	mu sync.Mutex
	m  map[string]int
}

func (s *idSet) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]int{}
	}
	s.m[id]++
}

func (s *idSet) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[id]
}

func (s *idSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

func (s *idSet) snapshot() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}

func oneTopic(t *testing.T, topics ...string) *kafkatest.KafkaCluster {
	return kafkatest.ClusterWith(t, kafkatest.Config{Partitions: 1, Topics: topics})
}

func TestCommitWaitsForTheGap(t *testing.T) {
	kc := oneTopic(t, "gap")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 30*time.Second)
	require.NoError(t, p.Publish(ctx, "gap", idEvents(10, nil)...))

	var open atomic.Bool
	var done idSet
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"gap"}, Concurrency: 4,
		MaxAttempts: 1 << 20, Backoff: func(int) time.Duration { return 5 * time.Millisecond },
		CommitInterval: 20 * time.Millisecond,
		Handler: func(_ context.Context, ev Event) error {
			if ev.ID == "e6" && !open.Load() {
				return errors.New("not yet")
			}
			done.add(ev.ID)
			return nil
		}})
	require.Eventually(t, func() bool { return done.len() == 9 }, 20*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return committed(t, kc, "g", "gap")[0] == 6 }, 20*time.Second, 10*time.Millisecond)
	// Offsets 7-9 are done, but the commit stays at 6 through many retries and commit ticks.
	retried := r.c.Stats().Retried
	require.Eventually(t, func() bool { return r.c.Stats().Retried >= retried+20 }, 20*time.Second, 5*time.Millisecond)
	require.EqualValues(t, 6, committed(t, kc, "g", "gap")[0])
	require.EqualValues(t, 4, r.c.Stats().CommitLag, "offsets 6-9 fetched and not committed")

	open.Store(true)
	require.Eventually(t, func() bool { return committed(t, kc, "g", "gap")[0] == 10 }, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, r.stop())
}

func TestPoisonGoesToTheDeadLetterTopicAfterItsWriteIsAcked(t *testing.T) {
	kc := oneTopic(t, "in", "in.dlq")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 30*time.Second)
	// e3 is poison; e7 has the same key and must still run, after it.
	require.NoError(t, p.Publish(ctx, "in", idEvents(10, map[int]string{3: "p", 7: "p"})...))
	// Dead-letter writes fail until the fault is removed: the offset must not be committed meanwhile.
	dlqFault := kc.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "in.dlq", Err: kerr.InvalidRecord, Count: -1})

	var done idSet
	var order []string
	var mu sync.Mutex
	m, rdb := redistest.Mini(t)
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, Concurrency: 4,
		Deduper:     NewRedisDeduper(rdb, time.Hour),
		MaxAttempts: 3, Backoff: func(int) time.Duration { return time.Millisecond },
		DeadLetterTopic: "in.dlq", CommitInterval: 20 * time.Millisecond,
		Handler: func(_ context.Context, ev Event) error {
			if ev.ID == "e3" {
				return errors.New("poison pill")
			}
			if ev.Key == "p" {
				mu.Lock()
				// Behind the poison in key order: it runs only once the dead letter is written.
				order = append(order, fmt.Sprintf("%s after %d dead letters", ev.ID, countRecords(kc, "in.dlq")))
				mu.Unlock()
			}
			done.add(ev.ID)
			return nil
		}})
	require.Eventually(t, func() bool { return committed(t, kc, "g", "in")[0] == 3 }, 20*time.Second, 5*time.Millisecond)
	hits := dlqFault.Hits()
	require.Eventually(t, func() bool { return dlqFault.Hits() >= hits+2 }, 20*time.Second, time.Millisecond)
	require.EqualValues(t, 3, committed(t, kc, "g", "in")[0], "nothing past the poison before its DLQ write")
	dlqFault.Remove()
	require.Eventually(t, func() bool { return committed(t, kc, "g", "in")[0] == 10 }, 20*time.Second, 10*time.Millisecond)
	require.Equal(t, 9, done.len(), "the partition kept flowing")
	mu.Lock()
	require.Equal(t, []string{"e7 after 1 dead letters"}, order)
	mu.Unlock()

	recs := readAll(t, kc, "in.dlq", 1)
	require.Len(t, recs, 1)
	dl := recs[0]
	require.Equal(t, "p", string(dl.Key))
	hs := map[string]string{}
	for _, h := range dl.Headers {
		hs[h.Key] = string(h.Value)
	}
	require.Equal(t, "e3", hs[HeaderID])
	require.Equal(t, "in", hs[HeaderDLQTopic])
	require.Equal(t, "0", hs[HeaderDLQPartition])
	require.Equal(t, "3", hs[HeaderDLQOffset])
	require.Equal(t, "3", hs[HeaderDLQAttempts])
	require.Equal(t, "g", hs[HeaderDLQGroup])
	require.Contains(t, hs[HeaderDLQError], "poison pill")
	_, err := time.Parse(time.RFC3339Nano, hs[HeaderDLQTime])
	require.NoError(t, err)
	ev, err := fromRecord(dl)
	require.NoError(t, err, "a dead letter is still an event")
	require.Equal(t, "e3", ev.ID)

	require.False(t, m.Exists(DedupePrefix+"{g:e3}"), "the event is not done: a re-drive of its dead letter will run")
	var marks []string
	for _, k := range m.Keys() {
		if v, _ := m.Get(k); v == "done" && strings.Contains(k, ":dlq:") {
			marks = append(marks, k)
		}
	}
	require.Len(t, marks, 1)
	require.Regexp(t, `^`+regexp.QuoteMeta(DedupePrefix+"{g:dlq:in/0/3/")+`[0-9a-f]{32}}$`, marks[0],
		"the dead-lettered record is done: a redelivery of it is not dead-lettered twice")

	st := r.c.Stats()
	require.EqualValues(t, 1, st.DeadLettered)
	require.EqualValues(t, 3, st.Failed)
	require.GreaterOrEqual(t, st.DLQErrors, uint64(2))
	require.NoError(t, r.stop())
}

func TestWithoutDeadLetterTopicThePartitionPauses(t *testing.T) {
	kc := oneTopic(t, "in")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 30*time.Second)
	require.NoError(t, p.Publish(ctx, "in", idEvents(6, nil)...))
	var done idSet
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, Concurrency: 2,
		MaxAttempts: 2, Backoff: func(int) time.Duration { return time.Millisecond }, CommitInterval: 20 * time.Millisecond,
		Handler: func(_ context.Context, ev Event) error {
			if ev.ID == "e2" {
				return errors.New("poison pill")
			}
			done.add(ev.ID)
			return nil
		}})
	require.Eventually(t, func() bool { return r.c.Stats().Paused == 1 }, 20*time.Second, 5*time.Millisecond)
	require.Equal(t, map[string][]int32{"in": {0}}, r.c.cl.PauseFetchPartitions(nil), "the partition is paused in the client")
	require.Eventually(t, func() bool { return done.len() == 5 }, 20*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return committed(t, kc, "g", "in")[0] == 2 }, 20*time.Second, 10*time.Millisecond)
	st := r.c.Stats()
	require.EqualValues(t, 2, st.Failed)
	require.Zero(t, st.DeadLettered)
	require.NoError(t, r.stop())
	require.EqualValues(t, 2, committed(t, kc, "g", "in")[0], "never committed past the failed event")
}

// A partition paused for a poison record gets no more of its held records: what the poll
// loop took from kgo before the pause and had not dispatched would queue behind the stuck
// key, fill MaxBuffered and stop every other partition.
func TestPausedPartitionsHeldRecordsDoNotStallOtherPartitions(t *testing.T) {
	kc := kafkatest.ClusterWith(t, kafkatest.Config{Brokers: 1, Partitions: 1, Topics: []string{"a", "b"}})
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 60*time.Second)
	// a0 (key k) fails for good; a1-a7 have keys of their own; a8-a27 queue behind a0.
	keys := map[int]string{0: "k"}
	for i := 8; i < 28; i++ {
		keys[i] = "k"
	}
	evs := idEvents(28, keys)
	for i := range evs {
		evs[i].ID = fmt.Sprintf("a%d", i)
	}
	require.NoError(t, p.Publish(ctx, "a", evs...))
	var done idSet
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"a", "b"}, Concurrency: 1,
		MaxAttempts: 1, MaxBuffered: 8, CommitInterval: 20 * time.Millisecond,
		Handler: func(_ context.Context, ev Event) error {
			if ev.ID == "a0" {
				return errors.New("poison pill")
			}
			done.add(ev.ID)
			return nil
		}})
	require.Eventually(t, func() bool { return r.c.Stats().Paused == 1 }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, p.Publish(ctx, "b", idEvents(3, nil)...))
	require.Eventually(t, func() bool { return done.count("e0")+done.count("e1")+done.count("e2") == 3 },
		30*time.Second, 10*time.Millisecond, "partition b is handled while a is paused; handled: %v", done.snapshot())
	require.Zero(t, done.count("a8"), "nothing of key k runs after its stuck record")
	require.NoError(t, r.stop())
	require.Zero(t, committed(t, kc, "g", "a")[0], "never committed past the failed event")
}

// The records of a stuck key that were queued behind its poison record before the pause are
// dropped, not kept in the buffer: kept, they filled MaxBuffered, the poll loop never polled
// again and every other partition stopped.
func TestStuckKeysQueuedRecordsDoNotStallOtherPartitions(t *testing.T) {
	kc := kafkatest.ClusterWith(t, kafkatest.Config{Brokers: 1, Partitions: 1, Topics: []string{"a", "b"}})
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 60*time.Second)
	// a0 (key k) fails for good; a1-a27 have the same key, so they queue behind it.
	keys := map[int]string{}
	for i := range 28 {
		keys[i] = "k"
	}
	evs := idEvents(28, keys)
	for i := range evs {
		evs[i].ID = fmt.Sprintf("a%d", i)
	}
	require.NoError(t, p.Publish(ctx, "a", evs...))
	release := make(chan struct{})
	var done idSet
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"a", "b"}, Concurrency: 1,
		MaxAttempts: 1, MaxBuffered: 8, CommitInterval: 20 * time.Millisecond,
		Handler: func(ctx context.Context, ev Event) error {
			if ev.ID == "a0" {
				select { // fail only once MaxBuffered records of key k are queued
				case <-release:
				case <-ctx.Done():
				}
				return errors.New("poison pill")
			}
			done.add(ev.ID)
			return nil
		}})
	require.Eventually(t, func() bool { return r.c.Stats().Buffered == 8 }, 30*time.Second, 5*time.Millisecond,
		"a0-a7 are dispatched while a0 runs")
	close(release)
	require.Eventually(t, func() bool { return r.c.Stats().Paused == 1 }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, p.Publish(ctx, "b", idEvents(3, nil)...))
	require.Eventually(t, func() bool { return done.count("e0")+done.count("e1")+done.count("e2") == 3 },
		30*time.Second, 10*time.Millisecond, "partition b is handled while a is paused")
	require.Eventually(t, func() bool { return r.c.Stats().Buffered == 0 }, 30*time.Second, 5*time.Millisecond,
		"the stuck key's records are not buffered")
	for i := 1; i < 28; i++ {
		require.Zero(t, done.count(fmt.Sprintf("a%d", i)), "nothing of key k runs after its stuck record")
	}
	require.Eventually(t, func() bool { return committed(t, kc, "g", "b")[0] == 3 }, 30*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return r.c.Stats().CommitLag == 8 }, 30*time.Second, 10*time.Millisecond,
		"a0-a7 were dispatched and are not committed; b is committed")
	require.NoError(t, r.stop())
	require.Zero(t, committed(t, kc, "g", "a")[0], "never committed past the failed event")
}

func TestHandlerPanicIsAFailure(t *testing.T) {
	kc := oneTopic(t, "in", "in.dlq")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 30*time.Second)
	require.NoError(t, p.Publish(ctx, "in", idEvents(1, nil)...))
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, MaxAttempts: 2,
		Backoff: func(int) time.Duration { return time.Millisecond }, DeadLetterTopic: "in.dlq",
		Handler: func(context.Context, Event) error { panic("kaboom") }})
	recs := readAll(t, kc, "in.dlq", 1)
	require.Contains(t, string(headerValue(recs[0], HeaderDLQError)), "kaboom")
	require.NoError(t, r.stop())
	require.ErrorIs(t, r.c.Run(ctx), ErrClosed, "Run runs once")
}

func headerValue(r *kgo.Record, key string) []byte {
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value
		}
	}
	return nil
}

func TestUndecodableRecordIsDeadLetteredAtOnce(t *testing.T) {
	kc := oneTopic(t, "in", "in.dlq")
	raw := kc.Client(t)
	ctx := testCtx(t, 30*time.Second)
	bad := &kgo.Record{Topic: "in", Key: []byte("k"), Value: []byte("v"),
		Headers: []kgo.RecordHeader{{Key: HeaderTime, Value: []byte("last tuesday")}}}
	require.NoError(t, raw.ProduceSync(ctx, bad).FirstErr())
	var calls atomic.Int64
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, DeadLetterTopic: "in.dlq",
		Handler: func(context.Context, Event) error { calls.Add(1); return nil }})
	recs := readAll(t, kc, "in.dlq", 1)
	require.Contains(t, string(headerValue(recs[0], HeaderDLQError)), "in/0@0")
	require.Equal(t, "0", string(headerValue(recs[0], HeaderDLQAttempts)), "the handler never ran")
	require.Zero(t, calls.Load())
	require.EqualValues(t, 1, r.c.Stats().DecodeErrors)
}

func TestRunDrainsInFlightWorkAndCommitsIt(t *testing.T) {
	kc := oneTopic(t, "in")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 30*time.Second)
	// One key: e0 runs, e1-e4 wait behind it.
	require.NoError(t, p.Publish(ctx, "in", idEvents(5, map[int]string{0: "k", 1: "k", 2: "k", 3: "k", 4: "k"})...))
	started, gate := make(chan struct{}), make(chan struct{})
	var handled atomic.Int64
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, CommitInterval: time.Hour,
		Handler: func(context.Context, Event) error {
			if handled.Add(1) == 1 {
				close(started)
				<-gate
			}
			return nil
		}})
	<-started
	r.cancel()
	close(gate)
	require.NoError(t, r.stop())
	require.EqualValues(t, 1, handled.Load(), "queued events are left for the next run")
	require.EqualValues(t, 1, committed(t, kc, "g", "in")[0], "the in-flight event finished and was committed")
}

func TestShutdownTimeoutCancelsStuckHandlers(t *testing.T) {
	kc := oneTopic(t, "in")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 30*time.Second)
	require.NoError(t, p.Publish(ctx, "in", idEvents(1, nil)...))
	started := make(chan struct{})
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, ShutdownTimeout: 100 * time.Millisecond,
		Handler: func(ctx context.Context, _ Event) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		}})
	<-started
	require.NoError(t, r.stop())
	require.Empty(t, committed(t, kc, "g", "in"), "an event cut short is not committed")
	require.EqualValues(t, 1, r.c.Stats().Failed)
}

// TestForeignRecordsOfARecreatedTopicAreNotDuplicates: records without an event-id header
// get a fallback ID; after the topic is deleted and created again its offsets restart, and
// the new records must not pass for the old ones in the Deduper.
func TestForeignRecordsOfARecreatedTopicAreNotDuplicates(t *testing.T) {
	kc := oneTopic(t, "in")
	_, rdb := redistest.Mini(t)
	dd := NewRedisDeduper(rdb, time.Hour)
	ctx := testCtx(t, 60*time.Second)
	raw := kc.Client(t)
	adm := kadm.NewClient(raw)
	var got idSet
	var values sync.Map
	consume := func(want int) {
		r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, Deduper: dd,
			CommitInterval: 10 * time.Millisecond,
			Handler: func(_ context.Context, ev Event) error {
				values.Store(string(ev.Data), ev.ID)
				got.add(ev.ID)
				return nil
			}})
		require.Eventually(t, func() bool {
			st := r.c.Stats()
			return int(st.Handled+st.Deduped) >= want
		}, 20*time.Second, 5*time.Millisecond)
		require.NoError(t, r.stop())
	}
	for _, v := range []string{"old-0", "old-1", "old-2"} {
		require.NoError(t, raw.ProduceSync(ctx, &kgo.Record{Topic: "in", Key: []byte("k"), Value: []byte(v)}).FirstErr())
	}
	consume(3)
	require.Equal(t, 3, got.len())

	_, err := adm.DeleteTopic(ctx, "in")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(kc.Fake().PartitionInfos("in")) == 0 }, 10*time.Second, 5*time.Millisecond)
	_, err = adm.CreateTopic(ctx, 1, 1, nil, "in")
	require.NoError(t, err)
	fresh := kc.Client(t) // raw knows the old topic ID
	require.NoError(t, fresh.ProduceSync(ctx, &kgo.Record{Topic: "in", Key: []byte("k"), Value: []byte("new-0")}).FirstErr())
	consume(1)
	id, ok := values.Load("new-0")
	require.True(t, ok, "the record of the new topic reached the handler")
	require.Equal(t, 1, got.count(id.(string)))
	old, _ := values.Load("old-0")
	require.NotEqual(t, old, id, "same topic, partition and offset, another incarnation")
}

// TestTransactionalTopicReachesZeroLag: a transaction's commit marker takes an offset the
// handler never sees; a caught-up group must still commit up to the end of the partition.
func TestTransactionalTopicReachesZeroLag(t *testing.T) {
	kc := oneTopic(t, "in")
	ctx := testCtx(t, 30*time.Second)
	p, err := NewProducer(ProducerConfig{Brokers: kc.Seeds(), TransactionalID: "tx-lag"})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	for range 3 {
		require.NoError(t, p.Publish(ctx, "in", idEvents(2, nil)...))
	}
	var handled atomic.Int64
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, CommitInterval: 10 * time.Millisecond,
		Handler: func(context.Context, Event) error { handled.Add(1); return nil }})
	require.Eventually(t, func() bool { return handled.Load() == 6 }, 20*time.Second, 5*time.Millisecond)
	require.NoError(t, r.stop())
	require.Equal(t, endOffsets(kc, "in"), committed(t, kc, "g", "in"), "6 events and 3 commit markers: 9 offsets")

	m, err := NewLagMonitor(LagConfig{Brokers: kc.Seeds(), Group: "g", Topics: []string{"in"}})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	rep, err := m.Check(ctx)
	require.NoError(t, err)
	require.Zero(t, rep.TotalLag)
}

func TestConsumeRegexIsRefused(t *testing.T) {
	_, err := NewConsumer(ConsumerConfig{Brokers: []string{"b:1"}, Group: "g", Topics: []string{"in.*"},
		DeadLetterTopic: "in.dlq", KafkaOptions: []kgo.Opt{kgo.ConsumeRegex()},
		Handler: func(context.Context, Event) error { return nil }})
	require.ErrorIs(t, err, ErrInvalidOptions, "Topics would become regexes matching the dead-letter topic")
	require.ErrorContains(t, err, "ConsumeRegex")
}

// newClientCounter counts kgo clients built with it (kgo calls OnNewClient for each).
type newClientCounter struct{ n atomic.Int64 }

func (h *newClientCounter) OnNewClient(*kgo.Client) { h.n.Add(1) }

// NewConsumer checks KafkaOptions without building a client: a client it built and closed
// would still start kgo's goroutines and run the caller's hooks (metrics plugins count it).
// A bad option still fails there, naming the field and kgo's reason.
func TestNewConsumerChecksOptionsWithoutAClient(t *testing.T) {
	hooks := &newClientCounter{}
	base := ConsumerConfig{Brokers: []string{"b:1"}, Group: "g", Topics: []string{"in"}, DeadLetterTopic: "in.dlq",
		Handler: func(context.Context, Event) error { return nil }}
	ok := base
	ok.KafkaOptions = []kgo.Opt{kgo.WithHooks(hooks), kgo.FetchMaxWait(time.Second)}
	_, err := NewConsumer(ok)
	require.NoError(t, err)
	require.Zero(t, hooks.n.Load(), "NewConsumer built a kgo client")

	for name, tc := range map[string]struct {
		opts []kgo.Opt
		want string
	}{
		"invalid value":             {[]kgo.Opt{kgo.MetadataMinAge(time.Millisecond)}, "metadata min age"},
		"acks below all":            {[]kgo.Opt{kgo.RequiredAcks(kgo.LeaderAck())}, "acks"},
		"not idempotent":            {[]kgo.Opt{kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite()}, "DisableIdempotentWrite"},
		"cancellable":               {[]kgo.Opt{kgo.AllowIdempotentProduceCancellation()}, "AllowIdempotentProduceCancellation"},
		"regex":                     {[]kgo.Opt{kgo.ConsumeRegex()}, "ConsumeRegex"},
		"bad seed with a good hook": {[]kgo.Opt{kgo.WithHooks(hooks), kgo.SeedBrokers("b:notaport")}, "KafkaOptions"},
	} {
		cfg := base
		cfg.KafkaOptions = tc.opts
		_, err := NewConsumer(cfg)
		require.ErrorIs(t, err, ErrInvalidOptions, name)
		require.ErrorContains(t, err, tc.want, name)
	}
	require.Zero(t, hooks.n.Load(), "NewConsumer built a kgo client")
}
