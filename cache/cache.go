package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/internal/jitter"
	"github.com/surgekit/surge/internal/keys"
	"github.com/surgekit/surge/internal/luascript"
)

// Loader loads the value of one key from the source of truth. Returning an error that wraps
// [ErrNotFound] says the record does not exist (cached as a negative entry). ctx is bounded by
// Options.LoadTimeout and is not cancelled when the caller that started the load gives up.
type Loader[V any] func(ctx context.Context, key string) (V, error)

// BatchLoader loads many keys at once. Keys it leaves out of the map do not exist (cached as
// negative entries). It gets the same ctx as a [Loader].
type BatchLoader[V any] func(ctx context.Context, keys []string) (map[string]V, error)

// Guard rules out keys that cannot exist (a Bloom filter, typically). MightContain returning
// false makes the key ErrNotFound without touching Redis or the loader; an error means "maybe"
// (counted in Stats.GuardErrors). Implementations must be safe for concurrent use; *bloom.Local
// and *bloom.Redis satisfy it. A Guard that also has Add(ctx, keys ...string) error (both bloom
// filters do) learns every key [Cache.Set] stores; otherwise add keys the loader can return
// yourself, or Fetch rules them out even after a Set.
type Guard interface {
	MightContain(ctx context.Context, key string) (bool, error)
}

// Cache is a cache-aside of V over Redis, with an optional in-process tier. Create it with [New].
// All methods are safe for concurrent use.
type Cache[V any] struct {
	rdb   redis.UniversalClient
	cfg   config
	st    counters
	tel   telemetry // OpenTelemetry instruments (telemetry.go)
	fl    flights[V]
	rd    reads                                // concurrent GETs of one key share a round trip
	local *otter.Cache[string, *localEntry[V]] // nil without Options.Local
	clock *otter.CoarseClock                   // the local tier's clock: reading the precise time would double a hit's cost
	plan  *msgpackPlan                         // decodes V's payloads without the general decoder, when the Codec is MsgpackCodec and V plain enough (msgpackplan.go)

	id       string        // instance id: tokens and pub/sub messages carry it
	seq      atomic.Uint64 // lease token sequence
	epochs   epochs        // bumped by every invalidation of a key (local.go)
	own      ownWrites[V]  // local stores of this instance's own writes, waiting for their echo (local.go)
	ready    atomic.Bool   // the listener receives every invalidation: the local tier may fill
	tracking atomic.Bool   // the server accepted CLIENT TRACKING on the listener's connection
	blind    atomic.Bool   // a cluster master refused CLIENT TRACKING: the local tier stays empty (notify.go)
	notices  string        // the channel this instance's writes announce on: cfg.channel, "" on a Redis Cluster (notify.go)

	closed atomic.Bool
	stop   context.Context    // cancelled by Close: background loads and waits end early
	cancel context.CancelFunc // cancels stop

	now  func() time.Time // tests move the clock
	rand func() float64   // uniform [0,1); tests make it deterministic

	beforeLocalPut func(key string)                         // tests: runs between storeLocal's check and its put
	afterTracking  atomic.Pointer[func(redisKeys []string)] // tests: runs after a server-assisted invalidation was applied
	afterEchoes    atomic.Pointer[func(keys []string)]      // tests: runs once handleTracking counted its keys as echoes and dropped them
	pollEvery      time.Duration                            // tests: replaces pollInterval when set before the first Fetch

	mu      sync.Mutex // guards the fields below
	closing bool
	wg      sync.WaitGroup // background loads, second deletes, the subscriber
	timers  map[*time.Timer]struct{}
	sub     *subscriber
	waiters map[string]chan struct{} // lease waiters per key, closed on a fill notice
	// wakes counts the notices that wake lease waiters (wakeWaiters, flushLocal), counted
	// before they look for waiters: a waiter that registers after one came looks again at once
	// (waitForFills), so a fill landing between its claim and its registering is not missed.
	wakes atomic.Uint64
}

// localClockResolution is how often the local tier's clock reads the time.
const localClockResolution = 10 * time.Millisecond

// localEntry is what the in-process tier holds: the decoded value, never bytes.
type localEntry[V any] struct {
	v        V
	notFound bool
	ttl      time.Duration
}

