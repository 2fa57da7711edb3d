package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Dialect is a database's flavour of SQL.
type Dialect int

// The supported dialects. The zero Dialect in [Options] means "ask the database".
const (
	// Postgres is PostgreSQL 10 or later, through any database/sql driver (pgx's stdlib,
	// lib/pq...).
	Postgres Dialect = iota + 1
	// SQLite is SQLite 3.38 or later (modernc.org/sqlite, mattn/go-sqlite3...). Open it with a
	// busy timeout (modernc: "?_pragma=busy_timeout(5000)"), since the relay and the service
	// write the same file; WAL mode (_pragma=journal_mode(WAL)) lets reads run beside writes.
	SQLite
)

// String returns "postgres" or "sqlite".
func (d Dialect) String() string {
	switch d {
	case Postgres:
		return "postgres"
	case SQLite:
		return "sqlite"
	}
	return "Dialect(" + strconv.Itoa(int(d)) + ")"
}

// detect asks the database which dialect it speaks.
func detect(ctx context.Context, db *sql.DB) (Dialect, error) {
	var v string
	if err := db.QueryRowContext(ctx, "SELECT sqlite_version()").Scan(&v); err == nil {
		return SQLite, nil
	}
	err := db.QueryRowContext(ctx, "SELECT version()").Scan(&v)
	if err == nil && strings.Contains(v, "PostgreSQL") {
		return Postgres, nil
	}
	if err != nil {
		return 0, fmt.Errorf("outbox: detect dialect: %w (set Options.Dialect)", err)
	}
	return 0, fmt.Errorf("%w: Options.Dialect must be set: the database (%q) is neither PostgreSQL nor SQLite", ErrInvalidOptions, v)
}

// queries are a table's statements in one dialect, built once by New.
type queries struct {
	create  []string // run in order, in one transaction
	exists  string   // fails unless both tables exist
	lock    string   // Postgres: per-key advisory locks, args: class int32, keys "{k1,k2}"
	insert  string   // "INSERT INTO t (cols) VALUES " without the rows
	row     func(b *strings.Builder, first int)
	fetch   string // args: limit
	del     string // args: id list (see idList)
	pending string
	acquire string // args: name, holder, ttl ms
	release string // args: name, holder
	idList  func(ids []int64) string
}

const leaseName = "relay"

const columns = "topic, event_id, event_type, event_key, event_time, headers, data"

func buildQueries(d Dialect, table string) queries {
	lease := table + "_lease"
	q := queries{
		insert:  "INSERT INTO " + table + " (" + columns + ") VALUES ",
		fetch:   "SELECT id, " + columns + " FROM " + table + " ORDER BY id LIMIT ",
		pending: "SELECT count(*) FROM " + table,
		exists:  "SELECT 1 FROM " + table + ", " + lease + " LIMIT 0",
	}
	switch d {
	case Postgres:
		q.create = []string{
			"SELECT pg_advisory_xact_lock(" + strconv.Itoa(int(lockClass(table))) + ", 0)",
			`CREATE TABLE IF NOT EXISTS ` + table + ` (
	id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	topic      TEXT   NOT NULL,
	event_id   TEXT   NOT NULL,
	event_type TEXT   NOT NULL,
	event_key  TEXT   NOT NULL,
	event_time BIGINT NOT NULL, -- Unix nanoseconds
	headers    TEXT,            -- JSON object, NULL when none
	data       BYTEA
)`,
			`CREATE TABLE IF NOT EXISTS ` + lease + ` (
	name       TEXT   PRIMARY KEY,
	holder     TEXT   NOT NULL,
	expires_ms BIGINT NOT NULL -- database clock, Unix milliseconds
)`,
		}
		q.lock = "SELECT pg_advisory_xact_lock($1::int, k) FROM (SELECT unnest($2::text::int[]) AS k ORDER BY 1) AS keys"
		q.row = func(b *strings.Builder, first int) {
			b.WriteByte('(')
			for i := range 7 {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteByte('$')
				b.WriteString(strconv.Itoa(first + i))
			}
			b.WriteByte(')')
		}
		q.fetch += "$1"
		q.del = "DELETE FROM " + table + " WHERE id = ANY($1::text::bigint[])"
		const now = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
		q.acquire = "INSERT INTO " + lease + " AS l (name, holder, expires_ms) VALUES ($1, $2, " + now + " + $3) " +
			"ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms " +
			"WHERE l.holder = excluded.holder OR l.expires_ms < " + now
		q.release = "UPDATE " + lease + " SET expires_ms = 0 WHERE name = $1 AND holder = $2"
		q.idList = func(ids []int64) string { return intList('{', '}', ids) }
	case SQLite:
		q.create = []string{
			`CREATE TABLE IF NOT EXISTS ` + table + ` (
	id         INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: a late delete cannot hit a new row
	topic      TEXT    NOT NULL,
	event_id   TEXT    NOT NULL,
	event_type TEXT    NOT NULL,
	event_key  TEXT    NOT NULL,
	event_time INTEGER NOT NULL, -- Unix nanoseconds
	headers    TEXT,             -- JSON object, NULL when none
	data       BLOB
)`,
			`CREATE TABLE IF NOT EXISTS ` + lease + ` (
	name       TEXT    PRIMARY KEY,
	holder     TEXT    NOT NULL,
	expires_ms INTEGER NOT NULL -- database clock, Unix milliseconds
)`,
		}
		q.row = func(b *strings.Builder, _ int) { b.WriteString("(?,?,?,?,?,?,?)") }
		q.fetch += "?"
		q.del = "DELETE FROM " + table + " WHERE id IN (SELECT value FROM json_each(?))"
		const now = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
		q.acquire = "INSERT INTO " + lease + " (name, holder, expires_ms) VALUES (?, ?, " + now + " + ?) " +
			"ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms " +
			"WHERE " + lease + ".holder = excluded.holder OR " + lease + ".expires_ms < " + now
		q.release = "UPDATE " + lease + " SET expires_ms = 0 WHERE name = ? AND holder = ?"
		q.idList = func(ids []int64) string { return intList('[', ']', ids) }
	}
	return q
}

// intList formats ids as "{1,2,3}" (a PostgreSQL array literal) or "[1,2,3]" (JSON).
func intList(open, close byte, ids []int64) string {
	b := make([]byte, 0, 2+len(ids)*8)
	b = append(b, open)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, id, 10)
	}
	return string(append(b, close))
}

// lockClass is the first key of the PostgreSQL advisory locks of a table; lockKey the second,
// per topic and event key.
func lockClass(table string) int32 {
	h := fnv.New32a()
	h.Write([]byte("surge/outbox\x00" + table))
	return int32(h.Sum32())
}

func lockKey(topic, key string) int32 {
	h := fnv.New32a()
	h.Write([]byte(topic))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return int32(h.Sum32())
}
