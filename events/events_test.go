package events

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/surgekit/surge/internal/kafkatest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCtx returns a context that ends with the test or after d.
func testCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// groupOpts make group membership changes quick on kfake.
func groupOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.SessionTimeout(time.Second),
		kgo.HeartbeatInterval(100 * time.Millisecond),
		kgo.RebalanceTimeout(5 * time.Second),
	}
}

func newTestProducer(t testing.TB, kc *kafkatest.KafkaCluster, opts ...kgo.Opt) *Producer {
	t.Helper()
	p, err := NewProducer(ProducerConfig{Brokers: kc.Seeds(), KafkaOptions: opts})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

// endOffsets sums the high watermarks of topic's partitions.
func endOffsets(kc *kafkatest.KafkaCluster, topic string) map[int32]int64 {
	out := map[int32]int64{}
	for _, p := range kc.Fake().PartitionInfos(topic) {
		out[p.Partition] = p.HighWatermark
	}
	return out
}

func total(m map[int32]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// readAll reads every record of topic from the start with a plain client.
func readAll(t testing.TB, kc *kafkatest.KafkaCluster, topic string, want int) []*kgo.Record {
	t.Helper()
	ctx := testCtx(t, 20*time.Second)
	cl := kc.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read %d of %d records from %s", len(out), want, topic)
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

type runner struct {
	c      *Consumer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// startConsumer runs a consumer for cfg (with quick group timeouts) until the test ends.
func startConsumer(t testing.TB, kc *kafkatest.KafkaCluster, cfg ConsumerConfig) *runner {
	t.Helper()
	cfg.Brokers = kc.Seeds()
	cfg.KafkaOptions = append(groupOpts(), cfg.KafkaOptions...)
	c, err := NewConsumer(cfg)
	require.NoError(t, err)
	return runConsumer(t, c)
}

func runConsumer(t testing.TB, c *Consumer) *runner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { _ = r.stop() })
	return r
}

// stop cancels Run and returns its error; idempotent.
func (r *runner) stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
	})
	return r.err
}

// committed returns the group's committed offsets of topic; none while the group is unknown.
// It does not fail the test, so it can run inside require.Eventually.
func committed(t testing.TB, kc *kafkatest.KafkaCluster, group, topic string) map[int32]int64 {
	t.Helper()
	out := map[int32]int64{}
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.Seeds()...))
	if err != nil {
		return out
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return out
	}
	for p, o := range offs[topic] {
		if o.Err == nil {
			out[p] = o.At
		}
	}
	return out
}

// seqEvents makes n events spread over keys key-0..key-(keys-1), each carrying its per-key
// sequence number as the payload.
func seqEvents(t testing.TB, n, keys int) []Event {
	t.Helper()
	evs := make([]Event, n)
	for i := range evs {
		ev, err := NewEvent("seq", fmt.Sprintf("key-%d", i%keys), i/keys)
		require.NoError(t, err)
		evs[i] = ev
	}
	return evs
}

// orderLog records handled events per key and checks that each key's sequence only grows.
type orderLog struct {
	mu    sync.Mutex
	last  map[string]int
	count map[string]int // by event ID
	bad   []string
	n     atomic.Int64

	running  map[string]int // handler calls in progress by key (see enter)
	overlaps int            // calls that began while another of their key ran
}

func newOrderLog() *orderLog { return &orderLog{last: map[string]int{}, count: map[string]int{}} }

func (l *orderLog) add(_ testing.TB, ev Event) {
	var seq int
	err := ev.Decode(&seq)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil { // handlers run off the test goroutine: record, do not FailNow
		l.bad = append(l.bad, err.Error())
	}
	if last, ok := l.last[ev.Key]; ok && seq <= last {
		l.bad = append(l.bad, fmt.Sprintf("key %s: %d after %d", ev.Key, seq, last))
	}
	l.last[ev.Key] = seq
	if l.count[ev.ID] == 0 {
		l.n.Add(1)
	}
	l.count[ev.ID]++
}

func (l *orderLog) distinct() int64 { return l.n.Load() }

// enter notes that a handler call for key begins and returns what notes its end: a call that
// begins while another of its key runs counts as an overlap (see requireOnceInOrder).
func (l *orderLog) enter(key string) (leave func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running == nil {
		l.running = map[string]int{}
	}
	if l.running[key]++; l.running[key] > 1 {
		l.overlaps++
	}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.running[key]--
	}
}

// requireOnceInOrder checks what the log saw: each key's events in order, one handler call of
// a key at a time (when the handler used enter) and each event handled once.
func (l *orderLog) requireOnceInOrder(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Empty(t, l.bad, "per-key order")
	require.Zero(t, l.overlaps, "one handler per key at a time")
	for id, n := range l.count {
		require.Equal(t, 1, n, "event %s handled once", id)
	}
}