// New returns a Cache over rdb (a *redis.Client, *redis.ClusterClient or failover client, which
// the Cache never closes). opt may be nil for all defaults; a bad option is an error naming the
// field, wrapping [ErrInvalidOptions].
//
// Without Options.Local, New does no I/O. With Options.Local set, New starts goroutines: one that
// listens for invalidations (a Redis connection of its own for the invalidation channel and
// server-assisted invalidation, plus one per master and a goroutine watching the masters on a
// cluster; see [LocalOptions]), the local tier's periodic
// clean-up, and a clock that reads the time every 10ms (local entries may expire up to that much
// late); and it blocks until the listener is subscribed, at most LoadTimeout. Nothing enters the
// local tier before that, so an instance never misses the invalidation of a value it holds;
// when Redis cannot be reached, New returns after LoadTimeout and the tier starts filling once
// the listener gets through. With only Options.Lease set, the listener starts at the first wait
// for another process's lease instead. [Cache.Close] stops them all and waits for them.
func New[V any](rdb redis.UniversalClient, opt *Options) (*Cache[V], error) {
	if rdb == nil {
		return nil, errors.New("cache: New: nil redis client")
	}
	cfg, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	c := &Cache[V]{
		rdb:     rdb,
		cfg:     cfg,
		id:      strconv.FormatUint(rand.Uint64(), 36),
		now:     time.Now,
		rand:    rand.Float64,
		timers:  make(map[*time.Timer]struct{}),
		waiters: make(map[string]chan struct{}),
	}
	if _, ok := cfg.Codec.(MsgpackCodec); ok {
		c.plan = newMsgpackPlan[V]()
	}
	c.stop, c.cancel = context.WithCancel(context.Background())
	if _, cluster := rdb.(*redis.ClusterClient); !cluster {
		c.notices = cfg.channel
	}
	if cfg.Local != nil {
		c.clock = otter.NewCoarseClock(localClockResolution)
		c.local, err = otter.New(&otter.Options[string, *localEntry[V]]{
			Clock:       c.clock,
			MaximumSize: cfg.local.MaxEntries,
			ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, *localEntry[V]]) time.Duration {
				return e.Value.ttl
			}),
		})
		if err != nil {
			c.clock.Stop()
			return nil, fmt.Errorf("cache: local tier: %w", err)
		}
		c.mu.Lock()
		c.startSubscriberLocked()
		ready := c.sub.ready
		c.mu.Unlock()
		// Nothing enters the local tier before the listener is subscribed; waiting for it here
		// makes the tier useful from the first read on.
		t := time.NewTimer(cfg.LoadTimeout)
		select {
		case <-ready:
		case <-t.C:
		}
		t.Stop()
	}
	c.tel.init(cfg.TracerProvider, cfg.MeterProvider, cfg.Prefix, &c.st.localHits)
	return c, nil
}

// Get returns what is cached for key without loading: the value, [ErrNotFound] for a negative
// entry, or [ErrMiss] when nothing is cached (or the entry cannot be decoded). It blocks for at
// most one Redis round trip (none on a local hit) and returns Redis errors (wrapped) whatever
// the OnRedisError policy, since there is no loader to fall back on; after Close it returns
// [ErrClosed]. Safe for concurrent use.
func (c *Cache[V]) Get(ctx context.Context, key string) (V, error) {
	var zero V
	if key == "" {
		c.tel.count(resError, 1)
		return zero, ErrEmptyKey
	}
	if e, ok := c.lookupLocal(key); ok {
		if e.notFound {
			return zero, ErrNotFound
		}
		return e.v, nil
	}
	if c.closed.Load() {
		c.tel.count(resError, 1)
		return zero, ErrClosed
	}
	snap := c.snapshot(key)
	h, v, err := c.readRedis(ctx, key)
	switch {
	case errors.Is(err, redis.Nil), errors.Is(err, errDecode):
		c.tel.count(resMiss, 1)
		return zero, ErrMiss
	case err != nil:
		c.tel.count(resError, 1)
		return zero, fmt.Errorf("cache: get %q: %w", key, err)
	}
	c.storeLocal(snap, key, v, h)
	if h.tombstone {
		c.st.negativeHits.Add(1)
		c.tel.count(resNegativeHit, 1)
		return zero, ErrNotFound
	}
	c.st.redisHits.Add(1)
	c.tel.count(resRedisHit, 1)
	return v, nil
}

