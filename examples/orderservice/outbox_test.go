package main

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/surgekit/surge/internal/kafkatest"
)

// TestOrderCreatedWhileKafkaIsDown creates an order while every Produce request to Kafka fails:
// the order commits and POST /orders answers 201 at once (the event waits in the outbox, in the
// order's transaction), and once Kafka answers again the relay publishes OrderCreated, which the
// inventory consumer applies exactly once. Publishing after the commit instead fails the request
// (or blocks it) with the order already stored, and the event is lost.
func TestOrderCreatedWhileKafkaIsDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole service")
	}
	kc := kafkatest.Cluster(t, ordersTopic)
	var down atomic.Bool
	down.Store(true)
	var refused atomic.Int64
	kc.Fake().ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.Fake().KeepControl()
		if down.Load() {
			refused.Add(1)
			return nil, errors.New("kafka is down"), true // the broker drops the connection
		}
		return nil, nil, false
	})
	s := newTestService(t, strings.Join(kc.Seeds(), ","), nil)
	s.start()
	srv := httptest.NewServer(s.router(slog.New(slog.DiscardHandler), false))
	defer srv.Close()

	token, err := signToken("tester", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/orders", strings.NewReader(`{"item":"mouse","quantity":2,"amount_cents":2500}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", "kafka-down-1")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("POST /orders while Kafka is down: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /orders while Kafka is down: HTTP %d %s, want 201 (the event waits in the outbox)", resp.StatusCode, body)
	}
	if got := s.db.Len(); got != 11 {
		t.Fatalf("orders stored: %d, want 11", got)
	}
	for i := 0; refused.Load() == 0; i++ { // the relay tried, and Kafka refused
		if i == 1000 {
			t.Fatal("no Produce request reached Kafka in 10s")
		}
		time.Sleep(10 * time.Millisecond) // polling a counter kfake's hook moves
	}
	if n := s.inv.applied.Load(); n != 0 {
		t.Fatalf("inventory applied %d events while Kafka was down", n)
	}

	down.Store(false)
	for i := 0; s.inv.applied.Load() < 1; i++ {
		if i == 2000 {
			t.Fatal("OrderCreated did not reach the inventory consumer within 20s of Kafka coming back")
		}
		time.Sleep(10 * time.Millisecond) // polling the consumer's counter
	}
	s.inv.mu.Lock()
	reserved := s.inv.reserved["mouse"]
	s.inv.mu.Unlock()
	if reserved != 2 {
		t.Errorf("inventory reserved %d mice, want 2", reserved)
	}
}

// TestRolledBackOrderPublishesNothing fails a create after its event was added to the outbox:
// the transaction rolls back, so neither the order nor its event exists, and paying an order
// that is not pending writes no event either.
func TestRolledBackOrderPublishesNothing(t *testing.T) {
	s := newTestService(t, "", nil) // not started: the relay does not run, so whatever was committed stays pending
	ctx := context.Background()
	boom := errors.New("payment provider said no")
	add := s.addEvent(ctx, OrderCreated)
	_, err := s.db.Create(ctx, Order{Customer: "c", Item: "mouse", Quantity: 1, AmountCents: 100}, func(tx *sql.Tx, o Order) error {
		if err := add(tx, o); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Create: %v, want %v", err, boom)
	}
	if n, err := s.outbox.Pending(ctx); err != nil || n != 0 {
		t.Errorf("outbox after the rollback: %d events (%v), want 0", n, err)
	}
	if n := s.db.Len(); n != 10 {
		t.Errorf("orders after the rollback: %d, want 10", n)
	}

	paid := ""
	for id := range s.db.IDs() {
		if o, err := s.db.Get(ctx, id); err == nil && o.Status == StatusPaid {
			paid = id
			break
		}
	}
	if _, err := s.db.Pay(ctx, paid, s.addEvent(ctx, OrderPaid)); !errors.Is(err, errNotPending) {
		t.Fatalf("paying paid order %q: %v, want errNotPending", paid, err)
	}
	o, err := s.db.Create(ctx, Order{Customer: "c", Item: "mouse", Quantity: 1, AmountCents: 100}, s.addEvent(ctx, OrderCreated))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.outbox.Pending(ctx); err != nil || n != 1 {
		t.Errorf("outbox after one committed create (order %s) and a refused payment: %d events (%v), want 1", o.ID, n, err)
	}
}
