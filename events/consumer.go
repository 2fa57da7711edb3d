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

// Consumer runs a consumer group and hands each event to the Handler on Concurrency
// goroutines: events with one key (within a partition) are handled one at a time and in
// order, different keys in parallel, records without a key in order per partition.
//
// Offsets are committed only up to the first event not yet done in each partition, so nothing
// is committed that was not handled (or dead-lettered). A failing event is retried with backoff
// while other keys keep flowing; after MaxAttempts it goes to DeadLetterTopic, or, without one,
// its partition is paused. Build it with [NewConsumer] and start it with [Consumer.Run].
type Consumer struct {
	cfg     consumerConfig
	log     *slog.Logger
	started atomic.Bool

	cl      *kgo.Client
	hctx    context.Context // parent of the handlers' contexts; outlives Run's ctx while draining
	hcancel context.CancelFunc

	mu       sync.Mutex
	work     *sync.Cond   // signalled when ready gets a key or stopping is set
	ready    []*keyQueue  // keys whose head record may run, FIFO
	spare    []*keyQueue  // emptied key queues kept for reuse
	parts    map[tp]*part // partitions with dispatched records
	buffered int          // records dispatched and not yet done or dropped
	running  int          // handlers running
	stopping bool
	runDone  <-chan struct{} // Run's ctx.Done(): workers start nothing once it is closed
	wantRoom bool
	room     chan struct{} // poll loop wakes when buffered drops below MaxBuffered

	commitMu sync.Mutex // orders interval, revoke and final commits

	st consumerCounters

	// crash makes Run end as a killed process would: handlers cancelled at once, no claim
	// released, nothing committed after ctx ends. Tests only.
	crash atomic.Bool
}

type tp struct {
	topic     string
	partition int32
}

// part is one assigned partition: its key queues and its commit tracker.
type part struct {
	tp     tp
	ctx    context.Context // handlers' context; cancelled when the partition is lost or gone
	cancel context.CancelFunc
	keys   map[string]*keyQueue
	null   *keyQueue

	// commit tracker: every dispatched offset in order, until it and all before it are done.
	pending   []pendingRec
	baseSeq   uint64 // seq of pending[0]
	nextSeq   uint64
	commit    kgo.EpochOffset // next offset to commit: after the last contiguous done record
	committed int64           // last offset committed by this member; -1 none
	fetched   int64           // last dispatched offset + 1

	running int           // handlers running on this partition
	idle    chan struct{} // closed when running reaches 0 after revoked
	revoked bool          // no more dispatch; draining before the final commit
	gone    bool          // dropped: results are ignored
	paused  bool
}

type pendingRec struct {
	offset int64
	epoch  int32
	done   bool
}

// keyQueue holds one key's records of one partition, oldest first.
type keyQueue struct {
	p         *part
	key       string
	null      bool
	items     []item // items[head:] are queued, oldest first; the backing array is reused
	head      int
	attempt   int   // failed attempts of the head record
	lastErr   error // the head record's last failure
	scheduled bool  // in ready, running, waiting for a retry or stuck
	running   bool
	timer     *time.Timer
}

type item struct {
	r       *kgo.Record
	seq     uint64
	topicID [16]byte // the topic's incarnation; zero when the broker does not say
}

// NewConsumer validates cfg and returns a consumer. It does not connect or start goroutines;
// [Consumer.Run] does. The error wraps [ErrInvalidOptions] and names the bad field; with a
// DeadLetterTopic, KafkaOptions that would make dead-letter writes non-idempotent or acks
// below all are refused as for [NewProducer].
func NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	c, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	// Try the caller's options on a client that neither joins nor fetches, so a bad option
	// fails here, naming the field, rather than in Run.
	probe, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Brokers...)}, c.KafkaOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("%w: ConsumerConfig.KafkaOptions: %w", ErrInvalidOptions, err)
	}
	if v, _ := probe.OptValue(kgo.ConsumeRegex).(bool); v {
		err = invalid("ConsumerConfig.KafkaOptions", "must not hold kgo.ConsumeRegex: Topics are topic names (a pattern could match the DeadLetterTopic)")
	} else if c.DeadLetterTopic != "" {
		err = checkDurable(probe, "ConsumerConfig.KafkaOptions")
	}
	probe.Close()
	if err != nil {
		return nil, err
	}
	return &Consumer{cfg: c, log: c.Logger, parts: make(map[tp]*part), room: make(chan struct{}, 1)}, nil
}

