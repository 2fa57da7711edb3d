package main

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
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

// DB is a simulated database: an in-memory table behind a fixed per-query latency, with a
// query counter, so the demo can show what the cache saves. It is safe for concurrent use.
type DB struct {
	latency time.Duration
	queries atomic.Int64
	nextID  atomic.Int64

	mu     sync.RWMutex
	orders map[string]Order
}

// NewDB returns a database holding orders "1".."n", created over the last three days,
// two thirds of them paid. Every query sleeps latency first.
func NewDB(n int, latency time.Duration, rngState uint64) *DB {
	r := rand.New(rand.NewPCG(rngState, 0x0dd5))
	items := []string{"keyboard", "monitor", "mouse", "laptop stand", "webcam", "headset"}
	now := time.Now()
	d := &DB{latency: latency, orders: make(map[string]Order, n)}
	for i := 1; i <= n; i++ {
		o := Order{
			ID:          strconv.Itoa(i),
			Customer:    fmt.Sprintf("customer-%d", 1+r.IntN(n/4+1)),
			Item:        items[r.IntN(len(items))],
			Quantity:    1 + r.IntN(3),
			AmountCents: int64(1000 + r.IntN(50000)),
			Status:      StatusPending,
			CreatedAt:   now.Add(-time.Duration(r.Int64N(int64(72 * time.Hour)))),
		}
		if r.IntN(3) > 0 {
			paid := o.CreatedAt.Add(time.Minute)
			o.Status, o.PaidAt = StatusPaid, &paid
		}
		d.orders[o.ID] = o
	}
	d.nextID.Store(int64(n))
	return d
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

// Get returns the order with id, or errNoSuchOrder.
func (d *DB) Get(ctx context.Context, id string) (Order, error) {
	if err := d.query(ctx); err != nil {
		return Order{}, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	o, ok := d.orders[id]
	if !ok {
		return Order{}, errNoSuchOrder
	}
	return o, nil
}

// GetMany returns the orders among ids that exist, keyed by id, in one query.
func (d *DB) GetMany(ctx context.Context, ids []string) (map[string]Order, error) {
	if err := d.query(ctx); err != nil {
		return nil, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	m := make(map[string]Order, len(ids))
	for _, id := range ids {
		if o, ok := d.orders[id]; ok {
			m[id] = o
		}
	}
	return m, nil
}

// Create stores a new pending order with a fresh id and returns it.
func (d *DB) Create(ctx context.Context, o Order) (Order, error) {
	if err := d.query(ctx); err != nil {
		return Order{}, err
	}
	o.ID = strconv.FormatInt(d.nextID.Add(1), 10)
	o.Status, o.CreatedAt, o.PaidAt = StatusPending, time.Now(), nil
	d.mu.Lock()
	defer d.mu.Unlock()
	d.orders[o.ID] = o
	return o, nil
}

// Pay marks a pending order paid. It returns errNoSuchOrder or errNotPending.
func (d *DB) Pay(ctx context.Context, id string) (Order, error) {
	if err := d.query(ctx); err != nil {
		return Order{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	o, ok := d.orders[id]
	if !ok {
		return Order{}, errNoSuchOrder
	}
	if o.Status != StatusPending {
		return o, errNotPending
	}
	now := time.Now()
	o.Status, o.PaidAt = StatusPaid, &now
	d.orders[id] = o
	return o, nil
}

// ExpireUnpaid marks pending orders created before cutoff expired, and returns their ids.
func (d *DB) ExpireUnpaid(ctx context.Context, cutoff time.Time) ([]string, error) {
	if err := d.query(ctx); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var ids []string
	for id, o := range d.orders {
		if o.Status == StatusPending && o.CreatedAt.Before(cutoff) {
			o.Status = StatusExpired
			d.orders[id] = o
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// IDs yields every order id, without counting as a query: it stands in for the bulk export
// a Bloom filter and the cache are warmed from at start-up.
func (d *DB) IDs() iter.Seq[string] {
	return d.ids(func(Order) bool { return true })
}

// Pending yields the ids of the orders still pending, without counting as a query.
func (d *DB) Pending() iter.Seq[string] {
	return d.ids(func(o Order) bool { return o.Status == StatusPending })
}

// ids yields the ids of the orders keep accepts, from a snapshot taken when it is called.
func (d *DB) ids(keep func(Order) bool) iter.Seq[string] {
	d.mu.RLock()
	ids := make([]string, 0, len(d.orders))
	for id, o := range d.orders {
		if keep(o) {
			ids = append(ids, id)
		}
	}
	d.mu.RUnlock()
	return func(yield func(string) bool) {
		for _, id := range ids {
			if !yield(id) {
				return
			}
		}
	}
}

// Len returns the number of orders.
func (d *DB) Len() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.orders)
}

// Queries returns how many queries the database has served.
func (d *DB) Queries() int64 { return d.queries.Load() }
