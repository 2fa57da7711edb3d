package lock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

// Real-server tests: behaviour that miniredis does not model (expiry in real time, pub/sub
// timing, paused servers, replication, killed nodes).

func TestServerMutualExclusion(t *testing.T) {
	s := redistest.Server(t)
	ctx := ctxT(t)
	var clients []*Client
	for range 3 {
		clients = append(clients, New(s.NewClient(&redis.Options{PoolSize: 25}), nil))
	}
	counter := s.Client()
	var sections, notObtained, inside atomic.Int64
	stop := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for _, c := range clients {
		for range 20 {
			wg.Go(func() {
				for time.Now().Before(stop) {
					l, err := c.Obtain(ctx, "mx", time.Second, &ObtainOptions{Wait: time.Second})
					if errors.Is(err, ErrNotObtained) {
						notObtained.Add(1)
						continue
					}
					if !assert.NoError(t, err) {
						return
					}
					if inside.Add(1) != 1 {
						t.Error("two holders at once")
					}
					// A read-modify-write that loses updates unless it is exclusive.
					n, err := counter.Get(ctx, "mx:counter").Int64()
					if err != nil && !errors.Is(err, redis.Nil) {
						t.Error(err)
					}
					assert.NoError(t, counter.Set(ctx, "mx:counter", n+1, 0).Err())
					sections.Add(1)
					inside.Add(-1)
					assert.NoError(t, l.Release(ctx))
				}
			})
		}
	}
	wg.Wait()
	final, err := counter.Get(ctx, "mx:counter").Int64()
	require.NoError(t, err)
	assert.Equal(t, sections.Load(), final)
	assert.Greater(t, final, int64(60), "every goroutine got through about once at least")
	t.Logf("%d critical sections, %d waits ran out", final, notObtained.Load())
}

func TestServerFencesStrictlyIncrease(t *testing.T) {
	s := redistest.Server(t)
	ctx := ctxT(t)
	c := New(s.NewClient(&redis.Options{PoolSize: 12}), nil)
	var mu sync.Mutex
	var fences []int64
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 50 {
				l, err := c.Obtain(ctx, "fenced", 5*time.Second, &ObtainOptions{Wait: 20 * time.Second})
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock() // in holding order: the lock serialises these appends
				fences = append(fences, l.Fence())
				mu.Unlock()
				assert.NoError(t, l.Release(ctx))
			}
		})
	}
	wg.Wait()
	require.Len(t, fences, 500)
	for i := 1; i < len(fences); i++ {
		require.Greater(t, fences[i], fences[i-1], "acquisition %d", i)
	}
}

func TestServerWatchdog(t *testing.T) {
	s := redistest.Server(t)
	ctx := ctxT(t)
	c := New(s.NewClient(nil), nil)
	// Renewals every ttl/3: a process stalled for a whole ttl (a loaded CI machine) would lose
	// the lock rightly, so the ttl leaves room for that.
	const ttl = time.Second
	l, err := c.Obtain(ctx, "dog", ttl, &ObtainOptions{AutoRenew: true})
	require.NoError(t, err)

	// The holder "works" until the watchdog has renewed the lock three times (its PTTL went up)
	// and past the first ttl, so without renewals it would have expired.
	start, renewals, last := time.Now(), 0, ttl
	for renewals < 3 || time.Since(start) <= ttl {
		require.Less(t, time.Since(start), 20*time.Second, "the watchdog renewed the lock %d times, not 3", renewals)
		d, err := l.TTL(ctx)
		require.NoError(t, err, "still held while renewed")
		if d > last {
			renewals++
		}
		last = d
		time.Sleep(10 * time.Millisecond) // polling the key, not waiting for an event
	}
	select {
	case <-l.Lost():
		t.Fatal("lost while renewed")
	default:
	}

	s.Pause(3 * ttl)
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("Lost not closed while the server was paused past the ttl")
	}
	require.Eventually(t, func() bool { return s.Client().Ping(ctx).Err() == nil }, 10*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, l.Release(ctx), ErrNotHeld)
	l2, err := c.Obtain(ctx, "dog", ttl, nil)
	require.NoError(t, err)
	assert.Greater(t, l2.Fence(), l.Fence())
}

func TestServerNoRenewalAfterRelease(t *testing.T) {
	s := redistest.Server(t)
	ctx := ctxT(t)
	mon := monitor(t, s.Addr())
	rdb := s.NewClient(nil)
	// Renewals every 200ms: a ttl a loaded CI machine's stalls do not outlast.
	const ttl = 600 * time.Millisecond
	l, err := New(rdb, nil).Obtain(ctx, "quiet", ttl, &ObtainOptions{AutoRenew: true})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return mon.count("pexpire") >= 3 }, 20*time.Second, time.Millisecond, "renewals seen")
	require.NoError(t, l.Release(ctx))
	mon.mark(t, rdb, "released")
	time.Sleep(ttl) // three renewal periods in which nothing may happen
	mon.mark(t, rdb, "end")
	// Not one command on the key (no refresh script, let alone a PEXPIRE) after Release.
	assert.Empty(t, mon.between(`"released"`, `"end"`))
}

func TestServerWaiterWakesOnRelease(t *testing.T) {
	s := redistest.Server(t)
	testWakeOnRelease(t, New(s.NewClient(nil), nil), s.Client())
}

