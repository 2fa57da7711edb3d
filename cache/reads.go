package cache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// reads coalesces concurrent Redis reads of one key in this process, so a hot key read by many
// requests at once costs one GET per round trip instead of one per request, whether the key is
// cached or missing (a cold stampede then costs one GET and one load, not a GET per caller).
//
// A reader joins a GET in flight only when no invalidation (Set, Delete, a notice from another
// process: anything that moves the key's epoch) happened since that GET was sent, so a Fetch that
// follows a Delete never receives the value the Delete removed.
type reads struct {
	mu      sync.Mutex
	m       map[string]*readCall
	waiting atomic.Int64 // readers blocked on another reader's GET (tests observe it)
}

// readCall is one GET in flight; done closes when b and err are set. b is shared by every reader
// and must not be modified: decoding copies out of it.
type readCall struct {
	epoch uint64
	done  chan struct{}
	b     []byte
	err   error
}

// sharedGet returns the raw entry of key, joining a GET of the same key and epoch already in
// flight.
func (c *Cache[V]) sharedGet(ctx context.Context, key string) ([]byte, error) {
	epoch := c.snapshot(key)
	c.rd.mu.Lock()
	if rc, ok := c.rd.m[key]; ok && rc.epoch == epoch {
		c.rd.mu.Unlock()
		c.rd.waiting.Add(1)
		select {
		case <-rc.done:
			c.rd.waiting.Add(-1)
		case <-ctx.Done():
			c.rd.waiting.Add(-1)
			return nil, ctx.Err()
		}
		if !errors.Is(rc.err, context.Canceled) && !errors.Is(rc.err, context.DeadlineExceeded) {
			c.st.sharedReads.Add(1)
			return rc.b, rc.err
		}
		// The GET ended with its own caller's context, not ours: read for ourselves.
		return c.rdb.Get(ctx, c.valueKey(key)).Bytes()
	}
	rc := &readCall{epoch: epoch, done: make(chan struct{})}
	if c.rd.m == nil {
		c.rd.m = make(map[string]*readCall)
	}
	c.rd.m[key] = rc // replaces a call of an older epoch, which then finishes unjoined
	c.rd.mu.Unlock()

	rc.b, rc.err = c.rdb.Get(ctx, c.valueKey(key)).Bytes()
	c.rd.mu.Lock()
	if c.rd.m[key] == rc {
		delete(c.rd.m, key)
	}
	c.rd.mu.Unlock()
	close(rc.done)
	return rc.b, rc.err
}
