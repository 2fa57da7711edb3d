package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/surgekit/surge/events"
	"github.com/surgekit/surge/internal/jitter"
)

// releaseTimeout bounds the lease release when Run ends.
const releaseTimeout = 5 * time.Second

// Relay publishes an [Outbox]'s committed rows to Kafka and deletes them once acknowledged.
// Run one or more per table (in one process or many); one leads at a time. Its methods are safe
// for concurrent use. Build it with [NewRelay] and start it with [Relay.Run].
type Relay struct {
	o      *Outbox
	p      *events.Producer
	cfg    relayConfig
	notify chan struct{}

	running  atomic.Bool
	leader   atomic.Bool
	flushing atomic.Bool    // a flush goroutine runs
	flushes  sync.WaitGroup // the flush goroutine, waited for when Run returns

	published atomic.Uint64
	batches   atomic.Uint64
	failures  atomic.Uint64
	acquired  atomic.Uint64

	mu        sync.Mutex
	lastErr   error
	lastErrAt time.Time

	// crash makes Run return without releasing its lease, as a killed process would (tests).
	crash bool
}

// Stats is a snapshot of a relay's counters.
type Stats struct {
	Leader      bool      // this relay holds the lease now
	Acquired    uint64    // times this relay became the leader
	Published   uint64    // events acknowledged by Kafka and then deleted from the outbox
	Batches     uint64    // delete statements that removed published rows
	Failures    uint64    // failed rounds and deletes (database or Kafka), each logged and followed by a backoff
	LastError   error     // the latest failure, nil if none
	LastErrorAt time.Time // when it happened
}

// NewRelay returns a relay that publishes o's rows with p. It does not start anything: call
// [Relay.Run]. It returns an error wrapping [ErrInvalidOptions] naming the bad field. The relay
// never closes p.
func NewRelay(o *Outbox, p *events.Producer, opt *RelayOptions) (*Relay, error) {
	if o == nil {
		return nil, fmt.Errorf("%w: NewRelay: nil Outbox", ErrInvalidOptions)
	}
	if p == nil {
		return nil, fmt.Errorf("%w: NewRelay: nil Producer", ErrInvalidOptions)
	}
	cfg, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	if opt == nil || opt.Logger == nil {
		cfg.log = o.cfg.log
	}
	cfg.log = cfg.log.With("outbox", o.cfg.table, "relay", cfg.name)
	return &Relay{o: o, p: p, cfg: cfg, notify: make(chan struct{}, 1)}, nil
}

// Notify tells the relay that rows were just committed, so an idle leader publishes them now
// instead of at its next poll. It never blocks; calling it often is cheap (wake-ups coalesce).
// A relay in another process does not hear it and finds the rows at its next poll.
func (r *Relay) Notify() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of the relay's counters. It is safe to call while Run runs.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	lastErr, lastAt := r.lastErr, r.lastErrAt
	r.mu.Unlock()
	return Stats{
		Leader: r.leader.Load(), Acquired: r.acquired.Load(),
		Published: r.published.Load(), Batches: r.batches.Load(), Failures: r.failures.Load(),
		LastError: lastErr, LastErrorAt: lastAt,
	}
}

// Name returns the relay's name, as written in the lease row.
func (r *Relay) Name() string { return r.cfg.name }

// row is one outbox row on its way to Kafka.
type row struct {
	id    int64
	topic string
	ev    events.Event
}

// batch is one publish of rows; done is closed when every row's outcome is known.
type batch struct {
	rows  []row
	errs  []error
	left  atomic.Int64
	done  chan struct{}
	start time.Time
}

