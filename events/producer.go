package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Producer publishes events with an idempotent kgo client: acks from all in-sync replicas,
// broker-side deduplication of retried batches, and keys hashed with murmur2 exactly like the
// Java client so keyed events land where other producers put them. It is safe for concurrent
// use. Build it with [NewProducer] and end it with [Producer.Close].
type Producer struct {
	cl      *kgo.Client
	txn     bool
	watch   *txnWatch     // transactional producers: sees the client turn a commit into an abort
	txSem   chan struct{} // one token: the right to run a transaction
	log     *slog.Logger
	tel     *producerTelemetry
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

// maxTxnAttempts bounds how often a transactional Publish runs its transaction again after
// [ErrTxnNotCommitted].
const maxTxnAttempts = 3

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
	// kgo's default: sticky batches for null keys, murmur2 like the Java client for keys.
	partitioner := kgo.UniformBytesPartitioner(64<<10, true, true, nil)
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(partitioner),
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
	if cl.OptValue(kgo.RecordPartitioner) != any(partitioner) {
		cl.Close()
		return nil, invalid("ProducerConfig.KafkaOptions", "must not hold kgo.RecordPartitioner: keys are placed with murmur2 like the Java client, so per-key order holds across producers")
	}
	var watch *txnWatch
	if cfg.TransactionalID != "" {
		// Rebuild the client with a logger that watches for a commit turned into an abort,
		// passing everything on to the caller's own logger.
		inner, _ := cl.OptValue(kgo.WithLogger).(kgo.Logger)
		cl.Close()
		watch = &txnWatch{inner: inner}
		if cl, err = kgo.NewClient(append(opts, kgo.WithLogger(watch))...); err != nil {
			return nil, fmt.Errorf("%w: ProducerConfig.KafkaOptions: %w", ErrInvalidOptions, err)
		}
	}
	return &Producer{cl: cl, txn: cfg.TransactionalID != "", watch: watch, txSem: make(chan struct{}, 1), log: cfg.Logger, tel: rc.tel}, nil
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

// Publish writes evs to topic and blocks until Kafka acknowledged every one, or ctx ends. It
// sends at once, without waiting out the client's linger (as kgo's ProduceSync), so a call
// costs one round trip. A missing ID or Time is filled in. If any event is malformed it
// returns an error wrapping [ErrInvalidEvent] and nothing is sent. The error joins one error
// per failed event, each naming its ID; on ctx end it is ctx.Err() (records already handed to
// Kafka may still land). On a transactional producer Publish runs as its own transaction,
// waiting (until ctx ends) for one in progress on another goroutine; called with the ctx of a
// running [Producer.Transact] fn it returns [ErrNestedTransaction] (publish through the Tx);
// a transaction the client ended with an abort ([ErrTxnNotCommitted]) is run again, up to 3 times.
// After Close it returns [ErrClosed]. Safe for concurrent use.
//
// The call runs under a producer span ("send <topic>") whose context every record carries in
// its headers (see [ProducerConfig.Propagator]).
func (p *Producer) Publish(ctx context.Context, topic string, evs ...Event) error {
	if p.closing.Load() {
		return ErrClosed
	}
	if p.txn {
		// A transaction the client ended with an abort left nothing visible: run it again.
		// The run after such an abort can meet OUT_OF_ORDER_SEQUENCE_NUMBER while the client
		// moves to a new epoch; its own abort recovers the producer ID, so run once more. Every
		// run publishes the same IDs and times, fixed here once.
		evs := withIdentity(evs)
		var err error
		for i := range maxTxnAttempts {
			err = p.Transact(ctx, func(ctx context.Context, tx *Tx) error { return tx.Publish(ctx, topic, evs...) })
			retry := errors.Is(err, ErrTxnNotCommitted) || (i > 0 && errors.Is(err, kerr.OutOfOrderSequenceNumber))
			if !retry {
				break
			}
		}
		return err
	}
	if topic == "" {
		return errEmptyTopic
	}
	ctx, span, th := p.tel.start(ctx, topic, len(evs))
	prs, err := p.records(ctx, topic, evs, th)
	if err == nil {
		err = p.produceWait(ctx, prs)
	}
	endSpan(span, err)
	return err
}

// withIdentity returns evs with every missing ID and Time filled in, copying the slice only when
// something is missing (the caller's events are never changed).
func withIdentity(evs []Event) []Event {
	i := slices.IndexFunc(evs, func(ev Event) bool { return ev.ID == "" || ev.Time.IsZero() })
	if i < 0 {
		return evs
	}
	out := slices.Clone(evs)
	now := time.Now()
	for j := i; j < len(out); j++ {
		if out[j].ID == "" {
			out[j].ID = newID(now)
		}
		if out[j].Time.IsZero() {
			out[j].Time = now
		}
	}
	return out
}

// records builds the records of evs, each with the trace headers th.
func (p *Producer) records(ctx context.Context, topic string, evs []Event, th []kgo.RecordHeader) ([]*pubRec, error) {
	if topic == "" {
		return nil, errEmptyTopic
	}
	prs := make([]*pubRec, len(evs))
	for i := range evs {
		ev := evs[i]
		pr, err := newPubRec(ctx, topic, &ev, th)
		if err != nil {
			return nil, err
		}
		pr.p = p
		prs[i] = pr
	}
	return prs, nil
}

var errEmptyTopic = fmt.Errorf("%w: empty topic", ErrInvalidEvent)

func asyncPromise(r *kgo.Record, err error) {
	pr := r.Context.(*pubRec)
	pr.p.count(pr, r.Topic, err)
	if err != nil {
		err = publishError(r, err)
	}
	pr.done(err)
}

func publishError(r *kgo.Record, err error) error {
	return fmt.Errorf("events: publish %s to %s: %w", eventID(r), r.Topic, err)
}

// produceWait produces prs with kgo's ProduceSync, which flushes their partitions at once
// instead of lingering, and waits for all of them or ctx.
func (p *Producer) produceWait(ctx context.Context, prs []*pubRec) error {
	if len(prs) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, len(prs))
	for i, pr := range prs {
		recs[i] = &pr.rec
	}
	if ctx.Done() == nil { // cannot end: wait here
		return p.results(p.cl.ProduceSync(ctx, recs...))
	}
	done := make(chan error, 1)
	go func() { done <- p.results(p.cl.ProduceSync(ctx, recs...)) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// results counts a ProduceSync's outcomes and joins its errors, each naming its event.
func (p *Producer) results(rs kgo.ProduceResults) error {
	var errs []error
	for _, r := range rs {
		p.count(r.Record.Context, r.Record.Topic, r.Err)
		if r.Err != nil {
			errs = append(errs, publishError(r.Record, r.Err))
		}
	}
	return errors.Join(errs...)
}

// count records one event's publish outcome in the stats and the sent counter.
func (p *Producer) count(ctx context.Context, topic string, err error) {
	p.tel.count(ctx, topic, err)
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
// [ErrTransactional]; after Close, [ErrClosed]. The call opens a producer span ("send
// <topic>"), ended when the outcome is known, whose context the record carries in its headers.
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
		done(errEmptyTopic)
		return
	}
	ctx, span, th := p.tel.start(ctx, topic, 1)
	pr, err := newPubRec(ctx, topic, &ev, th)
	if err != nil {
		endSpan(span, err)
		done(err)
		return
	}
	if span.IsRecording() { // ending a span that does not record does nothing
		userDone := done
		done = func(err error) {
			endSpan(span, err)
			userDone(err)
		}
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

// pubRec is one record on its way to Kafka with everything it needs in one allocation: kgo
// hands it back to the promise through Record.Context, which it embeds (kgo only reads the
// context for cancellation, and our pubRec is that context).
type pubRec struct {
	context.Context // the caller's ctx, with the producer span

	rec kgo.Record
	hs  [3]kgo.RecordHeader // the event headers; with trace headers the slice is allocated
	buf [128]byte           // ID, time, type and key bytes when they fit

	p    *Producer
	done func(error) // PublishAsync (which wraps it to end its span, when that records)
	tx   *Tx         // Tx.Publish
}

// newPubRec builds the record for ev, with the trace headers th after the event's own and
// before its user headers (a trace header the user set in Event.Headers wins), filling a
// missing ID or Time. ev is the caller's copy:
// a generated ID goes straight into the record's bytes, never into a string. The event's Time
// travels in its header, written in UTC; the record timestamp is left to kgo (the publish
// time), so retention and lag age count from when the event was published, not from when it
// happened.
func newPubRec(ctx context.Context, topic string, ev *Event, th []kgo.RecordHeader) (*pubRec, error) {
	for k := range ev.Headers {
		if reservedHeader(k) {
			return nil, fmt.Errorf("%w: event %s: header %q is reserved", ErrInvalidEvent, ev.ID, k)
		}
	}
	var now time.Time
	if ev.ID == "" || ev.Time.IsZero() {
		now = time.Now()
	}
	if ev.Time.IsZero() {
		ev.Time = now
	}
	ev.Time = ev.Time.UTC()
	if y := ev.Time.Year(); y < 0 || y > 9999 {
		return nil, fmt.Errorf("%w: event %s: Time %v is outside the years 0-9999 that RFC 3339 can carry", ErrInvalidEvent, ev.ID, ev.Time)
	}
	pr := &pubRec{Context: ctx}
	var buf []byte
	if need := max(len(ev.ID), 36) + len(time.RFC3339Nano) + 6 + len(ev.Type) + len(ev.Key); need <= len(pr.buf) {
		buf = pr.buf[:0]
	} else {
		buf = make([]byte, 0, need)
	}
	// Each slice is cut right after its append, so a reallocation never invalidates it.
	if ev.ID == "" {
		buf = appendID(buf, now)
	} else {
		buf = append(buf, ev.ID...)
	}
	id := buf[:len(buf):len(buf)]
	n := len(buf)
	buf = ev.Time.AppendFormat(buf, time.RFC3339Nano)
	ts := buf[n:len(buf):len(buf)]
	n = len(buf)
	buf = append(buf, ev.Type...)
	typ := buf[n:len(buf):len(buf)]
	n = len(buf)
	buf = append(buf, ev.Key...)
	key := buf[n:len(buf):len(buf)]

	hs := pr.hs[:0]
	if len(ev.Headers) > 0 || 3+len(th) > len(pr.hs) {
		hs = make([]kgo.RecordHeader, 0, 3+len(th)+len(ev.Headers))
	}
	hs = append(hs, kgo.RecordHeader{Key: HeaderID, Value: id})
	if ev.Type != "" {
		hs = append(hs, kgo.RecordHeader{Key: HeaderType, Value: typ})
	}
	hs = append(hs, kgo.RecordHeader{Key: HeaderTime, Value: ts})
	for _, h := range th {
		if _, mine := ev.Headers[h.Key]; !mine {
			hs = append(hs, h)
		}
	}
	for k, v := range ev.Headers {
		hs = append(hs, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	pr.rec = kgo.Record{Topic: topic, Value: ev.Data, Headers: hs, Timestamp: now, Context: pr}
	if ev.Key != "" {
		pr.rec.Key = key
	}
	return pr, nil
}

// toRecord is newPubRec for callers that only want the record; it fills ev.ID too.
func toRecord(topic string, ev *Event) (*kgo.Record, error) {
	pr, err := newPubRec(context.Background(), topic, ev, nil)
	if err != nil {
		return nil, err
	}
	if ev.ID == "" {
		ev.ID = string(pr.rec.Headers[0].Value)
	}
	return &pr.rec, nil
}
