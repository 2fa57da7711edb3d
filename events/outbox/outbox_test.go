package outbox

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/surgekit/surge/events"
	"github.com/surgekit/surge/internal/kafkatest"
)

func TestMain(m *testing.M) {
	if isChild() {
		runChild() // a relay process for TestKilledRelayProcessLosesNothing; never returns
	}
	goleak.VerifyTestMain(m)
}

func TestRollbackPublishesNothing(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect, db *sql.DB, _ string) {
		kc := kafkatest.Cluster(t, "orders")
		ob, err := New(db, &Options{Dialect: d})
		require.NoError(t, err)
		r, err := NewRelay(ob, newProducer(t, kc), &RelayOptions{PollInterval: 10 * time.Millisecond})
		require.NoError(t, err)
		runRelay(t, r)

		ctx := testCtx(t, 30*time.Second)
		rolledBack := mustEvent(t, "order.created", "o1", map[string]int{"n": 1})
		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		require.NoError(t, ob.Add(ctx, tx, "orders", rolledBack))
		require.NoError(t, tx.Rollback())

		// A committed marker afterwards: once it is on the topic, the relay has looked at least
		// once after the rollback.
		marker := mustEvent(t, "marker", "o1", nil)
		addTx(t, ob, "orders", marker)
		r.Notify()
		got := newReader(t, kc, "orders").until(10*time.Second, func(rs []rec) bool { return len(rs) >= 1 })
		require.Equal(t, []string{marker.ID}, ids(got), "only the committed event is published")
		poll(t, 10*time.Second, "the outbox to drain", func() bool { n, err := ob.Pending(ctx); return err == nil && n == 0 })
	})
}

func TestCommitPublishesExactlyTheAddedEvents(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect, db *sql.DB, _ string) {
		kc := kafkatest.Cluster(t, "orders", "payments")
		ob, err := New(db, &Options{Dialect: d})
		require.NoError(t, err)

		at := time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.UTC)
		evs := []events.Event{
			{ID: "id-1", Type: "order.created", Key: "o1", Time: at, Data: []byte(`{"total":42}`),
				Headers: map[string]string{"trace": "abc", "tenant": "t1"}},
			{ID: "id-2", Type: "order.paid", Key: "o1", Time: at.Add(time.Second), Data: []byte{0, 1, 2, 255}},
			{Type: "order.noted", Key: "", Data: nil}, // no ID, no time, no key, no data
		}
		pay := mustEvent(t, "payment.taken", "o1", map[string]int{"amount": 42})
		tx, err := db.Begin()
		require.NoError(t, err)
		require.NoError(t, ob.Add(context.Background(), tx, "orders", evs...))
		require.NoError(t, ob.Add(context.Background(), tx, "payments", pay))
		require.NoError(t, tx.Commit())
		require.Equal(t, "", evs[2].ID, "Add does not change the caller's events")
		n, err := ob.Pending(context.Background())
		require.NoError(t, err)
		require.Equal(t, 4, n)

		r, err := NewRelay(ob, newProducer(t, kc), &RelayOptions{PollInterval: 10 * time.Millisecond})
		require.NoError(t, err)
		runRelay(t, r)

		all := newReader(t, kc, "orders").until(10*time.Second, func(rs []rec) bool { return len(rs) >= 3 })
		require.Len(t, all, 3)
		byID := map[string]rec{}
		var noted rec
		for _, r := range all {
			byID[r.id] = r
			if r.typ == "order.noted" {
				noted = r
			}
		}
		first, second := byID["id-1"], byID["id-2"]
		require.Equal(t, rec{id: "id-1", typ: "order.created", key: "o1", data: []byte(`{"total":42}`),
			headers: map[string]string{"trace": "abc", "tenant": "t1"}, time: "2026-03-04T05:06:07.891011121Z",
			partition: first.partition, offset: first.offset}, first)
		require.Equal(t, "id-2", second.id)
		require.Equal(t, []byte{0, 1, 2, 255}, second.data)
		require.Equal(t, first.partition, second.partition)
		require.Less(t, first.offset, second.offset, "one key keeps its order")
		require.NotEmpty(t, noted.id, "an event added without an ID gets one")
		require.Empty(t, noted.key)
		require.Empty(t, noted.data)
		require.NotEmpty(t, noted.time)

		pays := newReader(t, kc, "payments").until(10*time.Second, func(rs []rec) bool { return len(rs) >= 1 })
		require.Equal(t, []string{pay.ID}, ids(pays))
		require.JSONEq(t, `{"amount":42}`, string(pays[0].data))

		poll(t, 10*time.Second, "the outbox to drain", func() bool { n, err := ob.Pending(context.Background()); return err == nil && n == 0 })
		st := r.Stats()
		require.True(t, st.Leader)
		require.EqualValues(t, 4, st.Published)
		require.EqualValues(t, 1, st.Acquired)
		require.Zero(t, st.Failures)
	})
}