// Run joins the group and handles events until ctx ends. It blocks. When ctx ends it stops
// fetching, drops records not yet started, waits for running handlers (up to
// ShutdownTimeout, then cancels their context), commits what is done and leaves the group.
// It returns nil after a clean shutdown, the final commit's error otherwise, the kgo error when
// the client cannot be built, and [ErrClosed] when called a second time. Background errors
// (fetch, commit, handler) are logged and counted in [Consumer.Stats].
func (c *Consumer) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return ErrClosed
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.cfg.Brokers...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}
	opts = append(opts, c.cfg.KafkaOptions...)
	opts = append(opts,
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeTopics(c.cfg.Topics...),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		// Transaction markers take offsets too: seeing them lets the commit point pass them.
		kgo.KeepControlRecords(),
		kgo.OnPartitionsRevoked(c.onRevoked),
		kgo.OnPartitionsLost(c.onLost),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("events: consumer %s: %w", c.cfg.Group, err)
	}
	if c.cfg.DeadLetterTopic != "" {
		if err := checkDurable(cl, "ConsumerConfig.KafkaOptions"); err != nil {
			cl.Close()
			return err
		}
	}
	c.cl = cl
	c.runDone = ctx.Done()
	c.work = sync.NewCond(&c.mu)
	c.hctx, c.hcancel = context.WithCancel(context.WithoutCancel(ctx))
	defer c.hcancel()

	var workers sync.WaitGroup
	for range c.cfg.Concurrency {
		workers.Go(c.worker)
	}
	stopCommits := make(chan struct{})
	var committer sync.WaitGroup
	committer.Go(func() { c.commitLoop(stopCommits) })

	c.pollLoop(ctx)

	// Drain: drop what has not started, wait for what runs.
	c.mu.Lock()
	c.stopping = true
	for _, p := range c.parts {
		c.dropQueued(p)
	}
	c.ready = nil
	c.work.Broadcast()
	c.mu.Unlock()
	if c.crash.Load() {
		c.hcancel()
	}
	if !waitTimeout(&workers, c.cfg.ShutdownTimeout) {
		c.log.Warn("events: consumer shutdown: handlers still running, cancelling them", "group", c.cfg.Group)
		c.hcancel()
		workers.Wait()
	}
	close(stopCommits)
	committer.Wait()
	if !c.crash.Load() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
		err = c.commit(cctx, nil)
		cancel()
	}
	c.mu.Lock()
	for k, p := range c.parts {
		p.gone = true
		p.cancel()
		delete(c.parts, k)
	}
	c.mu.Unlock()
	cl.Close() // leaves the group
	return err
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// pollLoop fetches and dispatches until ctx ends.
func (c *Consumer) pollLoop(ctx context.Context) {
	for {
		n, ok := c.waitRoom(ctx)
		if !ok {
			return
		}
		fs := c.cl.PollRecords(ctx, n)
		if fs.IsClientClosed() || ctx.Err() != nil {
			c.cl.AllowRebalance()
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			c.st.fetchErrors.Add(1)
			c.log.Warn("events: fetch", "group", c.cfg.Group, "topic", t, "partition", p, "err", err)
		})
		c.mu.Lock()
		fs.EachTopic(func(t kgo.FetchTopic) {
			for i := range t.Partitions {
				f := &t.Partitions[i]
				if len(f.Records) == 0 {
					continue
				}
				k := tp{t.Topic, f.Partition}
				p := c.parts[k]
				if p == nil {
					p = c.newPart(k)
				}
				for _, r := range f.Records {
					if r.Attrs.IsControl() {
						c.skipControl(p, r)
					} else {
						c.enqueue(p, r, t.TopicID)
					}
				}
			}
		})
		c.mu.Unlock()
		c.work.Broadcast() // workers blocked on c.mu while we enqueued wake in turn anyway
		c.cl.AllowRebalance()
	}
}

