package cache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// reads coalesces concurrent Redis reads of one key in this process, so a hot key read by many
// requests at once costs one GET per round trip instead of one per request, whether the key is
// cached or missing (a cold stampede then costs one GET and one load, not a GET per caller).
//
// A reader joins a GET in flight only when no invalidation (Set, Delete, a notice from another
// process: anything that moves the key's epoch) happened since that GET was sent, so a Fetch that
// follows a Delete never receives the value the Delete removed.
type reads struct {
	// pipe carries the Cache's reads; on a ClusterClient only FetchMany's (which the client
	// splits per node), single-key reads going through nodes.
	pipe pipe
	// nodes holds a ClusterClient's pipe per master address (*pipe), so reads stuck on a slow
	// or hung node hold up only the reads of keys on that node.
	nodes   sync.Map
	mu      sync.Mutex
	m       map[string]*readCall
	waiting atomic.Int64 // readers blocked on another reader's GET (tests observe it)
}

// readCall is one GET in flight; done closes when b and err are set. b is shared by every reader
// and must not be modified: decoding copies out of it. done is made by the first reader that
// joins (under reads.mu), so a read nobody joins allocates no channel.
type readCall struct {
	epoch uint64
	done  chan struct{}
	b     []byte
	err   error
}

// sharedGet returns the raw entry of key, joining a GET of the same key and epoch already in
// flight. A joiner whose GET ended with its owner's ctx (not its own) joins or sends another,
// so the joiners of a GET whose owner gave up still share one GET.
func (c *Cache[V]) sharedGet(ctx context.Context, key string) ([]byte, error) {
	for {
		epoch := c.snapshot(key)
		c.rd.mu.Lock()
		rc, ok := c.rd.m[key]
		if !ok || rc.epoch != epoch {
			return c.ownGet(ctx, key, epoch) // unlocks c.rd.mu
		}
		if rc.done == nil {
			rc.done = make(chan struct{})
		}
		done := rc.done
		c.rd.mu.Unlock()
		c.rd.waiting.Add(1)
		select {
		case <-done:
			c.rd.waiting.Add(-1)
		case <-ctx.Done():
			c.rd.waiting.Add(-1)
			return nil, ctx.Err()
		}
		if !ctxErr(rc.err) {
			c.st.sharedReads.Add(1)
			return rc.b, rc.err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// The GET ended with its owner's ctx, not ours: join or send another.
	}
}

// ownGet sends the GET of key at epoch, which readers of key may join until it returns
// (c.rd.mu is held, and released here).
func (c *Cache[V]) ownGet(ctx context.Context, key string, epoch uint64) ([]byte, error) {
	rc := readCalls.Get().(*readCall)
	rc.epoch = epoch
	if c.rd.m == nil {
		c.rd.m = make(map[string]*readCall)
	}
	c.rd.m[key] = rc // replaces a call of an older epoch, which then finishes unjoined
	c.rd.mu.Unlock()

	vk := c.valueKey(key)
	rc.b, rc.err = c.pipeFor(ctx, vk).getOne(ctx, c.rdb, vk)
	c.rd.mu.Lock()
	if c.rd.m[key] == rc {
		delete(c.rd.m, key)
	}
	done := rc.done // no reader joins rc any more: it is out of the map
	c.rd.mu.Unlock()
	b, err := rc.b, rc.err
	if done != nil {
		close(done)
	} else {
		*rc = readCall{} // nobody joined, nobody can: reuse it
		readCalls.Put(rc)
	}
	return b, err
}

var readCalls = sync.Pool{New: func() any { return new(readCall) }}

// pipeFor returns the pipe that reads value key vk: the Cache's, or on a ClusterClient the one
// of vk's master.
func (c *Cache[V]) pipeFor(ctx context.Context, vk string) *pipe {
	cl, ok := c.rdb.(*redis.ClusterClient)
	if !ok {
		return &c.rd.pipe
	}
	node, err := cl.MasterForKey(ctx, vk)
	if err != nil {
		return &c.rd.pipe // no cluster state: the read itself reports the error
	}
	addr := node.Options().Addr
	if p, ok := c.rd.nodes.Load(addr); ok {
		return p.(*pipe)
	}
	p, _ := c.rd.nodes.LoadOrStore(addr, &pipe{total: &c.rd.pipe.pipelined})
	return p.(*pipe)
}

// pipe batches the Redis reads of concurrent callers into shared round trips, DataLoader-style
// but without a timer. A read that finds no round trip of this Cache in flight is sent at once,
// on its caller's goroutine (a lone caller pays nothing); so is a second one while callers do
// not share round trips (two callers get one each). Reads that arrive while the limit is in
// flight queue up, and the queue leaves as one round trip when a round trip returns and the
// callers it served are back in the queue: the last of them sends it at once (the pipe owns no
// goroutine), else, when they do not all come back, the first queued caller once the returned
// sender's yields bring no more reads. A sender fills every read of its batch and wakes each
// caller once. Once callers share round trips (pipeShared), one is in flight at a time, so
// batches grow with the number of callers instead of splitting in two; once many callers keep
// the pipe busy (pipeOverlap), two are in flight again, each with about half of them, so the
// server reads one group's keys while the other group decodes its values.
//
// A round trip of several reads is one MGET on a *redis.Client (one command, one reply: less
// work than a pipeline of GETs on both sides), a pipeline of GETs on other clients (split per
// node by a ClusterClient, per shard by a Ring). A ClusterClient's single-key reads have a pipe
// per master (reads.nodes).
//
// A queued read is sent after it was queued, so it sees every write that completed before its
// caller asked: the invalidation-epoch rules of reads and the local tier hold unchanged.
//
// Invariant (p.mu): each round trip counted in inflight has exactly one goroutine that ends it
// through handOnLocked: its sender (sendBatch, or getOne's lone GET), a read that takes a
// returned sender's place (returned), or the next caller of a batch whose sender gave up before
// sending it (passOnLocked). Only a returned sender of two in flight may end its round trip
// without handing the queue on (the other one's end does). So the queue is non-empty only
// while a round trip is in flight whose end hands the queue on, and no read waits for a batch
// nobody sends. Giving up: a
// caller whose ctx has ended sends nothing (it returns, or passes on a batch it was handed); a
// queued caller leaves the queue; a caller in a batch another sends leaves its request to that
// sender (pipeAbandoned, never reused); a round trip that failed because its sender's ctx ended
// is read again by each caller it carried whose ctx is alive (blameCtx, resend). A panic of
// the client becomes the error of the reads of its round trip (clientPanic), so it breaks none
// of this.
type pipe struct {
	mu       sync.Mutex
	inflight int        // round trips in flight (each sender hands the queue on when it returns)
	avgBatch int        // callers per round trip, moving average, in 1/16 of a caller
	queue    []*pipeReq // reads waiting to be sent
	// out counts the callers whose round trip is out (sent or about to be, not yet answered),
	// avgOut its moving average at each round trip's start (in 1/16 of a caller): how many
	// callers keep the pipe busy, the same whether they share one round trip or two.
	out    int
	avgOut int
	// returned counts the senders of shared round trips that came back and have not handed
	// the queue on yet: the callers they served are queueing their next reads. The read that
	// brings the queue to handOnAt sends it at once (no wake-up of another caller, no wait
	// for the sender's turn) and takes one returned round trip's place in flight; each
	// returned sender hands on once, itself or through such a read.
	returned int
	handOnAt int
	// pipelined counts reads sent in round trips of several reads (Stats.PipelinedReads): a
	// node's pipe counts in its Cache's (total).
	pipelined atomic.Uint64
	total     *atomic.Uint64
}

// pipeReq is one caller's keys in a pipe: done receives one signal when vals and errs are set,
// or when the caller is to send the batch it was handed (batch non-nil). The requests of
// single-key reads are pooled (pipeReqs): a request goes back to the pool once its caller read
// its result, never while a sender may still signal it.
type pipeReq struct {
	keys  []string // value keys
	vals  [][]byte
	errs  []error
	done  chan struct{} // buffered (1): a signal never blocks the sender
	state pipeState     // guarded by pipe.mu
	batch []*pipeReq

	key1 [1]string // keys, vals and errs of a one-key read, without allocations of their own
	val1 [1][]byte
	err1 [1]error
}

// pipeMaxInFlight bounds the round trips a Cache's reads keep in flight at once: two
// concurrent callers each get their own round trip at once, and many callers share two (see
// pipeOverlap).
const pipeMaxInFlight = 2

// pipeShared is the moving average of callers per round trip (in 1/16 of a caller, over about
// the last four round trips) from which callers are taken to share round trips: then one round
// trip is in flight at a time, and every read that arrives meanwhile leaves with the next, until
// enough callers keep the pipe busy to fill two (pipeOverlap). Allowing a second one to a few
// callers splits them into two alternating groups of one or two, which doubles the round trips
// (each a write and a read system call on both sides) for no gain in throughput.
const pipeShared = 24

// pipeOverlap is the number of callers keeping the pipe busy (avgOut, in 1/16 of a caller)
// from which two round trips are in flight again: the callers then form two groups that
// alternate, one group's round trip at the server while the other decodes its values and queues
// its next reads, instead of every caller waiting for one round trip and the server for the
// callers' decoding. The second round trip leaves only with a good part of the callers
// (secondAt), and a returned sender leaves a few queued reads to the other round trip, so round
// trips keep carrying several reads each (16 callers: about 7), not one per caller. With 16
// callers on two cores (1,000 keys, 200-byte values) this served 15-25% more reads per second
// than one round trip in flight, at 0.1-0.3 µs more server CPU per read; 8 callers (about 6 in
// the pipe) keep one round trip in flight, which costs them 30-40% less server CPU per read.
const pipeOverlap = 8 * 16

// limitLocked is how many round trips may be in flight now (p.mu held).
func (p *pipe) limitLocked() int {
	if p.avgBatch >= pipeShared && p.avgOut < pipeOverlap {
		return 1
	}
	return pipeMaxInFlight
}

// secondAtLocked is how many queued reads (the caller's included) a round trip may start with
// while another is in flight (p.mu held): any while reads go alone; 5/8 of the callers keeping
// the pipe busy once they share two round trips (pipeOverlap). With 16 callers (about 13 out)
// that is 8 reads: half of them gave 0.146 round trips per read, this 0.140, and 1-6% more
// reads per second.
func (p *pipe) secondAtLocked() int {
	if p.avgOut < pipeOverlap {
		return 1
	}
	return p.avgOut * 5 / (8 * 16)
}

// startLocked accounts for a round trip of n callers' reads leaving (p.mu held); backLocked
// must follow once it returned (or its callers were dropped from it).
func (p *pipe) startLocked(n int) {
	p.inflight++
	p.avgBatch += (n*16 - p.avgBatch) / 4
	p.out += n
	p.avgOut += (p.out*16 - p.avgOut) / 4
}

// backLocked accounts for n callers whose round trip returned, or who left a batch before it
// was sent (p.mu held).
func (p *pipe) backLocked(n int) {
	p.out -= n
}

type pipeState uint8

const (
	pipeQueued    pipeState = iota // in the queue
	pipeTaken                      // in a batch being sent
	pipeAbandoned                  // its caller gave up while another caller sends it
)

// get reads the value keys vks (at least one), returning each key's bytes or error (redis.Nil
// when absent). It blocks for one round trip, or for the one in flight plus one; when ctx ends
// while it waits it returns ctx.Err() for every key.
func (p *pipe) get(ctx context.Context, rdb redis.Cmdable, vks []string) ([][]byte, []error) {
	r := &pipeReq{keys: vks}
	p.mu.Lock()
	return p.submitLocked(ctx, rdb, r)
}

// getOne is get for one key.
func (p *pipe) getOne(ctx context.Context, rdb redis.Cmdable, vk string) ([]byte, error) {
	p.mu.Lock()
	if p.inflight == 0 {
		// The common case of a lone caller, without get's allocations.
		p.startLocked(1)
		p.mu.Unlock()
		b, err := get1(ctx, rdb, vk)
		p.handOn(1)
		return b, blameCtx(ctx, err)
	}
	r := pipeReqs.Get().(*pipeReq)
	r.key1[0] = vk
	r.keys = r.key1[:]
	vals, errs := p.submitLocked(ctx, rdb, r)
	b, err := vals[0], errs[0]
	if r.state != pipeAbandoned {
		*r = pipeReq{done: r.done}
		pipeReqs.Put(r)
	}
	return b, err
}

var pipeReqs = sync.Pool{New: func() any { return &pipeReq{done: make(chan struct{}, 1)} }}

// submitLocked sends r at once, with the queue, when a round trip may start (limitLocked);
// else it queues r and waits for its result, sending the batch when it is handed one. A caller
// whose ctx has ended returns ctx.Err() at once. p.mu is held, and released here.
func (p *pipe) submitLocked(ctx context.Context, rdb redis.Cmdable, r *pipeReq) ([][]byte, []error) {
	if err := ctx.Err(); err != nil {
		// Sent on an ended ctx, the queued reads it would take along would fail at once.
		p.mu.Unlock()
		return failed(len(r.keys), err)
	}
	if p.inflight < p.limitLocked() && (p.inflight == 0 || len(p.queue)+1 >= p.secondAtLocked()) {
		batch := []*pipeReq{r}
		if len(p.queue) > 0 {
			batch = append(batch, p.takeQueueLocked()...)
		}
		p.startLocked(len(batch))
		p.mu.Unlock()
		p.sendBatch(ctx, rdb, batch)
		return r.vals, r.errs
	}
	vks := r.keys
	if p.returned > 0 && len(p.queue)+1 >= p.handOnAt {
		// The last of the callers just served is back: send the queue with ours now.
		p.returned--
		batch := append(p.takeQueueLocked(), r)
		batch[0], batch[len(batch)-1] = r, batch[0]
		r.state = pipeTaken
		p.inflight--
		p.startLocked(len(batch))
		p.mu.Unlock()
		p.sendBatch(ctx, rdb, batch)
		return r.vals, r.errs
	}
	if r.done == nil {
		r.done = make(chan struct{}, 1)
	}
	p.queue = append(p.queue, r)
	p.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		p.mu.Lock()
		switch {
		case r.state == pipeQueued:
			p.queue = slices.DeleteFunc(p.queue, func(q *pipeReq) bool { return q == r })
			p.mu.Unlock()
			return failed(len(vks), ctx.Err())
		case r.batch == nil:
			// In a batch another caller sends: it will fill r, which nobody reads any more
			// (and which must not be reused).
			r.state = pipeAbandoned
			p.mu.Unlock()
			return failed(len(vks), ctx.Err())
		}
		p.mu.Unlock()
		<-r.done // handed the batch
	}
	if r.batch != nil {
		if err := ctx.Err(); err != nil {
			// Sent on our ended ctx, the batch would fail at once for everyone in it.
			p.mu.Lock()
			p.backLocked(1)
			p.passOnLocked(r.batch[1:])
			return failed(len(vks), err)
		}
		// Handed the queue: send it for everyone (on our ctx; a read that fails because our
		// ctx ended is read again by its own caller), then hand the next queue on.
		p.sendBatch(ctx, rdb, r.batch)
		return r.vals, r.errs
	}
	if ctx.Err() == nil && slices.ContainsFunc(r.errs, ctxErr) {
		p.resend(ctx, rdb, r) // the sender's ctx ended, not ours: read for ourselves
	}
	return r.vals, r.errs
}