// Run makes the relay take part in publishing until ctx ends; it blocks. While it leads, it
// reads up to BatchSize committed rows in id order (commit order per key), hands them to the
// producer and has them sent at once, waits for Kafka's acknowledgements, and queues the
// acknowledged rows for deletion (done by a goroutine of Run's, in the background, so the next
// batch need not wait for it); then it goes on at once while rows remain, else after
// PollInterval or [Relay.Notify]. While another relay leads, it tries to take the lease over
// every PollInterval. Database and Kafka errors do not end Run: each failed round is logged,
// counted in [Stats] and followed by a backoff (MinBackoff doubling up to MaxBackoff, with
// jitter); events Kafka has not acknowledged are not handed to the producer again until it
// settles them. When ctx ends Run finishes the queued deletes, releases the lease (so another
// relay takes over at once), waits for its goroutines and returns nil; events still waiting
// for Kafka then are published again by the next leader, with the same IDs. It returns an
// error only when Run is already running on this relay; it may be called again after it
// returned.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("outbox: relay: Run is already running")
	}
	defer r.running.Store(false)
	defer r.flushes.Wait()
	defer r.stepDown()

	del := r.startDeleter(ctx)
	defer del.stop()

	var (
		renewedAt  time.Time          // when the last successful renewal was sent
		leaseUntil time.Time          // this relay's conservative estimate of its lease's end
		inflight   *batch             // published, not yet settled
		fails      int                // consecutive failed rounds
		deleting   = map[int64]bool{} // acknowledged rows whose delete has not been seen to finish
	)
	renewEvery := r.cfg.leaseTTL / 3
	for ctx.Err() == nil {
		if !r.leader.Load() || time.Since(renewedAt) >= renewEvery {
			start := time.Now()
			ok, err := r.acquire(ctx)
			switch {
			case err != nil:
				r.setLeader(false)
				fails++
				r.fail(ctx, "renew lease", err, fails)
				continue
			case !ok:
				// Not woken by Notify: a follower would otherwise race for the lease on
				// every commit.
				r.setLeader(false)
				wait(ctx, nil, r.cfg.poll)
				continue
			}
			r.setLeader(true)
			renewedAt = start
			leaseUntil = start.Add(r.cfg.leaseTTL - r.cfg.leaseTTL/10)
		}

		if inflight == nil {
			// Rows deleted before this query starts cannot come back; rows whose delete is
			// still running may, and are skipped.
			for _, id := range del.finished() {
				delete(deleting, id)
			}
			rows, err := r.fetch(ctx, deleting)
			if err != nil {
				fails++
				r.fail(ctx, "read rows", err, fails)
				continue
			}
			if len(rows) == 0 {
				r.idle(ctx, min(r.cfg.poll, renewEvery))
				continue
			}
			inflight = r.publish(ctx, rows)
		}

		// Wait for the acknowledgements, but not past the publish timeout, the next renewal or
		// the lease's end.
		limit := min(r.cfg.publishTimeout-time.Since(inflight.start), time.Until(leaseUntil), renewEvery-time.Since(renewedAt))
		if !wait(ctx, inflight.done, limit) {
			if ctx.Err() != nil {
				break
			}
			if time.Since(inflight.start) >= r.cfg.publishTimeout {
				fails++
				r.fail(ctx, "publish", fmt.Errorf("%d events not acknowledged within %v", inflight.left.Load(), r.cfg.publishTimeout), fails)
				// The same events are not produced again while these are pending: the next
				// rounds wait for them.
				inflight.start = time.Now()
			}
			continue
		}
		b := inflight
		inflight = nil
		n := 0 // acknowledged prefix: deleting a row after a failed one would break key order
		for n < len(b.rows) && b.errs[n] == nil {
			n++
		}
		if n > 0 {
			// Deleted in the background while the next batch is read and published.
			ids := make([]int64, n)
			for i := range ids {
				ids[i] = b.rows[i].id
				deleting[ids[i]] = true
			}
			if !del.add(ctx, ids) {
				break
			}
		}
		if n < len(b.rows) {
			fails++
			r.fail(ctx, "publish", b.errs[n], fails)
			continue
		}
		fails = 0
		if len(b.rows) < r.cfg.batch {
			r.idle(ctx, min(r.cfg.poll, renewEvery-time.Since(renewedAt)))
		}
	}
	return nil
}

// maxDeleting, times BatchSize, is how many acknowledged rows may wait for their delete
// before the relay stops publishing more.
const maxDeleting = 10

// deleter deletes acknowledged rows in one background goroutine, all that are waiting in one
// statement, so a slow delete (a commit waiting for fsync or for SQLite's write lock) does not
// hold up the next batches.
type deleter struct {
	max  int
	wake chan struct{} // rows are waiting
	room chan struct{} // the waiting rows were taken
	quit chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	pending []int64 // acknowledged, to delete
	done    []int64 // deleted, not yet returned by finished
}

func (r *Relay) startDeleter(ctx context.Context) *deleter {
	d := &deleter{max: maxDeleting * r.cfg.batch, wake: make(chan struct{}, 1), room: make(chan struct{}, 1),
		quit: make(chan struct{})}
	d.wg.Go(func() {
		for {
			quitting := false
			select {
			case <-d.wake:
			case <-d.quit:
				quitting = true // delete what is queued, then stop
			}
			d.mu.Lock()
			ids := d.pending
			d.pending = nil
			d.mu.Unlock()
			signal(d.room)
			if len(ids) > 0 && !r.deleteRetrying(ctx, ids) {
				return
			}
			d.mu.Lock()
			d.done = append(d.done, ids...)
			d.mu.Unlock()
			if quitting {
				return
			}
		}
	})
	return d
}

// deleteRetrying deletes ids, retrying with backoff until it succeeds (true) or ctx ends
// (false: the rows stay, published, and the next leader publishes them again, same IDs).
func (r *Relay) deleteRetrying(ctx context.Context, ids []int64) bool {
	for attempt := 1; ; attempt++ {
		// Not cancelled with ctx: a relay that stops still deletes what it published.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.publishTimeout)
		err := r.delete(dctx, ids)
		cancel()
		if err == nil {
			r.published.Add(uint64(len(ids)))
			r.batches.Add(1)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		r.fail(ctx, "delete published rows", err, attempt)
	}
}

// add queues ids for deletion; it blocks while too many rows wait, and reports false when ctx
// ended first.
func (d *deleter) add(ctx context.Context, ids []int64) bool {
	for {
		d.mu.Lock()
		if len(d.pending) < d.max {
			d.pending = append(d.pending, ids...)
			d.mu.Unlock()
			signal(d.wake)
			return true
		}
		d.mu.Unlock()
		select {
		case <-d.room:
		case <-ctx.Done():
			return false
		}
	}
}

// finished returns the ids deleted since the last call.
func (d *deleter) finished() []int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.done
	d.done = nil
	return out
}

