package events

import "sync/atomic"

// ConsumerStats is a snapshot of a consumer's counters. Events the fetching goroutine handles
// itself (see [Consumer]) count in Handled when its turn at them ends, within about
// 100 ms, or when a call of it is handed to the workers; until then they count in InFlight
// as one handler running, and in CommitLag.
type ConsumerStats struct {
	Handled      uint64 // handler calls that succeeded
	Failed       uint64 // handler calls that returned an error or panicked
	Retried      uint64 // failed events scheduled for another attempt
	DeadLettered uint64 // events written to the DeadLetterTopic
	Deduped      uint64 // events skipped because the Deduper had them done
	DecodeErrors uint64 // records that were not valid events
	Paused       uint64 // partitions paused for an event that failed with no DeadLetterTopic
	Commits      uint64 // offset commits that succeeded (at least partly)
	CommitErrors uint64 // offset commits that failed, wholly or for some partitions
	FetchErrors  uint64 // fetch errors kgo reported (it retries them)
	DedupeErrors uint64 // Deduper calls that failed (the event is retried, not lost)
	DLQErrors    uint64 // dead-letter writes that failed (they are retried)
	InFlight     int    // handlers running now
	Buffered     int    // records queued for the workers and not yet done (see MaxBuffered)
	CommitLag    int64  // records fetched (dispatched or held) but not committed, over the partitions held now
}

type consumerCounters struct {
	handled                                                      []workerCount // one per worker, and the poll loop's last
	inlined                                                      atomic.Uint64 // records the poll loop tried itself (see inline)
	failed, retried, deadLettered, deduped, decodeErrors, paused atomic.Uint64
	commits, commitErrors, fetchErrors, dedupeErrors, dlqErrors  atomic.Uint64
}

// workerCount is one worker's count of handled events, on its own cache line: a counter
// every worker added to would move between the CPU cores on every event.
type workerCount struct {
	n atomic.Uint64
	_ [56]byte
}

// Stats returns a snapshot of the consumer's counters. Safe for concurrent use, also while Run
// runs.
func (c *Consumer) Stats() ConsumerStats {
	s := ConsumerStats{
		Failed:       c.st.failed.Load(),
		Retried:      c.st.retried.Load(),
		DeadLettered: c.st.deadLettered.Load(),
		Deduped:      c.st.deduped.Load(),
		DecodeErrors: c.st.decodeErrors.Load(),
		Paused:       c.st.paused.Load(),
		Commits:      c.st.commits.Load(),
		CommitErrors: c.st.commitErrors.Load(),
		FetchErrors:  c.st.fetchErrors.Load(),
		DedupeErrors: c.st.dedupeErrors.Load(),
		DLQErrors:    c.st.dlqErrors.Load(),
	}
	for i := range c.st.handled {
		s.Handled += c.st.handled[i].n.Load()
	}
	c.mu.Lock()
	s.InFlight, s.Buffered = c.running, c.buffered
	for _, p := range c.parts {
		base := p.committed
		if base < 0 {
			base = p.first // nothing committed yet: all this member dispatched
		}
		if base >= 0 && p.fetched > base {
			s.CommitLag += p.fetched - base
		}
	}
	// Records the poll loop holds were fetched too; they follow their partition's dispatched ones.
	for _, ch := range c.backlog {
		if len(ch.recs) == 0 {
			continue
		}
		first, end := ch.recs[0].Offset, ch.recs[len(ch.recs)-1].Offset+1
		if p := c.parts[ch.tp]; p != nil {
			first = max(first, p.fetched)
		}
		s.CommitLag += max(end-first, 0)
	}
	c.mu.Unlock()
	return s
}
