package events

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/surgekit/surge/internal/kafkatest"
)

// window builds samples from (commit, end) pairs with the given member count.
func window(members int, pairs ...[2]int64) []LagSample {
	out := make([]LagSample, len(pairs))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, p := range pairs {
		out[i] = LagSample{Time: t0.Add(time.Duration(i) * 30 * time.Second), Commit: p[0], End: p[1], Members: members}
	}
	return out
}

func TestEvaluateWindow(t *testing.T) {
	cases := []struct {
		name    string
		samples []LagSample
		full    bool
		want    Status
	}{
		{"empty", nil, true, StatusOK},
		{"caught up at some point", window(1, [2]int64{10, 20}, [2]int64{30, 30}, [2]int64{30, 50}), true, StatusOK},
		{"moving, lag steady", window(1, [2]int64{10, 20}, [2]int64{20, 30}, [2]int64{30, 40}), true, StatusOK},
		{"moving, lag shrinking once", window(1, [2]int64{10, 20}, [2]int64{20, 40}, [2]int64{45, 50}), true, StatusOK},
		{"moving, lag growing every sample", window(1, [2]int64{10, 20}, [2]int64{15, 30}, [2]int64{18, 40}), true, StatusWarn},
		{"lag growing but window not full", window(1, [2]int64{10, 20}, [2]int64{15, 30}), false, StatusOK},
		{"stuck commit with members", window(2, [2]int64{10, 20}, [2]int64{10, 20}, [2]int64{10, 25}), true, StatusStall},
		{"stuck commit without members", window(0, [2]int64{10, 20}, [2]int64{10, 20}, [2]int64{10, 25}), true, StatusStop},
		{"no commit at all and nobody consuming", window(0, [2]int64{-1, 5}, [2]int64{-1, 9}, [2]int64{-1, 9}), true, StatusStop},
		{"stuck but window not full", window(0, [2]int64{10, 20}, [2]int64{10, 20}), false, StatusOK},
		{"stuck with zero lag", window(0, [2]int64{10, 10}, [2]int64{10, 10}, [2]int64{10, 10}), true, StatusOK},
		{"rewind", window(1, [2]int64{10, 20}, [2]int64{30, 40}, [2]int64{5, 40}), true, StatusRewind},
		{"rewind beats zero lag", window(1, [2]int64{10, 10}, [2]int64{5, 10}), false, StatusRewind},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, EvaluateWindow(c.samples, c.full))
		})
	}
	require.Equal(t, "STALL", StatusStall.String())
	require.Equal(t, "Status(9)", Status(9).String())
}

func TestFailureRate(t *testing.T) {
	require.Zero(t, failureRate(ConsumerStats{}, ConsumerStats{}))
	require.InDelta(t, 0.1, failureRate(ConsumerStats{Handled: 100, Failed: 5}, ConsumerStats{Handled: 190, Failed: 15}), 1e-9)
	require.Zero(t, failureRate(ConsumerStats{Handled: 100, Failed: 5}, ConsumerStats{Handled: 1}), "a restarted consumer")
}

func TestNewLagMonitorValidates(t *testing.T) {
	ok := LagConfig{Brokers: []string{"b:1"}, Group: "g"}
	for field, mutate := range map[string]func(*LagConfig){
		"Brokers":        func(c *LagConfig) { c.Brokers = nil },
		"Group":          func(c *LagConfig) { c.Group = "" },
		"Interval":       func(c *LagConfig) { c.Interval = -1 },
		"Window":         func(c *LagConfig) { c.Window = -1 },
		"MaxFailureRate": func(c *LagConfig) { c.MaxFailureRate = 1.5 },
	} {
		cfg := ok
		mutate(&cfg)
		_, err := NewLagMonitor(cfg)
		require.ErrorIs(t, err, ErrInvalidOptions, field)
		require.ErrorContains(t, err, field)
	}
	m, err := NewLagMonitor(ok)
	require.NoError(t, err)
	require.EqualValues(t, DefaultMaxLag, m.cfg.MaxLag)
	require.Equal(t, DefaultMaxLagAge, m.cfg.MaxLagAge)
	require.Equal(t, DefaultMaxFailureRate, m.cfg.MaxFailureRate)
	m.Close()
	off := ok
	off.MaxFailureRate = -1
	m, err = NewLagMonitor(off)
	require.NoError(t, err, "a negative MaxFailureRate turns the check off")
	m.Close()
	m.Close()
}

