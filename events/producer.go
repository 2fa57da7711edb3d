package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Producer publishes events with an idempotent kgo client: acks from all in-sync replicas,
// broker-side deduplication of retried batches, and keys hashed with murmur2 exactly like the
// Java client so keyed events land where other producers put them. It is safe for concurrent
// use. Build it with [NewProducer] and end it with [Producer.Close].
type Producer struct {
	cl      *kgo.Client
	txn     bool
	txMu    sync.Mutex
	log     *slog.Logger
	closing atomic.Bool
	once    sync.Once

	published atomic.Uint64
	failed    atomic.Uint64
}

// ProducerStats is a snapshot of a producer's counters.
type ProducerStats struct {
	Published uint64 // events acknowledged by Kafka
	Failed    uint64 // events that could not be written
	Buffered  int64  // events waiting to be acknowledged
}

// closeFlushTimeout bounds the flush in Close.
const closeFlushTimeout = 30 * time.Second

// NewProducer builds a producer. It does not block: the client connects on first use. Its
// kgo client starts franz-go's background goroutines (metadata refresh, connection reaping)
// at once; [Producer.Close] stops them. It returns an error wrapping [ErrInvalidOptions]
// naming the field when Brokers is empty or KafkaOptions turn off idempotence or acks=all,
// or cannot build a client.
func NewProducer(cfg ProducerConfig) (*Producer, error) {
	rc, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	cfg = rc.ProducerConfig
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// kgo's default: sticky batches for null keys, murmur2 like the Java client for keys.
		kgo.RecordPartitioner(kgo.UniformBytesPartitioner(64<<10, true, true, nil)),
	}
	opts = append(opts, cfg.KafkaOptions...)
	if cfg.TransactionalID != "" {
		opts = append(opts, kgo.TransactionalID(cfg.TransactionalID))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: ProducerConfig.KafkaOptions: %w", ErrInvalidOptions, err)
	}
	if err := checkDurable(cl, "ProducerConfig.KafkaOptions"); err != nil {
		cl.Close()
		return nil, err
	}
	return &Producer{cl: cl, txn: cfg.TransactionalID != "", log: cfg.Logger}, nil
}

// checkDurable rejects a client that could lose or duplicate records.
func checkDurable(cl *kgo.Client, field string) error {
	if v, _ := cl.OptValue(kgo.DisableIdempotentWrite).(bool); v {
		return invalid(field, "must not hold kgo.DisableIdempotentWrite: it would allow duplicates on retry")
	}
	if v, _ := cl.OptValue(kgo.AllowIdempotentProduceCancellation).(bool); v {
		return invalid(field, "must not hold kgo.AllowIdempotentProduceCancellation: it breaks idempotent deduplication")
	}
	if acks, ok := cl.OptValue(kgo.RequiredAcks).(kgo.Acks); !ok || acks != kgo.AllISRAcks() {
		return invalid(field, "must leave kgo.RequiredAcks at kgo.AllISRAcks(): lower acks can lose acknowledged records")
	}
	return nil
}

// Publish writes evs to topic and blocks until Kafka acknowledged every one, or ctx ends. A
// missing ID or Time is filled in. If any event is malformed (a reserved header name) nothing
// is sent. The error joins one error per failed event, each naming its ID; on ctx end it is
// ctx.Err() (records already handed to Kafka may still land). On a transactional producer
// Publish runs as its own transaction. After Close it returns [ErrClosed].
func (p *Producer) Publish(ctx context.Context, topic string, evs ...Event) error {
	if p.closing.Load() {
		return ErrClosed
	}
	if p.txn {
		return p.Transact(ctx, func(ctx context.Context, tx *Tx) error { return tx.Publish(ctx, topic, evs...) })
	}
	prs, err := p.records(ctx, topic, evs)
	if err != nil {
		return err
	}
	return p.produceWait(ctx, prs)
}

