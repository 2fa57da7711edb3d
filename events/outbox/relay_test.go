package outbox

import (
	"database/sql"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/surgekit/surge/events"
	"github.com/surgekit/surge/internal/kafkatest"
	"github.com/surgekit/surge/internal/pgtest"
)

// Two relays share a table; the leader dies without releasing its lease (as a killed process
// would) while writers keep committing. The other takes over, and every key's events reach the
// topic in commit order.
func TestTwoRelaysKeepKeyOrderAcrossALeaderKill(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect, db *sql.DB, _ string) {
		const total = 3000
		kc := kafkatest.Cluster(t, "ticks")
		ob, err := New(db, &Options{Dialect: d})
		require.NoError(t, err)
		w := newWorkload(t, db, ob, "ticks", 12)
		opt := &RelayOptions{BatchSize: 50, PollInterval: 5 * time.Millisecond,
			LeaseTTL: 600 * time.Millisecond, PublishTimeout: 300 * time.Millisecond, MinBackoff: 5 * time.Millisecond}
		relays := make([]*Relay, 2)
		stops := make([]func(), 2)
		for i := range relays {
			relays[i], err = NewRelay(ob, newProducer(t, kc), opt)
			require.NoError(t, err)
			stops[i] = runRelay(t, relays[i])
		}

		ctx := testCtx(t, 60*time.Second)
		writeDone := make(chan error, 1)
		go func() { writeDone <- w.run(ctx, total, 4, 5) }()

		var leader int
		poll(t, 20*time.Second, "a relay to publish 300 events", func() bool {
			for i, r := range relays {
				if s := r.Stats(); s.Leader && s.Published >= 300 {
					leader = i
					return true
				}
			}
			return false
		})
		relays[leader].crash = true // stop as a killed process would: the lease stays taken
		stops[leader]()
		other := relays[1-leader]
		poll(t, 20*time.Second, "the other relay to take over", func() bool { return other.Stats().Leader })
		require.NoError(t, <-writeDone)

		want := w.snapshot()
		require.Len(t, want, total)
		rs := newReader(t, kc, "ticks").until(30*time.Second, func(rs []rec) bool { return seenAll(rs, want) })
		dups := verify(t, rs, want)
		t.Logf("%d events, %d duplicate copies; survivor %+v", total, dups, other.Stats())
		require.GreaterOrEqual(t, other.Stats().Acquired, uint64(1))
	})
}

// While Kafka refuses every produce request the relay backs off and does not produce the same
// rows again; when Kafka is back every event is published once.
func TestKafkaDownBacksOffAndLosesNothing(t *testing.T) {
	db, _ := sqliteDB(t)
	kc := kafkatest.Cluster(t, "orders")
	var down atomic.Bool
	var refused atomic.Int64
	down.Store(true)
	kc.Fake().ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if !down.Load() {
			return nil, nil, false
		}
		kc.Fake().KeepControl()
		refused.Add(1)
		return nil, errors.New("kafka is down"), true
	})
	ob, err := New(db, nil)
	require.NoError(t, err)
	p := newProducer(t, kc)
	r, err := NewRelay(ob, p, &RelayOptions{PollInterval: 5 * time.Millisecond, LeaseTTL: 300 * time.Millisecond,
		PublishTimeout: 50 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond})
	require.NoError(t, err)
	runRelay(t, r)

	var evs []events.Event
	for i := range 20 {
		evs = append(evs, mustEvent(t, "order.created", "o1", i))
	}
	addTx(t, ob, "orders", evs...)
	poll(t, 20*time.Second, "three failed rounds", func() bool { return r.Stats().Failures >= 3 })
	st := r.Stats()
	require.ErrorContains(t, st.LastError, "not acknowledged")
	require.False(t, st.LastErrorAt.IsZero())
	require.Zero(t, st.Published)
	require.LessOrEqual(t, p.Stats().Buffered, int64(len(evs)), "the same rows were handed to the producer again")
	require.Positive(t, refused.Load())

	down.Store(false)
	poll(t, 20*time.Second, "the events to be published", func() bool { return r.Stats().Published == uint64(len(evs)) })
	got := newReader(t, kc, "orders").until(10*time.Second, func(rs []rec) bool { return len(rs) >= len(evs) })
	want := make([]string, len(evs))
	for i, ev := range evs {
		want[i] = ev.ID
	}
	require.Equal(t, want, ids(got), "each event once, in order")
	require.EqualValues(t, len(evs), p.Stats().Published)
}

// A relay that stops cleanly releases its lease: another takes over at once, not after LeaseTTL.
func TestStoppedLeaderHandsOverAtOnce(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect, db *sql.DB, _ string) {
		kc := kafkatest.Cluster(t, "orders")
		ob, err := New(db, &Options{Dialect: d})
		require.NoError(t, err)
		opt := &RelayOptions{PollInterval: 5 * time.Millisecond, LeaseTTL: time.Hour}
		first, err := NewRelay(ob, newProducer(t, kc), opt)
		require.NoError(t, err)
		stopFirst := runRelay(t, first)
		poll(t, 10*time.Second, "the first relay to lead", func() bool { return first.Stats().Leader })
		second, err := NewRelay(ob, newProducer(t, kc), opt)
		require.NoError(t, err)
		runRelay(t, second)

		stopFirst()
		require.False(t, first.Stats().Leader)
		poll(t, 10*time.Second, "the second relay to lead (the lease lasts an hour)", func() bool { return second.Stats().Leader })
		ev := mustEvent(t, "order.created", "o1", 1)
		addTx(t, ob, "orders", ev)
		got := newReader(t, kc, "orders").until(10*time.Second, func(rs []rec) bool { return len(rs) >= 1 })
		require.Equal(t, []string{ev.ID}, ids(got))
	})
}

// With the database gone the relay logs and backs off, and still stops promptly when asked.
func TestDatabaseDownBacksOffAndStops(t *testing.T) {
	pg := pgtest.Server(t)
	db := pg.DB(t)
	kc := kafkatest.Cluster(t, "orders")
	ob, err := New(db, nil)
	require.NoError(t, err)
	r, err := NewRelay(ob, newProducer(t, kc), &RelayOptions{PollInterval: 5 * time.Millisecond,
		LeaseTTL: 300 * time.Millisecond, PublishTimeout: 100 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	require.NoError(t, err)
	stop := runRelay(t, r)
	poll(t, 10*time.Second, "the relay to lead", func() bool { return r.Stats().Leader })

	pg.Kill()
	poll(t, 20*time.Second, "three failed rounds", func() bool { return r.Stats().Failures >= 3 })
	require.Error(t, r.Stats().LastError)
	poll(t, 10*time.Second, "the relay to stop leading (it cannot renew its lease)", func() bool { return !r.Stats().Leader })
	stop() // returns: nothing waits for the dead database past its timeouts
}