func TestLagMonitorAlertsOnKfake(t *testing.T) {
	kc := kafkatest.ClusterWith(t, kafkatest.Config{Partitions: 2, Topics: []string{"orders"}})
	ctx := testCtx(t, 30*time.Second)
	// Records appended 10 minutes ago: a record's timestamp is when it was published.
	old := time.Now().Add(-10 * time.Minute)
	var recs []*kgo.Record
	for i := range 40 {
		recs = append(recs, &kgo.Record{Topic: "orders", Key: []byte(fmt.Sprint(i)), Timestamp: old})
	}
	raw := kc.Client(t)
	require.NoError(t, raw.ProduceSync(ctx, recs...).FirstErr())
	ends := endOffsets(kc, "orders")
	adm := kadm.NewClient(kc.Client(t))
	commit := func(f func(p int32) int64) {
		os := kadm.Offsets{}
		for p := range ends {
			os.Add(kadm.Offset{Topic: "orders", Partition: p, At: f(p), LeaderEpoch: -1})
		}
		resp, err := adm.CommitOffsets(ctx, "g", os)
		require.NoError(t, err)
		require.NoError(t, resp.Error())
	}
	commit(func(int32) int64 { return 0 })

	var mu sync.Mutex
	var alerts []Alert
	stats := ConsumerStats{}
	m, err := NewLagMonitor(LagConfig{Brokers: kc.Seeds(), Group: "g", Window: 2, MaxLag: 10,
		Stats: func() ConsumerStats { return stats },
		OnAlert: func(a Alert) {
			mu.Lock()
			alerts = append(alerts, a)
			mu.Unlock()
		}})
	require.NoError(t, err)
	t.Cleanup(m.Close)

	rep, err := m.Check(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 40, rep.TotalLag)
	require.Len(t, rep.Partitions, 2)
	require.Equal(t, StatusOK, rep.Status, "one sample is not a window")
	require.True(t, rep.LagExceeded)
	require.True(t, rep.AgeExceeded, "the oldest unconsumed event is 10 minutes old: %v", rep.MaxAge)
	require.InDelta(t, (10 * time.Minute).Seconds(), rep.MaxAge.Seconds(), 30)
	require.Len(t, alerts, 1)
	require.True(t, alerts[0].Previous.Healthy())

	stats = ConsumerStats{Handled: 90, Failed: 10}
	rep, err = m.Check(ctx)
	require.NoError(t, err)
	require.Equal(t, StatusStop, rep.Status, "commits stuck and nobody in the group")
	require.True(t, rep.FailureRateExceeded)
	require.InDelta(t, 0.1, rep.FailureRate, 1e-9)
	require.Len(t, alerts, 2)
	require.Equal(t, StatusOK, alerts[1].Previous.Status)

	stats = ConsumerStats{Handled: 180, Failed: 20} // still failing 10% over the window
	_, err = m.Check(ctx)
	require.NoError(t, err)
	require.Len(t, alerts, 2, "no change, no alert")

	commit(func(p int32) int64 { return ends[p] })
	stats = ConsumerStats{Handled: 1000, Failed: 25}
	rep, err = m.Check(ctx)
	require.NoError(t, err)
	require.Zero(t, rep.TotalLag)
	require.Zero(t, rep.MaxAge)
	require.False(t, rep.FailureRateExceeded)
	require.True(t, rep.Healthy(), "%+v", rep.Condition)
	require.Len(t, alerts, 3)
	require.True(t, alerts[2].Report.Healthy(), "recovery is reported too")

	// Run reports through the same path: a fresh monitor alerts on its first check.
	got := make(chan Alert, 1)
	commit(func(int32) int64 { return 0 })
	m2, err := NewLagMonitor(LagConfig{Brokers: kc.Seeds(), Group: "g", MaxLag: 10, Interval: 10 * time.Millisecond,
		OnAlert: func(a Alert) {
			select {
			case got <- a:
			default:
			}
		}})
	require.NoError(t, err)
	t.Cleanup(m2.Close)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m2.Run(rctx) }()
	a := <-got
	cancel()
	require.NoError(t, <-done)
	require.True(t, a.Report.LagExceeded)
}

