package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/surgekit/surge/internal/kafkatest"
)

func TestNewProducerRejectsUnsafeOptions(t *testing.T) {
	seeds := []string{"127.0.0.1:1"}
	cases := map[string][]kgo.Opt{
		"DisableIdempotentWrite":             {kgo.DisableIdempotentWrite()},
		"AllowIdempotentProduceCancellation": {kgo.AllowIdempotentProduceCancellation()},
		"acks":                               {kgo.RequiredAcks(kgo.LeaderAck())},
		"kgo.DisableIdempotentWrite":         {kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite()},
	}
	for want, opts := range cases {
		_, err := NewProducer(ProducerConfig{Brokers: seeds, KafkaOptions: opts})
		require.ErrorIs(t, err, ErrInvalidOptions, want)
		require.ErrorContains(t, err, want)
	}
	_, err := NewProducer(ProducerConfig{})
	require.ErrorIs(t, err, ErrInvalidOptions)
	require.ErrorContains(t, err, "Brokers")

	p, err := NewProducer(ProducerConfig{Brokers: seeds, KafkaOptions: []kgo.Opt{kgo.ProducerLinger(time.Millisecond)}})
	require.NoError(t, err, "harmless options pass")
	p.Close()
}

// countRecords returns how many records topic holds.
func countRecords(kc *kafkatest.KafkaCluster, topic string) int64 {
	return total(endOffsets(kc, topic))
}

func TestPublishWritesExactlyOneCopyWhenTheAckIsLost(t *testing.T) {
	kc := kafkatest.Cluster(t, "orders", "raw")
	ctx := testCtx(t, 20*time.Second)
	timedOut := func(topic string) *kfake.FaultHandle {
		// The broker appends the batch, then answers REQUEST_TIMED_OUT: the client must retry.
		return kc.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.RequestTimedOut, Count: 1})
	}

	// Without idempotence the same fault leaves two copies: the fault is real.
	raw := kc.Client(t, kgo.DisableIdempotentWrite())
	h := timedOut("raw")
	require.NoError(t, raw.ProduceSync(ctx, &kgo.Record{Topic: "raw", Key: []byte("k"), Value: []byte("v")}).FirstErr())
	require.EqualValues(t, 1, h.Hits())
	require.EqualValues(t, 2, countRecords(kc, "raw"))

	p := newTestProducer(t, kc)
	h = timedOut("orders")
	ev, err := NewEvent("order.created", "o-1", map[string]int{"total": 10})
	require.NoError(t, err)
	require.NoError(t, p.Publish(ctx, "orders", ev))
	require.EqualValues(t, 1, h.Hits(), "the fault fired")
	require.EqualValues(t, 1, countRecords(kc, "orders"), "exactly one copy")
	recs := readAll(t, kc, "orders", 1)
	got, err := fromRecord(recs[0])
	require.NoError(t, err)
	require.Equal(t, ev.ID, got.ID)
	require.EqualValues(t, 1, p.Stats().Published)
}

