package events

// Dispatch: the poll loop fetches records into per-key queues; a worker takes a key's queued
// records as one run, handles them in order without the lock, and finish applies the outcome.

import (
	"context"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

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
	inRun     int   // records at the front that a worker is handling as one run; 0 when none
	timer     *time.Timer
}

type item struct {
	r       *kgo.Record
	seq     uint64
	topicID [16]byte // the topic's incarnation; zero when the broker does not say
}

// fetchChunk is records of one partition that the poll loop took from kgo and has not yet
// dispatched, oldest first.
type fetchChunk struct {
	tp      tp
	topicID [16]byte
	recs    []*kgo.Record
}

// pollLoop fetches and dispatches until ctx ends. It takes all kgo has fetched at once into
// c.backlog and dispatches from there as MaxBuffered allows: kgo fetches again only once its
// buffer is drained, so taking a few records at a time would leave the workers idle while
// kgo fetches and decodes the next batch; with its buffer drained, kgo does that while the
// workers handle this one.
func (c *Consumer) pollLoop(ctx context.Context) {
	for {
		n, ok := c.waitRoom(ctx)
		if !ok {
			return
		}
		c.mu.Lock()
		empty := len(c.backlog) == 0
		c.mu.Unlock()
		if empty {
			fs := c.cl.PollFetches(ctx)
			if fs.IsClientClosed() || ctx.Err() != nil {
				c.cl.AllowRebalance()
				return
			}
			c.addFetches(fs)
		}
		if c.dispatch(ctx, n) {
			return // another goroutine runs the poll loop now (see promote)
		}
		c.cl.AllowRebalance() // a revoke drops the backlog's records of the partitions it takes
	}
}