func TestEvaluateWindowCountsFromLogStart(t *testing.T) {
	nothingLeft := []LagSample{{Commit: -1, Start: 7, End: 7}, {Commit: -1, Start: 9, End: 9}, {Commit: -1, Start: 9, End: 9}}
	require.Equal(t, StatusOK, EvaluateWindow(nothingLeft, true), "retention deleted everything: no backlog, not STOP")
	backlog := []LagSample{{Commit: -1, Start: 7, End: 9}, {Commit: -1, Start: 7, End: 12}}
	require.Equal(t, StatusStop, EvaluateWindow(backlog, true), "never committed, nobody consuming, events waiting")
	require.EqualValues(t, 5, backlog[1].lag())
}

// A group that never joined nor committed, while its topic fills up, is reported from the log
// start with 0 members, STOP after a full window, and alerted on by Check and by Run.
func TestLagMonitorAlertsForGroupThatNeverJoined(t *testing.T) {
	kc := kafkatest.ClusterWith(t, kafkatest.Config{Partitions: 2, Topics: []string{"orders", "other"}})
	ctx := testCtx(t, 30*time.Second)
	old := time.Now().Add(-10 * time.Minute) // appended 10 minutes ago
	var recs []*kgo.Record
	for i := range 40 {
		recs = append(recs, &kgo.Record{Topic: "orders", Key: []byte(fmt.Sprint(i)), Timestamp: old})
	}
	require.NoError(t, kc.Client(t).ProduceSync(ctx, recs...).FirstErr())
	ends := endOffsets(kc, "orders")
	require.Len(t, ends, 2)

	// Retention moved partition 0's log start: its lag counts from there.
	adm := kadm.NewClient(kc.Client(t))
	del := kadm.Offsets{}
	del.Add(kadm.Offset{Topic: "orders", Partition: 0, At: 2, LeaderEpoch: -1})
	deleted, err := adm.DeleteRecords(ctx, del)
	require.NoError(t, err)
	require.NoError(t, deleted.Error())

	var mu sync.Mutex
	var alerts []Alert
	m, err := NewLagMonitor(LagConfig{Brokers: kc.Seeds(), Group: "never-joined", Topics: []string{"orders"},
		Window: 2, MaxLag: 10, OnAlert: func(a Alert) {
			mu.Lock()
			alerts = append(alerts, a)
			mu.Unlock()
		}})
	require.NoError(t, err)
	t.Cleanup(m.Close)

	rep, err := m.Check(ctx)
	require.NoError(t, err, "a group that does not exist is not a check error")
	require.Zero(t, rep.Members)
	require.Len(t, rep.Partitions, 2)
	for _, pl := range rep.Partitions {
		require.Equal(t, "orders", pl.Topic)
		require.EqualValues(t, -1, pl.Commit)
		require.Equal(t, ends[pl.Partition], pl.End)
	}
	require.Equal(t, ends[0]-2, rep.Partitions[0].Lag, "from the log start")
	require.Equal(t, ends[1], rep.Partitions[1].Lag)
	require.EqualValues(t, 38, rep.TotalLag)
	require.True(t, rep.LagExceeded)
	require.True(t, rep.AgeExceeded, "dated by the record at the log start: %v", rep.MaxAge)
	require.InDelta(t, (10 * time.Minute).Seconds(), rep.MaxAge.Seconds(), 30)
	require.Len(t, alerts, 1)

	rep, err = m.Check(ctx)
	require.NoError(t, err)
	require.Equal(t, StatusStop, rep.Status, "no commits and nobody in the group")
	require.Len(t, alerts, 2)
	require.Equal(t, StatusStop, alerts[1].Report.Status)

	// A group that exists but never committed to some monitored partitions: those count too.
	commit := kadm.Offsets{}
	commit.Add(kadm.Offset{Topic: "orders", Partition: 1, At: ends[1], LeaderEpoch: -1})
	commit.Add(kadm.Offset{Topic: "other", Partition: 0, At: 0, LeaderEpoch: -1})
	resp, err := adm.CommitOffsets(ctx, "partial", commit)
	require.NoError(t, err)
	require.NoError(t, resp.Error())
	mp, err := NewLagMonitor(LagConfig{Brokers: kc.Seeds(), Group: "partial", Topics: []string{"orders"}, MaxLag: 10})
	require.NoError(t, err)
	t.Cleanup(mp.Close)
	rep, err = mp.Check(ctx)
	require.NoError(t, err)
	require.Len(t, rep.Partitions, 2, "only the monitored topic")
	require.EqualValues(t, -1, rep.Partitions[0].Commit)
	require.Equal(t, ends[0]-2, rep.Partitions[0].Lag)
	require.Equal(t, ends[1], rep.Partitions[1].Commit)
	require.Zero(t, rep.Partitions[1].Lag)
	require.True(t, rep.LagExceeded)

	// Without Topics there is nothing to measure for a group that does not exist.
	mn, err := NewLagMonitor(LagConfig{Brokers: kc.Seeds(), Group: "never-joined"})
	require.NoError(t, err)
	t.Cleanup(mn.Close)
	_, err = mn.Check(ctx)
	require.ErrorIs(t, err, ErrGroupNotFound)

	// A monitored topic that does not exist (a typo) is a check error, not a silent zero.
	mt, err := NewLagMonitor(LagConfig{Brokers: kc.Seeds(), Group: "never-joined", Topics: []string{"nope"}})
	require.NoError(t, err)
	t.Cleanup(mt.Close)
	_, err = mt.Check(ctx)
	require.ErrorIs(t, err, kerr.UnknownTopicOrPartition)
	require.ErrorContains(t, err, `"nope"`)

	// Run reaches OnAlert too, up to STOP, instead of logging check errors.
	got := make(chan Alert, 4)
	mr, err := NewLagMonitor(LagConfig{Brokers: kc.Seeds(), Group: "never-joined", Topics: []string{"orders"},
		Window: 2, MaxLag: 10, Interval: 10 * time.Millisecond,
		OnAlert: func(a Alert) {
			select {
			case got <- a:
			default:
			}
		}})
	require.NoError(t, err)
	t.Cleanup(mr.Close)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mr.Run(rctx) }()
	first, second := <-got, <-got
	cancel()
	require.NoError(t, <-done)
	require.True(t, first.Report.LagExceeded)
	require.Equal(t, StatusStop, second.Report.Status)
	require.Zero(t, second.Report.Members)
}

// TestLagAgeIsTimeSincePublishNotEventTime: a replay of old events, or an outbox catching up,
// publishes events whose Time is long past; that is not a consumer falling behind.
func TestLagAgeIsTimeSincePublishNotEventTime(t *testing.T) {
	kc := oneTopic(t, "orders")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 30*time.Second)
	old := time.Now().Add(-time.Hour)
	require.NoError(t, p.Publish(ctx, "orders", Event{ID: "replayed", Time: old}))
	m, err := NewLagMonitor(LagConfig{Brokers: kc.Seeds(), Group: "g", Topics: []string{"orders"}, MaxLagAge: 5 * time.Minute})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	rep, err := m.Check(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, rep.TotalLag)
	require.False(t, rep.AgeExceeded, "published just now, though it happened an hour ago: age %v", rep.MaxAge)
	require.Less(t, rep.MaxAge, time.Minute)
	ev, err := fromRecord(readAll(t, kc, "orders", 1)[0])
	require.NoError(t, err)
	require.True(t, ev.Time.Equal(old.Truncate(0)), "Event.Time still travels")
}
