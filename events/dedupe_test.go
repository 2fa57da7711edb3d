package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/surgekit/surge/internal/kafkatest"
	"github.com/surgekit/surge/internal/redistest"
)

func TestRedisDeduperClaimDoneRelease(t *testing.T) {
	m, rdb := redistest.Mini(t)
	d := NewRedisDeduper(rdb, time.Hour)
	ctx := testCtx(t, 5*time.Second)

	tok, err := d.Claim(ctx, "g:e1", time.Minute)
	require.NoError(t, err)
	_, err = d.Claim(ctx, "g:e1", time.Minute)
	require.ErrorIs(t, err, ErrClaimed, "a second claim waits for the first")

	// A release with a stale token does nothing; the owner's release frees the id.
	require.NoError(t, d.Release(ctx, "g:e1", "c:someone-else"))
	_, err = d.Claim(ctx, "g:e1", time.Minute)
	require.ErrorIs(t, err, ErrClaimed)
	require.NoError(t, d.Release(ctx, "g:e1", tok))
	tok, err = d.Claim(ctx, "g:e1", time.Minute)
	require.NoError(t, err)

	require.NoError(t, d.Done(ctx, "g:e1", tok))
	_, err = d.Claim(ctx, "g:e1", time.Minute)
	require.ErrorIs(t, err, ErrDuplicate)
	require.NoError(t, d.Release(ctx, "g:e1", tok), "releasing after done keeps it done")
	_, err = d.Claim(ctx, "g:e1", time.Minute)
	require.ErrorIs(t, err, ErrDuplicate)
	require.InDelta(t, time.Hour.Seconds(), m.TTL(DedupePrefix+"{g:e1}").Seconds(), 1, "done lasts ttl")

	// A lease that runs out (a crashed handler) lets the next claim through.
	_, err = d.Claim(ctx, "g:e2", 500*time.Millisecond)
	require.NoError(t, err)
	m.FastForward(time.Second)
	_, err = d.Claim(ctx, "g:e2", time.Minute)
	require.NoError(t, err)

	_, err = d.Claim(ctx, "g:e3", 0)
	require.ErrorContains(t, err, "lease")
	m.SetError("LOADING")
	_, err = d.Claim(ctx, "g:e4", time.Minute)
	require.ErrorContains(t, err, "g:e4")
	require.False(t, errors.Is(err, ErrClaimed) || errors.Is(err, ErrDuplicate))
}

func TestRedisDeduperOnARealServerOneWinner(t *testing.T) {
	srv := redistest.Server(t)
	d := NewRedisDeduper(srv.Client(), time.Minute)
	ctx := testCtx(t, 10*time.Second)
	var wins atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if _, err := d.Claim(ctx, "g:race", time.Minute); err == nil {
				wins.Add(1)
			} else {
				require.ErrorIs(t, err, ErrClaimed)
			}
		})
	}
	wg.Wait()
	require.EqualValues(t, 1, wins.Load())

	_, err := d.Claim(ctx, "g:lease", 200*time.Millisecond)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := d.Claim(ctx, "g:lease", time.Minute)
		return err == nil
	}, 5*time.Second, 20*time.Millisecond, "the lease expires on the server's clock")
}

func TestRebalanceMidProcessingHandlesEachEventOnce(t *testing.T) {
	const n, keys = 600, 30
	kc := kafkatest.Cluster(t, "orders")
	_, rdb := redistest.Mini(t)
	dd := NewRedisDeduper(rdb, time.Hour)
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 60*time.Second)
	require.NoError(t, p.Publish(ctx, "orders", seqEvents(t, n, keys)...))

	log := newOrderLog()
	var byA, byB atomic.Int64
	cfg := func(counter *atomic.Int64) ConsumerConfig {
		return ConsumerConfig{Group: "g", Topics: []string{"orders"}, Concurrency: 4, Deduper: dd,
			CommitInterval: 50 * time.Millisecond,
			Handler: func(ctx context.Context, ev Event) error {
				time.Sleep(2 * time.Millisecond)
				counter.Add(1)
				log.add(t, ev)
				return nil
			}}
	}
	a := startConsumer(t, kc, cfg(&byA))
	var b *runner
	require.Eventually(t, func() bool { return log.distinct() >= 100 }, 20*time.Second, time.Millisecond)
	b = startConsumer(t, kc, cfg(&byB))
	require.Eventually(t, func() bool { return log.distinct() == n }, 40*time.Second, 5*time.Millisecond)
	require.NoError(t, a.stop())
	require.NoError(t, b.stop())

	require.Empty(t, log.bad, "per-key order across the handover")
	for id, c := range log.count {
		require.Equal(t, 1, c, "event %s handled %d times", id, c)
	}
	require.Positive(t, byA.Load())
	require.Positive(t, byB.Load(), "the second member took partitions over")
	// Keys finish out of offset order, so records done above a revoked partition's commit
	// point reach B again: those, and only those, the deduper absorbs.
	require.EqualValues(t, n, a.c.Stats().Handled+b.c.Stats().Handled)
	t.Logf("redeliveries absorbed by the deduper: %d", a.c.Stats().Deduped+b.c.Stats().Deduped)
	require.Equal(t, endOffsets(kc, "orders"), committed(t, kc, "g", "orders"))
}