// resend reads again, in one round trip of its own, the keys of r whose shared round trip
// failed because its sender's ctx ended (see blameCtx); r's caller's ctx is alive.
func (p *pipe) resend(ctx context.Context, rdb redis.Cmdable, r *pipeReq) {
	again := &pipeReq{}
	var at []int
	for j, err := range r.errs {
		if ctxErr(err) {
			again.keys = append(again.keys, r.keys[j])
			at = append(at, j)
		}
	}
	p.send(ctx, rdb, []*pipeReq{again})
	for i, j := range at {
		r.vals[j], r.errs[j] = again.vals[i], again.errs[i]
	}
}

// takeQueueLocked empties the queue into a batch (p.mu held).
func (p *pipe) takeQueueLocked() []*pipeReq {
	batch := p.queue
	p.queue = nil
	for _, q := range batch {
		q.state = pipeTaken
	}
	return batch
}

// handOnYields bounds the times a sender yields while the callers it served queue their next
// reads (it stops as soon as a yield brings no new read). 8 rather than 4 let the callers of
// a round trip of 8 or more come back together more often (16 callers: 3% more reads per
// second, 0.05 µs less server CPU per read).
const handOnYields = 8

// sendBatch sends batch (whose first read is the caller's own), wakes the other callers and
// hands the queue on: once the callers it served are back in the queue (the last of them then
// sends it), else when yielding brings no more reads.
func (p *pipe) sendBatch(ctx context.Context, rdb redis.Cmdable, batch []*pipeReq) {
	p.send(ctx, rdb, batch)
	if len(batch) == 1 {
		p.handOn(1)
		return
	}
	p.mu.Lock()
	p.backLocked(len(batch))
	p.returned++
	n := len(p.queue)
	p.handOnAt = n + len(batch) - 1
	p.mu.Unlock()
	for _, q := range batch[1:] {
		q.done <- struct{}{}
	}
	for i := 0; i < handOnYields; i++ {
		runtime.Gosched() // let the callers just served queue their next reads
		p.mu.Lock()
		l, ours := len(p.queue), p.returned > 0
		p.mu.Unlock()
		if !ours {
			return // the last of them sent the queue
		}
		if l == n {
			break
		}
		n = l
	}
	p.mu.Lock()
	if p.returned == 0 {
		p.mu.Unlock()
		return // a read took our place
	}
	p.returned--
	if p.inflight > 1 && len(p.queue) < p.secondAtLocked() {
		// Another round trip is in flight, whose end hands these few queued reads on, unless
		// reads arriving meanwhile bring the queue to secondAt first: then the last of them
		// sends it (submitLocked). Sending them now would split the callers into ever smaller
		// round trips.
		p.inflight--
		p.mu.Unlock()
		return
	}
	p.handOnLocked()
}

