package events

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Consumer runs a consumer group and hands each event to the Handler on Concurrency
// goroutines: events with one key (within a partition) are handled one at a time and in
// order, different keys in parallel, records without a key in order per partition.
//
// Offsets are committed only up to the first event not yet done in each partition, so nothing
// is committed that was not handled (or dead-lettered). A failing event is retried with backoff
// while other keys keep flowing; after MaxAttempts it goes to DeadLetterTopic, or, without one,
// its partition is paused. Build it with [NewConsumer] and start it with [Consumer.Run].
//
// While no event is queued or running, and with no Deduper, tracing or duration metric, the
// goroutine that fetches handles cheap events itself, in offset order, as a plain Kafka loop
// would, saving the hand-off to a worker; handlers that take more than about 20 µs turn this
// off for up to a second, and a call still running after a millisecond or two is handed over
// to the workers' bookkeeping, taking one of the Concurrency places until it returns, while
// fetching goes on on a new goroutine: a slow or blocked handler holds up other keys no longer
// than it would on a worker.
type Consumer struct {
	cfg     consumerConfig
	log     *slog.Logger
	started atomic.Bool

	cl      *kgo.Client
	hctx    context.Context // parent of the handlers' contexts; outlives Run's ctx while draining
	hcancel context.CancelFunc

	mu       sync.Mutex
	work     *sync.Cond   // signalled when ready gets a key or stopping is set
	ready    []*keyQueue  // keys whose head record may run, FIFO
	spare    []*keyQueue  // emptied key queues kept for reuse
	parts    map[tp]*part // partitions with dispatched records
	buffered int          // records dispatched and not yet done or dropped
	running  int          // handlers running
	stopping bool
	runCtx   context.Context // Run's: workers start nothing once it ended (see ending)
	wantRoom bool
	room     chan struct{} // poll loop wakes when buffered drops below MaxBuffered
	backlog  []fetchChunk  // records polled from kgo and not yet dispatched (see pollLoop)

	commitMu sync.Mutex // orders interval, revoke and final commits

	inl   inlineState    // the poll loop's inline handling (see inline)
	polls sync.WaitGroup // poll loops started by promote

	st consumerCounters

	clock func(d time.Duration) (<-chan time.Time, func() bool) // shutdown clock; nil is a real timer (tests replace it)
}

type tp struct {
	topic     string
	partition int32
}

// part is one assigned partition: its key queues and its commit tracker.
type part struct {
	tp       tp
	tel      *partTelemetry  // set once by newPart; read without c.mu
	ctx      context.Context // handlers' context; cancelled when the partition is lost or gone
	cancel   context.CancelFunc
	keys     map[string]*keyQueue // with emptied queues kept for reuse (idleKeys of them)
	null     *keyQueue
	idleKeys int

	// commit tracker: every dispatched offset in order, until it and all before it are done.
	pending   []pendingRec // pending[phead:] are tracked; the front is done and dropped
	phead     int
	baseSeq   uint64 // seq of pending[phead]
	nextSeq   uint64
	commit    kgo.EpochOffset // next offset to commit: after the last contiguous done record
	committed int64           // last offset committed by this member; -1 none
	first     int64           // first offset dispatched; -1 none (CommitLag's base before a commit)
	fetched   int64           // last dispatched offset + 1, also of records handled inline

	running int           // handlers running on this partition
	idle    chan struct{} // closed when running reaches 0 after revoked
	revoked bool          // no more dispatch; draining before the final commit
	halt    atomic.Bool   // set with revoked: running workers start no more of p's records
	gone    bool          // dropped: results are ignored
	paused  bool
}

// NewConsumer validates cfg and returns a consumer. It does not connect or start goroutines;
// [Consumer.Run] does. The error wraps [ErrInvalidOptions] and names the bad field; with a
// DeadLetterTopic, KafkaOptions that would make dead-letter writes non-idempotent or acks
// below all are refused as for [NewProducer].
func NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	c, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	if err := checkConsumerOpts(&c.ConsumerConfig); err != nil {
		return nil, err
	}
	return &Consumer{cfg: c, log: c.Logger, parts: make(map[tp]*part), room: make(chan struct{}, 1),
		st:  consumerCounters{handled: make([]workerCount, c.Concurrency+1)},
		inl: inlineState{slowest: inlineSlow, promote: promoteAfter}}, nil
}

// checkConsumerOpts refuses KafkaOptions that kgo would refuse, kgo.ConsumeRegex, and, with a
// DeadLetterTopic, options that make dead-letter writes non-idempotent. It builds no client
// (that would start goroutines and run the caller's hooks): kgo.ValidateOpts checks the
// values, and the refused options show in what kgo's validation accepts once one more option
// is added. Run checks the same on its client.
func checkConsumerOpts(cfg *ConsumerConfig) error {
	const field = "ConsumerConfig.KafkaOptions"
	opts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.KafkaOptions...)
	if err := kgo.ValidateOpts(opts...); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidOptions, field, err)
	}
	validWith := func(o kgo.Opt) bool { return kgo.ValidateOpts(append(opts[:len(opts):len(opts)], o)...) == nil }
	// kgo compiles topics as patterns only under ConsumeRegex: an invalid pattern tells.
	if !validWith(kgo.ConsumeTopics("(")) {
		return errConsumeRegex
	}
	if cfg.DeadLetterTopic == "" {
		return nil
	}
	// kgo accepts acks below all only with idempotent writes off.
	if validWith(kgo.RequiredAcks(kgo.LeaderAck())) {
		return invalid(field, "must not hold kgo.DisableIdempotentWrite: it would allow duplicates on retry")
	}
	// With idempotent writes on, kgo refuses a transactional ID only when produce requests
	// may be cancelled.
	if !validWith(kgo.TransactionalID("events-check")) {
		return invalid(field, "must not hold kgo.AllowIdempotentProduceCancellation: it breaks idempotent deduplication")
	}
	return nil
}

