// Package events publishes and consumes Kafka events without losing or repeating work, with
// parallelism that keeps per-key order. It is built on franz-go (kgo, kadm).
//
// An [Event] travels as a plain Kafka record: Key is the record key, Data the value, and ID,
// Type, Time and user Headers are record headers ([HeaderID], [HeaderType], [HeaderTime]), so
// any Kafka client can read and write them.
//
// [Producer] is an idempotent acks=all producer (options that would weaken that, or replace its
// partitioner, are refused) that places keys like the Java client. [Producer.Publish] sends at
// once and costs one round trip; [Producer.PublishAsync] batches; [Producer.Transact] writes
// several events atomically. An event a consumer could not decode is refused
// ([ErrInvalidEvent]).
//
// [Consumer] runs a consumer group (cooperative-sticky) and hands events to Concurrency
// handler goroutines: one key at a time and in order, different keys in parallel. Offsets are
// committed only below the first event not yet done (and past transaction markers, so a
// caught-up group has zero lag), on an interval, on revoke and at the end of [Consumer.Run].
// Failing events are retried with backoff without holding other keys, then dead-lettered with
// provenance headers ([HeaderDLQTopic]...) and committed once the dead letter is acknowledged;
// without a DeadLetterTopic the partition pauses instead. A [Deduper] ([NewRedisDeduper]) makes
// redeliveries after a crash or rebalance effectively once; one that is a [DedupeRenewer] keeps
// a slow handler's claim alive. Publishing a dead letter again (after a fix) is a new record:
// it is handled, not skipped.
//
// [LagMonitor] watches a group's lag with kadm, judges each partition over a window of samples
// ([EvaluateWindow]: OK, WARN, STALL, STOP, REWIND) plus MaxLag, MaxLagAge and failure-rate
// thresholds, and calls OnAlert when the condition changes. With LagConfig.Topics set it also
// watches a group that has not joined yet, counting its backlog from the log start.
//
// # Telemetry
//
// The package speaks OpenTelemetry through the API only (scope
// "github.com/surgekit/surge/events"); the TracerProvider, MeterProvider and Propagator
// fields of [ProducerConfig] and [ConsumerConfig] (and [LagConfig.MeterProvider]) default to
// the global ones. [Producer.Publish], [Producer.PublishAsync] and [Tx.Publish] open a
// producer span "send <topic>" and write its context into each record's headers beside
// [HeaderID] (traceparent and tracestate with the W3C propagator; a header of that name in
// Event.Headers wins); the [Consumer] runs each try at a record under a consumer span
// "process <topic>" that continues it, with the events "retry", "dead_letter",
// "deduplicated" and "paused". Metrics, with messaging.system=kafka and
// messaging.destination.name (the topic), and on the consumer side
// messaging.destination.partition.id and messaging.consumer.group.name:
//
//   - messaging.client.sent.messages (counter): events acknowledged, or failed with error.type
//     (the Kafka error code, "canceled", "deadline_exceeded", "client_closed" or "_OTHER");
//   - messaging.client.consumed.messages (counter): records fetched for the handlers;
//   - messaging.process.duration (histogram, s): each handler call, with error.type
//     "handler_error", "permanent", "panic" or "canceled" when it failed;
//   - surge.events.retries, surge.events.dead_lettered, surge.events.deduped (counters);
//   - surge.events.lag, surge.events.lag.age (s) and surge.events.lag.status (0 OK, 1 WARN,
//     2 REWIND, 3 STALL, 4 STOP) (gauges, per partition, set by each [LagMonitor.Check]).
//
// With no SDK installed the instruments are no-ops, no trace header is written unless the
// caller's context carries a trace, and the attribute sets are built once per topic and
// partition, so a consumed event costs two small allocations more (the no-op span and its
// context).
//
//	p, err := events.NewProducer(events.ProducerConfig{Brokers: brokers})
//	ev, err := events.NewEvent("order.created", order.ID, order)
//	err = p.Publish(ctx, "orders", ev)
//
//	c, err := events.NewConsumer(events.ConsumerConfig{
//		Brokers: brokers, Group: "billing", Topics: []string{"orders"},
//		Concurrency: 16, DeadLetterTopic: "orders.dlq",
//		Deduper: events.NewRedisDeduper(rdb, 24*time.Hour),
//		Handler: func(ctx context.Context, ev events.Event) error {
//			var o Order
//			if err := ev.Decode(&o); err != nil {
//				return events.Permanent(err)
//			}
//			return bill(ctx, o)
//		},
//	})
//	err = c.Run(ctx) // until ctx ends: drains, commits, leaves the group
package events