// handOn ends the turn of the sender of a round trip of n callers that returned: the queued
// reads become the next batch, sent by its first member, or the pipe has one round trip fewer in
// flight.
func (p *pipe) handOn(n int) {
	p.mu.Lock()
	p.backLocked(n)
	p.handOnLocked()
}

// handOnLocked is handOn with p.mu held, and released here.
func (p *pipe) handOnLocked() {
	if len(p.queue) == 0 {
		p.inflight--
		p.mu.Unlock()
		return
	}
	batch := p.takeQueueLocked()
	batch[0].batch = batch
	p.inflight--
	p.startLocked(len(batch))
	p.mu.Unlock()
	batch[0].done <- struct{}{}
}

// passOnLocked hands batch, a round trip counted in flight whose sender gave up before
// sending it, to the first of its callers still waiting, or, when they all gave up, ends the
// turn (handOnLocked). p.mu is held, and released here.
func (p *pipe) passOnLocked(batch []*pipeReq) {
	for len(batch) > 0 && batch[0].state == pipeAbandoned {
		batch = batch[1:]
		p.backLocked(1)
	}
	if len(batch) == 0 {
		p.handOnLocked()
		return
	}
	batch[0].batch = batch
	p.mu.Unlock()
	batch[0].done <- struct{}{}
}