func TestAddRejectsBadInput(t *testing.T) {
	db, _ := sqliteDB(t)
	ob, err := New(db, nil)
	require.NoError(t, err)
	require.Equal(t, SQLite, ob.Dialect(), "detected")
	require.Equal(t, DefaultTable, ob.Table())
	ctx := context.Background()
	tx, err := db.Begin()
	require.NoError(t, err)
	defer tx.Rollback() //nolint:errcheck

	require.ErrorContains(t, ob.Add(ctx, nil, "orders", events.Event{Type: "x"}), "nil transaction")
	require.ErrorContains(t, ob.Add(ctx, tx, "", events.Event{Type: "x"}), "empty topic")
	err = ob.Add(ctx, tx, "orders", events.Event{Type: "ok"}, events.Event{Type: "x", Headers: map[string]string{events.HeaderID: "y"}})
	require.ErrorContains(t, err, `header "event-id" is reserved`)
	require.NoError(t, ob.Add(ctx, tx, "orders")) // nothing to add
	var n int
	require.NoError(t, tx.QueryRow("SELECT count(*) FROM "+DefaultTable).Scan(&n))
	require.Zero(t, n, "a rejected call writes nothing")
}

func TestOptionsAreValidated(t *testing.T) {
	db, _ := sqliteDB(t)
	for _, tc := range []struct {
		opt  *Options
		want string
	}{
		{&Options{Table: "orders; DROP TABLE x"}, "Options.Table"},
		{&Options{Table: "a.b", Dialect: SQLite}, "Options.Table"},
		{&Options{Dialect: 7}, "Options.Dialect"},
	} {
		_, err := New(db, tc.opt)
		require.ErrorIs(t, err, ErrInvalidOptions)
		require.ErrorContains(t, err, tc.want)
	}
	_, err := New(nil, nil)
	require.ErrorIs(t, err, ErrInvalidOptions)

	ob, err := New(db, &Options{Table: "my_outbox"})
	require.NoError(t, err)
	kc := kafkatest.Cluster(t, "orders")
	p := newProducer(t, kc)
	for _, tc := range []struct {
		opt  *RelayOptions
		want string
	}{
		{&RelayOptions{BatchSize: -1}, "RelayOptions.BatchSize"},
		{&RelayOptions{BatchSize: maxBatchSize + 1}, "RelayOptions.BatchSize"},
		{&RelayOptions{PollInterval: -time.Second}, "RelayOptions.PollInterval"},
		{&RelayOptions{LeaseTTL: -time.Second}, "RelayOptions.LeaseTTL"},
		{&RelayOptions{LeaseTTL: time.Second, PublishTimeout: 2 * time.Second}, "PublishTimeout"},
		{&RelayOptions{PublishTimeout: DefaultLeaseTTL}, "PublishTimeout"},
		{&RelayOptions{MinBackoff: time.Minute, MaxBackoff: time.Second}, "MaxBackoff"},
	} {
		_, err := NewRelay(ob, p, tc.opt)
		require.ErrorIs(t, err, ErrInvalidOptions, "%+v", tc.opt)
		require.ErrorContains(t, err, tc.want)
	}
	_, err = NewRelay(nil, p, nil)
	require.ErrorIs(t, err, ErrInvalidOptions)
	_, err = NewRelay(ob, nil, nil)
	require.ErrorIs(t, err, ErrInvalidOptions)
	r, err := NewRelay(ob, p, nil)
	require.NoError(t, err)
	require.NotEmpty(t, r.Name())
}

