package events

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Provenance headers added to a dead-lettered record, next to the original record's headers.
const (
	HeaderDLQTopic     = "dlq-topic"     // topic the event was consumed from
	HeaderDLQPartition = "dlq-partition" // its partition, decimal
	HeaderDLQOffset    = "dlq-offset"    // its offset, decimal
	HeaderDLQGroup     = "dlq-group"     // the consumer group that gave up
	HeaderDLQError     = "dlq-error"     // the last error
	HeaderDLQAttempts  = "dlq-attempts"  // handler attempts made, decimal
	HeaderDLQTime      = "dlq-time"      // when it was dead-lettered, RFC 3339 with nanoseconds
)

// deadLetter writes r to the DLQ and waits for the acknowledgement, or pauses r's partition
// when there is no DLQ. With a Deduper, the record (not the event: a re-driven dead letter is
// a new record of the same event, to be handled) is claimed first and marked done after the
// write, so a redelivery of this very record (a crash before the commit) is not dead-lettered
// twice. Each outcome is an event on the span in ctx.
func (c *Consumer) deadLetter(ctx context.Context, pt *partTelemetry, it *item, cause error, attempts int) result {
	r := it.r
	msg := "unknown"
	if cause != nil {
		msg = cause.Error()
	}
	span := trace.SpanFromContext(ctx)
	if c.cfg.DeadLetterTopic == "" {
		span.AddEvent(spanEventPaused, trace.WithAttributes(attribute.Int(attrAttempt, attempts)))
		c.pause(r)
		c.log.Error("events: event failed for good and there is no DeadLetterTopic: partition paused",
			"group", c.cfg.Group, "topic", r.Topic, "partition", r.Partition, "offset", r.Offset,
			"attempts", attempts, "err", msg)
		return result{out: outStuck, err: cause, attempts: attempts}
	}
	hs := make([]kgo.RecordHeader, 0, len(r.Headers)+7)
	hs = append(hs, r.Headers...)
	hs = append(hs,
		kgo.RecordHeader{Key: HeaderDLQTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderDLQPartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
		kgo.RecordHeader{Key: HeaderDLQOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
		kgo.RecordHeader{Key: HeaderDLQGroup, Value: []byte(c.cfg.Group)},
		kgo.RecordHeader{Key: HeaderDLQError, Value: []byte(msg)},
		kgo.RecordHeader{Key: HeaderDLQAttempts, Value: strconv.AppendInt(nil, int64(attempts), 10)},
		kgo.RecordHeader{Key: HeaderDLQTime, Value: time.Now().UTC().AppendFormat(nil, time.RFC3339Nano)},
	)
	var id, token string
	if d := c.cfg.Deduper; d != nil {
		id = dedupeID(c.cfg.Group, "dlq:"+recordIdentity(r, it.topicID))
		var err error
		token, err = d.Claim(ctx, id, c.cfg.DedupeLease)
		switch {
		case errors.Is(err, ErrDuplicate):
			c.st.deduped.Add(1)
			c.cfg.tel.deduped.Add(ctx, 1, pt.add...)
			span.AddEvent(spanEventDeduplicate)
			return result{out: outDone} // dead-lettered already, before a crash or rebalance
		case errors.Is(err, ErrClaimed):
			return result{out: outWait, err: cause, attempts: attempts}
		case err != nil:
			if ctx.Err() != nil {
				return result{out: outAbandon}
			}
			c.st.dedupeErrors.Add(1)
			c.log.Warn("events: dedupe claim of a dead letter", "group", c.cfg.Group, "id", id, "err", err)
			return result{out: outWait, err: cause, attempts: attempts}
		}
	}
	dl := &kgo.Record{Topic: c.cfg.DeadLetterTopic, Key: r.Key, Value: r.Value, Headers: hs, Timestamp: r.Timestamp}
	if err := c.cl.ProduceSync(ctx, dl).FirstErr(); err != nil {
		if token != "" {
			c.dedupeRelease(ctx, id, token)
		}
		if ctx.Err() != nil {
			return result{out: outAbandon}
		}
		c.st.dlqErrors.Add(1)
		c.log.Warn("events: dead-letter write failed, will retry", "group", c.cfg.Group, "topic", r.Topic,
			"partition", r.Partition, "offset", r.Offset, "err", err)
		return result{out: outWait, err: cause, attempts: attempts}
	}
	c.st.deadLettered.Add(1)
	c.cfg.tel.deadLettered.Add(ctx, 1, pt.add...)
	span.AddEvent(spanEventDeadLetter, trace.WithAttributes(attribute.Int(attrAttempt, attempts),
		attribute.String(attrDLQTopic, c.cfg.DeadLetterTopic)))
	if token != "" {
		if err := c.cfg.Deduper.Done(context.WithoutCancel(ctx), id, token); err != nil {
			c.st.dedupeErrors.Add(1)
			c.log.Warn("events: dedupe done after dead letter", "group", c.cfg.Group, "id", id, "err", err)
		}
	}
	c.log.Warn("events: event dead-lettered", "group", c.cfg.Group, "topic", r.Topic, "partition", r.Partition,
		"offset", r.Offset, "dlq", c.cfg.DeadLetterTopic, "attempts", attempts, "err", msg)
	return result{out: outDone}
}

// pause stops fetching r's partition until it is revoked or the consumer restarts.
func (c *Consumer) pause(r *kgo.Record) {
	c.mu.Lock()
	p := c.parts[tp{r.Topic, r.Partition}]
	first := p != nil && !p.paused
	if first {
		p.paused = true
	}
	c.mu.Unlock()
	if first {
		c.st.paused.Add(1)
		c.cl.PauseFetchPartitions(map[string][]int32{r.Topic: {r.Partition}})
	}
}