// send reads the keys of batch in one round trip: a plain GET for a single key, an MGET on a
// *redis.Client, else a pipeline of GETs.
func (p *pipe) send(ctx context.Context, rdb redis.Cmdable, batch []*pipeReq) {
	n := 0
	for _, r := range batch {
		n += len(r.keys)
		if len(r.keys) == 1 {
			r.vals, r.errs = r.val1[:], r.err1[:]
		} else {
			r.vals, r.errs = make([][]byte, len(r.keys)), make([]error, len(r.keys))
		}
	}
	defer func() {
		if v := recover(); v != nil {
			err := clientPanic(v)
			for _, r := range batch {
				clear(r.vals)
				for j := range r.errs {
					r.errs[j] = err
				}
			}
		}
	}()
	if n == 1 {
		r := batch[0]
		r.vals[0], r.errs[0] = rdb.Get(ctx, r.keys[0]).Bytes()
		r.errs[0] = blameCtx(ctx, r.errs[0])
		return
	}
	if p.total != nil {
		p.total.Add(uint64(n))
	} else {
		p.pipelined.Add(uint64(n))
	}
	if cl, ok := rdb.(*redis.Client); ok {
		mget(ctx, cl, batch, n)
		return
	}
	cmds := make([]*redis.StringCmd, 0, n)
	_, _ = rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for _, r := range batch {
			for _, k := range r.keys {
				cmds = append(cmds, pl.Get(ctx, k))
			}
		}
		return nil
	})
	i := 0
	for _, r := range batch {
		for j := range r.keys {
			r.vals[j], r.errs[j] = cmds[i].Bytes()
			r.errs[j] = blameCtx(ctx, r.errs[j])
			i++
		}
	}
}