// stop deletes what is queued (unless ctx ended) and waits for the goroutine.
func (d *deleter) stop() {
	close(d.quit)
	d.wg.Wait()
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (r *Relay) setLeader(on bool) {
	if r.leader.Swap(on) == on {
		return
	}
	if on {
		r.acquired.Add(1)
		r.cfg.log.Info("outbox: relay leads")
	} else {
		r.cfg.log.Info("outbox: relay no longer leads")
	}
}

// acquire takes or renews the lease; false when another relay holds it.
func (r *Relay) acquire(ctx context.Context) (bool, error) {
	res, err := r.o.db.ExecContext(ctx, r.o.q.acquire, leaseName, r.cfg.name, r.cfg.leaseTTL.Milliseconds())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// stepDown releases the lease when Run ends, so a follower takes over without waiting.
func (r *Relay) stepDown() {
	if !r.leader.Load() || r.crash {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if _, err := r.o.db.ExecContext(ctx, r.o.q.release, leaseName, r.cfg.name); err != nil {
		r.cfg.log.Warn("outbox: release lease", "err", err)
	}
	r.setLeader(false)
}

// fetch reads the next rows in id order, skipping those in skip.
func (r *Relay) fetch(ctx context.Context, skip map[int64]bool) ([]row, error) {
	rs, err := r.o.db.QueryContext(ctx, r.o.q.fetch, r.cfg.batch+len(skip))
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	rows := make([]row, 0, r.cfg.batch)
	for rs.Next() {
		var (
			rw      row
			nanos   int64
			headers sql.NullString
		)
		if err := rs.Scan(&rw.id, &rw.topic, &rw.ev.ID, &rw.ev.Type, &rw.ev.Key, &nanos, &headers, &rw.ev.Data); err != nil {
			return nil, err
		}
		if skip[rw.id] || len(rows) == r.cfg.batch {
			continue
		}
		rw.ev.Time = time.Unix(0, nanos).UTC()
		if headers.Valid {
			if err := json.Unmarshal([]byte(headers.String), &rw.ev.Headers); err != nil {
				return nil, fmt.Errorf("row %d (event %s): headers: %w", rw.id, rw.ev.ID, err)
			}
		}
		rows = append(rows, rw)
	}
	return rows, rs.Err()
}

// publish hands rows to the producer in order; the producer keeps that order per partition.
func (r *Relay) publish(ctx context.Context, rows []row) *batch {
	b := &batch{rows: rows, errs: make([]error, len(rows)), done: make(chan struct{}), start: time.Now()}
	b.left.Store(int64(len(rows)))
	for i := range rows {
		r.p.PublishAsync(ctx, rows[i].topic, rows[i].ev, func(err error) {
			b.errs[i] = err
			if b.left.Add(-1) == 0 {
				close(b.done)
			}
		})
	}
	// The producer lingers (kgo: 10ms by default) to fill batches; the relay's batch is complete,
	// so have it sent now. One flush at a time: while one runs, nothing lingers.
	if r.flushing.CompareAndSwap(false, true) {
		r.flushes.Go(func() {
			defer r.flushing.Store(false)
			fctx, cancel := context.WithTimeout(ctx, r.cfg.publishTimeout)
			defer cancel()
			_ = r.p.Flush(fctx) // the outcome is in each event's callback
		})
	}
	return b
}

func (r *Relay) delete(ctx context.Context, ids []int64) error {
	_, err := r.o.db.ExecContext(ctx, r.o.q.del, r.o.q.idList(ids))
	return err
}

// fail records a failed round and waits the backoff (or until ctx ends).
func (r *Relay) fail(ctx context.Context, what string, err error, attempt int) {
	if ctx.Err() != nil {
		return // shutting down: not a failure
	}
	err = fmt.Errorf("outbox: relay: %s: %w", what, err)
	r.failures.Add(1)
	r.mu.Lock()
	r.lastErr, r.lastErrAt = err, time.Now()
	r.mu.Unlock()
	d := jitter.Exponential(attempt-1, r.cfg.minBackoff, r.cfg.maxBackoff)
	r.cfg.log.Warn("outbox: relay round failed", "err", err, "attempt", attempt, slog.Duration("backoff", d))
	wait(ctx, nil, d)
}

// idle waits up to d for a Notify or ctx's end.
func (r *Relay) idle(ctx context.Context, d time.Duration) {
	wait(ctx, r.notify, d)
}

// wait waits up to d for ch (nil: never ready); it reports whether ch was ready.
func wait(ctx context.Context, ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	default:
	}
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}