// Set stores v for key with a jittered TTL, replacing what is there, and invalidates the key in
// the local tier of every process (whether or not this Cache has a local tier or a lease). It
// also drops any lease on the key, so a load already running for it cannot overwrite v with an
// older value. The write and its invalidation notice leave Redis in one atomic step on the key's
// node, so no process can see the notice before the write (on a Redis Cluster there is no
// notice: other processes learn of the write from server-assisted invalidation, see
// [LocalOptions]). With a local tier, v is kept locally once Redis reported the write back and
// still holds it. When the Guard also has a method
// Add(ctx, keys ...string) error (as the bloom filters do), Set adds key to it first, so that
// Fetch does not rule out a key Set stored.
//
// One Redis round trip (two with a Redis-backed Guard); Redis and Guard errors are returned
// (wrapped) whatever the policy. After Close it returns [ErrClosed]; for "" [ErrEmptyKey]. Safe
// for concurrent use.
func (c *Cache[V]) Set(ctx context.Context, key string, v V) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if key == "" {
		return ErrEmptyKey
	}
	env, h, ttl, err := c.encode(v, 0)
	if err != nil {
		return fmt.Errorf("cache: set %q: %w", key, err)
	}
	if g, ok := c.cfg.Guard.(interface {
		Add(ctx context.Context, keys ...string) error
	}); ok {
		if err := g.Add(ctx, key); err != nil {
			return fmt.Errorf("cache: set %q: guard: %w", key, err)
		}
	}
	ep := c.epochOf(key)
	snap := ep.Load()
	own := c.registerOwn(key, &localEntry[V]{v: v}, h, env)
	vk := c.valueKey(key)
	err = setScript.Run(ctx, c.rdb, []string{vk, leaseKey(vk)},
		env, max(ttl.Milliseconds(), 1), c.notices, c.notice(noticeInvalidate, key)).Err()
	if err != nil {
		c.st.redisErrors.Add(1)
		c.ownWritten(own, false)
		c.invalidateLocal(key)
		return fmt.Errorf("cache: set %q: %w", key, err)
	}
	if own != nil {
		// Server-assisted invalidation echoes the write: v is stored once the echo came back
		// and Redis still holds it (local.go, rule 4). Meanwhile reads of this process sent
		// before the write store nothing, and the old local value is gone.
		c.dropLocal(key)
		c.ownWritten(own, true)
		return nil
	}
	// Keep v locally only if no invalidation of the key came in since before the write: one
	// that did may announce a later write by another process. Moving the epoch also keeps reads
	// of this process that were sent before the write from storing what they read.
	if ep.CompareAndSwap(snap, snap+1) {
		if c.local != nil {
			c.local.Invalidate(key)
		}
		c.storeLocal(snap+1, key, v, h)
	} else {
		c.invalidateLocal(key)
	}
	return nil
}

// Delete removes keys from Redis and from the local tier of every process: the "update the
// database, then delete the cache" step. It also drops the keys' leases, so a load running
// concurrently does not write back the value it read before the update. Like [Cache.Set], each
// key's delete and its invalidation notice (none on a Redis Cluster) are one atomic step on the
// key's node. With
// Options.DoubleDelete it deletes them again after that delay (in the background; Close cancels
// pending second deletes). One pipelined Redis round trip (per node on a cluster); errors are
// returned wrapped. After Close it returns [ErrClosed]; for a "" key [ErrEmptyKey]. Safe for
// concurrent use.
func (c *Cache[V]) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	if c.closed.Load() {
		return ErrClosed
	}
	if slices.Contains(keys, "") {
		return ErrEmptyKey
	}
	err := c.deleteNow(ctx, keys)
	if c.cfg.DoubleDelete > 0 {
		c.scheduleDelete(keys)
	}
	return err
}

func (c *Cache[V]) deleteNow(ctx context.Context, keys []string) error {
	calls := make([]luascript.Call, len(keys))
	for i, k := range keys {
		vk := c.valueKey(k)
		calls[i] = luascript.Call{Script: deleteScript, Keys: []string{vk, leaseKey(vk)},
			Args: []any{c.notices, c.notice(noticeInvalidate, k)}}
	}
	cmds := luascript.RunAll(ctx, c.rdb, calls)
	// After the deletes: a read of this process that got the old value either sees the epoch
	// move or has its entry removed here.
	for _, k := range keys {
		c.invalidateLocal(k)
	}
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			c.st.redisErrors.Add(1)
			return fmt.Errorf("cache: delete %v: %w", keys, err)
		}
	}
	return nil
}