// mgetMaxKeys bounds the keys of one MGET: Redis runs a command without serving other clients,
// so a round trip of more keys (a large FetchMany) sends several MGETs in one pipeline instead,
// as a pipeline of GETs let other clients in between.
const mgetMaxKeys = 256

// mget reads the n keys of batch in one round trip of MGETs (one up to mgetMaxKeys keys). MGET
// answers nil for an absent key (and for a key of another type, which a GET would answer with
// an error): redis.Nil for that read. An envelope is never empty, so an empty string is nil.
func mget(ctx context.Context, cl *redis.Client, batch []*pipeReq, n int) {
	args := make([]any, 0, n+(n+mgetMaxKeys-1)/mgetMaxKeys)
	cmds := make([]*redis.StringSliceCmd, 0, 1)
	start := 0
	flush := func() {
		cmds = append(cmds, redis.NewStringSliceCmd(ctx, args[start:]...))
		start = len(args)
	}
	for _, r := range batch {
		for _, k := range r.keys {
			if len(args) == start {
				args = append(args, "mget")
			}
			args = append(args, k)
			if len(args)-start == mgetMaxKeys+1 {
				flush()
			}
		}
	}
	if len(args) > start {
		flush()
	}
	if len(cmds) == 1 {
		_ = cl.Process(ctx, cmds[0])
	} else {
		_, _ = cl.Pipelined(ctx, func(pl redis.Pipeliner) error {
			for _, cmd := range cmds {
				_ = pl.Process(ctx, cmd)
			}
			return nil
		})
	}
	var vals []string
	var err error
	i := 0
	for _, r := range batch {
		for j := range r.keys {
			if i%mgetMaxKeys == 0 {
				cmd := cmds[i/mgetMaxKeys]
				vals, err = cmd.Result()
				if want := len(cmd.Args()) - 1; err == nil && len(vals) != want {
					err = fmt.Errorf("cache: MGET of %d keys answered %d values", want, len(vals))
				}
				err = blameCtx(ctx, err)
			}
			v := i % mgetMaxKeys
			switch {
			case err != nil:
				r.errs[j] = err
			case vals[v] == "":
				r.errs[j] = redis.Nil
			default:
				// The reply's own memory, read-only like every read's bytes (see readCall).
				r.vals[j] = unsafe.Slice(unsafe.StringData(vals[v]), len(vals[v]))
			}
			i++
		}
	}
}