// waitRoom blocks until fewer than MaxBuffered records are buffered and returns how many more
// may be polled; false when ctx ended.
func (c *Consumer) waitRoom(ctx context.Context) (int, bool) {
	for {
		c.mu.Lock()
		free := c.cfg.MaxBuffered - c.buffered
		c.wantRoom = free <= 0
		c.mu.Unlock()
		if free > 0 {
			return free, true
		}
		select {
		case <-c.room:
		case <-ctx.Done():
			return 0, false
		}
	}
}

func (c *Consumer) newPart(k tp) *part {
	p := &part{tp: k, keys: make(map[string]*keyQueue), committed: -1, commit: kgo.EpochOffset{Epoch: -1, Offset: -1}}
	p.ctx, p.cancel = context.WithCancel(c.hctx)
	c.parts[k] = p
	return p
}

// skipControl records a transaction marker as done at once: it is never handled, but the
// commit point must pass it, or a caught-up partition would lag by one per transaction.
// c.mu is held.
func (c *Consumer) skipControl(p *part, r *kgo.Record) {
	p.fetched = r.Offset + 1
	p.pending = append(p.pending, pendingRec{offset: r.Offset, epoch: r.LeaderEpoch, done: true})
	p.nextSeq++
	c.advance(p)
}

// enqueue adds r, read from the topic incarnation topicID, to its key's queue and tracker.
// c.mu is held.
func (c *Consumer) enqueue(p *part, r *kgo.Record, topicID [16]byte) {
	seq := p.nextSeq
	p.nextSeq++
	p.pending = append(p.pending, pendingRec{offset: r.Offset, epoch: r.LeaderEpoch})
	p.fetched = r.Offset + 1
	c.buffered++
	var q *keyQueue
	if r.Key == nil {
		if p.null == nil {
			p.null = &keyQueue{p: p, null: true}
		}
		q = p.null
	} else if q = p.keys[string(r.Key)]; q == nil {
		q = c.newKeyQueue(p, string(r.Key))
		p.keys[q.key] = q
	}
	q.items = append(q.items, item{r: r, seq: seq, topicID: topicID})
	if !q.scheduled {
		q.scheduled = true
		c.push(q)
	}
}

// newKeyQueue returns an empty queue for key of p, reusing one whose key emptied. c.mu is held.
func (c *Consumer) newKeyQueue(p *part, key string) *keyQueue {
	if n := len(c.spare); n > 0 {
		q := c.spare[n-1]
		c.spare = c.spare[:n-1]
		q.p, q.key = p, key
		return q
	}
	return &keyQueue{p: p, key: key}
}

// retire forgets q, an emptied key queue, and keeps it for reuse. c.mu is held.
func (c *Consumer) retire(q *keyQueue) {
	delete(q.p.keys, q.key)
	if cap(q.items) > 64 || len(c.spare) >= c.cfg.MaxBuffered {
		return // a hot key's big array, or enough spares
	}
	*q = keyQueue{items: q.items[:0]}
	c.spare = append(c.spare, q)
}

// front returns q's oldest record. q is not empty.
func (q *keyQueue) front() item { return q.items[q.head] }

// len returns how many records q holds.
func (q *keyQueue) len() int { return len(q.items) - q.head }

// pop removes q's oldest record.
func (q *keyQueue) pop() {
	q.items[q.head] = item{}
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
}

// truncate keeps q's first n records (n is 0 or 1).
func (q *keyQueue) truncate(n int) {
	keep := q.items[q.head : q.head+n]
	copy(q.items, keep)
	clear(q.items[n:])
	q.items, q.head = q.items[:n], 0
}

// push appends q to the ready keys. It wakes no worker: the caller does, once per batch
// (pollLoop), or is a worker about to take from ready itself (finishLocked). c.mu is held.
func (c *Consumer) push(q *keyQueue) {
	c.ready = append(c.ready, q)
}

// markDone records seq as done and advances the partition's commit point. c.mu is held.
func (c *Consumer) markDone(p *part, seq uint64) {
	p.pending[seq-p.baseSeq].done = true
	c.advance(p)
	c.release(1)
}

// advance moves p's commit point past its leading done records. c.mu is held.
func (c *Consumer) advance(p *part) {
	for len(p.pending) > 0 && p.pending[0].done {
		p.commit = kgo.EpochOffset{Epoch: p.pending[0].epoch, Offset: p.pending[0].offset + 1}
		p.pending = p.pending[1:]
		p.baseSeq++
	}
}

