package outbox

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/surgekit/surge/events"
	"github.com/surgekit/surge/internal/kafkatest"
	"github.com/surgekit/surge/internal/redistest"
)

// The test binary doubles as a relay process: with these variables set, TestMain runs a relay
// instead of the tests.
const (
	childDialectEnv = "SURGE_OUTBOX_CHILD_DIALECT"
	childDSNEnv     = "SURGE_OUTBOX_CHILD_DSN"
	childBrokersEnv = "SURGE_OUTBOX_CHILD_BROKERS"
	childNameEnv    = "SURGE_OUTBOX_CHILD_NAME"
)

// childRelayOptions make a relay that fails over and publishes in small batches quickly.
var childRelayOptions = RelayOptions{BatchSize: 100, PollInterval: 5 * time.Millisecond,
	LeaseTTL: 250 * time.Millisecond, PublishTimeout: 150 * time.Millisecond, MinBackoff: 5 * time.Millisecond,
	MaxBackoff: 50 * time.Millisecond}

func isChild() bool { return os.Getenv(childDialectEnv) != "" }

// runChild runs a relay until the process is killed.
func runChild() {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "relay child:", err)
		os.Exit(2)
	}
	d, driver := SQLite, "sqlite"
	if os.Getenv(childDialectEnv) == Postgres.String() {
		d, driver = Postgres, "pgx"
	}
	db, err := sql.Open(driver, os.Getenv(childDSNEnv))
	if err != nil {
		fail(err)
	}
	ob, err := New(db, &Options{Dialect: d})
	if err != nil {
		fail(err)
	}
	p, err := events.NewProducer(events.ProducerConfig{Brokers: strings.Split(os.Getenv(childBrokersEnv), ",")})
	if err != nil {
		fail(err)
	}
	opt := childRelayOptions
	opt.Name = os.Getenv(childNameEnv)
	r, err := NewRelay(ob, p, &opt)
	if err != nil {
		fail(err)
	}
	_ = r.Run(context.Background())
	fail(fmt.Errorf("Run returned"))
}

// A relay process is killed with SIGKILL at random points 20 times while 10,000 events are
// committed: every event still reaches the topic, copies carry the same ID and data, first
// copies keep each key's commit order, and a consumer with a Deduper handles each event once.
func TestKilledRelayProcessLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts 21 relay processes")
	}
	dialects(t, func(t *testing.T, d Dialect, db *sql.DB, dsn string) {
		const (
			kills   = 20
			perKill = 500
			total   = kills * perKill
		)
		kc := kafkatest.Cluster(t, "ticks")
		ob, err := New(db, &Options{Dialect: d})
		require.NoError(t, err)
		w := newWorkload(t, db, ob, "ticks", 16)
		ctx := testCtx(t, 100*time.Second)

		start := func(name string) (*exec.Cmd, *bytes.Buffer) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childDialectEnv+"="+d.String(), childDSNEnv+"="+dsn,
				childBrokersEnv+"="+strings.Join(kc.Seeds(), ","), childNameEnv+"="+name)
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stderr, &stderr
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { // a test that failed half-way leaves no relay process behind
				if cmd.ProcessState == nil {
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
				}
			})
			return cmd, &stderr
		}
		kill := func(cmd *exec.Cmd, stderr *bytes.Buffer) {
			require.NoError(t, cmd.Process.Kill())
			err := cmd.Wait()
			st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
			require.True(t, ok && st.Signaled() && st.Signal() == syscall.SIGKILL,
				"relay process ended by itself (%v): %s", err, stderr)
		}
		leaseHolder := func() string {
			var holder string
			err := db.QueryRowContext(ctx, "SELECT holder FROM "+ob.Table()+"_lease").Scan(&holder)
			if err != nil {
				return ""
			}
			return holder
		}

		// A consumer with a Deduper, reading while the relays come and go, must handle each
		// event once, duplicates included.
		var rdb redis.UniversalClient
		if _, err := exec.LookPath("redis-server"); err == nil || redistest.Required() {
			rdb = redistest.Server(t).Client()
		} else {
			_, rdb = redistest.Mini(t) // slower under -race, but the test still runs
		}
		var mu sync.Mutex
		handled := map[string]int{}
		c, err := events.NewConsumer(events.ConsumerConfig{
			Brokers: kc.Seeds(), Group: "dedupe", Topics: []string{"ticks"},
			Deduper: events.NewRedisDeduper(rdb, time.Hour),
			Handler: func(_ context.Context, ev events.Event) error {
				mu.Lock()
				handled[ev.ID]++
				mu.Unlock()
				return nil
			},
			KafkaOptions: []kgo.Opt{kgo.SessionTimeout(time.Second), kgo.HeartbeatInterval(100 * time.Millisecond)},
		})
		require.NoError(t, err)
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- c.Run(cctx) }()
		leading := 0 // kills that hit the leader
		for i := range kills {
			name := fmt.Sprintf("child-%d", i)
			cmd, stderr := start(name)
			var wg sync.WaitGroup
			var werr error
			wg.Go(func() { werr = w.run(ctx, perKill, 2, 10) })
			// A random kill point: one kill in four anywhere from start-up on (often before the
			// child leads), the others at a random moment after it took the lease, while it
			// reads, publishes or deletes.
			if i%4 != 0 {
				poll(t, 20*time.Second, name+" to lead", func() bool { return leaseHolder() == name })
			}
			time.Sleep(time.Duration(rand.Int64N(int64(300 * time.Millisecond))))
			kill(cmd, stderr)
			if leaseHolder() == name {
				leading++
			}
			wg.Wait()
			require.NoError(t, werr)
		}
		want := w.snapshot()
		require.Len(t, want, total)
		pending, err := ob.Pending(ctx)
		require.NoError(t, err)

		cmd, stderr := start("final")
		rs := newReader(t, kc, "ticks").until(60*time.Second, func(rs []rec) bool { return seenAll(rs, want) })
		kill(cmd, stderr)
		dups := verify(t, rs, want)
		t.Logf("%d kills, %d of them of the leader; %d events still in the outbox before the last relay; %d records, %d duplicate copies",
			kills, leading, pending, len(rs), dups)
		require.GreaterOrEqual(t, leading, kills/2, "too few kills hit a leading relay to mean anything")

		// Every event handled, and at least as many records done as the topic holds (a
		// rebalance may deliver some twice, which the Deduper skips too).
		poll(t, 60*time.Second, "the consumer to handle every event", func() bool {
			mu.Lock()
			n := len(handled)
			mu.Unlock()
			s := c.Stats()
			return n == total && s.Handled+s.Deduped >= uint64(len(rs))
		})
		cancel()
		require.NoError(t, <-done)
		require.Equal(t, total, len(handled), "events handled; consumer %+v", c.Stats())
		for id, n := range handled {
			require.Equal(t, 1, n, "event %s handled %d times", id, n)
		}
		require.GreaterOrEqual(t, c.Stats().Deduped, uint64(dups))
	})
}