func (p *Producer) records(ctx context.Context, topic string, evs []Event) ([]*pubRec, error) {
	if topic == "" {
		return nil, errors.New("events: publish: empty topic")
	}
	prs := make([]*pubRec, len(evs))
	for i := range evs {
		ev := evs[i]
		pr, err := newPubRec(ctx, topic, &ev)
		if err != nil {
			return nil, err
		}
		pr.p = p
		prs[i] = pr
	}
	return prs, nil
}

// pubBatch collects the outcomes of one Publish call.
type pubBatch struct {
	errs []error
	left atomic.Int64
	done chan struct{}
}

func batchPromise(r *kgo.Record, err error) {
	pr := r.Context.(*pubRec)
	pr.p.count(err)
	b := pr.batch
	if err != nil {
		b.errs[pr.idx] = publishError(r, err)
	}
	if b.left.Add(-1) == 0 {
		close(b.done)
	}
}

func asyncPromise(r *kgo.Record, err error) {
	pr := r.Context.(*pubRec)
	pr.p.count(err)
	if err != nil {
		err = publishError(r, err)
	}
	pr.done(err)
}

func publishError(r *kgo.Record, err error) error {
	return fmt.Errorf("events: publish %s to %s: %w", eventID(r), r.Topic, err)
}

// produceWait produces prs and waits for all of their promises or ctx.
func (p *Producer) produceWait(ctx context.Context, prs []*pubRec) error {
	if len(prs) == 0 {
		return nil
	}
	b := &pubBatch{errs: make([]error, len(prs)), done: make(chan struct{})}
	b.left.Store(int64(len(prs)))
	for i, pr := range prs {
		pr.batch, pr.idx = b, i
		p.cl.Produce(ctx, &pr.rec, batchPromise)
	}
	select {
	case <-b.done:
		return errors.Join(b.errs...)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Producer) count(err error) {
	if err != nil {
		p.failed.Add(1)
	} else {
		p.published.Add(1)
	}
}

// eventID returns the ID header of a record built by toRecord.
func eventID(r *kgo.Record) string {
	if len(r.Headers) > 0 && r.Headers[0].Key == HeaderID {
		return string(r.Headers[0].Value)
	}
	return "?"
}

// PublishAsync hands ev to the client and returns at once (it blocks only while the client's
// buffer is full, until ctx ends). done, if not nil, is called exactly once with the outcome,
// from a client goroutine, so it must not block. On a transactional producer done gets
// [ErrTransactional]; after Close, [ErrClosed].
func (p *Producer) PublishAsync(ctx context.Context, topic string, ev Event, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	switch {
	case p.closing.Load():
		done(ErrClosed)
		return
	case p.txn:
		done(ErrTransactional)
		return
	case topic == "":
		done(errors.New("events: publish: empty topic"))
		return
	}
	pr, err := newPubRec(ctx, topic, &ev)
	if err != nil {
		done(err)
		return
	}
	pr.p, pr.done = p, done
	p.cl.Produce(ctx, &pr.rec, asyncPromise)
}

// Flush blocks until every event handed to the producer so far is acknowledged or failed, or
// ctx ends (returning ctx.Err()).
func (p *Producer) Flush(ctx context.Context) error {
	if err := p.cl.Flush(ctx); err != nil {
		return fmt.Errorf("events: flush: %w", err)
	}
	return nil
}

// Stats returns a snapshot of the producer's counters. Safe for concurrent use.
func (p *Producer) Stats() ProducerStats {
	return ProducerStats{
		Published: p.published.Load(),
		Failed:    p.failed.Load(),
		Buffered:  p.cl.BufferedProduceRecords(),
	}
}

// Close flushes (for up to 30s) and closes the client, stopping the goroutines [NewProducer]
// started. It is idempotent and blocks until they are gone; later publishes fail with
// [ErrClosed].
func (p *Producer) Close() {
	p.once.Do(func() {
		p.closing.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), closeFlushTimeout)
		if err := p.cl.Flush(ctx); err != nil {
			p.log.Warn("events: producer close: flush", "err", err, "lost", p.cl.BufferedProduceRecords())
		}
		cancel()
		p.cl.Close()
	})
}