// release forgets n buffered records and wakes the poll loop if it waits for room and a
// quarter of MaxBuffered is free: polling a few records at a time would cost a wake-up each.
func (c *Consumer) release(n int) {
	c.buffered -= n
	if c.wantRoom && c.buffered <= c.cfg.MaxBuffered-max(c.cfg.MaxBuffered/4, 1) {
		c.wantRoom = false
		select {
		case c.room <- struct{}{}:
		default:
		}
	}
}

// dropQueued removes p's records that have not started, so they are fetched again by whoever
// owns p next. A running head stays until its handler returns. c.mu is held.
func (c *Consumer) dropQueued(p *part) {
	p.revoked = true
	kept := c.ready[:0]
	for _, q := range c.ready {
		if q.p != p {
			kept = append(kept, q)
		}
	}
	clear(c.ready[len(kept):])
	c.ready = kept
	drop := func(q *keyQueue) {
		if q.timer != nil {
			q.timer.Stop()
			q.timer = nil
		}
		n, keep := q.len(), 0
		if q.running {
			keep = 1
		}
		q.truncate(keep)
		c.release(n - keep)
	}
	for _, q := range p.keys {
		drop(q)
	}
	if p.null != nil {
		drop(p.null)
	}
}

// worker runs ready keys' head records until Run stops. It applies one record's outcome and
// takes the next record in one critical section.
func (c *Consumer) worker() {
	var (
		q   *keyQueue // the key whose head ran, or nil
		it  item
		res result
	)
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if q != nil {
			c.finishLocked(q, it, res)
			q = nil
		}
		for len(c.ready) == 0 && !c.stopping {
			c.work.Wait()
		}
		if len(c.ready) == 0 {
			return
		}
		next := c.ready[0]
		c.ready[0] = nil
		c.ready = c.ready[1:]
		if c.ending() {
			continue // Run's ctx ended: start nothing new; the drain drops next's records
		}
		q, it = next, next.front()
		p := q.p
		q.running = true
		p.running++
		c.running++
		attempt, lastErr := q.attempt, q.lastErr
		c.mu.Unlock()
		res = c.process(p.ctx, it, attempt, lastErr)
		c.mu.Lock()
	}
}

// ending reports whether Run's ctx has ended.
func (c *Consumer) ending() bool {
	select {
	case <-c.runDone:
		return true
	default:
		return false
	}
}

type outcome uint8

const (
	outDone    outcome = iota // handled, deduplicated or dead-lettered: commit it
	outRetry                  // failed; try again after backoff
	outWait                   // could not start (claimed elsewhere, store down); try again, no attempt used
	outStuck                  // failed for good without a DLQ; the partition is paused
	outAbandon                // shutting down; leave it uncommitted
)

// result is what became of one try at a record.
type result struct {
	out      outcome
	err      error // the handler's (or decoder's) error, if any
	attempts int   // failed handler attempts so far
}

