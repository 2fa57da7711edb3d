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
// and *bloom.Redis satisfy it.
type Guard interface {
	MightContain(ctx context.Context, key string) (bool, error)
}

// Cache is a cache-aside of V over Redis, with an optional in-process tier. Create it with [New].
// All methods are safe for concurrent use.
type Cache[V any] struct {
	rdb   redis.UniversalClient
	cfg   config
	st    counters
	fl    flights[V]
	rd    reads                                // concurrent GETs of one key share a round trip
	local *otter.Cache[string, *localEntry[V]] // nil without Options.Local
	clock *otter.CoarseClock                   // the local tier's clock: reading the precise time would double a hit's cost

	id    string        // instance id: tokens and pub/sub messages carry it
	seq   atomic.Uint64 // lease token sequence
	epoch atomic.Uint64 // bumped by every invalidation; a read that saw it move stores nothing locally

	closed atomic.Bool
	stop   context.Context    // cancelled by Close: background loads and waits end early
	cancel context.CancelFunc // cancels stop

	now  func() time.Time // tests move the clock
	rand func() float64   // uniform [0,1); tests make it deterministic

	mu      sync.Mutex // guards the fields below
	closing bool
	wg      sync.WaitGroup // background loads, second deletes, the subscriber
	timers  map[*time.Timer]struct{}
	sub     *subscriber
	waiters map[string]chan struct{} // lease waiters per key, closed on a fill notice
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
// field. New does no I/O.
//
// With Options.Local set, New starts goroutines: one that listens on the invalidation channel
// (Redis pub/sub, one connection of its own), the local tier's periodic clean-up, and a clock
// that reads the time every 10ms (local entries may expire up to that much late). With only
// Options.Lease set, the listener starts at the first wait for another process's lease instead.
// [Cache.Close] stops them all and waits for them.
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
	c.stop, c.cancel = context.WithCancel(context.Background())
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
		c.mu.Unlock()
	}
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
		return zero, ErrEmptyKey
	}
	if e, ok := c.localGet(key); ok {
		if e.notFound {
			return zero, ErrNotFound
		}
		return e.v, nil
	}
	if c.closed.Load() {
		return zero, ErrClosed
	}
	epoch := c.epoch.Load()
	h, v, err := c.redisGet(ctx, key)
	switch {
	case errors.Is(err, redis.Nil), errors.Is(err, errDecode):
		return zero, ErrMiss
	case err != nil:
		return zero, fmt.Errorf("cache: get %q: %w", key, err)
	}
	c.storeLocal(epoch, key, v, h)
	if h.tombstone {
		c.st.negativeHits.Add(1)
		return zero, ErrNotFound
	}
	c.st.redisHits.Add(1)
	return v, nil
}

// Set stores v for key with a jittered TTL, replacing what is there, and invalidates the key in
// the local tier of every process. It also drops any lease on the key, so a load already running
// for it cannot overwrite v with an older value. One Redis round trip; Redis errors are returned
// (wrapped) whatever the policy. After Close it returns [ErrClosed]. Safe for concurrent use.
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
	vk := c.valueKey(key)
	_, err = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		// Lease first: a fill that runs between the two commands then finds its lease gone,
		// instead of overwriting v after it landed.
		p.Del(ctx, leaseKey(vk))
		p.Set(ctx, vk, env, ttl)
		if c.notifies() {
			p.Publish(ctx, c.cfg.channel, encodeNotice(noticeInvalidate, c.id, []string{key}))
		}
		return nil
	})
	c.epoch.Add(1)
	if err != nil {
		c.st.redisErrors.Add(1)
		if c.local != nil {
			c.local.Invalidate(key)
		}
		return fmt.Errorf("cache: set %q: %w", key, err)
	}
	if c.local != nil {
		c.putLocal(key, &localEntry[V]{v: v}, h)
	}
	return nil
}

