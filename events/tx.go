package events

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Tx is one open transaction of [Producer.Transact]. It is safe for concurrent use inside fn and
// must not be used after fn returns.
type Tx struct {
	p    *Producer
	mu   sync.Mutex
	errs []error
}

// Publish adds evs to the transaction. It does not wait for acknowledgements: Transact flushes
// before committing and aborts when any write failed. It returns an error wrapping
// [ErrInvalidEvent] at once for a malformed event or an empty topic. It runs under a producer
// span ("send <topic>") whose context every record carries in its headers.
func (tx *Tx) Publish(ctx context.Context, topic string, evs ...Event) error {
	if topic == "" {
		return errEmptyTopic
	}
	ctx, span, th := tx.p.tel.start(ctx, topic, len(evs))
	prs, err := tx.p.records(ctx, topic, evs, th)
	if err != nil {
		endSpan(span, err)
		return err
	}
	for _, pr := range prs {
		pr.tx = tx
		tx.p.cl.Produce(ctx, &pr.rec, txPromise)
	}
	span.End() // the writes' outcome is Transact's
	return nil
}

// txKey marks the ctx of a Transact's fn with its producer.
type txKey struct{}

func txPromise(r *kgo.Record, err error) {
	pr := r.Context.(*pubRec)
	pr.p.count(pr, r.Topic, err)
	if err != nil {
		pr.tx.mu.Lock()
		pr.tx.errs = append(pr.tx.errs, publishError(r, err))
		pr.tx.mu.Unlock()
	}
}

func (tx *Tx) err() error {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return errors.Join(tx.errs...)
}

// Transact runs fn in a Kafka transaction: every event fn publishes through tx becomes visible
// to read-committed consumers together, or none does. fn's error, a failed write or a failed
// commit aborts the transaction and is returned. Transactions on one producer run one at a
// time: Transact waits for the one in progress, or returns ctx.Err() when ctx ends first, and
// then blocks until the commit or abort completes. It returns [ErrNotTransactional] without
// ProducerConfig.TransactionalID, [ErrClosed] after Close, and [ErrNestedTransaction] when
// called (or [Producer.Publish] is) with the ctx fn received: one transaction at a time.
func (p *Producer) Transact(ctx context.Context, fn func(ctx context.Context, tx *Tx) error) error {
	if !p.txn {
		return ErrNotTransactional
	}
	if p.closing.Load() {
		return ErrClosed
	}
	if ctx.Value(txKey{}) == p {
		return ErrNestedTransaction
	}
	select {
	case p.txSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.txSem }()
	if err := p.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("events: begin transaction: %w", err)
	}
	tx := &Tx{p: p}
	err := fn(context.WithValue(ctx, txKey{}, p), tx)
	if err == nil {
		err = p.cl.Flush(ctx)
	}
	if err == nil {
		err = tx.err()
	}
	if err == nil {
		p.watch.reset()
		if err = p.cl.EndTransaction(ctx, kgo.TryCommit); err == nil {
			if p.watch.abortedCommit() {
				return ErrTxnNotCommitted // the client already ended it with an abort
			}
			return nil
		}
		err = fmt.Errorf("events: commit transaction: %w", err)
	}
	// Abort on a context that outlives ctx: leaving the transaction open would wedge the producer.
	actx := context.WithoutCancel(ctx)
	if aerr := p.cl.AbortBufferedRecords(actx); aerr != nil {
		err = errors.Join(err, fmt.Errorf("events: abort buffered records: %w", aerr))
	}
	if aerr := p.cl.EndTransaction(actx, kgo.TryAbort); aerr != nil {
		err = errors.Join(err, fmt.Errorf("events: abort transaction: %w", aerr))
	}
	return err
}