// murmur2 is Kafka's Utils.murmur2, written from its description to check placement.
func murmur2(data []byte) uint32 {
	const m, r = 0x5bd1e995, 24
	h := uint32(0x9747b28c) ^ uint32(len(data))
	n := len(data) / 4 * 4
	for i := 0; i < n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch len(data) % 4 {
	case 3:
		h ^= uint32(data[n+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[n+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[n])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

func TestKeyedEventsLandWhereTheJavaClientPutsThem(t *testing.T) {
	// Vectors from Kafka's UtilsTest.testMurmur2.
	vectors := map[string]int32{"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
		"a-little-bit-longer-string": -1486304829, "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107}
	for s, want := range vectors {
		require.Equal(t, want, int32(murmur2([]byte(s))), s)
	}

	kc := kafkatest.ClusterWith(t, kafkatest.Config{Partitions: 7, Topics: []string{"orders"}})
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 20*time.Second)
	var evs []Event
	for i := range 200 {
		evs = append(evs, Event{Type: "t", Key: fmt.Sprintf("customer-%d", i)})
	}
	require.NoError(t, p.Publish(ctx, "orders", evs...))
	for _, r := range readAll(t, kc, "orders", len(evs)) {
		want := int32(murmur2(r.Key)&0x7fffffff) % 7
		require.Equal(t, want, r.Partition, "key %s", r.Key)
	}
}

func TestPublishJoinsFailuresWithEventIDs(t *testing.T) {
	kc := kafkatest.Cluster(t, "orders")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 20*time.Second)
	kc.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "orders", Err: kerr.InvalidRecord, Count: -1})
	evs := []Event{{ID: "ev-a", Key: "a"}, {ID: "ev-b", Key: "b"}}
	err := p.Publish(ctx, "orders", evs...)
	require.ErrorIs(t, err, kerr.InvalidRecord)
	require.ErrorContains(t, err, "ev-a")
	require.ErrorContains(t, err, "ev-b")
	require.EqualValues(t, 2, p.Stats().Failed)

	err = p.Publish(ctx, "orders", Event{ID: "x", Headers: map[string]string{HeaderID: "y"}})
	require.ErrorContains(t, err, "reserved")
	require.ErrorContains(t, p.Publish(ctx, "", Event{}), "empty topic")
}

func TestPublishAsyncFlushAndClose(t *testing.T) {
	kc := kafkatest.Cluster(t, "orders")
	p, err := NewProducer(ProducerConfig{Brokers: kc.Seeds()})
	require.NoError(t, err)
	ctx := testCtx(t, 20*time.Second)
	var mu sync.Mutex
	var errs []error
	for i := range 500 {
		p.PublishAsync(ctx, "orders", Event{Type: "t", Key: fmt.Sprint(i % 10), Data: []byte("x")}, func(err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	require.NoError(t, p.Flush(ctx))
	mu.Lock()
	require.Len(t, errs, 500, "every callback ran by the time Flush returned")
	require.NoError(t, errors.Join(errs...))
	mu.Unlock()
	require.EqualValues(t, 500, countRecords(kc, "orders"))

	p.PublishAsync(ctx, "orders", Event{}, nil) // nil callback is fine
	p.Close()
	require.EqualValues(t, 501, countRecords(kc, "orders"), "Close flushed")
	p.Close() // idempotent
	require.ErrorIs(t, p.Publish(ctx, "orders", Event{}), ErrClosed)
	done := make(chan error, 1)
	p.PublishAsync(ctx, "orders", Event{}, func(err error) { done <- err })
	require.ErrorIs(t, <-done, ErrClosed)
}

// TestTransactCommitsAllOrNothing failed about once in 40-100 runs under load, on "read 0 of 1
// records from marker": kgo v1.22.2's EndTransaction(TryCommit) sometimes finds no partition
// marked as added although the marker's record was acknowledged, logs "no produce succeeded in
// this transaction but produces were attempted; issuing an abort" and returns nil. Seen only for
// the first transaction writing to a topic new to the client. Transact now sees that line
// (txnWatch) and returns ErrTxnNotCommitted instead of a false success, and a transactional
// Publish runs its transaction again: 200 runs of this test with -race then passed.
func TestTransactCommitsAllOrNothing(t *testing.T) {
	kc := kafkatest.Cluster(t, "orders", "payments", "marker")
	ctx := testCtx(t, 30*time.Second)
	p, err := NewProducer(ProducerConfig{Brokers: kc.Seeds(), TransactionalID: "tx-1"})
	require.NoError(t, err)
	t.Cleanup(p.Close)

	boom := errors.New("boom")
	err = p.Transact(ctx, func(ctx context.Context, tx *Tx) error {
		require.NoError(t, tx.Publish(ctx, "orders", Event{ID: "aborted-1", Key: "k"}))
		return boom
	})
	require.ErrorIs(t, err, boom)

	err = p.Transact(ctx, func(ctx context.Context, tx *Tx) error {
		if err := tx.Publish(ctx, "orders", Event{ID: "o-1", Key: "k"}); err != nil {
			return err
		}
		return tx.Publish(ctx, "payments", Event{ID: "p-1", Key: "k"})
	})
	require.NoError(t, err)
	require.NoError(t, p.Publish(ctx, "marker", Event{ID: "m-1"}), "Publish runs as its own transaction")

	ids := func(topic string) []string {
		var out []string
		for _, r := range readAll(t, kc, topic, 1) {
			ev, err := fromRecord(r)
			require.NoError(t, err)
			out = append(out, ev.ID)
		}
		return out
	}
	require.Equal(t, []string{"o-1"}, ids("orders"), "the aborted event is invisible to read-committed readers")
	require.Equal(t, []string{"p-1"}, ids("payments"))
	require.Equal(t, []string{"m-1"}, ids("marker"))

	done := make(chan error, 1)
	p.PublishAsync(ctx, "orders", Event{}, func(err error) { done <- err })
	require.ErrorIs(t, <-done, ErrTransactional)

	plain := newTestProducer(t, kc)
	require.ErrorIs(t, plain.Transact(ctx, func(context.Context, *Tx) error { return nil }), ErrNotTransactional)
}

func TestTransactAbortsWhenAWriteFails(t *testing.T) {
	kc := kafkatest.Cluster(t, "orders", "payments")
	ctx := testCtx(t, 30*time.Second)
	p, err := NewProducer(ProducerConfig{Brokers: kc.Seeds(), TransactionalID: "tx-2"})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	h := kc.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "orders", Err: kerr.InvalidRecord, Count: -1})
	err = p.Transact(ctx, func(ctx context.Context, tx *Tx) error {
		if err := tx.Publish(ctx, "payments", Event{ID: "p-1", Key: "k"}); err != nil {
			return err
		}
		return tx.Publish(ctx, "orders", Event{ID: "o-bad", Key: "k"})
	})
	require.ErrorIs(t, err, kerr.InvalidRecord)
	require.ErrorContains(t, err, "o-bad")
	h.Remove()

	// The producer is usable again, and the payment written next to the failed order was aborted.
	require.NoError(t, p.Publish(ctx, "payments", Event{ID: "p-2", Key: "k"}))
	recs := readAll(t, kc, "payments", 1)
	require.Len(t, recs, 1)
	require.Equal(t, "p-2", string(headerValue(recs[0], HeaderID)))
}

// TestPublishRefusesATimeAConsumerCannotRead: RFC 3339 has four-digit years, so an event
// outside years 0-9999 would be a poison pill from birth.
func TestPublishRefusesATimeAConsumerCannotRead(t *testing.T) {
	kc := oneTopic(t, "in")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 30*time.Second)
	for _, ts := range []time.Time{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)} {
		err := p.Publish(ctx, "in", Event{ID: "far", Time: ts})
		require.ErrorIs(t, err, ErrInvalidEvent, "year %d", ts.Year())
		require.ErrorContains(t, err, "far")
		done := make(chan error, 1)
		p.PublishAsync(ctx, "in", Event{ID: "far", Time: ts}, func(err error) { done <- err })
		require.ErrorIs(t, <-done, ErrInvalidEvent)
	}
	require.Zero(t, countRecords(kc, "in"))

	// Any other time is written in UTC and reads back as the same instant.
	at := time.Date(2026, 3, 1, 12, 0, 0, 5, time.FixedZone("CET", 3600))
	require.NoError(t, p.Publish(ctx, "in", Event{ID: "ok", Time: at}))
	r := readAll(t, kc, "in", 1)[0]
	require.Equal(t, "2026-03-01T11:00:00.000000005Z", string(headerValue(r, HeaderTime)))
	ev, err := fromRecord(r)
	require.NoError(t, err)
	require.True(t, ev.Time.Equal(at))
}

