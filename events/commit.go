package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// commitLoop commits done offsets every CommitInterval until stop closes.
func (c *Consumer) commitLoop(stop <-chan struct{}) {
	t := time.NewTicker(c.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(c.hctx, commitTimeout)
			if err := c.commit(ctx, nil); err != nil {
				c.log.Warn("events: commit", "group", c.cfg.Group, "err", err)
			}
			cancel()
		}
	}
}

// commit commits the done offsets of ps, or of every partition not being revoked when ps is
// nil, where they moved past the last commit. Commits are serialised, so a revoke's final
// commit is never overtaken by an older interval commit.
func (c *Consumer) commit(ctx context.Context, ps []*part) error {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	type target struct {
		p   *part
		off int64
	}
	var targets []target
	offs := map[string]map[int32]kgo.EpochOffset{}
	add := func(p *part) {
		if p.gone || p.commit.Offset <= p.committed {
			return
		}
		if offs[p.tp.topic] == nil {
			offs[p.tp.topic] = map[int32]kgo.EpochOffset{}
		}
		offs[p.tp.topic][p.tp.partition] = p.commit
		targets = append(targets, target{p, p.commit.Offset})
	}
	c.mu.Lock()
	if ps == nil {
		for _, p := range c.parts {
			if !p.revoked || c.stopping {
				add(p)
			}
		}
	} else {
		for _, p := range ps {
			add(p)
		}
	}
	c.mu.Unlock()
	if len(targets) == 0 {
		return nil
	}
	var errs []error
	failed := map[tp]bool{}
	c.cl.CommitOffsetsSync(ctx, offs, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			errs = append(errs, err)
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil {
					failed[tp{t.Topic, p.Partition}] = true
					errs = append(errs, fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, perr))
				}
			}
		}
	})
	if len(errs) > 0 && len(failed) == 0 {
		c.st.commitErrors.Add(1)
		return fmt.Errorf("events: commit: %w", errors.Join(errs...))
	}
	c.mu.Lock()
	for _, t := range targets {
		if !failed[t.p.tp] {
			t.p.committed = max(t.p.committed, t.off)
		}
	}
	c.mu.Unlock()
	c.st.commits.Add(1)
	if len(errs) > 0 {
		c.st.commitErrors.Add(1)
		return fmt.Errorf("events: commit: %w", errors.Join(errs...))
	}
	return nil
}

type pendingRec struct {
	offset int64
	epoch  int32
	done   bool
}

// skipControl records a transaction marker as done at once: it is never handled, but the
// commit point must pass it, or a caught-up partition would lag by one per transaction.
// c.mu is held.
func (c *Consumer) skipControl(p *part, r *kgo.Record) {
	p.fetched = r.Offset + 1
	p.track(pendingRec{offset: r.Offset, epoch: r.LeaderEpoch, done: true})
	p.nextSeq++
	c.advance(p)
}

// markDone records seq as done and advances the partition's commit point. c.mu is held.
func (c *Consumer) markDone(p *part, seq uint64) {
	p.pending[p.phead+int(seq-p.baseSeq)].done = true
	c.advance(p)
	c.unbuffer(1)
}

// advance moves p's commit point past its leading done records. c.mu is held.
func (c *Consumer) advance(p *part) {
	for p.phead < len(p.pending) && p.pending[p.phead].done {
		r := &p.pending[p.phead]
		p.commit = kgo.EpochOffset{Epoch: r.epoch, Offset: r.offset + 1}
		p.phead++
		p.baseSeq++
	}
	if p.phead == len(p.pending) {
		p.pending, p.phead = p.pending[:0], 0 // all done: reuse the array from its start
	}
}

// track appends r to p's commit tracker, reusing the array's done front when it is full.
// c.mu is held.
func (p *part) track(r pendingRec) {
	if len(p.pending) == cap(p.pending) && p.phead >= len(p.pending)/2 {
		n := copy(p.pending, p.pending[p.phead:])
		p.pending, p.phead = p.pending[:n], 0
	}
	p.pending = append(p.pending, r)
}
