package main

import (
	"context"
	"iter"
	"time"
)

// store is what the service needs from its database. The handlers, the cache loaders and the
// nightly job see only this interface, so the in-memory [DB] of this example can give way to a
// database/sql store without touching them; such a store would also record each write's event
// in the same transaction (a transactional outbox) instead of the handler publishing it after
// the commit.
type store interface {
	// Get returns the order with id, or errNoSuchOrder. One query.
	Get(ctx context.Context, id string) (Order, error)
	// GetMany returns the orders among ids that exist, keyed by id. One query.
	GetMany(ctx context.Context, ids []string) (map[string]Order, error)
	// Create stores a new pending order under a fresh id and returns it.
	Create(ctx context.Context, o Order) (Order, error)
	// Pay marks a pending order paid; errNoSuchOrder or errNotPending otherwise.
	Pay(ctx context.Context, id string) (Order, error)
	// ExpireUnpaid marks pending orders created before cutoff expired and returns their ids.
	ExpireUnpaid(ctx context.Context, cutoff time.Time) ([]string, error)
	// IDs yields every order id (the bulk export the Bloom guard and the cache warm from).
	IDs() iter.Seq[string]
	// Pending yields the ids of the orders still pending (the demo's writers pay them).
	Pending() iter.Seq[string]
	// Len returns the number of orders.
	Len() int
	// Queries returns how many queries the store has served.
	Queries() int64
}

var _ store = (*DB)(nil)