// process handles one record. attempt is the number of failed attempts so far.
func (c *Consumer) process(ctx context.Context, it item, attempt int, lastErr error) result {
	r := it.r
	if attempt >= c.cfg.MaxAttempts || IsPermanent(lastErr) {
		return c.deadLetter(ctx, it, lastErr, attempt) // the DLQ write failed before: try it again
	}
	ev, err := decodeRecord(r, it.topicID)
	if err != nil {
		c.st.decodeErrors.Add(1)
		c.log.Error("events: undecodable record", "group", c.cfg.Group, "err", err)
		return c.deadLetter(ctx, it, Permanent(err), attempt)
	}
	var id, token string
	if d := c.cfg.Deduper; d != nil {
		id = dedupeID(c.cfg.Group, ev.ID)
		token, err = d.Claim(ctx, id, c.cfg.DedupeLease)
		switch {
		case errors.Is(err, ErrDuplicate):
			c.st.deduped.Add(1)
			return result{out: outDone}
		case errors.Is(err, ErrClaimed):
			return result{out: outWait, err: lastErr, attempts: attempt}
		case err != nil:
			if ctx.Err() != nil {
				return result{out: outAbandon}
			}
			c.st.dedupeErrors.Add(1)
			c.log.Warn("events: dedupe claim", "group", c.cfg.Group, "id", ev.ID, "err", err)
			return result{out: outWait, err: lastErr, attempts: attempt}
		}
	}
	if token == "" {
		err = c.call(ctx, ev)
	} else {
		hctx, lost, stop := c.keepClaim(ctx, id, token)
		err = c.call(hctx, ev)
		stop()
		if err != nil && lost() && ctx.Err() == nil {
			// Another member may run it now: try again later, without using an attempt.
			c.st.failed.Add(1)
			return result{out: outWait, err: lastErr, attempts: attempt}
		}
	}
	if err == nil {
		c.st.handled.Add(1)
		if token != "" {
			if derr := c.cfg.Deduper.Done(context.WithoutCancel(ctx), id, token); derr != nil {
				c.st.dedupeErrors.Add(1)
				c.log.Warn("events: dedupe done", "group", c.cfg.Group, "id", ev.ID, "err", derr)
			}
		}
		return result{out: outDone}
	}
	c.st.failed.Add(1)
	if c.crash.Load() && ctx.Err() != nil {
		return result{out: outAbandon} // a killed process releases nothing
	}
	if token != "" {
		c.dedupeRelease(ctx, id, token)
	}
	if ctx.Err() != nil {
		return result{out: outAbandon}
	}
	attempt++
	c.log.Warn("events: handler failed", "group", c.cfg.Group, "topic", r.Topic, "partition", r.Partition,
		"offset", r.Offset, "id", ev.ID, "attempt", attempt, "err", err)
	if attempt >= c.cfg.MaxAttempts || IsPermanent(err) {
		return c.deadLetter(ctx, it, err, attempt)
	}
	c.st.retried.Add(1)
	return result{out: outRetry, err: err, attempts: attempt}
}

// call runs the handler, turning a panic into an error.
func (c *Consumer) call(ctx context.Context, ev Event) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("events: handler panic: %v", v)
		}
	}()
	return c.cfg.Handler(ctx, ev)
}

// finish applies a record's outcome to its key queue and partition.
func (c *Consumer) finish(q *keyQueue, it item, res result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finishLocked(q, it, res)
}

// finishLocked is finish with c.mu held.
func (c *Consumer) finishLocked(q *keyQueue, it item, res result) {
	p := q.p
	q.running = false
	p.running--
	c.running--
	if p.revoked && p.running == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	if p.gone {
		c.release(1) // the head dropQueued kept for us
		return
	}
	if res.out != outDone && p.revoked {
		q.truncate(0) // the head dropQueued kept: the next owner fetches it again
		c.release(1)
		return
	}
	switch res.out {
	case outDone:
		q.pop()
		q.attempt, q.lastErr = 0, nil
		c.markDone(p, it.seq)
		switch {
		case q.len() > 0 && !p.revoked && !c.stopping:
			c.push(q)
			if len(c.ready) > 1 { // the calling worker takes one; wake another for the rest
				c.work.Signal()
			}
		case q.len() == 0:
			q.scheduled = false
			if !q.null {
				c.retire(q)
			}
		}
	case outRetry:
		q.attempt, q.lastErr = res.attempts, res.err
		c.later(q, c.cfg.Backoff(q.attempt))
	case outWait:
		q.attempt, q.lastErr = res.attempts, res.err
		c.later(q, c.cfg.Backoff(max(q.attempt, 1)))
	case outStuck:
		q.attempt, q.lastErr = res.attempts, res.err // stays scheduled: nothing behind it runs
	case outAbandon:
	}
}

// later puts q back in the ready queue after d, unless its partition goes first. c.mu is held.
func (c *Consumer) later(q *keyQueue, d time.Duration) {
	if q.p.revoked || c.stopping {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if q.timer != t || q.p.revoked || c.stopping {
			return
		}
		q.timer = nil
		c.push(q)
		c.work.Signal()
	})
	q.timer = t
}