func TestServerWaitReplicas(t *testing.T) {
	primary := redistest.Server(t, redistest.WithArgs("--repl-diskless-sync-delay", "0"))
	replica := redistest.Server(t, redistest.WithArgs("--replicaof", "127.0.0.1", fmt.Sprint(primary.Port())))
	ctx := ctxT(t)
	require.Eventually(t, func() bool {
		info, err := primary.Client().Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "connected_slaves:1") && strings.Contains(info, "state=online")
	}, 10*time.Second, 10*time.Millisecond)

	c := New(primary.Client(), &Options{WaitReplicas: 1})
	l, err := c.Obtain(ctx, "rep", time.Minute, nil)
	require.NoError(t, err)
	v, err := replica.Client().Get(ctx, "surge:lock:{rep}").Result()
	require.NoError(t, err, "on the replica when Obtain returns")
	assert.True(t, strings.HasPrefix(v, l.Token()+":"))
	require.NoError(t, l.Release(ctx))

	c = New(primary.Client(), &Options{WaitReplicas: 2, WaitTimeout: 50 * time.Millisecond})
	_, err = c.Obtain(ctx, "rep", time.Minute, nil)
	require.ErrorIs(t, err, ErrNotReplicated)
	require.ErrorContains(t, err, "1 of 2")
	n, err := primary.Client().Exists(ctx, "surge:lock:{rep}").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "released after too few acknowledgements")
}

func TestServerDownIsAClearErrorNotAHang(t *testing.T) {
	s := redistest.Server(t)
	rdb := s.NewClient(&redis.Options{MaxRetries: -1})
	c := New(rdb, nil)
	s.Kill()
	ctx, cancel := context.WithTimeout(ctxT(t), 2*time.Second)
	defer cancel()
	_, err := c.Obtain(ctx, "k", time.Second, &ObtainOptions{Wait: time.Minute})
	require.Error(t, err)
	assert.NotErrorIs(t, err, ErrNotObtained)
	assert.NoError(t, ctx.Err(), "returned before ctx ended")
}

func TestServerRedlockSurvivesMinorityLoss(t *testing.T) {
	ctx := ctxT(t)
	var servers []*redistest.RedisServer
	var rdbs []redis.UniversalClient
	for range 3 {
		s := redistest.Server(t)
		servers = append(servers, s)
		rdbs = append(rdbs, s.NewClient(&redis.Options{MaxRetries: -1}))
	}
	r := NewRedlock(rdbs, nil)
	l, err := r.Obtain(ctx, "rl", time.Second, nil)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))

	servers[0].Kill()
	l, err = r.Obtain(ctx, "rl", time.Second, nil)
	require.NoError(t, err, "two of three")
	assert.Greater(t, l.Fence(), int64(1))
	require.NoError(t, l.Refresh(ctx, time.Second))
	require.NoError(t, l.Release(ctx))

	servers[1].Kill()
	_, err = r.Obtain(ctx, "rl", time.Second, nil)
	require.ErrorIs(t, err, ErrNotObtained)
	n, err := rdbs[2].Exists(ctx, "surge:lock:{rl}").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the lone node was released")
}

// monitorLog records a redis-server's MONITOR stream.
type monitorLog struct {
	mu    sync.Mutex
	lines []string
}

func monitor(t *testing.T, addr string) *monitorLog {
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	_, err = conn.Write([]byte("MONITOR\r\n"))
	require.NoError(t, err)
	m := &monitorLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			m.mu.Lock()
			m.lines = append(m.lines, sc.Text())
			m.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-done
	})
	return m
}

func (m *monitorLog) count(word string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, l := range m.lines {
		if strings.Contains(strings.ToLower(l), word) {
			n++
		}
	}
	return n
}

// mark sends ECHO word and waits until the monitor has seen it: everything before is recorded.
func (m *monitorLog) mark(t *testing.T, rdb *redis.Client, word string) {
	require.NoError(t, rdb.Echo(context.Background(), word).Err())
	require.Eventually(t, func() bool { return m.count(`"`+word+`"`) > 0 }, 10*time.Second, time.Millisecond)
}

// between returns the lines after the one containing from and before the one containing to.
func (m *monitorLog) between(from, to string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := slices.IndexFunc(m.lines, func(l string) bool { return strings.Contains(l, from) })
	if i < 0 {
		return nil
	}
	rest := m.lines[i+1:]
	j := slices.IndexFunc(rest, func(l string) bool { return strings.Contains(l, to) })
	if j < 0 {
		return nil
	}
	return slices.Clone(rest[:j])
}

// With an hour-long backoff and long TTLs, only release messages can move waiters on: any lost
// wake-up (a release between a failed try and an active subscription) stalls this test.
func TestServerNoLostWakeUps(t *testing.T) {
	s := redistest.Server(t)
	ctx := ctxT(t)
	var clients []*Client
	for range 2 {
		c := New(s.NewClient(nil), nil)
		c.g.queueLease = time.Hour // no renewal of the queue place may stand in for a wake-up
		clients = append(clients, c)
	}
	opt := &ObtainOptions{Wait: 20 * time.Second, Backoff: func(int) time.Duration { return time.Hour }}
	var held atomic.Int64
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			c := clients[i%2]
			for range 25 {
				l, err := c.Obtain(ctx, "nolost", time.Minute, opt)
				if !assert.NoError(t, err) {
					return
				}
				held.Add(1)
				assert.NoError(t, l.Release(ctx))
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int64(200), held.Load())
}
