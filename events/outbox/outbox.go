package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/surgekit/surge/events"
)

// createTimeout bounds the table creation in New.
const createTimeout = 30 * time.Second

// Outbox writes events into an outbox table inside the caller's transactions. It is safe for
// concurrent use. Build it with [New]; publish its rows with a [Relay].
type Outbox struct {
	db  *sql.DB
	cfg config
	q   queries
}

// New returns an Outbox on db, creating its table and lease table when they are missing (so the
// database user needs the right to create tables until they exist). It blocks for those
// statements (at most 30s). A zero Options.Dialect is detected by asking the database. It
// returns an error wrapping [ErrInvalidOptions] naming the bad field, or the database's error.
// The Outbox never closes db.
func New(db *sql.DB, opt *Options) (*Outbox, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: db must not be nil", ErrInvalidOptions)
	}
	cfg, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	if cfg.dialect == 0 {
		if cfg.dialect, err = detect(ctx, db); err != nil {
			return nil, err
		}
		if cfg.dialect == SQLite && !identRE.MatchString(cfg.table) {
			return nil, fmt.Errorf("%w: Options.Table must be a plain identifier on SQLite, got %q", ErrInvalidOptions, cfg.table)
		}
	}
	o := &Outbox{db: db, cfg: cfg, q: buildQueries(cfg.dialect, cfg.table)}
	if err := o.create(ctx); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *Outbox) create(ctx context.Context) error {
	// Tables that exist need no CREATE (nor the right to create tables).
	if _, err := o.db.ExecContext(ctx, o.q.exists); err == nil {
		return nil
	}
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox: create table %s: %w", o.cfg.table, err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	for _, stmt := range o.q.create {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("outbox: create table %s: %w", o.cfg.table, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox: create table %s: %w", o.cfg.table, err)
	}
	return nil
}

// Table returns the outbox table's name.
func (o *Outbox) Table() string { return o.cfg.table }

// Dialect returns the dialect in use (detected by [New] when Options.Dialect was zero).
func (o *Outbox) Dialect() Dialect { return o.cfg.dialect }

// insertChunk is the most rows one INSERT carries (7 parameters each).
const insertChunk = 1000

// Add writes evs for topic into the outbox inside tx, the caller's transaction: they are
// published if and only if tx commits. An event without an ID gets one ([events.NewID]) and
// one without a Time gets the current time; the ID is what consumers see in the "event-id"
// header, on every copy. Add does not change evs. It blocks for its statements (about one
// round trip per 1000 events) and is safe for concurrent use on different transactions.
//
// On PostgreSQL Add first takes a transaction-scoped advisory lock per (topic, key) of evs
// (events without a key excepted), held until tx ends: transactions that add events with one
// key commit one after the other, which is what lets the relay publish them in commit order.
// Add all of a transaction's events in one call (or always in the same key order), or two
// transactions may deadlock, which PostgreSQL breaks by failing one of them.
//
// It returns an error, and writes nothing, when tx is nil, topic is empty or an event uses a
// reserved header name ([events.HeaderID], [events.HeaderType], [events.HeaderTime]);
// otherwise the database's error, after which the caller should roll tx back.
func (o *Outbox) Add(ctx context.Context, tx *sql.Tx, topic string, evs ...events.Event) error {
	if tx == nil {
		return errors.New("outbox: add: nil transaction")
	}
	if topic == "" {
		return errors.New("outbox: add: empty topic")
	}
	if len(evs) == 0 {
		return nil
	}
	args := make([]any, 0, 7*min(len(evs), insertChunk))
	now := time.Now()
	for i := range evs {
		for k := range evs[i].Headers {
			if k == events.HeaderID || k == events.HeaderType || k == events.HeaderTime {
				return fmt.Errorf("outbox: add event %d (%s): header %q is reserved", i, evs[i].ID, k)
			}
		}
	}
	if o.cfg.dialect == Postgres {
		if err := o.lockKeys(ctx, tx, topic, evs); err != nil {
			return err
		}
	}
	for start := 0; start < len(evs); start += insertChunk {
		chunk := evs[start:min(start+insertChunk, len(evs))]
		args = args[:0]
		var b strings.Builder
		b.Grow(len(o.q.insert) + len(chunk)*40)
		b.WriteString(o.q.insert)
		for i := range chunk {
			ev := &chunk[i]
			if i > 0 {
				b.WriteByte(',')
			}
			o.q.row(&b, len(args)+1)
			id := ev.ID
			if id == "" {
				id = events.NewID()
			}
			t := ev.Time
			if t.IsZero() {
				t = now
			}
			var headers any // NULL when there are none
			if len(ev.Headers) > 0 {
				h, err := json.Marshal(ev.Headers)
				if err != nil {
					return fmt.Errorf("outbox: add event %s: headers: %w", id, err)
				}
				headers = string(h)
			}
			var data any // NULL for nil
			if ev.Data != nil {
				data = ev.Data
			}
			args = append(args, topic, id, ev.Type, ev.Key, t.UnixNano(), headers, data)
		}
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("outbox: add %d events to %s: %w", len(chunk), o.cfg.table, err)
		}
	}
	return nil
}

// lockKeys takes the advisory locks of evs's keys in ascending order.
func (o *Outbox) lockKeys(ctx context.Context, tx *sql.Tx, topic string, evs []events.Event) error {
	keys := make([]int32, 0, len(evs))
	for i := range evs {
		if evs[i].Key != "" {
			keys = append(keys, lockKey(topic, evs[i].Key))
		}
	}
	if len(keys) == 0 {
		return nil
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	b := make([]byte, 0, 2+len(keys)*11)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(k), 10)
	}
	b = append(b, '}')
	if _, err := tx.ExecContext(ctx, o.q.lock, lockClass(o.cfg.table), string(b)); err != nil {
		return fmt.Errorf("outbox: add: lock keys: %w", err)
	}
	return nil
}

// Pending returns how many events wait in the outbox (committed and not yet deleted by a
// relay). It blocks for one query.
func (o *Outbox) Pending(ctx context.Context) (int, error) {
	var n int
	if err := o.db.QueryRowContext(ctx, o.q.pending).Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox: pending: %w", err)
	}
	return n, nil
}
