package events

// Inline handling: while nothing is queued or running anywhere, the poll loop handles cheap
// records itself, in offset order, as a bare kgo loop does: no key queue, no commit tracker
// entry, no hand-off to a worker on another core and no wake-up. Once a handler turns out slow,
// it leaves that to the workers for a while, so that slow handlers run Concurrency at a time;
// a call that runs on past promoteAfter becomes a worker's run (holding one of the Concurrency
// places: workers take no run while c.running is at Concurrency), and the poll loop goes on on
// a new goroutine, so no handler holds up the other keys longer than on a worker.
//
// The promotion hand-off. A section (dispatchInline) counts as a run of its partition
// (p.running, c.running) and arms the watchdog (watchInline, a timer every promoteAfter). The
// watchdog, finding the same call running at two looks in a row, claims it with a
// compare-and-swap on inlineState.call; the poll loop's own compare-and-swap after the call
// then fails, so exactly one of the two decides. Under c.mu, promote does with the section what
// dispatch would have done: it moves the commit point past the records before the call, queues
// the call's record as its key queue's running run of one (inRun 1; the section's count in
// p.running and c.running is now that run's, so a revoke or loss waits for it), queues the rest
// behind, and starts a new goroutine on the poll loop, which first allows the rebalances the
// section's poll holds back. The goroutine in the call, once the handler returns, finishes that
// run as a worker would (finishLocked), wakes a worker for its key's next records and leaves
// the poll loop. While the promoted call runs, c.running is not 0, so no section starts: the
// fields of inlineState the promotion set (q, run, until, backoff) stay as it left them.

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Handler calls that take longer than inlineSlow each on average, measured over groups of
// calls (the first call alone, then 1, 2, 4, 8 and then 16 calls: a clock read costs about
// 90 ns on a VM), twice in a row, end inline handling for at least inlineOffMin, twice as long each
// time it happens again, up to inlineOffMax. Handing a record to a worker costs a few hundred
// nanoseconds of CPU, so inline handling saves at most a few percent for a handler of 20 µs,
// while other keys wait for every inline call; anything that waits for I/O (a network round
// trip) takes longer. One slow group alone may be the goroutine losing its core for a moment.
// Off for up to a second, a slow handler delays the other keys at most once a second, by a few
// calls, or by up to twice promoteAfter for a call that blocks (the watchdog checks every
// promoteAfter).
const (
	inlineSlow   = 20 * time.Microsecond
	inlineOffMin = 10 * time.Millisecond
	inlineOffMax = time.Second
	promoteAfter = time.Millisecond
)

// Flags of inlineState.call.
const (
	inCall   = 1 // the poll loop is calling the handler for the record named
	promoted = 2 // that call became a worker's run (see promote)
)

// inlineState is the poll loop's inline handling. dec, until, strikes, backoff and handled
// belong to the goroutine running the poll loop (the watchdog sets until and backoff, and
// counts handled, only while that goroutine is in a call it promotes, and hands the poll loop
// to a new one); the fields from timer on are guarded by c.mu, and call is atomic.
type inlineState struct {
	dec     decoder       // decodes inline records
	slowest time.Duration // inlineSlow, per call; tests change it
	promote time.Duration // promoteAfter; tests change it
	until   time.Time     // no inline handling before then
	strikes int           // slow calls or groups in a row
	backoff time.Duration // how long the next slow call turns it off; 0 means inlineOffMin
	handled int           // events the section handled, not yet in Stats (an atomic add per event costs more)

	// call is gen<<32 | index<<2 | flags: the record of the current section being handled.
	// The poll loop sets inCall before the handler call and clears it with a compare-and-swap
	// after, which fails when the watchdog promoted the call meanwhile.
	call  atomic.Uint64
	timer *time.Timer // the watchdog (watchInline); created by the first section
	armed bool        // timer will fire
	seen  uint64      // call when the watchdog last looked

	live    bool // a section runs: the poll loop handles p's recs inline
	gen     uint32
	p       *part
	recs    []*kgo.Record
	topicID [16]byte
	q       *keyQueue // set by promote: the promoted call's key queue and run
	run     []item
}

// plain reports whether a first try at a record of p without trace headers is only the
// handler call: no Deduper, no span to open, no duration to record.
func (c *Consumer) plain(p *part) bool {
	return c.cfg.Deduper == nil && !tracing(c.cfg.tel.global) && !c.cfg.tel.duration.Enabled(p.ctx)
}

// inlineable reports whether the poll loop may handle records of p itself now and returns
// the time it read: nothing is queued or running anywhere (so a record handled inline
// overtakes none of its key, and none waits for a retry), p's commit tracker is empty, p is
// neither paused nor revoked, Run's ctx has not ended, the consumer is plain and no slow
// handler turned inline handling off. c.mu is held.
func (c *Consumer) inlineable(ctx context.Context, p *part) (time.Time, bool) {
	if c.buffered != 0 || c.running != 0 || p.paused || p.revoked || p.phead != len(p.pending) ||
		ctx.Err() != nil || !c.plain(p) {
		return time.Time{}, false
	}
	now := time.Now()
	return now, !now.Before(c.inl.until)
}

