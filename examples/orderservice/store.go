package main

import (
	"context"
	"database/sql"
	"iter"
	"time"
)

// store is what the service needs from its database. The handlers, the cache loaders and the
// nightly job see only this interface ([DB], SQLite, here). A write runs a caller's function
// inside its transaction: the handlers add the write's event to the outbox there, so the order
// and its event commit together or not at all.
type store interface {
	// Get returns the order with id, or errNoSuchOrder. One query.
	Get(ctx context.Context, id string) (Order, error)
	// GetMany returns the orders among ids that exist, keyed by id. One query.
	GetMany(ctx context.Context, ids []string) (map[string]Order, error)
	// Create stores a new pending order under a fresh id, calls also with the transaction and
	// the order before committing (an error from also rolls back), and returns the order.
	Create(ctx context.Context, o Order, also func(*sql.Tx, Order) error) (Order, error)
	// Pay marks a pending order paid, calling also as Create does; errNoSuchOrder, or
	// errNotPending with the order, otherwise.
	Pay(ctx context.Context, id string, also func(*sql.Tx, Order) error) (Order, error)
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
