package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/surgekit/surge/bloom"
	"github.com/surgekit/surge/cache"
	"github.com/surgekit/surge/events"
	"github.com/surgekit/surge/events/outbox"
	"github.com/surgekit/surge/examples/internal/backend"
	"github.com/surgekit/surge/lock"
	"github.com/surgekit/surge/ratelimit"
)

// ordersTopic carries OrderCreated and OrderPaid, keyed by order id.
const ordersTopic = "orders"

// Event types.
const (
	OrderCreated = "OrderCreated"
	OrderPaid    = "OrderPaid"
)

// service is the order service: the database and every surge piece in front of and
// behind it. Build it with newService, start its background work with start, end it
// with Close.
type service struct {
	cfg     config
	tel     *telemetry   // OpenTelemetry providers handed to every component
	prefix  string       // starts the Redis keys of the cache, rate limit and idempotency records
	log     *slog.Logger // application log (background errors, job runs, lag alerts)
	db      store        // the database (SQLite)
	sqlDB   *DB          // the same, for the outbox and Close
	loads   loadCounts   // finished database loads per order id: tells a cache hit from a miss
	redis   *backend.Redis
	kafka   *backend.Kafka
	guard   *bloom.Local        // every existing order id: the Bloom guard of the cache
	orders  *cache.Cache[Order] // cache-aside of GET /orders/:id
	limiter ratelimit.Limiter   // per-client limit on GET /orders/:id
	limName string              // which limiter, for the start-up banner
	locks   *lock.Client        // guards the nightly job
	pub     *events.Producer
	outbox  *outbox.Outbox // the handlers add OrderCreated/OrderPaid here, in the order's transaction
	relay   *outbox.Relay  // publishes the outbox's committed events with pub
	inv     *inventory
	cons    []*events.Consumer
	lag     *events.LagMonitor // watches the inventory consumer's group
	invals  atomic.Int64       // cache invalidations made by the invalidation consumer

	closers  []func() error // closed last, in order
	wg       sync.WaitGroup // background goroutines started by start
	stop     context.CancelFunc
	closeErr error
	once     sync.Once
}

// newService connects the backends and builds every component. It starts no goroutine
// except those the components document (the cache's invalidation listener).
func newService(ctx context.Context, cfg config, out io.Writer, log *slog.Logger) (s *service, err error) {
	// The database lives in this process's memory and is filled anew on every start, so what
	// is cached about it must not outlive the process: keys carry a per-process prefix. (A real
	// service, whose instances share one database, uses a fixed prefix.) The nightly job's lock
	// keeps a fixed name: it is what the instances share.
	s = &service{cfg: cfg, log: log, inv: newInventory(), prefix: fmt.Sprintf("orderservice:%x:", time.Now().UnixNano())}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	path := cfg.DBPath
	if path == "" {
		dir, err := os.MkdirTemp("", "orderservice-")
		if err != nil {
			return s, err
		}
		s.closers = append(s.closers, func() error { return os.RemoveAll(dir) })
		path = filepath.Join(dir, "orders.db")
	}
	if s.sqlDB, err = OpenDB(ctx, path, cfg.Orders, cfg.DBLatency, cfg.Seed); err != nil {
		return s, err
	}
	s.db = s.sqlDB
	if s.tel = cfg.Telemetry; s.tel == nil {
		if s.tel, err = newTelemetry(); err != nil {
			return s, err
		}
	}
	// The outbox table lives in the orders database: an order and its event commit together.
	if s.outbox, err = outbox.New(s.sqlDB.SQL(), &outbox.Options{Dialect: outbox.SQLite, Logger: log}); err != nil {
		return s, err
	}
	if s.redis, err = backend.StartRedis(ctx, out); err != nil {
		return s, err
	}
	if s.kafka, err = backend.StartKafka(ctx, out, ordersTopic); err != nil {
		return s, err
	}

	// The Bloom guard holds every order id, warmed from the database at start-up and added to
	// on every create. It is in-process (bloom.Local): lookups cost ~100 ns and no round trip.
	// With several instances over one database, each must also learn the ids the others
	// create: consume OrderCreated in a consumer group of its own (every instance sees every
	// event), or share one bloom.Redis filter instead.
	if s.guard, err = bloom.NewLocal(uint(max(2*cfg.Orders, 1000)), 0.001); err != nil {
		return s, err
	}
	if _, err = bloom.Warm(ctx, s.guard, s.db.IDs()); err != nil {
		return s, err
	}
	s.orders, err = cache.New[Order](s.redis.Client, &cache.Options{
		Prefix:         s.prefix + "order:",
		TTL:            10 * time.Minute,
		Jitter:         0.1,             // TTLs spread over 9-11 min: no avalanche of expiries
		NegativeTTL:    time.Minute,     // "no such order" remembered for ids the Bloom filter let by
		RefreshAfter:   5 * time.Minute, // past 5 min: serve stale, refresh in the background
		Lease:          2 * time.Second, // one load per key across all instances
		Local:          &cache.LocalOptions{MaxEntries: 20_000, TTL: 30 * time.Second},
		Guard:          s.guard,
		Logger:         log,
		TracerProvider: s.tel.Tracers,
		MeterProvider:  s.tel.Meters,
	})
	if err != nil {
		return s, err
	}
	if err = s.newLimiter(); err != nil {
		return s, err
	}
	s.locks = lock.New(s.redis.Client, &lock.Options{Prefix: "orderservice:lock:", Logger: log,
		TracerProvider: s.tel.Tracers, MeterProvider: s.tel.Meters})
	if s.pub, err = events.NewProducer(events.ProducerConfig{Brokers: s.kafka.Brokers, Logger: log,
		TracerProvider: s.tel.Tracers, MeterProvider: s.tel.Meters, Propagator: s.tel.Propagator}); err != nil {
		return s, err
	}
	if s.relay, err = outbox.NewRelay(s.outbox, s.pub, &outbox.RelayOptions{Logger: log}); err != nil {
		return s, err
	}
	return s, s.newConsumers()
}

