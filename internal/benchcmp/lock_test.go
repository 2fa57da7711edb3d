package benchcmp

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/lock"
)

func BenchmarkLockUncontended(b *testing.B) {
	ctx := context.Background()
	rdb := newRedis(b)
	const ttl = 10 * time.Second

	// Obtain+Release of one key without contention.
	surge := func(b *testing.B, c *lock.Client, key string) {
		b.ReportAllocs()
		for b.Loop() {
			l, err := c.Obtain(ctx, key, ttl, nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("surge", func(b *testing.B) { surge(b, lock.New(rdb, nil), "bl:surge") })
	// The same with an OpenTelemetry SDK installed (in-memory readers): what recording
	// surge.lock.acquisitions costs per Obtain+Release.
	b.Run("surge-otel-sdk", func(b *testing.B) {
		tp, mp := otelSDK(b)
		surge(b, lock.New(rdb, &lock.Options{MeterProvider: mp, TracerProvider: tp}), "bl:surge-otel")
	})
	b.Run("bsm-redislock", func(b *testing.B) {
		c := redislock.New(rdb)
		b.ReportAllocs()
		for b.Loop() {
			l, err := c.Obtain(ctx, "bl:bsm", ttl, nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("redsync", func(b *testing.B) {
		rs := redsync.New(goredis.NewPool(rdb))
		b.ReportAllocs()
		for b.Loop() {
			m := rs.NewMutex("bl:redsync", redsync.WithExpiry(ttl), redsync.WithTries(1))
			if err := m.LockContext(ctx); err != nil {
				b.Fatal(err)
			}
			if _, err := m.UnlockContext(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// handoff runs 8 goroutines that take turns on one lock for b.N acquisitions in total and
// reports the median and p99 time from one holder's release to the next holder's acquisition.
// A releaser does not contend again until another goroutine has taken the lock, so every gap is
// a real hand-off to a waiter, not the releaser barging back in.
func handoff(b *testing.B, obtain func(ctx context.Context) (release func() error, err error)) {
	const workers = 8
	var (
		releasedAt atomic.Int64 // unix nanos of the last release; 0 before the first
		remaining  atomic.Int64
		mu         sync.Mutex
		acquired   = sync.NewCond(&mu)
		gen        int64 // acquisitions so far, under mu
		done       bool  // no more acquisitions will happen, under mu
		gaps       []time.Duration
	)
	remaining.Store(int64(b.N))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for remaining.Add(-1) >= 0 {
				release, err := obtain(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				if r := releasedAt.Load(); r != 0 {
					gaps = append(gaps, time.Since(time.Unix(0, r)))
				}
				gen++
				my := gen
				acquired.Broadcast()
				mu.Unlock()

				time.Sleep(200 * time.Microsecond) // the critical section
				releasedAt.Store(time.Now().UnixNano())
				if err := release(); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				for gen == my && !done && remaining.Load() > 0 {
					acquired.Wait()
				}
				mu.Unlock()
			}
			mu.Lock()
			done = true
			acquired.Broadcast()
			mu.Unlock()
		})
	}
	wg.Wait()
	b.StopTimer()
	if len(gaps) == 0 {
		return
	}
	slices.Sort(gaps)
	b.ReportMetric(float64(gaps[len(gaps)/2])/1e6, "median-ms")
	b.ReportMetric(float64(gaps[len(gaps)*99/100])/1e6, "p99-ms")
}

func BenchmarkLockHandoff(b *testing.B) {
	rdb := newRedis(b)
	const ttl = 10 * time.Second

	b.Run("surge", func(b *testing.B) {
		handoff(b, surgeObtain(lock.New(rdb, nil), "bl:handoff:surge", ttl))
	})
	b.Run("bsm-redislock-linear10ms", func(b *testing.B) {
		handoff(b, bsmObtain(redislock.New(rdb), "bl:handoff:bsm", ttl, 10*time.Millisecond))
	})
}

// contended runs 8 goroutines that obtain and release one key as fast as they can for b.N
// acquisitions in total, and reports acquisitions per second. Each holder works 50µs under
// the lock, so the figure is dominated by how fast the lock moves from one holder to the next.
// It also reports the CPU time each acquisition cost this process (client-cpu-µs, the 50µs of
// work included) and the Redis server (redis-cpu-µs): on a loaded machine they vary less than
// the throughput.
func contended(b *testing.B, rdb *redis.Client, obtain func(ctx context.Context) (release func() error, err error)) {
	const workers = 8
	var remaining atomic.Int64
	remaining.Store(int64(b.N))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Warm up outside the timer: connections, the scripts' SHA and the subscription.
	for range workers {
		release, err := obtain(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := release(); err != nil {
			b.Fatal(err)
		}
	}
	clientCPU0, redisCPU0 := processCPU(), serverCPU(b, rdb)
	redisPID := int(infoField(b, rdb, "server", "process_id", ""))
	clientSw0, redisSw0 := sleeps(0), sleeps(redisPID)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for remaining.Add(-1) >= 0 {
				release, err := obtain(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				spin(50 * time.Microsecond) // the critical section
				if err := release(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "acq/s")
	b.ReportMetric(float64(processCPU()-clientCPU0)/float64(time.Microsecond)/float64(b.N), "client-cpu-µs")
	b.ReportMetric(float64(serverCPU(b, rdb)-redisCPU0)/float64(time.Microsecond)/float64(b.N), "redis-cpu-µs")
	b.ReportMetric(float64(sleeps(0)-clientSw0)/float64(b.N), "client-sleeps")
	b.ReportMetric(float64(sleeps(redisPID)-redisSw0)/float64(b.N), "redis-sleeps")
}

// sleeps returns how many times the threads of process pid (0: this one) have blocked so far
// (voluntary context switches, from /proc): each lets a vCPU go idle, and on an otherwise quiet
// VM the wake-up that follows costs more than the work in between. 0 when unknown.
func sleeps(pid int) int64 {
	dir := "/proc/self/task"
	if pid > 0 {
		dir = "/proc/" + strconv.Itoa(pid) + "/task"
	}
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/status")
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				k, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += k
			}
		}
	}
	return n
}

// surgeObtain returns an obtain func for handoff and contended: Obtain with a one-minute wait.
func surgeObtain(c *lock.Client, key string, ttl time.Duration) func(context.Context) (func() error, error) {
	return func(ctx context.Context) (func() error, error) {
		l, err := c.Obtain(ctx, key, ttl, &lock.ObtainOptions{Wait: time.Minute})
		if err != nil {
			return nil, err
		}
		return func() error { return l.Release(context.Background()) }, nil
	}
}

// bsmObtain is surgeObtain for bsm/redislock, polling every backoff for at most a minute.
func bsmObtain(c *redislock.Client, key string, ttl, backoff time.Duration) func(context.Context) (func() error, error) {
	return func(ctx context.Context) (func() error, error) {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		l, err := c.Obtain(wctx, key, ttl, &redislock.Options{RetryStrategy: redislock.LinearBackoff(backoff)})
		if err != nil {
			return nil, err
		}
		return func() error { return l.Release(context.Background()) }, nil
	}
}

// spin busy-waits for d: a sleep would round up to the timer resolution.
func spin(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}

func BenchmarkLockContended(b *testing.B) {
	rdb := newRedis(b)
	const ttl = 10 * time.Second

	b.Run("surge", func(b *testing.B) {
		contended(b, rdb, surgeObtain(lock.New(rdb, nil), "bc:surge", ttl))
	})
	b.Run("bsm-redislock-linear1ms", func(b *testing.B) {
		contended(b, rdb, bsmObtain(redislock.New(rdb), "bc:bsm", ttl, time.Millisecond))
	})
	b.Run("redsync-1ms", func(b *testing.B) {
		rs := redsync.New(goredis.NewPool(rdb))
		contended(b, rdb, func(ctx context.Context) (func() error, error) {
			m := rs.NewMutex("bc:redsync", redsync.WithExpiry(ttl), redsync.WithTries(60000),
				redsync.WithRetryDelay(time.Millisecond))
			if err := m.LockContext(ctx); err != nil {
				return nil, err
			}
			return func() error { _, err := m.UnlockContext(context.Background()); return err }, nil
		})
	})
}