func TestNotifySkipsThePollWait(t *testing.T) {
	db, _ := sqliteDB(t)
	kc := kafkatest.Cluster(t, "orders")
	ob, err := New(db, nil)
	require.NoError(t, err)
	// An hour between polls: without Notify nothing would be published during the test.
	r, err := NewRelay(ob, newProducer(t, kc), &RelayOptions{PollInterval: time.Hour, LeaseTTL: 3 * time.Hour})
	require.NoError(t, err)
	runRelay(t, r)
	poll(t, 10*time.Second, "the relay to lead", func() bool { return r.Stats().Leader })
	rd := newReader(t, kc, "orders")
	for i := range 3 {
		ev := mustEvent(t, "order.created", "o1", i)
		addTx(t, ob, "orders", ev)
		r.Notify()
		got := rd.until(10*time.Second, func(rs []rec) bool { return len(rs) >= 1 })
		require.Equal(t, []string{ev.ID}, ids(got))
	}
}

func TestRunTwiceFails(t *testing.T) {
	db, _ := sqliteDB(t)
	kc := kafkatest.Cluster(t, "orders")
	ob, err := New(db, nil)
	require.NoError(t, err)
	r, err := NewRelay(ob, newProducer(t, kc), &RelayOptions{PollInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	runRelay(t, r)
	poll(t, 10*time.Second, "the relay to lead", func() bool { return r.Stats().Leader })
	err = r.Run(context.Background())
	require.Error(t, err)
	require.False(t, errors.Is(err, ErrInvalidOptions))
}

// A service whose database user may use the outbox tables but not create tables (PostgreSQL 15
// gives ordinary users no CREATE on schema public) still starts once the tables exist.
func TestNewNeedsNoCreateRightOnceTheTablesExist(t *testing.T) {
	db, dsn := pgDB(t)
	_, err := New(db, nil) // as the owner
	require.NoError(t, err)
	for _, stmt := range []string{
		"CREATE ROLE app LOGIN",
		"GRANT SELECT, INSERT, UPDATE, DELETE ON " + DefaultTable + ", " + DefaultTable + "_lease TO app",
	} {
		_, err := db.Exec(stmt)
		require.NoError(t, err)
	}
	app, err := sql.Open("pgx", strings.Replace(dsn, "postgres@", "app@", 1))
	require.NoError(t, err)
	defer app.Close()
	_, err = app.Exec("CREATE TABLE probe (x int)")
	require.Error(t, err, "the app user must not be able to create tables for this test to mean anything")

	ob, err := New(app, nil)
	require.NoError(t, err)
	require.Equal(t, Postgres, ob.Dialect())
	addTx(t, ob, "orders", mustEvent(t, "order.created", "o1", 1))
	n, err := ob.Pending(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, n)
}

// Row ids are never reused, even after the relay emptied the table: a delete of published ids
// that arrives late (a retried delete, a stale leader's) must not remove a newer row.
func TestRowIDsAreNeverReused(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect, db *sql.DB, _ string) {
		ob, err := New(db, &Options{Dialect: d})
		require.NoError(t, err)
		maxID := func() int64 {
			var id sql.NullInt64
			require.NoError(t, db.QueryRow("SELECT max(id) FROM "+ob.Table()).Scan(&id))
			return id.Int64
		}
		addTx(t, ob, "orders", mustEvent(t, "a", "k", 1), mustEvent(t, "b", "k", 2))
		first := maxID()
		_, err = db.Exec("DELETE FROM " + ob.Table()) // what the relay does once they are published
		require.NoError(t, err)
		addTx(t, ob, "orders", mustEvent(t, "c", "k", 3))
		require.Greater(t, maxID(), first, "a new row took the id of a deleted one")
	})
}

// One Add of more events than one INSERT carries keeps them all, in the order given.
func TestAddManyKeepsOrder(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect, db *sql.DB, _ string) {
		ob, err := New(db, &Options{Dialect: d})
		require.NoError(t, err)
		evs := make([]events.Event, 2*insertChunk+500)
		for i := range evs {
			evs[i] = events.Event{ID: events.NewID(), Type: "tick", Key: "k" + string(rune('a'+i%7)), Data: []byte{byte(i)}}
		}
		addTx(t, ob, "orders", evs...)
		rows, err := db.Query("SELECT event_id FROM " + ob.Table() + " ORDER BY id")
		require.NoError(t, err)
		defer rows.Close()
		var got []string
		for rows.Next() {
			var id string
			require.NoError(t, rows.Scan(&id))
			got = append(got, id)
		}
		require.NoError(t, rows.Err())
		require.Len(t, got, len(evs))
		for i := range evs {
			require.Equal(t, evs[i].ID, got[i], "row %d", i)
		}
	})
}
