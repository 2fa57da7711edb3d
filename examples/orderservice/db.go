package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver: pure Go, nothing to install
)

// Order is the record the service stores and caches.
type Order struct {
	ID          string     `json:"id"`
	Customer    string     `json:"customer"`
	Item        string     `json:"item"`
	Quantity    int        `json:"quantity"`
	AmountCents int64      `json:"amount_cents"`
	Status      string     `json:"status"` // pending, paid or expired
	CreatedAt   time.Time  `json:"created_at"`
	PaidAt      *time.Time `json:"paid_at,omitempty"`
}

// Order statuses.
const (
	StatusPending = "pending"
	StatusPaid    = "paid"
	StatusExpired = "expired"
)

// Errors the database returns.
var (
	errNoSuchOrder = errors.New("db: no such order")
	errNotPending  = errors.New("db: order is not pending")
)

// sqliteDSN is how the service opens its SQLite file: concurrent readers beside one writer
// (WAL), writers waiting for each other up to 5s instead of failing with SQLITE_BUSY, and
// write transactions taking the write lock at BEGIN (no deadlock between two readers that
// both want to write).
const sqliteDSN = "file:%s?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"

// DB is the order table in SQLite (modernc.org/sqlite: pure Go, embedded in the process),
// behind a simulated network latency paid before every query, with a query counter, so the
// demo can show what the cache saves. It is safe for concurrent use.
type DB struct {
	sql     *sql.DB
	latency time.Duration
	queries atomic.Int64
}

// OpenDB opens (creating it if need be) the SQLite database at path and, when its orders
// table is empty, fills it with orders "1".."n", created over the last three days, two thirds
// of them paid. Every query then waits latency first. Close it when done.
func OpenDB(ctx context.Context, path string, n int, latency time.Duration, rngState uint64) (*DB, error) {
	db, err := sql.Open("sqlite", fmt.Sprintf(sqliteDSN, path))
	if err != nil {
		return nil, fmt.Errorf("db: open %s: %w", path, err)
	}
	// Keep connections open: opening one costs a file open and the pragmas.
	db.SetMaxOpenConns(64)
	db.SetMaxIdleConns(64)
	d := &DB{sql: db, latency: latency}
	if err := d.fill(ctx, n, rngState); err != nil {
		db.Close()
		return nil, fmt.Errorf("db: %s: %w", path, err)
	}
	return d, nil
}

// SQL returns the database handle (the outbox writes into it).
func (d *DB) SQL() *sql.DB { return d.sql }

// Close closes the database.
func (d *DB) Close() error { return d.sql.Close() }