// scheduleDelete arranges the second delete of Options.DoubleDelete; Close cancels it.
func (c *Cache[V]) scheduleDelete(keys []string) {
	keys = append([]string(nil), keys...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(c.cfg.DoubleDelete, func() {
		defer c.wg.Done()
		c.mu.Lock()
		delete(c.timers, t)
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.LoadTimeout)
		defer cancel()
		if err := c.deleteNow(ctx, keys); err != nil {
			c.cfg.Logger.Warn("cache: second delete failed", "keys", keys, "err", err)
		}
	})
	c.timers[t] = struct{}{}
}

// Close cancels pending second deletes and the contexts of running loads (their waiters get the
// loader's error, typically context.Canceled), stops the invalidation listener, and waits for
// every goroutine of the Cache to end (a loader that ignores its ctx is waited for). Later calls that need Redis or the
// loader return [ErrClosed]. Close is idempotent, safe for concurrent use, never closes the
// Redis client, and returns nil.
func (c *Cache[V]) Close() error {
	c.closed.Store(true)
	c.cancel()
	c.tel.close()
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		c.wg.Wait()
		return nil
	}
	c.closing = true
	for t := range c.timers {
		if t.Stop() {
			c.wg.Done()
		}
	}
	clear(c.timers)
	sub := c.sub
	c.mu.Unlock()
	if sub != nil && sub.ps != nil {
		_ = sub.ps.Close()
	}
	c.wg.Wait()
	if sub != nil && sub.own != nil {
		_ = sub.own.Close()
	}
	if c.local != nil {
		c.local.StopAllGoroutines()
		c.clock.Stop()
	}
	return nil
}

// goTrack runs fn on a goroutine that Close waits for; false after Close.
func (c *Cache[V]) goTrack(fn func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
	return true
}

// valueKey is where key's envelope lives; its lease is valueKey + ":lease" (same hash slot).
func (c *Cache[V]) valueKey(key string) string { return keys.Tagged(c.cfg.Prefix, key) }

func leaseKey(valueKey string) string { return valueKey + ":lease" }

// ttl returns a jittered lifetime around d.
func (c *Cache[V]) ttl(d time.Duration) time.Duration {
	return jitter.SpreadWith(d, c.cfg.Jitter, c.rand)
}

// encode builds the envelope of v (loaded in loadDur) and its jittered TTL.
func (c *Cache[V]) encode(v V, loadDur time.Duration) ([]byte, header, time.Duration, error) {
	payload, compressed, err := c.marshalPayload(v)
	if err != nil {
		return nil, header{}, 0, err
	}
	now, ttl := c.now(), c.ttl(c.cfg.TTL)
	h := header{compressed: compressed, hard: now.Add(ttl).UnixMilli(), loadDur: loadDur}
	if c.cfg.RefreshAfter > 0 {
		h.soft = now.Add(c.cfg.RefreshAfter).UnixMilli()
	}
	return appendEnvelope(make([]byte, 0, headerLen+len(payload)), h, payload), h, ttl, nil
}

// tombstone builds a negative entry and its jittered TTL; ok is false when negative caching is
// off.
func (c *Cache[V]) tombstone() (env []byte, h header, ttl time.Duration, ok bool) {
	if c.cfg.NegativeTTL < 0 {
		return nil, header{}, 0, false
	}
	ttl = c.ttl(c.cfg.NegativeTTL)
	h = header{tombstone: true, hard: c.now().Add(ttl).UnixMilli()}
	return appendEnvelope(make([]byte, 0, headerLen), h, nil), h, ttl, true
}

// decode turns an envelope into its header and value; errors wrap errDecode and are counted.
func (c *Cache[V]) decode(b []byte) (header, V, error) {
	var v V
	h, payload, err := decodeEnvelope(b)
	if err == nil && !h.tombstone {
		var uerr error
		if v, uerr = c.unmarshalPayload(h, payload); uerr != nil {
			err = fmt.Errorf("%w: %w", errDecode, uerr)
		}
	}
	if err != nil {
		c.st.decodeErrors.Add(1)
	}
	return h, v, err
}

// readRedis reads (sharing a GET in flight, see reads.go) and decodes key's entry: redis.Nil
// when absent, errDecode-wrapped when undecodable (counted), other errors are Redis errors
// (counted unless ctx ended).
func (c *Cache[V]) readRedis(ctx context.Context, key string) (header, V, error) {
	b, err := c.sharedGet(ctx, key)
	if err != nil {
		var zero V
		if !errors.Is(err, redis.Nil) && ctx.Err() == nil {
			c.st.redisErrors.Add(1)
		}
		return header{}, zero, err
	}
	return c.decode(b)
}