// dispatchInline handles recs, records of p read from the topic incarnation topicID, on the
// poll loop as far as it can (see inline), and returns the rest, to be queued for the workers,
// and how many records it tried. moved reports that a call was promoted: the rest of recs is
// dispatched and another goroutine runs the poll loop now. c.mu is held; it is released while
// handlers run. The section counts as a run of p, so a revoke or loss waits for it.
func (c *Consumer) dispatchInline(ctx context.Context, p *part, recs []*kgo.Record, topicID [16]byte, start time.Time) (rest []*kgo.Record, consumed int, moved bool) {
	s := &c.inl
	s.gen++
	s.live, s.p, s.recs, s.topicID = true, p, recs, topicID
	p.fetched = recs[len(recs)-1].Offset + 1 // dispatched to the poll loop: CommitLag counts them
	if !s.armed {
		if s.timer == nil {
			s.timer = time.AfterFunc(s.promote, c.watchInline)
		} else {
			s.timer.Reset(s.promote)
		}
		s.armed = true
	}
	p.running++
	c.running++
	c.mu.Unlock()
	done, consumed, tried, res, moved := c.inline(ctx, p, recs, topicID, start)
	c.mu.Lock()
	s.live, s.p, s.recs = false, nil, nil
	if moved {
		// The watchdog made the call a run of one and dispatched the rest: finish the run as
		// a worker does. This goroutine no longer runs the poll loop; s.q and s.run are still
		// this call's, since no section starts while the run counts in c.running.
		q, run := s.q, s.run
		s.q, s.run = nil, nil
		if res.out == outDone {
			c.finishLocked(q, run, 1, res)
		} else {
			c.finishLocked(q, run, 0, res)
		}
		// finishLocked leaves the key it makes ready (the records of q's key queued behind
		// the call) to its caller, a worker about to take from ready; this goroutine is none.
		if len(c.ready) > 0 {
			c.work.Signal()
		}
		return nil, consumed, true
	}
	c.runEnded(p)
	c.passInline(p, recs[:done])
	if p.revoked {
		return nil, consumed, false // lost meanwhile: the next owner fetches the rest again
	}
	recs = recs[done:]
	if tried {
		// The first try ran here and did not end it: queue it and apply its outcome as a
		// worker applies that of a run of one (retry, dead letter, pause...): take starts the
		// run that finishLocked ends.
		q, _ := c.queue(p, recs[0], topicID)
		c.finishLocked(q, c.take(q), 0, res)
		recs = recs[1:]
		if p.paused {
			return nil, consumed, false // as dispatch drops a paused partition's held records
		}
	}
	return recs, consumed, false
}

// passInline moves p's commit point past done, records handled inline (or transaction
// markers): p's tracker was empty and nothing else of p was dispatched meanwhile, so it need
// not track each. c.mu is held.
func (c *Consumer) passInline(p *part, done []*kgo.Record) {
	if len(done) == 0 {
		return
	}
	last := done[len(done)-1]
	p.commit = kgo.EpochOffset{Epoch: last.LeaderEpoch, Offset: last.Offset + 1}
}

// inline handles recs in order without c.mu, from start on (see dispatchInline). It stops at a
// record with a decode error, before a record once p is revoked or ctx ended, after
// maxRunTime, and after a slow call or group of calls (turning inline handling off for a
// while); it stops after a record whose try did not end it. It returns how many of recs are
// done (handled, dead-lettered or transaction markers) and how many records it tried; when
// done < len(recs) and tried is true, recs[done] had its first try and res is its outcome.
// moved reports that the watchdog promoted the call of recs[done]: then res is its outcome
// and the poll loop is another goroutine's, so this one must not touch the poll loop's fields
// of c.inl again (dec, until, strikes, backoff, handled); dispatchInline finishes the promoted
// run from those guarded by c.mu.
func (c *Consumer) inline(ctx context.Context, p *part, recs []*kgo.Record, topicID [16]byte, start time.Time) (done, consumed int, tried bool, res result, moved bool) {
	s := &c.inl
	gen := uint64(s.gen) << 32
	mark, from, next := start, 0, 1 // the clock at the start of the current group, its first record, the next check's
	defer func() {
		c.st.inlined.Add(uint64(consumed))
		if moved {
			return // promote counted s.handled; s is the new poll loop's
		}
		c.countInline()
		now := time.Now()
		n := done - from
		if tried {
			n++
		}
		switch {
		case n > 0 && now.Sub(mark) > time.Duration(n)*s.slowest:
			s.slow(now)
		case done == len(recs):
			s.strikes = 0
			s.backoff = 0 // all cheap: the next slow calls turn it off for the least time again
		}
	}()
	for i, r := range recs {
		if i == next {
			now := time.Now()
			if now.Sub(mark) > time.Duration(i-from)*s.slowest {
				if s.slow(now) {
					from = i // counted
					return i, consumed, false, result{}, false
				}
			} else {
				s.strikes = 0
			}
			mark, from, next = now, i, i+min(i, 16)
			if now.Sub(start) >= maxRunTime {
				return i, consumed, false, result{}, false
			}
		}
		if p.halt.Load() || ctx.Err() != nil {
			return i, consumed, false, result{}, false
		}
		if r.Attrs.IsControl() {
			continue // done: the commit point passes it
		}
		var ev Event
		if err := decodeEvent(&ev, r, topicID, "", true, &s.dec); err != nil {
			return i, consumed, false, result{}, false // a worker dead-letters it, as any undecodable record
		}
		consumed++
		v := gen | uint64(i)<<2 | inCall
		s.call.Store(v)
		if ev.Headers != nil {
			res = c.process(p, &item{r: r, topicID: topicID}, &ev, nil, 0, nil)
		} else if err := c.call(p.ctx, &ev); err != nil {
			res = c.firstFailed(p, &item{r: r, topicID: topicID}, &ev, err)
		} else {
			// first, spelled out: calling first (not inlinable, cost 141) with the record
			// instead of an item cost BenchmarkDispatch/inline 8 ns more per record.
			res = result{out: outDone, handled: true}
		}
		if !s.call.CompareAndSwap(v, v&^inCall) {
			if res.handled {
				c.st.handled[len(c.st.handled)-1].n.Add(1)
			}
			return i, consumed, true, res, true
		}
		if res.handled {
			s.handled++ // after the compare-and-swap: once it fails, promote has read s.handled
		}
		if res.out != outDone {
			return i, consumed, true, res, false
		}
	}
	return len(recs), consumed, false, result{}, false
}