// killableDeduper releases nothing once killed, as a dead process would not.
type killableDeduper struct {
	Deduper
	killed *atomic.Bool
}

func (d killableDeduper) Release(ctx context.Context, id, token string) error {
	if d.killed.Load() {
		return nil
	}
	return d.Deduper.Release(ctx, id, token)
}

// TestCrashRedeliversEverythingAndTheDeduperMakesItOnce kills a consumer mid-batch (no commit
// reaches Kafka, claims are left behind, handlers are cancelled at once) and starts another:
// every event is handled at least once, and with the Redis deduper exactly once.
func TestCrashRedeliversEverythingAndTheDeduperMakesItOnce(t *testing.T) {
	for _, dedupe := range []bool{false, true} {
		t.Run(fmt.Sprintf("dedupe=%v", dedupe), func(t *testing.T) {
			const n, keys, beforeCrash = 90, 9, 30
			kc := kafkatest.Cluster(t, "orders")
			var dd, dda Deduper
			var killed atomic.Bool
			if dedupe {
				dd = NewRedisDeduper(redistest.Server(t).Client(), time.Hour)
				dda = killableDeduper{dd, &killed}
			}
			p := newTestProducer(t, kc)
			ctx := testCtx(t, 60*time.Second)
			require.NoError(t, p.Publish(ctx, "orders", seqEvents(t, n, keys)...))

			var effects idSet
			var blocked atomic.Int64
			var handled atomic.Int64
			a, err := NewConsumer(ConsumerConfig{Brokers: kc.Seeds(), Group: "g", Topics: []string{"orders"},
				Concurrency: 4, Deduper: dda, DedupeLease: 300 * time.Millisecond, CommitInterval: time.Hour,
				ShutdownTimeout: time.Nanosecond, KafkaOptions: groupOpts(),
				Handler: func(ctx context.Context, ev Event) error {
					if handled.Add(1) > beforeCrash {
						blocked.Add(1)
						<-ctx.Done() // killed mid-handling: no side effect
						return ctx.Err()
					}
					effects.add(ev.ID)
					return nil
				}})
			require.NoError(t, err)
			ra := runConsumer(t, a)
			require.Eventually(t, func() bool { return blocked.Load() >= 4 }, 20*time.Second, time.Millisecond)
			// The kill: no commit reaches the group, no claim is released, handlers end now.
			noCommits := kc.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Group: "g",
				Err: kerr.GroupAuthorizationFailed, Count: -1})
			killed.Store(true)
			// The final commit is refused, unless nothing was committable: every partition's
			// first record may belong to a key whose run was blocked, and then no commit is sent.
			if err := ra.stop(); err != nil || a.Stats().Commits+a.Stats().CommitErrors > 0 {
				require.ErrorIs(t, err, kerr.GroupAuthorizationFailed, "the final commit did not land")
			} else {
				t.Log("nothing was committable at the crash: no final commit was sent")
			}
			noCommits.Remove()
			require.Empty(t, committed(t, kc, "g", "orders"), "the crashed consumer committed nothing")

			b := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"orders"}, Concurrency: 4,
				Deduper: dd, DedupeLease: 300 * time.Millisecond, CommitInterval: 20 * time.Millisecond,
				Backoff: func(int) time.Duration { return 50 * time.Millisecond },
				Handler: func(_ context.Context, ev Event) error {
					effects.add(ev.ID)
					return nil
				}})
			require.Eventually(t, func() bool { return effects.len() == n }, 30*time.Second, 5*time.Millisecond)
			require.Eventually(t, func() bool {
				return total(committed(t, kc, "g", "orders")) == n
			}, 20*time.Second, 10*time.Millisecond)
			require.NoError(t, b.stop())

			twice := 0
			for _, c := range effects.snapshot() {
				require.GreaterOrEqual(t, c, 1)
				if c > 1 {
					twice++
				}
			}
			if dedupe {
				require.Zero(t, twice, "with the deduper every side effect happens once")
				require.EqualValues(t, beforeCrash, b.c.Stats().Deduped)
			} else {
				require.Equal(t, beforeCrash, twice, "without it the events done before the crash run again")
			}
		})
	}
}

