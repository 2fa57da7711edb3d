package ratelimit

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/internal/luascript"
)

// autoPipe sends script calls made while another is in flight together, in one pipelined round
// trip ([RedisOptions.Pipeline]). A call with nothing else in flight is sent on its own at once,
// so a lone caller pays nothing; under concurrency the calls that queue meanwhile go out in one
// batch, which costs Redis and the client one read and one write instead of one each per call.
//
// A batch is sent by a goroutine that the first queued call starts and that ends as soon as the
// queue is empty, so nothing outlives the calls. Every caller waits only as long as its own ctx
// allows.
type autoPipe struct {
	rdb    redis.Cmdable
	script *luascript.Script
	direct atomic.Int32 // calls sent on their own, in flight
	queued atomic.Int32 // callers waiting for a batch (tests read it)

	mu       sync.Mutex
	queue    []*pipeCall
	flushing bool // a flush goroutine is running
}

// pipeCall is one queued script call. taken and gone are guarded by autoPipe.mu; cmd is written
// before done is closed.
type pipeCall struct {
	keys     []string
	args     []any
	deadline time.Time // zero: the caller's ctx has none
	cmd      *redis.Cmd
	done     chan struct{}
	taken    bool // in a batch already
	gone     bool // the caller stopped waiting before it was taken: not sent
}

// run runs the script once for keys and args, alone or in a batch. keys and args may be reused by
// the caller once it returns.
func (p *autoPipe) run(ctx context.Context, keys []string, args []any) *redis.Cmd {
	if p.direct.Add(1) == 1 {
		cmd := p.script.Run(ctx, p.rdb, keys, args...)
		p.direct.Add(-1)
		return cmd
	}
	p.direct.Add(-1)
	c := &pipeCall{keys: slices.Clone(keys), args: slices.Clone(args), done: make(chan struct{})}
	if dl, ok := ctx.Deadline(); ok {
		c.deadline = dl
	}
	p.mu.Lock()
	p.queue = append(p.queue, c)
	start := !p.flushing
	p.flushing = true
	p.mu.Unlock()
	if start {
		go p.flush()
	}
	p.queued.Add(1)
	defer p.queued.Add(-1)
	select {
	case <-c.done:
		return c.cmd
	case <-ctx.Done():
		p.mu.Lock()
		if !c.taken {
			c.gone = true
		}
		p.mu.Unlock()
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(ctx.Err())
		return cmd
	}
}

// flush sends the queue in batches until it is empty, then ends.
func (p *autoPipe) flush() {
	for {
		p.mu.Lock()
		batch := make([]*pipeCall, 0, len(p.queue))
		for _, c := range p.queue {
			if !c.gone {
				c.taken = true
				batch = append(batch, c)
			}
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
		calls := make([]luascript.Call, len(batch))
		for i, c := range batch {
			calls[i] = luascript.Call{Script: p.script, Keys: c.keys, Args: c.args}
		}
		cmds := luascript.RunAll(ctx, p.rdb, calls)
		cancel()
		for i, c := range batch {
			c.cmd = cmds[i]
			close(c.done)
		}
	}
}
