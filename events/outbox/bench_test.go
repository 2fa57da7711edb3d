package outbox

import (
	"context"
	"testing"
	"time"

	"github.com/surgekit/surge/events"
	"github.com/surgekit/surge/internal/benchkit"
	"github.com/surgekit/surge/internal/kafkatest"
)

// BenchmarkAdd measures Add of one 200-byte event in its own transaction, commit included.
// (Relay throughput and commit-to-publish latency, against a peer: internal/benchcmp.)
func BenchmarkAdd(b *testing.B) {
	for _, name := range []string{"sqlite", "postgres"} {
		b.Run(name, func(b *testing.B) {
			db, _ := sqliteDB(b)
			if name == "postgres" {
				db, _ = pgDB(b)
			}
			ob, err := New(db, nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			keys := benchkit.Keys(1000)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				ev := events.Event{Type: "order.created", Key: keys[i%len(keys)], Data: benchkit.Payload200}
				if err := ob.Add(ctx, tx, "orders", ev); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRelay publishes b.N committed events (500 per transaction) with one relay and
// reports events/s.
func BenchmarkRelay(b *testing.B) {
	for _, name := range []string{"sqlite", "postgres"} {
		b.Run(name, func(b *testing.B) {
			db, _ := sqliteDB(b)
			if name == "postgres" {
				db, _ = pgDB(b)
			}
			kc := kafkatest.Cluster(b, "orders")
			ob, err := New(db, nil)
			if err != nil {
				b.Fatal(err)
			}
			keys := benchkit.Keys(1000)
			for i := 0; i < b.N; i += 500 {
				evs := make([]events.Event, 0, 500)
				for j := i; j < min(i+500, b.N); j++ {
					evs = append(evs, events.Event{Type: "order.created", Key: keys[j%len(keys)], Data: benchkit.Payload200})
				}
				addTx(b, ob, "orders", evs...)
			}
			r, err := NewRelay(ob, newProducer(b, kc), nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			stop := runRelay(b, r)
			for r.Stats().Published < uint64(b.N) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			stop()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