// onRevoked waits for the revoked partitions' running handlers and commits their done
// offsets before the partitions move to another member.
func (c *Consumer) onRevoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	if c.crash.Load() {
		return
	}
	ps := c.take(revoked)
	if len(ps) == 0 {
		return
	}
	for _, p := range ps {
		c.waitIdle(p)
	}
	cctx, cancel := context.WithTimeout(ctx, commitTimeout)
	if err := c.commit(cctx, ps); err != nil {
		c.log.Warn("events: commit on revoke", "group", c.cfg.Group, "err", err)
	}
	cancel()
	c.forget(ps)
}

// onLost drops the partitions: another member may already own them, so nothing is committed
// and their handlers are cancelled. It waits for those handlers to return, so a partition that
// comes back to this member never has two handlers for one key.
func (c *Consumer) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	ps := c.take(lost)
	for _, p := range ps {
		p.cancel()
	}
	for _, p := range ps {
		c.waitIdle(p)
	}
	c.forget(ps)
}

// take marks the named partitions revoked and drops their queued records.
func (c *Consumer) take(m map[string][]int32) []*part {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []*part
	for t, parts := range m {
		for _, n := range parts {
			if p := c.parts[tp{t, n}]; p != nil && !p.gone {
				c.dropQueued(p)
				ps = append(ps, p)
			}
		}
	}
	return ps
}

// waitIdle waits for p's running handlers, cancelling them after ShutdownTimeout.
func (c *Consumer) waitIdle(p *part) {
	c.mu.Lock()
	if p.running == 0 {
		c.mu.Unlock()
		return
	}
	idle := make(chan struct{})
	p.idle = idle
	c.mu.Unlock()
	t := time.NewTimer(c.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
		c.log.Warn("events: revoke: handlers still running, cancelling them", "group", c.cfg.Group,
			"topic", p.tp.topic, "partition", p.tp.partition)
		p.cancel()
		<-idle
	}
}

// forget removes partitions for good and resumes any we paused, so the next owner (maybe us)
// fetches them again.
func (c *Consumer) forget(ps []*part) {
	resume := map[string][]int32{}
	c.mu.Lock()
	for _, p := range ps {
		p.gone = true
		p.cancel()
		if c.parts[p.tp] == p {
			delete(c.parts, p.tp)
		}
		if p.paused {
			resume[p.tp.topic] = append(resume[p.tp.topic], p.tp.partition)
		}
	}
	c.mu.Unlock()
	if len(resume) > 0 {
		c.cl.ResumeFetchPartitions(resume)
	}
}

// dedupeRelease gives up a claim after a failure, logging and counting a store error.
func (c *Consumer) dedupeRelease(ctx context.Context, id, token string) {
	if err := c.cfg.Deduper.Release(context.WithoutCancel(ctx), id, token); err != nil {
		c.st.dedupeErrors.Add(1)
		c.log.Warn("events: dedupe release", "group", c.cfg.Group, "id", id, "err", err)
	}
}

// keepClaim renews the claim token holds on id every DedupeLease/3 while a handler runs, when
// the Deduper is a [DedupeRenewer]. It returns the handler's context, cancelled when the claim
// is known lost; lost, which reports that; and stop, which ends the renewals and waits for
// them.
func (c *Consumer) keepClaim(ctx context.Context, id, token string) (hctx context.Context, lost func() bool, stop func()) {
	rn, ok := c.cfg.Deduper.(DedupeRenewer)
	if !ok {
		return ctx, func() bool { return false }, func() {}
	}
	hctx, cancel := context.WithCancelCause(ctx)
	var gone atomic.Bool
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(max(c.cfg.DedupeLease/3, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-hctx.Done():
				return
			case <-t.C:
			}
			err := rn.Renew(hctx, id, token, c.cfg.DedupeLease)
			switch {
			case errors.Is(err, ErrClaimed):
				gone.Store(true)
				c.log.Warn("events: dedupe claim lost while the handler ran; cancelling it", "group", c.cfg.Group, "id", id)
				cancel(fmt.Errorf("events: dedupe claim of %s lost: %w", id, ErrClaimed))
				return
			case err != nil && hctx.Err() == nil:
				c.st.dedupeErrors.Add(1)
				c.log.Warn("events: dedupe renew", "group", c.cfg.Group, "id", id, "err", err)
			}
		}
	})
	return hctx, gone.Load, func() {
		close(done)
		wg.Wait()
		cancel(nil)
	}
}
