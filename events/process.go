package events

// Processing one record: decode, the dedupe claim (kept alive while the handler runs), the
// handler call, and its outcome.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

type outcome uint8

const (
	outDone    outcome = iota // handled, deduplicated or dead-lettered: commit it
	outRetry                  // failed; try again after backoff
	outWait                   // could not start (claimed elsewhere, store down); try again, no attempt used
	outStuck                  // failed for good without a DLQ; the partition is paused
	outAbandon                // shutting down; leave it uncommitted
	outYield                  // not started: its run ended early so the records before it commit
)

// result is what became of one try at a record.
type result struct {
	out      outcome
	err      error // the handler's (or decoder's) error, if any
	attempts int   // failed handler attempts so far
	handled  bool  // outDone because the handler succeeded
}

// process handles one record of p under a consumer span that continues the trace context of
// its headers. ev is the record as decodeEvent decoded it (for this try: a handler that changes
// ev.Headers does not change the next try's), or failed to with decErr. attempt is the number
// of failed attempts so far. A record with no header but the event's own (event-id,
// event-type, event-time) carries no trace context, so none is extracted.
func (c *Consumer) process(p *part, it *item, ev *Event, decErr error, attempt int, lastErr error) result {
	ctx, span := c.cfg.tel.startProcess(p.ctx, p.tel, it.r, ev.Headers != nil || decErr != nil)
	res := c.try(ctx, p.tel, span, it, ev, decErr, attempt, lastErr)
	span.End()
	return res
}

// first is process for a plain first try at a decoded record without user headers (see
// processRun): the handler call.
func (c *Consumer) first(p *part, it *item, ev *Event) result {
	if err := c.call(p.ctx, ev); err != nil {
		return c.firstFailed(p, it, ev, err)
	}
	return result{out: outDone, handled: true}
}

// firstFailed is first's outcome when the handler returned err.
func (c *Consumer) firstFailed(p *part, it *item, ev *Event, err error) result {
	c.st.failed.Add(1)
	return c.failed(p.ctx, p.tel, noSpan, it, ev.ID, err, 0)
}

// try is process inside the span.
func (c *Consumer) try(ctx context.Context, pt *partTelemetry, span trace.Span, it *item, ev *Event, decErr error, attempt int, lastErr error) result {
	if attempt >= c.cfg.MaxAttempts || IsPermanent(lastErr) {
		return c.deadLetter(ctx, pt, it, lastErr, attempt) // the DLQ write failed before: try it again
	}
	if decErr != nil {
		c.st.decodeErrors.Add(1)
		c.log.Error("events: undecodable record", "group", c.cfg.Group, "err", decErr)
		span.RecordError(decErr)
		return c.deadLetter(ctx, pt, it, Permanent(decErr), attempt)
	}
	var err error
	if span.IsRecording() {
		span.SetAttributes(attribute.String(attrMessageID, ev.ID))
	}
	var id, token string
	if d := c.cfg.Deduper; d != nil {
		id = dedupeID(c.cfg.Group, ev.ID)
		token, err = d.Claim(ctx, id, c.cfg.DedupeLease)
		switch {
		case errors.Is(err, ErrDuplicate):
			c.st.deduped.Add(1)
			c.cfg.tel.deduped.Add(ctx, 1, pt.add...)
			span.AddEvent(spanEventDeduplicate)
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
	// The clock is read only when the duration histogram records (an SDK is installed).
	timed := c.cfg.tel.duration.Enabled(ctx)
	var begin time.Time
	if timed {
		begin = time.Now()
	}
	lost := false
	if token == "" {
		err = c.call(ctx, ev)
	} else {
		hctx, claimLost, stop := c.keepClaim(ctx, id, token)
		err = c.call(hctx, ev)
		stop()
		lost = err != nil && claimLost() && ctx.Err() == nil
	}
	if timed {
		if err == nil {
			c.cfg.tel.duration.Record(ctx, time.Since(begin).Seconds(), pt.ok...)
		} else {
			c.cfg.tel.duration.Record(ctx, time.Since(begin).Seconds(), pt.failed[errTypeOf(err)]...)
		}
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	if lost {
		// Another member may run it now: try again later, without using an attempt.
		c.st.failed.Add(1)
		return result{out: outWait, err: lastErr, attempts: attempt}
	}
	if err == nil {
		if token != "" {
			if derr := c.cfg.Deduper.Done(context.WithoutCancel(ctx), id, token); derr != nil {
				c.st.dedupeErrors.Add(1)
				c.log.Warn("events: dedupe done", "group", c.cfg.Group, "id", ev.ID, "err", derr)
			}
		}
		return result{out: outDone, handled: true} // counted after Done (see processRun)
	}
	c.st.failed.Add(1)
	if token != "" {
		c.dedupeRelease(ctx, id, token)
	}
	return c.failed(ctx, pt, span, it, ev.ID, err, attempt)
}

// failed is the outcome of a try at it (the event id) whose handler returned err after attempt
// failed attempts, once the failure is counted and any claim released: abandoned when ctx
// ended, dead-lettered when attempts are used up or err is permanent, else retried.
func (c *Consumer) failed(ctx context.Context, pt *partTelemetry, span trace.Span, it *item, id string, err error, attempt int) result {
	if ctx.Err() != nil {
		return result{out: outAbandon}
	}
	r := it.r
	attempt++
	c.log.Warn("events: handler failed", "group", c.cfg.Group, "topic", r.Topic, "partition", r.Partition,
		"offset", r.Offset, "id", id, "attempt", attempt, "err", err)
	if attempt >= c.cfg.MaxAttempts || IsPermanent(err) {
		return c.deadLetter(ctx, pt, it, err, attempt)
	}
	c.st.retried.Add(1)
	c.cfg.tel.retries.Add(ctx, 1, pt.add...)
	span.AddEvent(spanEventRetry, trace.WithAttributes(attribute.Int(attrAttempt, attempt)))
	return result{out: outRetry, err: err, attempts: attempt}
}

// call runs the handler, turning a panic into an error.
func (c *Consumer) call(ctx context.Context, ev *Event) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%w: %v", errPanicked, v)
		}
	}()
	return c.cfg.Handler(ctx, *ev)
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
