package outbox

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/kafkatest"
)

// On PostgreSQL a transaction that took a lower outbox id can commit after one that took a
// higher id. Events with one key must still be published in commit order.
func TestPostgresPublishesOneKeyInCommitOrder(t *testing.T) {
	db, _ := pgDB(t)
	kc := kafkatest.Cluster(t, "orders")
	ob, err := New(db, &Options{Dialect: Postgres})
	require.NoError(t, err)
	ctx := testCtx(t, 30*time.Second)

	evA := mustEvent(t, "order.created", "o1", "A")
	evB := mustEvent(t, "order.paid", "o1", "B")

	txA, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer txA.Rollback()                                //nolint:errcheck
	require.NoError(t, ob.Add(ctx, txA, "orders", evA)) // takes the lower id

	bDone := make(chan error, 1)
	go func() {
		txB, err := db.BeginTx(ctx, nil)
		if err == nil {
			err = ob.Add(ctx, txB, "orders", evB) // the higher id
			if err == nil {
				err = txB.Commit()
			} else {
				_ = txB.Rollback()
			}
		}
		bDone <- err
	}()

	// B either commits now (then it committed first) or waits for A's key lock.
	var order []string
	deadline := time.Now().Add(10 * time.Second)
wait:
	for {
		select {
		case err := <-bDone:
			require.NoError(t, err)
			order = []string{evB.ID, evA.ID}
			bDone = nil
			break wait
		default:
		}
		var waiting int
		require.NoError(t, db.QueryRowContext(ctx,
			"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").Scan(&waiting))
		if waiting > 0 {
			order = []string{evA.ID, evB.ID}
			break
		}
		require.True(t, time.Now().Before(deadline), "B neither committed nor waited for a lock")
		time.Sleep(2 * time.Millisecond)
	}
	require.NoError(t, txA.Commit())
	if bDone != nil {
		require.NoError(t, <-bDone)
	}

	r, err := NewRelay(ob, newProducer(t, kc), &RelayOptions{PollInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	runRelay(t, r)
	got := newReader(t, kc, "orders").until(10*time.Second, func(rs []rec) bool { return len(rs) >= 2 })
	require.Equal(t, order, ids(got), "published in commit order (A=%s, B=%s)", evA.ID, evB.ID)
}
