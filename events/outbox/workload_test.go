package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/events"
)

// payload is what the workload's events carry: the key again and its sequence number, taken
// from a counter row the transaction updates, so per key it is the commit order.
type payload struct {
	K   string `json:"k"`
	Seq int64  `json:"seq"`
}

// workload adds events with per-key sequence numbers from several transactions at once and
// remembers what it committed.
type workload struct {
	t     testing.TB
	db    *sql.DB
	ob    *Outbox
	topic string
	keys  []string
	bump  string

	mu        sync.Mutex
	committed map[string]payload // event ID -> payload
}

func newWorkload(t testing.TB, db *sql.DB, ob *Outbox, topic string, nkeys int) *workload {
	t.Helper()
	w := &workload{t: t, db: db, ob: ob, topic: topic, committed: map[string]payload{}}
	_, err := db.Exec("CREATE TABLE IF NOT EXISTS counters (k TEXT PRIMARY KEY, n BIGINT NOT NULL)")
	require.NoError(t, err)
	ph := "?"
	if ob.Dialect() == Postgres {
		ph = "$1"
	}
	for i := range nkeys {
		k := fmt.Sprintf("k%02d", i)
		w.keys = append(w.keys, k)
		_, err := db.Exec("INSERT INTO counters (k, n) VALUES ("+ph+", 0)", k)
		require.NoError(t, err)
	}
	w.bump = "UPDATE counters SET n = n + 1 WHERE k = " + ph + " RETURNING n"
	return w
}

// run adds n events from writers goroutines, in transactions of 1 to maxPerTx events.
func (w *workload) run(ctx context.Context, n, writers, maxPerTx int) error {
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	per := n / writers
	for g := range writers {
		todo := per
		if g == writers-1 {
			todo = n - per*(writers-1)
		}
		wg.Go(func() {
			for todo > 0 {
				k := min(todo, 1+rand.IntN(maxPerTx))
				if err := w.tx(ctx, k); err != nil {
					errs <- err
					return
				}
				todo -= k
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// tx commits one transaction of k events on random keys, retrying on deadlock or busy errors.
func (w *workload) tx(ctx context.Context, k int) error {
	var last error
	for range 20 {
		got, err := w.try(ctx, k)
		if err == nil {
			w.mu.Lock()
			for id, p := range got {
				w.committed[id] = p
			}
			w.mu.Unlock()
			return nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return last
}

func (w *workload) try(ctx context.Context, k int) (map[string]payload, error) {
	keys := make([]string, k)
	for i := range keys {
		keys[i] = w.keys[rand.IntN(len(w.keys))]
	}
	// Counter rows in one order in every transaction, so writers never deadlock on them.
	slices.Sort(keys)
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback() //nolint:errcheck
	evs := make([]events.Event, k)
	got := make(map[string]payload, k)
	for i, key := range keys {
		var seq int64
		if err := tx.QueryRowContext(ctx, w.bump, key).Scan(&seq); err != nil {
			return nil, err
		}
		p := payload{K: key, Seq: seq}
		ev, err := events.NewEvent("tick", key, p)
		if err != nil {
			return nil, err
		}
		evs[i] = ev
		got[ev.ID] = p
	}
	if err := w.ob.Add(ctx, tx, w.topic, evs...); err != nil {
		return nil, err
	}
	return got, tx.Commit()
}

func (w *workload) snapshot() map[string]payload {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]payload, len(w.committed))
	for id, p := range w.committed {
		out[id] = p
	}
	return out
}

// seenAll reports whether rs holds every committed event.
func seenAll(rs []rec, want map[string]payload) bool {
	seen := make(map[string]bool, len(want))
	for _, r := range rs {
		if _, ok := want[r.id]; ok {
			seen[r.id] = true
		}
	}
	return len(seen) == len(want)
}

// verify checks the records read from the topic against what was committed: nothing lost,
// nothing foreign, every copy of an event identical, and per key the first copies in commit
// (sequence) order. It returns the number of duplicate copies.
func verify(t testing.TB, rs []rec, want map[string]payload) int {
	t.Helper()
	first := map[string]rec{}
	next := map[string]int64{} // per key, the next expected sequence number
	// Records of one key are in one partition; read order within a partition is offset order.
	slices.SortFunc(rs, func(a, b rec) int {
		if a.partition != b.partition {
			return int(a.partition - b.partition)
		}
		return int(a.offset - b.offset)
	})
	dups := 0
	for _, r := range rs {
		p, ok := want[r.id]
		require.True(t, ok, "record %s (%s) was never committed", r.id, r.data)
		var got payload
		require.NoError(t, json.Unmarshal(r.data, &got))
		require.Equal(t, p, got, "record %s carries another event's data", r.id)
		require.Equal(t, p.K, r.key)
		if f, ok := first[r.id]; ok {
			require.Equal(t, f.partition, r.partition, "a copy of %s in another partition", r.id)
			dups++
			continue
		}
		first[r.id] = r
		if next[p.K] == 0 {
			next[p.K] = 1
		}
		require.Equal(t, next[p.K], p.Seq, "key %s: first copies out of commit order", p.K)
		next[p.K]++
	}
	require.Len(t, first, len(want), "events lost")
	return dups
}