// TestRedrivenDeadLetterIsHandled: the usual repair after a bug fix is to publish the dead
// letters again, headers and all. That is a new record of the same event, not a redelivery.
func TestRedrivenDeadLetterIsHandled(t *testing.T) {
	kc := oneTopic(t, "in", "in.dlq")
	_, rdb := redistest.Mini(t)
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 30*time.Second)
	require.NoError(t, p.Publish(ctx, "in", Event{ID: "e1", Key: "k"}))
	var fixed atomic.Bool
	var handled idSet
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, MaxAttempts: 1,
		Deduper: NewRedisDeduper(rdb, time.Hour), DeadLetterTopic: "in.dlq", CommitInterval: 10 * time.Millisecond,
		Handler: func(_ context.Context, ev Event) error {
			if !fixed.Load() {
				return errors.New("bug")
			}
			handled.add(ev.ID)
			return nil
		}})
	dl := readAll(t, kc, "in.dlq", 1)[0]
	fixed.Store(true)
	// Re-drive: the dead letter goes back to the topic with its headers.
	require.NoError(t, kc.Client(t).ProduceSync(ctx, &kgo.Record{Topic: "in", Key: dl.Key, Value: dl.Value, Headers: dl.Headers}).FirstErr())
	require.Eventually(t, func() bool {
		st := r.c.Stats()
		return st.Handled+st.Deduped >= 1
	}, 20*time.Second, 5*time.Millisecond)
	require.Equal(t, 1, handled.count("e1"), "the re-driven event ran")
	require.Zero(t, r.c.Stats().Deduped)
	require.NoError(t, r.stop())
}

// TestDedupeClaimIsRenewedWhileTheHandlerRuns: a handler slower than DedupeLease keeps its
// claim, so no other member can run the same event meanwhile.
func TestDedupeClaimIsRenewedWhileTheHandlerRuns(t *testing.T) {
	const lease = 600 * time.Millisecond // renewed every 200ms: slack for a busy machine
	kc := oneTopic(t, "in")
	rdb := redistest.Server(t).Client()
	dd := NewRedisDeduper(rdb, time.Hour)
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 30*time.Second)
	require.NoError(t, p.Publish(ctx, "in", Event{ID: "slow", Key: "k"}))
	started, release := make(chan struct{}), make(chan struct{})
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, Deduper: dd, DedupeLease: lease,
		ShutdownTimeout: time.Second,
		Handler: func(ctx context.Context, _ Event) error {
			close(started)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}})
	<-started
	// For several leases, another member's claim must keep failing.
	for end := time.Now().Add(3 * lease); time.Now().Before(end); time.Sleep(lease / 10) {
		_, err := dd.Claim(ctx, "g:slow", time.Minute)
		require.ErrorIs(t, err, ErrClaimed, "the claim of a running handler expired")
	}
	close(release)
	require.Eventually(t, func() bool { return r.c.Stats().Handled == 1 }, 20*time.Second, 5*time.Millisecond)
	_, err := dd.Claim(ctx, "g:slow", time.Minute)
	require.ErrorIs(t, err, ErrDuplicate)
	require.NoError(t, r.stop())
}

