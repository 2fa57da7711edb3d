// Package outbox is a transactional outbox: a database write and the events that announce it
// commit together or not at all, and a relay publishes them to Kafka afterwards.
//
// [Outbox.Add] writes events into an outbox table inside the caller's *sql.Tx. A [Relay]
// reads committed rows in batches, publishes them with an [events.Producer] (idempotent,
// acks=all) and deletes them once Kafka acknowledged them. So an event is published if and only
// if its transaction committed, at least once, always with the ID it was added with (the
// "event-id" header): a consumer with an [events.Deduper] handles each event once.
//
// Several relays may run against one table, in one process or many: one leads at a time,
// holding a lease row whose expiry is measured on the database's clock, and another takes over
// when the leader stops renewing it (a crash, a lost connection). A relay killed at any point
// loses nothing: rows are deleted only after their events were acknowledged, so the next
// leader publishes what was not, again with the same IDs.
//
// Events with one key (per topic) are published in the order their transactions committed.
// On PostgreSQL, [Outbox.Add] takes a transaction-scoped advisory lock per topic and key, so
// two transactions that add events with the same key commit one after the other and the outbox
// row ids follow their commit order; on SQLite writers are serialized anyway. After a relay
// crash the next leader may publish again some events already published; the first copy of
// each event is in order. The one exception: a leader whose records stay in its producer
// longer than its lease (Kafka unreachable from it alone for LeaseTTL) may land them after
// the next leader's, so a consumer may see a later event of a key before an earlier one (whose
// first copy then arrives from the new leader).
//
// Dialects: [Postgres] (any database/sql driver, e.g. pgx's stdlib) and [SQLite] (e.g. the
// pure-Go modernc.org/sqlite, nothing to install). The package imports no driver: the caller
// opens the *sql.DB.
//
//	ob, err := outbox.New(db, &outbox.Options{Dialect: outbox.SQLite})
//
//	// in the request: the order and its event in one transaction
//	tx, err := db.BeginTx(ctx, nil)
//	_, err = tx.ExecContext(ctx, "INSERT INTO orders ...")
//	ev, err := events.NewEvent("order.created", order.ID, order)
//	err = ob.Add(ctx, tx, "orders", ev)
//	err = tx.Commit()
//	relay.Notify() // optional: publish now rather than at the next poll
//
//	// in the background, in one or more processes
//	relay, err := outbox.NewRelay(ob, producer, nil)
//	go relay.Run(ctx) // until ctx ends
package outbox