// newLimiter builds the per-client limit of GET /orders/:id. With a real Redis it is the
// shared Redis token bucket (one budget across instances), falling back to a local twin if
// Redis fails. miniredis runs Lua far slower than Redis, so in embedded mode (unless
// -limiter redis) the in-process ratelimit.Local enforces the same limit.
func (s *service) newLimiter() error {
	lim := ratelimit.Limit{Rate: s.cfg.Rate, Burst: max(1, int(s.cfg.Rate)), Name: "per-client"}
	local, err := ratelimit.NewLocal(&ratelimit.LocalOptions{MeterProvider: s.tel.Meters}, lim)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, local.Close)
	kind := s.cfg.Limiter
	if kind == "auto" {
		kind = "redis"
		if s.redis.Embedded {
			kind = "local"
		}
	}
	switch kind {
	case "local":
		s.limiter, s.limName = local, fmt.Sprintf("ratelimit.Local (in-process), %g/s burst %d", lim.Rate, lim.Burst)
	case "redis":
		r, err := ratelimit.NewRedis(s.redis.Client, &ratelimit.RedisOptions{
			Prefix: s.prefix + "rl:", OnRedisError: ratelimit.Fallback(local), Logger: s.log, MeterProvider: s.tel.Meters,
		}, lim)
		if err != nil {
			return err
		}
		s.limiter, s.limName = r, fmt.Sprintf("ratelimit.Redis (local fallback), %g/s burst %d", lim.Rate, lim.Burst)
	default:
		return fmt.Errorf("-limiter %q: want auto, redis or local", s.cfg.Limiter)
	}
	return nil
}

// start runs the outbox relay, the consumers and the nightly job in the background until Close.
func (s *service) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.relay.Run(ctx) // errors only if already running; failed rounds go to s.log and Stats
	}()
	for _, c := range s.cons {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := c.Run(ctx); err != nil {
				s.log.Error("consumer stopped", "err", err)
			}
		}()
	}
	if s.cfg.LagEvery > 0 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			// Give the consumer group one interval to join and commit: before that the
			// group does not exist and a check could only report that.
			t := time.NewTimer(s.cfg.LagEvery)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_ = s.lag.Run(ctx) // returns nil when ctx ends; check errors go to s.log
		}()
	}
	if s.cfg.JobEvery > 0 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			t := time.NewTicker(s.cfg.JobEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					_, _, _ = s.expireUnpaid(ctx, "this instance")
				}
			}
		}()
	}
}

// expireUnpaid is the nightly-style job: it expires orders left unpaid for 48 hours and drops
// them from the cache. lock.Do makes sure one instance runs it at a time; the others get
// lock.ErrNotObtained and skip. It reports whether this caller ran it and how many orders
// it expired.
func (s *service) expireUnpaid(ctx context.Context, who string) (ran bool, expired int, err error) {
	err = s.locks.Do(ctx, "expire-unpaid", time.Minute, nil, func(ctx context.Context) error {
		ids, err := s.db.ExpireUnpaid(ctx, time.Now().Add(-48*time.Hour))
		if err != nil {
			return err
		}
		expired = len(ids)
		if len(ids) > 0 {
			if err := s.orders.Delete(ctx, ids...); err != nil {
				return err
			}
		}
		s.log.Info("nightly job: expired unpaid orders", "by", who, "expired", len(ids), "fence", lock.FromContext(ctx).Fence())
		return nil
	})
	switch {
	case errors.Is(err, lock.ErrNotObtained):
		s.log.Info("nightly job: another instance holds the lock, skipping", "by", who)
		return false, 0, nil
	case err != nil:
		s.log.Error("nightly job failed", "by", who, "err", err)
		return false, 0, err
	}
	return true, expired, nil
}

// Close stops the relay, the consumers and the job (consumers drain and commit), flushes the
// producer, closes the cache, the database and the backends. Idempotent.
func (s *service) Close() error {
	s.once.Do(func() {
		if s.stop != nil {
			s.stop()
		}
		s.wg.Wait()
		if s.lag != nil {
			s.lag.Close()
		}
		if s.pub != nil {
			s.pub.Close()
		}
		if s.orders != nil {
			s.closeErr = errors.Join(s.closeErr, s.orders.Close())
		}
		if s.sqlDB != nil {
			s.closeErr = errors.Join(s.closeErr, s.sqlDB.Close())
		}
		for _, c := range s.closers {
			s.closeErr = errors.Join(s.closeErr, c())
		}
		if s.kafka != nil {
			s.kafka.Close()
		}
		if s.redis != nil {
			s.closeErr = errors.Join(s.closeErr, s.redis.Close())
		}
		if s.tel != nil && s.tel.Shutdown != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.closeErr = errors.Join(s.closeErr, s.tel.Shutdown(ctx))
			cancel()
		}
	})
	return s.closeErr
}