// addFetches adds the records of fs to the backlog, counting and logging fetch errors.
func (c *Consumer) addFetches(fs kgo.Fetches) {
	fs.EachError(func(t string, p int32, err error) {
		c.st.fetchErrors.Add(1)
		c.log.Warn("events: fetch", "group", c.cfg.Group, "topic", t, "partition", p, "err", err)
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	fs.EachTopic(func(t kgo.FetchTopic) {
		for _, f := range t.Partitions {
			if len(f.Records) > 0 {
				c.backlog = append(c.backlog, fetchChunk{tp{t.Topic, f.Partition}, t.TopicID, f.Records})
			}
		}
	})
}

// dispatch queues up to n records of the backlog, oldest first, for the workers and wakes them,
// or handles them itself while it may (see inline). moved reports that a handler call of
// this goroutine was promoted: another goroutine runs the poll loop now.
func (c *Consumer) dispatch(ctx context.Context, n int) (moved bool) {
	wake := false // keys are ready for the workers
	for n > 0 {
		c.mu.Lock()
		if len(c.backlog) == 0 {
			wake = len(c.ready) > 0
			c.mu.Unlock()
			break
		}
		ch := &c.backlog[0]
		k, topicID := ch.tp, ch.topicID
		p := c.parts[k]
		if p != nil && p.paused {
			// Paused for a record that failed for good: its held records would only queue
			// behind it (filling MaxBuffered for every partition) or be handled and never
			// committed. Whoever owns p next fetches them again, as kgo does with its own
			// buffered records of a paused partition.
			c.backlog[0] = fetchChunk{}
			c.backlog = c.backlog[1:]
			c.mu.Unlock()
			continue
		}
		recs := ch.recs[:min(n, len(ch.recs))]
		ch.recs = ch.recs[len(recs):]
		if len(ch.recs) == 0 {
			c.backlog[0] = fetchChunk{}
			c.backlog = c.backlog[1:]
		}
		n -= len(recs)
		if p == nil {
			p = c.newPart(k)
		}
		if p.first < 0 {
			p.first = recs[0].Offset
		}
		consumed := 0
		if start, ok := c.inlineable(ctx, p); ok {
			recs, consumed, moved = c.dispatchInline(ctx, p, recs, topicID, start)
		}
		for _, r := range recs {
			if r.Attrs.IsControl() {
				c.skipControl(p, r)
			} else {
				c.enqueue(p, r, topicID)
				consumed++
			}
		}
		wake = len(c.ready) > 0
		c.mu.Unlock()
		if consumed > 0 {
			c.cfg.tel.consumed.Add(ctx, int64(consumed), p.tel.add...)
		}
		if moved {
			return true
		}
	}
	// Workers blocked on c.mu while we enqueued wake in turn anyway. When the poll loop handled
	// every record itself (inline) nothing is ready: waking the workers would only have each
	// take c.mu, find nothing and wait again, every poll.
	if wake {
		c.work.Broadcast()
	}
	return false
}

// dropBacklog forgets the backlog's records of the partitions of m, so that whoever owns them
// next fetches them again. c.mu is held.
func (c *Consumer) dropBacklog(m map[string][]int32) {
	kept := c.backlog[:0]
	for _, ch := range c.backlog {
		if !slices.Contains(m[ch.tp.topic], ch.tp.partition) {
			kept = append(kept, ch)
		}
	}
	clear(c.backlog[len(kept):])
	c.backlog = kept
}

// waitRoom blocks until fewer than MaxBuffered records are buffered and returns how many more
// may be dispatched; false when ctx ended.
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
	p := &part{tp: k, tel: c.cfg.tel.forPartition(k), keys: make(map[string]*keyQueue), committed: -1,
		first: -1, commit: kgo.EpochOffset{Epoch: -1, Offset: -1}}
	p.ctx, p.cancel = context.WithCancel(c.hctx)
	c.parts[k] = p
	return p
}

// enqueue adds r, read from the topic incarnation topicID, to its key's queue and tracker.
// c.mu is held.
func (c *Consumer) enqueue(p *part, r *kgo.Record, topicID [16]byte) {
	if q, first := c.queue(p, r, topicID); first {
		c.push(q)
	}
}

// queue is enqueue without pushing the key to the ready keys: it returns r's key queue and
// whether r is its first record (it was not scheduled; now it is). c.mu is held.
func (c *Consumer) queue(p *part, r *kgo.Record, topicID [16]byte) (*keyQueue, bool) {
	seq := p.nextSeq
	p.nextSeq++
	p.track(pendingRec{offset: r.Offset, epoch: r.LeaderEpoch})
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
	} else if !q.scheduled {
		p.idleKeys-- // an emptied queue kept in p.keys comes back to use
	}
	q.items = append(q.items, item{r: r, seq: seq, topicID: topicID})
	if q.scheduled {
		return q, false
	}
	q.scheduled = true
	return q, true
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

// keyIdle notes that q, a key queue of p.keys, emptied. It stays in p.keys, so the key's next
// record finds it without a map insert and a key allocation, until more than MaxBuffered
// queues of p are idle: then they are all retired. c.mu is held.
func (c *Consumer) keyIdle(q *keyQueue) {
	p := q.p
	if p.idleKeys++; p.idleKeys <= c.cfg.MaxBuffered {
		return
	}
	for _, q := range p.keys {
		if !q.scheduled {
			c.retire(q)
		}
	}
	p.idleKeys = 0
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

// truncate keeps q's first n records where they are: a running run reads them from q.items
// without c.mu (see take).
func (q *keyQueue) truncate(n int) {
	clear(q.items[q.head+n:])
	q.items = q.items[:q.head+n]
	if n == 0 {
		q.items, q.head = q.items[:0], 0
	}
}

// push appends q to the ready keys. It wakes no worker: the caller does, once per batch
// (pollLoop), or is a worker about to take from ready itself (finishLocked). c.mu is held.
func (c *Consumer) push(q *keyQueue) {
	c.ready = append(c.ready, q)
}

// unbuffer forgets n buffered records and wakes the poll loop if it waits for room and a
// quarter of MaxBuffered is free: polling a few records at a time would cost a wake-up each.
func (c *Consumer) unbuffer(n int) {
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
// owns p next. A running run stays until its worker returns: the worker starts none of its
// records after this. c.mu is held.
func (c *Consumer) dropQueued(p *part) {
	p.revoked = true
	p.halt.Store(true)
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
		n, keep := q.len(), q.inRun
		q.truncate(keep)
		c.unbuffer(n - keep)
	}
	for _, q := range p.keys {
		drop(q)
	}
	if p.null != nil {
		drop(p.null)
	}
}

// maxRun caps the records of one key a worker takes at once, and maxRunTime how long it keeps
// starting them: the commit point passes a run's records when the run ends, so a long run of
// slow records would hold commits back.
const (
	maxRun     = 64
	maxRunTime = 100 * time.Millisecond
)

// worker runs ready keys' queued records until Run stops. It takes up to maxRun records of one
// key at a time and handles them in order, so the lock is taken once per run rather than per
// record; it applies a run's outcome and takes the next run in one critical section. w is
// the worker's number, 0 to Concurrency-1.
func (c *Consumer) worker(w int) {
	var (
		q    *keyQueue // the key whose run ran, or nil
		run  []item    // the run's records, at the front of q.items (see take)
		dec  decoder   // decodes the run's records
		done int       // records of run done
		res  result    // the outcome of run[done] when done < len(run)
	)
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if q != nil {
			c.finishLocked(q, run, done, res)
			q, run = nil, nil
		}
		// A call the poll loop promoted (inline.go) counts in c.running beside the workers'
		// runs and holds one of the Concurrency slots: at most Concurrency handlers run at once.
		for (len(c.ready) == 0 || c.running >= c.cfg.Concurrency) && !c.stopping {
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
		q = next
		run = c.take(q)
		p, key := q.p, q.key
		attempt, lastErr := q.attempt, q.lastErr
		c.mu.Unlock()
		done, res = c.processRun(w, p, key, run, attempt, lastErr, &dec)
		c.mu.Lock()
	}
}

// take starts a run of q: its first queued records, up to maxRun. c.mu is held. The run is
// q.items itself, not a copy (one pointer write less per record, which costs a write barrier
// while the collector runs): those records stay where they are until finish pops them
// (enqueue only appends; a new backing array leaves the old one as it was), and truncate
// keeps them in place.
func (c *Consumer) take(q *keyQueue) []item {
	n := min(q.len(), maxRun)
	run := q.items[q.head : q.head+n : q.head+n]
	q.inRun = n
	q.p.running++
	c.running++
	return run
}

// processRun handles run, the first queued records of key (the queue's; "" for null keys) of
// p, in order. It stops at the first record that is not done, and before a record once p is
// revoked or Run's ctx ended. It returns how many records were done and, when that is fewer
// than len(run), the outcome of the next one (outAbandon or outYield when it was not
// started). Once maxRunTime has passed it starts no more records, so those done commit; the
// clock is read before every fourth record, so a run of slow records may run three of them
// first. attempt and lastErr are run[0]'s; d is the calling worker's decoder.
// Events handled count in worker w's counter, after the Deduper's Done: who sees one counted
// finds it done in the Deduper.
func (c *Consumer) processRun(w int, p *part, key string, run []item, attempt int, lastErr error, d *decoder) (int, result) {
	handled := &c.st.handled[w].n
	var start time.Time
	if len(run) > 3 { // the first check is before run[3]
		start = time.Now()
	}
	plain := c.plain(p)
	for i := range run {
		it := &run[i]
		if i > 0 && (p.halt.Load() || c.ending()) {
			return i, result{out: outAbandon}
		}
		// The clock is read every few records: fast records finish the run first anyway.
		if i&3 == 3 && time.Since(start) >= maxRunTime {
			return i, result{out: outYield}
		}
		var ev Event
		err := decodeEvent(&ev, it.r, it.topicID, key, false, d)
		var res result
		if plain && attempt == 0 && lastErr == nil && err == nil && ev.Headers == nil {
			res = c.first(p, it, &ev)
		} else {
			res = c.process(p, it, &ev, err, attempt, lastErr)
		}
		if res.handled {
			handled.Add(1)
		}
		if res.out != outDone {
			return i, res
		}
		attempt, lastErr = 0, nil
	}
	return len(run), result{out: outDone}
}

// ending reports whether Run's ctx has ended. Err is an atomic load for the standard library's
// contexts; a select on Done costs several times more, once per record.
func (c *Consumer) ending() bool { return c.runCtx != nil && c.runCtx.Err() != nil }

// finish applies a run's outcome to its key queue and partition: the first done records of run
// are done, and res is the outcome of the next one when done < len(run).
func (c *Consumer) finish(q *keyQueue, run []item, done int, res result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finishLocked(q, run, done, res)
}

// finishLocked is finish with c.mu held.
func (c *Consumer) finishLocked(q *keyQueue, run []item, done int, res result) {
	p := q.p
	n := q.inRun
	q.inRun = 0
	c.runEnded(p)
	if p.gone {
		c.unbuffer(n) // the run dropQueued kept for us
		return
	}
	for _, it := range run[:done] {
		q.pop()
		c.markDone(p, it.seq)
	}
	if done > 0 {
		q.attempt, q.lastErr = 0, nil
	}
	if p.revoked {
		// What is left of the run dropQueued kept for us: the next owner fetches it again.
		c.unbuffer(q.len())
		q.truncate(0)
		q.scheduled = false
		return
	}
	if done == len(run) || res.out == outYield {
		switch {
		case q.len() > 0 && !c.stopping:
			c.push(q)
			if len(c.ready) > 1 { // the calling worker takes one; wake another for the rest
				c.work.Signal()
			}
		case q.len() == 0:
			q.scheduled = false
			if !q.null {
				c.keyIdle(q)
			}
		}
		return
	}
	switch res.out {
	case outRetry:
		q.attempt, q.lastErr = res.attempts, res.err
		c.later(q, c.cfg.Backoff(q.attempt))
	case outWait:
		q.attempt, q.lastErr = res.attempts, res.err
		c.later(q, c.cfg.Backoff(max(q.attempt, 1)))
	case outStuck:
		// p is paused for q's front record: q stays scheduled, so nothing of its key runs
		// again, and gets no more records (dispatch drops p's). Its queued records are
		// dropped, the stuck one too: kept, they would hold buffer room for good, and once
		// a quarter of MaxBuffered is not free the poll loop never polls again, stalling
		// every other partition. None is done, so the commit point stays before them all,
		// and whoever owns p next fetches them again.
		q.attempt, q.lastErr = res.attempts, res.err
		n := q.len()
		q.truncate(0)
		c.unbuffer(n)
	case outAbandon, outDone:
	}
}

// runEnded notes that a run of p (a worker's, or the poll loop's inline) ended, and wakes a
// revoke or loss waiting for p's handlers. c.mu is held.
func (c *Consumer) runEnded(p *part) {
	p.running--
	c.running--
	if p.revoked && p.running == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
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
