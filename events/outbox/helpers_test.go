package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/surgekit/surge/events"
	"github.com/surgekit/surge/internal/kafkatest"
	"github.com/surgekit/surge/internal/pgtest"
)

// sqliteDSN is how the tests open SQLite: a busy timeout because the relay and the writers
// share the file, WAL so reads run beside writes, and BEGIN IMMEDIATE so a writing transaction
// takes the write lock at once instead of failing when it upgrades.
func sqliteDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
}

func sqliteDB(t testing.TB) (*sql.DB, string) {
	t.Helper()
	dsn := sqliteDSN(filepath.Join(t.TempDir(), "outbox.db"))
	db, err := sql.Open("sqlite", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db, dsn
}

// pgServers shares one PostgreSQL server between the tests of one top-level test.
var (
	pgMu      sync.Mutex
	pgServers = map[string]*pgtest.PG{}
)

func pgDB(t testing.TB) (*sql.DB, string) {
	t.Helper()
	root := strings.SplitN(t.Name(), "/", 2)[0]
	pgMu.Lock()
	pg := pgServers[root]
	pgMu.Unlock()
	if pg == nil {
		pg = pgtest.Server(t) // belongs to the first subtest that needs it
		pgMu.Lock()
		pgServers[root] = pg
		pgMu.Unlock()
		t.Cleanup(func() { pgMu.Lock(); delete(pgServers, root); pgMu.Unlock() })
	}
	db := pg.DB(t)
	var name string
	require.NoError(t, db.QueryRow("SELECT current_database()").Scan(&name))
	return db, pg.DSNFor(name)
}

// dialects runs fn once per dialect, each on a fresh database, both at once.
func dialects(t *testing.T, fn func(t *testing.T, d Dialect, db *sql.DB, dsn string)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		db, dsn := sqliteDB(t)
		fn(t, SQLite, db, dsn)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		db, dsn := pgDB(t)
		fn(t, Postgres, db, dsn)
	})
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newProducer(t testing.TB, kc *kafkatest.KafkaCluster, opts ...kgo.Opt) *events.Producer {
	t.Helper()
	p, err := events.NewProducer(events.ProducerConfig{Brokers: kc.Seeds(), KafkaOptions: opts})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

// runRelay runs r until the test ends (or stop is called) and checks that Run returned nil.
func runRelay(t testing.TB, r *Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// addTx adds evs to topic in one committed transaction.
func addTx(t testing.TB, ob *Outbox, topic string, evs ...events.Event) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	tx, err := ob.db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback() //nolint:errcheck
	require.NoError(t, ob.Add(ctx, tx, topic, evs...))
	require.NoError(t, tx.Commit())
}

func mustEvent(t testing.TB, typ, key string, payload any) events.Event {
	t.Helper()
	ev, err := events.NewEvent(typ, key, payload)
	require.NoError(t, err)
	return ev
}

// rec is a record read back from Kafka, decoded the way any client would.
type rec struct {
	id, typ, key string
	data         []byte
	headers      map[string]string
	time         string
	partition    int32
	offset       int64
}

func decode(r *kgo.Record) rec {
	out := rec{key: string(r.Key), data: r.Value, partition: r.Partition, offset: r.Offset}
	for _, h := range r.Headers {
		switch h.Key {
		case events.HeaderID:
			out.id = string(h.Value)
		case events.HeaderType:
			out.typ = string(h.Value)
		case events.HeaderTime:
			out.time = string(h.Value)
		default:
			if out.headers == nil {
				out.headers = map[string]string{}
			}
			out.headers[h.Key] = string(h.Value)
		}
	}
	return out
}

// reader reads a topic from its start.
type reader struct {
	t  testing.TB
	cl *kgo.Client
}

func newReader(t testing.TB, kc *kafkatest.KafkaCluster, topic string) *reader {
	return &reader{t: t, cl: kc.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))}
}

// until reads records until done says so (it sees every record so far) or d passes.
func (r *reader) until(d time.Duration, done func([]rec) bool) []rec {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out []rec
	for !done(out) {
		fs := r.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			r.t.Fatalf("read %d records, still waiting after %v", len(out), d)
		}
		fs.EachRecord(func(kr *kgo.Record) { out = append(out, decode(kr)) })
	}
	return out
}

// poll waits for cond, checking every few milliseconds, up to d.
func poll(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ids(rs []rec) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.id
	}
	return out
}

var _ = fmt.Sprint
