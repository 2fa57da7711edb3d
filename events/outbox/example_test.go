package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	_ "modernc.org/sqlite"

	"github.com/surgekit/surge/events"
	"github.com/surgekit/surge/events/outbox"
)

// An order and its event commit in one SQLite transaction; the relay publishes the event.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "outbox-example")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "shop.db")+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	kafka, _ := kfake.NewCluster(kfake.SeedTopics(1, "orders")) // an in-process Kafka
	defer kafka.Close()

	ob, err := outbox.New(db, &outbox.Options{Dialect: outbox.SQLite})
	if err != nil {
		panic(err)
	}
	p, _ := events.NewProducer(events.ProducerConfig{Brokers: kafka.ListenAddrs()})
	defer p.Close()
	relay, err := outbox.NewRelay(ob, p, nil)
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- relay.Run(runCtx) }()

	// The order and its event: both or neither.
	_, _ = db.Exec("CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER)")
	tx, _ := db.BeginTx(ctx, nil)
	_, _ = tx.ExecContext(ctx, "INSERT INTO orders VALUES ('o-1', 42)")
	ev, _ := events.NewEvent("order.created", "o-1", map[string]int{"total": 42})
	if err := ob.Add(ctx, tx, "orders", ev); err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err)
	}
	relay.Notify() // publish now rather than at the next poll

	cl, _ := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.ConsumeTopics("orders"))
	defer cl.Close()
	r := cl.PollRecords(ctx, 1).Records()[0]
	var id string
	for _, h := range r.Headers {
		if h.Key == events.HeaderID {
			id = string(h.Value)
		}
	}
	fmt.Printf("%s %s same id: %v\n", r.Key, r.Value, id == ev.ID)

	stop()
	fmt.Println(<-done)
	// Output:
	// o-1 {"total":42} same id: true
	// <nil>
}