// get1 is one GET, a panic of the client turned into an error (see clientPanic).
func get1(ctx context.Context, rdb redis.Cmdable, vk string) (b []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			b, err = nil, clientPanic(v)
		}
	}()
	return rdb.Get(ctx, vk).Bytes()
}

// clientPanic is the error of every read of a round trip during which the Redis client
// panicked (a hook of the caller's, say), as a loader's panic becomes an error: a sender that
// panicked would leave the callers it carries, those who joined its GET and every later read
// waiting for ever (an HTTP server recovers the panic, and the process goes on).
func clientPanic(v any) error {
	return fmt.Errorf("cache: redis client panicked: %v", v)
}

// failed is the result of n reads that all failed with err.
func failed(n int, err error) ([][]byte, []error) {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return make([][]byte, n), errs
}

// blameCtx returns err, the failure of a round trip sent on ctx, or the error of ctx's end when
// ctx ended: the failure is then its sender's, and every caller the round trip carried (or that
// joined its GET) whose own ctx is alive reads again for itself (see ctxErr) instead of failing
// as if Redis were down. A client with ContextTimeoutEnabled ends a round trip at its ctx's
// deadline with an i/o timeout, not a ctx error, and may do so an instant before ctx itself
// notices: a deadline that passed counts as the end.
func blameCtx(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return err
}

// ctxErr reports whether err is a context's end (ours or, for a shared read, its sender's).
func ctxErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