func (d *DB) fill(ctx context.Context, n int, rngState uint64) error {
	if _, err := d.sql.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS orders (
		id           INTEGER PRIMARY KEY AUTOINCREMENT,
		customer     TEXT    NOT NULL,
		item         TEXT    NOT NULL,
		quantity     INTEGER NOT NULL,
		amount_cents INTEGER NOT NULL,
		status       TEXT    NOT NULL,
		created_at   INTEGER NOT NULL, -- Unix nanoseconds
		paid_at      INTEGER           -- Unix nanoseconds, NULL unless paid
	)`); err != nil {
		return err
	}
	if _, err := d.sql.ExecContext(ctx, `CREATE INDEX IF NOT EXISTS orders_pending ON orders (created_at) WHERE status = 'pending'`); err != nil {
		return err
	}
	if d.Len() > 0 {
		return nil
	}
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	ins, err := tx.PrepareContext(ctx, `INSERT INTO orders (id, customer, item, quantity, amount_cents, status, created_at, paid_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	defer ins.Close()
	r := rand.New(rand.NewPCG(rngState, 0x0dd5))
	items := []string{"keyboard", "monitor", "mouse", "laptop stand", "webcam", "headset"}
	now := time.Now()
	for i := 1; i <= n; i++ {
		customer := fmt.Sprintf("customer-%d", 1+r.IntN(n/4+1))
		item := items[r.IntN(len(items))]
		qty, amount := 1+r.IntN(3), int64(1000+r.IntN(50000))
		created := now.Add(-time.Duration(r.Int64N(int64(72 * time.Hour))))
		status, paid := StatusPending, sql.NullInt64{}
		if r.IntN(3) > 0 {
			status, paid = StatusPaid, sql.NullInt64{Int64: created.Add(time.Minute).UnixNano(), Valid: true}
		}
		if _, err := ins.ExecContext(ctx, i, customer, item, qty, amount, status, created.UnixNano(), paid); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// query counts one query and waits the simulated latency, or until ctx ends.
func (d *DB) query(ctx context.Context) error {
	d.queries.Add(1)
	if d.latency <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d.latency)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

const orderColumns = `id, customer, item, quantity, amount_cents, status, created_at, paid_at`

type scanner interface{ Scan(dest ...any) error }

func scanOrder(row scanner) (Order, error) {
	var (
		o       Order
		id      int64
		created int64
		paid    sql.NullInt64
	)
	if err := row.Scan(&id, &o.Customer, &o.Item, &o.Quantity, &o.AmountCents, &o.Status, &created, &paid); err != nil {
		return Order{}, err
	}
	o.ID, o.CreatedAt = strconv.FormatInt(id, 10), time.Unix(0, created)
	if paid.Valid {
		t := time.Unix(0, paid.Int64)
		o.PaidAt = &t
	}
	return o, nil
}

// parseID turns an order id into its row id; ids that are not positive integers name no order.
func parseID(id string) (int64, bool) {
	n, err := strconv.ParseInt(id, 10, 64)
	return n, err == nil && n > 0
}

// Get returns the order with id, or errNoSuchOrder.
func (d *DB) Get(ctx context.Context, id string) (Order, error) {
	if err := d.query(ctx); err != nil {
		return Order{}, err
	}
	n, ok := parseID(id)
	if !ok {
		return Order{}, errNoSuchOrder
	}
	o, err := scanOrder(d.sql.QueryRowContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = ?`, n))
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, errNoSuchOrder
	}
	return o, err
}

// GetMany returns the orders among ids that exist, keyed by id, in one query.
func (d *DB) GetMany(ctx context.Context, ids []string) (map[string]Order, error) {
	if err := d.query(ctx); err != nil {
		return nil, err
	}
	args := make([]any, 0, len(ids))
	for _, id := range ids {
		if n, ok := parseID(id); ok {
			args = append(args, n)
		}
	}
	m := make(map[string]Order, len(args))
	if len(args) == 0 {
		return m, nil
	}
	// json_each takes the ids as one argument: no statement per batch size, no limit on
	// the number of ? placeholders.
	list := make([]byte, 0, 8*len(args))
	list = append(list, '[')
	for i, a := range args {
		if i > 0 {
			list = append(list, ',')
		}
		list = strconv.AppendInt(list, a.(int64), 10)
	}
	list = append(list, ']')
	rows, err := d.sql.QueryContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE id IN (SELECT value FROM json_each(?))`, string(list))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, err
		}
		m[o.ID] = o
	}
	return m, rows.Err()
}

// Create stores a new pending order under a fresh id and, in the same transaction, calls
// also (which adds the order's event to the outbox): the order and its event commit together
// or not at all. It returns the stored order.
func (d *DB) Create(ctx context.Context, o Order, also func(*sql.Tx, Order) error) (Order, error) {
	if err := d.query(ctx); err != nil {
		return Order{}, err
	}
	o.Status, o.CreatedAt, o.PaidAt = StatusPending, time.Now(), nil
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var id int64
		err := tx.QueryRowContext(ctx, `INSERT INTO orders (customer, item, quantity, amount_cents, status, created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
			o.Customer, o.Item, o.Quantity, o.AmountCents, o.Status, o.CreatedAt.UnixNano()).Scan(&id)
		if err != nil {
			return err
		}
		o.ID = strconv.FormatInt(id, 10)
		return also(tx, o)
	})
	if err != nil {
		return Order{}, err
	}
	return o, nil
}

// Pay marks a pending order paid and, in the same transaction, calls also (which adds the
// order's event to the outbox). It returns errNoSuchOrder, or errNotPending with the order.
func (d *DB) Pay(ctx context.Context, id string, also func(*sql.Tx, Order) error) (Order, error) {
	if err := d.query(ctx); err != nil {
		return Order{}, err
	}
	n, ok := parseID(id)
	if !ok {
		return Order{}, errNoSuchOrder
	}
	var o Order
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		o, err = scanOrder(tx.QueryRowContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = ?`, n))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return errNoSuchOrder
		case err != nil:
			return err
		case o.Status != StatusPending:
			return errNotPending
		}
		now := time.Now()
		if _, err := tx.ExecContext(ctx, `UPDATE orders SET status = ?, paid_at = ? WHERE id = ?`, StatusPaid, now.UnixNano(), n); err != nil {
			return err
		}
		o.Status, o.PaidAt = StatusPaid, &now
		return also(tx, o)
	})
	if err != nil && !errors.Is(err, errNotPending) {
		return Order{}, err
	}
	return o, err
}

// inTx runs fn in a transaction, committed when fn returns nil and rolled back otherwise.
func (d *DB) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// ExpireUnpaid marks pending orders created before cutoff expired, and returns their ids.
func (d *DB) ExpireUnpaid(ctx context.Context, cutoff time.Time) ([]string, error) {
	if err := d.query(ctx); err != nil {
		return nil, err
	}
	rows, err := d.sql.QueryContext(ctx, `UPDATE orders SET status = ? WHERE status = ? AND created_at < ? RETURNING id`,
		StatusExpired, StatusPending, cutoff.UnixNano())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, strconv.FormatInt(id, 10))
	}
	return ids, rows.Err()
}

// IDs yields every order id, without counting as a query: it stands in for the bulk export
// a Bloom filter and the cache are warmed from at start-up.
func (d *DB) IDs() iter.Seq[string] { return d.ids(`SELECT id FROM orders`) }

// Pending yields the ids of the orders still pending, without counting as a query.
func (d *DB) Pending() iter.Seq[string] {
	return d.ids(`SELECT id FROM orders WHERE status = '` + StatusPending + `'`)
}

// ids yields the ids query selects, read when it is called (a failed read yields none).
func (d *DB) ids(query string) iter.Seq[string] {
	var ids []string
	if rows, err := d.sql.Query(query); err == nil {
		for rows.Next() {
			var id int64
			if rows.Scan(&id) == nil {
				ids = append(ids, strconv.FormatInt(id, 10))
			}
		}
		rows.Close()
	}
	return func(yield func(string) bool) {
		for _, id := range ids {
			if !yield(id) {
				return
			}
		}
	}
}

// Len returns the number of orders (0 if the count fails).
func (d *DB) Len() int {
	var n int
	_ = d.sql.QueryRow(`SELECT count(*) FROM orders`).Scan(&n)
	return n
}

// Queries returns how many queries the database has served.
func (d *DB) Queries() int64 { return d.queries.Load() }