// countInline adds the events handled inline so far to the poll loop's count in Stats.Handled.
// Called by the poll loop's goroutine, or by promote.
func (c *Consumer) countInline() {
	if s := &c.inl; s.handled > 0 {
		c.st.handled[len(c.st.handled)-1].n.Add(uint64(s.handled))
		s.handled = 0
	}
}

// slow notes a slow call or group of calls. The second in a row turns inline handling off
// from now for the back-off, and doubles the back-off; it reports whether it did. One alone is
// as likely the poll loop's goroutine losing its core for a moment (two cores, kgo's own
// goroutines decoding the next fetch) or a collector's pause; a slow handler is slow every time.
func (s *inlineState) slow(now time.Time) bool {
	if s.strikes++; s.strikes < 2 {
		return false
	}
	s.strikes = 0
	s.off(now)
	return true
}

// off turns inline handling off from now for the back-off, and doubles the back-off.
func (s *inlineState) off(now time.Time) {
	if s.backoff == 0 {
		s.backoff = inlineOffMin
	}
	s.until = now.Add(s.backoff)
	s.backoff = min(2*s.backoff, inlineOffMax)
}

// watchInline is the watchdog of inline handling: it runs every promoteAfter while sections
// run, and promotes a handler call it finds running twice.
func (c *Consumer) watchInline() {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.inl
	s.armed = false
	if !s.live {
		return // not armed again until the next section
	}
	v := s.call.Load()
	if v&inCall == 0 || v != s.seen || uint32(v>>32) != s.gen || !s.call.CompareAndSwap(v, v|promoted) {
		s.seen = v
		s.timer.Reset(s.promote)
		s.armed = true
		return
	}
	c.promote(int(uint32(v) >> 2))
}

// promote turns the poll loop's handler call of the section's record i, which has run for at
// least promoteAfter, into a worker's run of one: the records before it are done, the rest of
// the section is queued for the workers, and a new goroutine runs the poll loop, so that the
// call holds up no other key. The calling goroutine finishes the run when the handler returns
// (see dispatchInline). Inline handling is off for a while: the handler is slow. c.mu is held.
func (c *Consumer) promote(i int) {
	s := &c.inl
	p, recs := s.p, s.recs
	c.passInline(p, recs[:i])
	c.countInline() // the call may run for long; those before it are done
	q, _ := c.queue(p, recs[i], s.topicID)
	q.inRun = 1 // the section's run (p.running) is now q's
	s.q, s.run = q, q.items[q.head:q.head+1:q.head+1]
	consumed := 0
	if !p.revoked {
		for _, r := range recs[i+1:] {
			if r.Attrs.IsControl() {
				c.skipControl(p, r)
			} else {
				c.enqueue(p, r, s.topicID)
				consumed++
			}
		}
	}
	s.off(time.Now()) // the poll loop's goroutine is in the handler; the next one starts below
	c.work.Broadcast()
	if consumed > 0 {
		c.cfg.tel.consumed.Add(context.Background(), int64(consumed), p.tel.add...)
	}
	if ctx := c.runCtx; ctx != nil {
		c.polls.Go(func() {
			// The poll that fetched the section ends here: its records are all queued now or
			// held in the backlog (which a revoke drops), as when pollLoop allows rebalances
			// after a dispatch. The goroutine in the call leaves the loop without doing so, and
			// kgo holds rebalances back until someone does: with nothing more to fetch, this
			// loop's next poll would wait, and the group with it, forever.
			c.cl.AllowRebalance()
			c.pollLoop(ctx)
		})
	}
}
