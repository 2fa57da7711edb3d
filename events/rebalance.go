package events

// Rebalance callbacks: partitions revoked (drain, commit, hand over) or lost (cancel, wait).

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// onRevoked waits for the revoked partitions' running handlers and commits their done
// offsets before the partitions move to another member.
func (c *Consumer) onRevoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	ps := c.revoke(revoked)
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
	ps := c.revoke(lost)
	for _, p := range ps {
		p.cancel()
	}
	for _, p := range ps {
		c.waitIdle(p)
	}
	c.forget(ps)
}

// revoke marks the named partitions revoked and drops their queued records and those polled
// and not yet dispatched.
func (c *Consumer) revoke(m map[string][]int32) []*part {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropBacklog(m)
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