var errConsumeRegex = invalid("ConsumerConfig.KafkaOptions", "must not hold kgo.ConsumeRegex: Topics are topic names (a pattern could match the DeadLetterTopic)")

// Run joins the group and handles events until ctx ends. It blocks. When ctx ends it stops
// fetching, drops records not yet started, waits for running handlers (up to
// ShutdownTimeout, then cancels their context), commits what is done and leaves the group.
// It returns nil after a clean shutdown, the final commit's error otherwise, the kgo error when
// the client cannot be built, and [ErrClosed] when called a second time. Background errors
// (fetch, commit, handler) are logged and counted in [Consumer.Stats].
func (c *Consumer) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return ErrClosed
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.cfg.Brokers...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}
	opts = append(opts, c.cfg.KafkaOptions...)
	opts = append(opts,
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeTopics(c.cfg.Topics...),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		// Transaction markers take offsets too: seeing them lets the commit point pass them.
		kgo.KeepControlRecords(),
		kgo.OnPartitionsRevoked(c.onRevoked),
		kgo.OnPartitionsLost(c.onLost),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("events: consumer %s: %w", c.cfg.Group, err)
	}
	if v, _ := cl.OptValue(kgo.ConsumeRegex).(bool); v {
		cl.Close()
		return errConsumeRegex
	}
	if c.cfg.DeadLetterTopic != "" {
		if err := checkDurable(cl, "ConsumerConfig.KafkaOptions"); err != nil {
			cl.Close()
			return err
		}
	}
	c.cl = cl
	c.runCtx = ctx
	c.work = sync.NewCond(&c.mu)
	c.hctx, c.hcancel = context.WithCancel(context.WithoutCancel(ctx))
	defer c.hcancel()

	var workers sync.WaitGroup
	for w := range c.cfg.Concurrency {
		workers.Go(func() { c.worker(w) })
	}
	stopCommits := make(chan struct{})
	var committer sync.WaitGroup
	committer.Go(func() { c.commitLoop(stopCommits) })

	// One shutdown clock for every handler, whether the poll loop runs it (see inline) or a
	// worker: ShutdownTimeout from when ctx ends (or the poll loop ends for another reason).
	// A second clock for the drain, started only once the poll loop ends, would let a
	// promoted call that returns late make Run wait up to twice ShutdownTimeout.
	pollDone, finished := make(chan struct{}), make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() { c.shutdownClock(ctx, pollDone, finished) })
	c.pollLoop(ctx)
	c.polls.Wait() // the poll loop may have moved on to other goroutines (see promote)
	close(pollDone)
	c.mu.Lock()
	if c.inl.timer != nil {
		c.inl.timer.Stop()
	}
	c.mu.Unlock()

	// Drain: drop what has not started, wait for what runs.
	c.mu.Lock()
	c.stopping = true
	for _, p := range c.parts {
		c.dropQueued(p)
	}
	c.ready = nil
	c.backlog = nil // never dispatched: the group's next member fetches them again
	c.work.Broadcast()
	c.mu.Unlock()
	workers.Wait() // the shutdown clock cancels their context when it expires
	close(finished)
	watch.Wait()
	close(stopCommits)
	committer.Wait()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	err = c.commit(cctx, nil)
	cancel()
	c.mu.Lock()
	for k, p := range c.parts {
		p.gone = true
		p.cancel()
		delete(c.parts, k)
	}
	c.mu.Unlock()
	cl.Close() // leaves the group
	return err
}

// shutdownClock cancels the handlers' context when they have not all returned (finished)
// ShutdownTimeout after ctx ended, or after the poll loop ended (pollDone) if that was first.
func (c *Consumer) shutdownClock(ctx context.Context, pollDone, finished <-chan struct{}) {
	select {
	case <-pollDone:
	case <-ctx.Done():
	}
	expired, stop := c.startClock(c.cfg.ShutdownTimeout)
	defer stop()
	select {
	case <-finished:
	case <-expired:
		c.log.Warn("events: consumer shutdown: handlers still running, cancelling them", "group", c.cfg.Group)
		c.hcancel()
	}
}

// startClock starts a shutdown clock of d: the channel receives when it expires, and stop
// stops it. Tests replace it with c.clock.
func (c *Consumer) startClock(d time.Duration) (<-chan time.Time, func() bool) {
	if c.clock != nil {
		return c.clock(d)
	}
	t := time.NewTimer(d)
	return t.C, t.Stop
}
