package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/surgekit/surge/events"
)

// orderEvent is the payload of OrderCreated and OrderPaid.
type orderEvent struct {
	OrderID  string `json:"order_id"`
	Item     string `json:"item"`
	Quantity int    `json:"quantity"`
}

// newConsumers builds the two in-process consumers of the orders topic:
//   - inventory: reserves stock on OrderCreated and releases it to shipping on OrderPaid;
//     keyed and concurrent (events of one order in order, orders in parallel) and deduplicated
//     through Redis, so a redelivered or re-published event is applied once;
//   - order-cache: drops the order from the cache on every event, so writers that do not
//     delete the cache themselves (another service, a replay), or a process that died between
//     its commit and its delete, cannot leave it stale: the event comes from the outbox, in
//     the order's transaction, so every committed write is announced.
func (s *service) newConsumers() error {
	inv, err := events.NewConsumer(events.ConsumerConfig{
		Brokers:     s.kafka.Brokers,
		Group:       "orderservice-inventory",
		Topics:      []string{ordersTopic},
		Handler:     s.inv.handle,
		Concurrency: 8,
		Deduper:     events.NewRedisDeduper(s.redis.Client, 24*time.Hour),
		Logger:      s.log,
		// The consumer span of each event continues the trace of the request that wrote it.
		TracerProvider: s.tel.Tracers, MeterProvider: s.tel.Meters, Propagator: s.tel.Propagator,
	})
	if err != nil {
		return fmt.Errorf("inventory consumer: %w", err)
	}
	inval, err := events.NewConsumer(events.ConsumerConfig{
		Brokers:        s.kafka.Brokers,
		Group:          "orderservice-cache",
		Topics:         []string{ordersTopic},
		Concurrency:    4,
		Logger:         s.log,
		TracerProvider: s.tel.Tracers, MeterProvider: s.tel.Meters, Propagator: s.tel.Propagator,
		Handler: func(ctx context.Context, ev events.Event) error {
			if err := s.orders.Delete(ctx, ev.Key); err != nil {
				return err // retried by the consumer
			}
			s.invals.Add(1)
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("cache invalidation consumer: %w", err)
	}
	s.cons = []*events.Consumer{inv, inval}

	// The lag monitor samples the inventory group's offsets every LagEvery and logs when its
	// condition changes: a growing backlog, a stalled consumer, too many failing handlers.
	s.lag, err = events.NewLagMonitor(events.LagConfig{
		Brokers:       s.kafka.Brokers,
		Group:         "orderservice-inventory",
		Topics:        []string{ordersTopic},
		Interval:      max(s.cfg.LagEvery, time.Second),
		MaxLag:        1000,
		MaxLagAge:     time.Minute,
		Stats:         inv.Stats,
		Logger:        s.log,
		MeterProvider: s.tel.Meters,
		OnAlert:       s.lagAlert,
	})
	if err != nil {
		return fmt.Errorf("lag monitor: %w", err)
	}
	return nil
}

// lagAlert logs a change of the inventory consumer's lag condition.
func (s *service) lagAlert(a events.Alert) {
	r := a.Report
	attrs := []any{"group", r.Group, "status", r.Status.String(), "previous", a.Previous.Status.String(),
		"total_lag", r.TotalLag, "oldest", r.MaxAge.Round(time.Millisecond), "failure_rate", r.FailureRate,
		"lag_exceeded", r.LagExceeded, "age_exceeded", r.AgeExceeded, "failures_exceeded", r.FailureRateExceeded}
	if r.Healthy() {
		s.log.Info("lag monitor: consumer healthy", attrs...)
		return
	}
	s.log.Warn("lag monitor: consumer unhealthy", attrs...)
}

// inventory is the state the inventory consumer keeps: units reserved by pending orders and
// units released to shipping by paid ones, per item.
type inventory struct {
	mu       sync.Mutex
	reserved map[string]int
	shipping map[string]int
	applied  atomic.Int64      // events applied (each once, thanks to the Deduper)
	traces   map[string]string // "type id" -> trace id of the handler's span, for the demo
}

// maxTraces bounds inventory.traces: the demo reads the trace of an event it just wrote.
const maxTraces = 1000

// traceOf returns the trace id under which the inventory consumer handled the event typ of
// order id, or "-" if it did not (or forgot it).
func (inv *inventory) traceOf(typ, id string) string {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if t, ok := inv.traces[typ+" "+id]; ok {
		return t
	}
	return "-"
}

func newInventory() *inventory {
	return &inventory{reserved: map[string]int{}, shipping: map[string]int{}, traces: map[string]string{}}
}

func (inv *inventory) handle(ctx context.Context, ev events.Event) error {
	var e orderEvent
	if err := ev.Decode(&e); err != nil {
		return events.Permanent(fmt.Errorf("event %s: %w", ev.ID, err)) // retrying cannot fix it
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	switch ev.Type {
	case OrderCreated:
		inv.reserved[e.Item] += e.Quantity
	case OrderPaid:
		inv.reserved[e.Item] -= e.Quantity
		inv.shipping[e.Item] += e.Quantity
	default:
		return nil // not ours
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		if len(inv.traces) >= maxTraces {
			clear(inv.traces)
		}
		inv.traces[ev.Type+" "+e.OrderID] = sc.TraceID().String()
	}
	inv.applied.Add(1)
	return nil
}