// TestPublishInsideTransactDoesNotDeadlock: Publish on a transactional producer is its own
// transaction; called inside Transact's fn it must neither hang nor ignore ctx.
func TestPublishInsideTransactDoesNotDeadlock(t *testing.T) {
	kc := oneTopic(t, "in")
	ctx := testCtx(t, 30*time.Second)
	p, err := NewProducer(ProducerConfig{Brokers: kc.Seeds(), TransactionalID: "tx-nested"})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	res := make(chan error, 1)
	go func() {
		res <- p.Transact(ctx, func(ctx context.Context, tx *Tx) error {
			return p.Publish(ctx, "in", Event{ID: "inner"})
		})
	}()
	select {
	case err := <-res:
		require.ErrorIs(t, err, ErrNestedTransaction)
	case <-time.After(10 * time.Second):
		t.Fatal("Publish inside Transact deadlocked")
	}
	// A Publish waiting for another goroutine's transaction gives up when its ctx ends.
	inside, leave := make(chan struct{}), make(chan struct{})
	go func() {
		res <- p.Transact(ctx, func(context.Context, *Tx) error { close(inside); <-leave; return nil })
	}()
	<-inside
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, p.Publish(short, "in", Event{ID: "waits"}), context.DeadlineExceeded)
	close(leave)
	require.NoError(t, <-res)
}

// TestUserPartitionerIsRefused: keyed events must land where murmur2 puts them, or per-key
// order across producers breaks.
func TestUserPartitionerIsRefused(t *testing.T) {
	_, err := NewProducer(ProducerConfig{Brokers: []string{"127.0.0.1:1"},
		KafkaOptions: []kgo.Opt{kgo.RecordPartitioner(kgo.RoundRobinPartitioner())}})
	require.ErrorIs(t, err, ErrInvalidOptions)
	require.ErrorContains(t, err, "RecordPartitioner")
}
