package luascript

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Pipe sends script calls made while another is in flight together, in one pipelined round trip.
// A call with nothing else in flight is sent on its own at once, so a lone caller pays one atomic
// add and nothing else (no timer, no goroutine); under concurrency the calls that queue meanwhile
// leave in one batch (through [RunAll]: EVALSHA, EVAL on NOSCRIPT, split per node on a cluster
// client), which costs Redis and the client one read and one write per batch instead of one each
// per call. At most two round trips are in flight per Pipe: the direct call and one batch.
//
// The first call that queues starts a goroutine that sends batches until the queue is empty and
// then ends, so nothing outlives the calls and there is nothing to close. Every caller waits only
// as long as its own ctx allows: a caller whose ctx ends while queued returns ctx.Err() and its
// call is never sent; one whose batch is already on the wire returns ctx.Err() at once while the
// batch finishes (the script may then have run). A batch runs until the latest deadline among
// its callers, or without one (the client's timeouts) when a caller has none.
//
// A Pipe is safe for concurrent use and may carry calls of several scripts. Build it once per
// client with [NewPipe].
type Pipe struct {
	rdb    redis.Cmdable
	direct atomic.Int32 // calls sent on their own, in flight
	queued atomic.Int32 // callers waiting for a batch
	stats  struct{ direct, batches, batched, dropped atomic.Uint64 }

	mu       sync.Mutex
	queue    []*pipeCall
	flushing bool // a flush goroutine is running
}

// PipeStats counts what a [Pipe] sent since it was built.
type PipeStats struct {
	Direct  uint64 // calls sent on their own (nothing else in flight)
	Batches uint64 // round trips that carried queued calls (one per batch, whatever its size)
	Batched uint64 // calls sent in those batches
	Dropped uint64 // queued calls never sent because their caller's ctx ended first
}

// NewPipe returns a Pipe sending through rdb (a client or cluster client, not a pipeline). It
// starts nothing and never closes rdb.
func NewPipe(rdb redis.Cmdable) *Pipe { return &Pipe{rdb: rdb} }

// pipeCall is one queued script call. taken and gone are guarded by Pipe.mu; cmd is written
// before done is closed (by the flusher, after the batch, or when it drops the call).
type pipeCall struct {
	call     Call
	deadline time.Time       // zero: the caller's ctx has none
	ctx      context.Context // the caller's
	cmd      *redis.Cmd
	done     chan struct{}
	taken    bool // in a batch already
	gone     bool // the caller stopped waiting, or its ctx ended, before it was taken: not sent
}

// Run runs s once with keys and args, alone or in a batch, and blocks until its answer is in or
// ctx ends (then the Cmd carries ctx.Err()). The Pipe keeps no reference to the keys and args
// slices once Run returns, so the caller may reuse them; values inside args (a []byte) must not
// change until then.
func (p *Pipe) Run(ctx context.Context, s *Script, keys []string, args ...any) *redis.Cmd {
	if p.direct.Add(1) == 1 {
		cmd := s.Run(ctx, p.rdb, keys, args...)
		p.direct.Add(-1)
		p.stats.direct.Add(1)
		return cmd
	}
	p.direct.Add(-1)
	c := &pipeCall{call: Call{Script: s, Keys: slices.Clone(keys), Args: slices.Clone(args)},
		ctx: ctx, done: make(chan struct{})}
	if dl, ok := ctx.Deadline(); ok {
		c.deadline = dl
	}
	p.queued.Add(1)
	defer p.queued.Add(-1)
	p.mu.Lock()
	p.queue = append(p.queue, c)
	start := !p.flushing
	p.flushing = true
	p.mu.Unlock()
	if start {
		go p.flush()
	}
	select {
	case <-c.done:
		return c.cmd
	case <-ctx.Done():
		p.mu.Lock()
		if !c.taken && !c.gone {
			c.gone = true
			p.stats.dropped.Add(1)
		}
		p.mu.Unlock()
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(ctx.Err())
		return cmd
	}
}

// InFlight returns the number of calls sent on their own and not answered yet (0 or 1 but for
// a moment). It is for tests and monitoring.
func (p *Pipe) InFlight() int { return int(p.direct.Load()) }

// Queued returns the number of callers waiting for a batch, sent or not; see [Pipe.InFlight].
func (p *Pipe) Queued() int { return int(p.queued.Load()) }

// Stats returns a snapshot of the counters. It is safe for concurrent use.
func (p *Pipe) Stats() PipeStats {
	return PipeStats{Direct: p.stats.direct.Load(), Batches: p.stats.batches.Load(),
		Batched: p.stats.batched.Load(), Dropped: p.stats.dropped.Load()}
}

// flush sends the queue in batches until it is empty, then ends. A call whose ctx ended
// (or whose deadline passed) while it queued is dropped here, even when its caller has not
// yet run to notice: sending it would run the script for a caller that has given up.
func (p *Pipe) flush() {
	for {
		p.mu.Lock()
		now := time.Now()
		batch := make([]*pipeCall, 0, len(p.queue))
		for _, c := range p.queue {
			if c.gone {
				continue
			}
			if err := c.ended(now); err != nil {
				c.gone = true
				p.stats.dropped.Add(1)
				c.cmd = redis.NewCmd(c.ctx)
				c.cmd.SetErr(err)
				close(c.done) // its caller may not have seen its ctx end yet
				continue
			}
			c.taken = true
			batch = append(batch, c)
		}
		clear(p.queue)
		p.queue = p.queue[:0]
		if len(batch) == 0 {
			p.flushing = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()

		// The batch may run as long as its most patient caller waits: the latest deadline, or
		// none (the client's timeouts) when a caller has none.
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		var latest time.Time
		for _, c := range batch {
			if c.deadline.IsZero() {
				latest = time.Time{}
				break
			}
			if c.deadline.After(latest) {
				latest = c.deadline
			}
		}
		if !latest.IsZero() {
			ctx, cancel = context.WithDeadline(ctx, latest)
		}
		calls := make([]Call, len(batch))
		for i, c := range batch {
			calls[i] = c.call
		}
		p.stats.batches.Add(1)
		p.stats.batched.Add(uint64(len(batch)))
		cmds := RunAll(ctx, p.rdb, calls)
		cancel()
		for i, c := range batch {
			c.cmd = cmds[i]
			close(c.done)
		}
	}
}

// ended returns c's ctx's error, or DeadlineExceeded when its deadline has passed at now and
// its timer has not fired yet; nil while the caller still waits.
func (c *pipeCall) ended(now time.Time) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	if !c.deadline.IsZero() && !now.Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}