// Delete removes keys from Redis and from the local tier of every process: the "update the
// database, then delete the cache" step. It also drops the keys' leases, so a load running
// concurrently does not write back the value it read before the update. With
// Options.DoubleDelete it deletes them again after that delay (in the background; Close cancels
// pending second deletes). One Redis round trip; errors are returned wrapped. After Close it
// returns [ErrClosed]. Safe for concurrent use.
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
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			vk := c.valueKey(k)
			p.Del(ctx, vk, leaseKey(vk))
		}
		if c.notifies() {
			p.Publish(ctx, c.cfg.channel, encodeNotice(noticeInvalidate, c.id, keys))
		}
		return nil
	})
	c.epoch.Add(1)
	if c.local != nil {
		for _, k := range keys {
			c.local.Invalidate(k)
		}
	}
	if err != nil {
		c.st.redisErrors.Add(1)
		return fmt.Errorf("cache: delete %v: %w", keys, err)
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
	if sub != nil {
		_ = sub.ps.Close()
	}
	c.wg.Wait()
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

// notifies reports whether writes publish notices: other processes' local tiers or lease
// waiters listen for them.
func (c *Cache[V]) notifies() bool { return c.local != nil || c.cfg.Lease > 0 }

// valueKey is where key's envelope lives; its lease is valueKey + ":lease" (same hash slot).
func (c *Cache[V]) valueKey(key string) string { return keys.Tagged(c.cfg.Prefix, key) }

func leaseKey(valueKey string) string { return valueKey + ":lease" }

// ttl returns a jittered lifetime around d.
func (c *Cache[V]) ttl(d time.Duration) time.Duration {
	return jitter.SpreadWith(d, c.cfg.Jitter, c.rand)
}

// encode builds the envelope of v (loaded in loadDur) and its jittered TTL.
func (c *Cache[V]) encode(v V, loadDur time.Duration) ([]byte, header, time.Duration, error) {
	payload, err := c.cfg.Codec.Marshal(v)
	if err != nil {
		return nil, header{}, 0, err
	}
	now, ttl := c.now(), c.ttl(c.cfg.TTL)
	h := header{hard: now.Add(ttl).UnixMilli(), loadDur: loadDur}
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
		if uerr := c.cfg.Codec.Unmarshal(payload, &v); uerr != nil {
			err = fmt.Errorf("%w: %w", errDecode, uerr)
		}
	}
	if err != nil {
		c.st.decodeErrors.Add(1)
	}
	return h, v, err
}

// redisGet reads and decodes key's entry: redis.Nil when absent, errDecode-wrapped when
// undecodable (counted), other errors are Redis errors (counted unless ctx ended).
func (c *Cache[V]) redisGet(ctx context.Context, key string) (header, V, error) {
	b, err := c.get(ctx, key)
	if err != nil {
		var zero V
		if !errors.Is(err, redis.Nil) && ctx.Err() == nil {
			c.st.redisErrors.Add(1)
		}
		return header{}, zero, err
	}
	return c.decode(b)
}

func (c *Cache[V]) localGet(key string) (*localEntry[V], bool) {
	if c.local == nil {
		return nil, false
	}
	e, ok := c.local.GetIfPresent(key)
	if ok {
		c.st.localHits.Add(1)
	}
	return e, ok
}

// storeLocal puts a value read from Redis into the local tier, unless an invalidation arrived
// since the read started (epoch moved): the read may predate the write that invalidated it.
func (c *Cache[V]) storeLocal(epoch uint64, key string, v V, h header) {
	if c.local == nil || c.epoch.Load() != epoch {
		return
	}
	c.putLocal(key, &localEntry[V]{v: v, notFound: h.tombstone}, h)
}

// putLocal stores e for min(Local.TTL, the time left until the Redis copy expires or, with
// RefreshAfter, turns stale): a local hit is never stale, so once the soft expiry passes the next
// read goes to Redis, serves the stale value there and starts the refresh.
func (c *Cache[V]) putLocal(key string, e *localEntry[V], h header) {
	until := h.hard
	if h.soft != 0 && h.soft < until {
		until = h.soft
	}
	left := time.Duration(until-c.now().UnixMilli()) * time.Millisecond
	e.ttl = min(c.cfg.local.TTL, left)
	if e.ttl <= 0 {
		return
	}
	c.local.Set(key, e)
}