// TestDedupeIDsOfGroupsWithColonsDoNotCollide: group "a" with event "b:c" and group "a:b"
// with event "c" are two different things to remember.
func TestDedupeIDsOfGroupsWithColonsDoNotCollide(t *testing.T) {
	kc := oneTopic(t, "in")
	_, rdb := redistest.Mini(t)
	dd := NewRedisDeduper(rdb, time.Hour)
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 30*time.Second)
	require.NoError(t, p.Publish(ctx, "in", Event{ID: "b:c", Key: "1"}, Event{ID: "c", Key: "2"}))
	run := func(group, want string) {
		var seen idSet
		r := startConsumer(t, kc, ConsumerConfig{Group: group, Topics: []string{"in"}, Deduper: dd,
			Handler: func(_ context.Context, ev Event) error {
				if ev.ID == want {
					seen.add(ev.ID)
				}
				return nil
			}})
		require.Eventually(t, func() bool {
			st := r.c.Stats()
			return st.Handled+st.Deduped >= 2
		}, 20*time.Second, 5*time.Millisecond)
		require.NoError(t, r.stop())
		require.Equal(t, 1, seen.count(want), "group %q, event %q", group, want)
	}
	run("a", "b:c")
	run("a:b", "c")
}

// Partitions revoked from a member holding fetched records (MaxBuffered small, so the poll
// loop holds a backlog) go to a second member and come back to the first when it leaves:
// each key's events are handled in order, one at a time, each once with the Deduper, and
// everything is committed. The first member waits for the second to start after its first 60
// events (a revoke cancels that wait), so it cannot finish before the second joins.
func TestPartitionsComingBackToAMemberWithHeldRecordsKeepOrder(t *testing.T) {
	const n, keys = 600, 30
	kc := kafkatest.Cluster(t, "orders")
	_, rdb := redistest.Mini(t)
	dd := NewRedisDeduper(rdb, time.Hour)
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 90*time.Second)
	require.NoError(t, p.Publish(ctx, "orders", seqEvents(t, n, keys)...))

	log := newOrderLog()
	var mu sync.Mutex
	running := map[string]bool{}
	var overlaps []string
	var byA, byB, byAAfter atomic.Int64
	var bGone atomic.Bool
	bStarted := make(chan struct{})
	var startOnce sync.Once
	handler := func(isA bool) Handler {
		return func(ctx context.Context, ev Event) error {
			if isA && byA.Load() >= 60 {
				select {
				case <-bStarted:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			mu.Lock()
			if running[ev.Key] {
				overlaps = append(overlaps, ev.Key)
			}
			running[ev.Key] = true
			mu.Unlock()
			if isA {
				time.Sleep(time.Millisecond)
				byA.Add(1)
				if bGone.Load() {
					byAAfter.Add(1)
				}
			} else {
				time.Sleep(5 * time.Millisecond)
				byB.Add(1)
				startOnce.Do(func() { close(bStarted) })
			}
			log.add(t, ev)
			mu.Lock()
			running[ev.Key] = false
			mu.Unlock()
			return nil
		}
	}
	cfg := func(isA bool) ConsumerConfig {
		return ConsumerConfig{Group: "g", Topics: []string{"orders"}, Concurrency: 4, MaxBuffered: 8,
			Deduper: dd, CommitInterval: 50 * time.Millisecond, ShutdownTimeout: 200 * time.Millisecond,
			Handler: handler(isA)}
	}
	a := startConsumer(t, kc, cfg(true))
	require.Eventually(t, func() bool { return byA.Load() >= 60 }, 30*time.Second, time.Millisecond)
	b := startConsumer(t, kc, cfg(false))
	require.Eventually(t, func() bool { return byB.Load() >= 10 }, 30*time.Second, time.Millisecond, "B took partitions over")
	require.NoError(t, b.stop())
	bGone.Store(true)
	require.Eventually(t, func() bool { return log.distinct() == n }, 60*time.Second, 5*time.Millisecond,
		"handled %d of %d", log.distinct(), n)
	require.NoError(t, a.stop())

	require.Empty(t, log.bad, "per-key order across the revoke and the return")
	require.Empty(t, overlaps, "one handler at a time per key")
	for id, c := range log.count {
		require.Equal(t, 1, c, "event %s handled %d times", id, c)
	}
	require.Positive(t, byAAfter.Load(), "B's partitions came back to A")
	require.Equal(t, endOffsets(kc, "orders"), committed(t, kc, "g", "orders"))
}
