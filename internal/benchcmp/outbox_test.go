package benchcmp

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"
	_ "modernc.org/sqlite"

	"github.com/surgekit/surge/events"
	"github.com/surgekit/surge/events/outbox"
	"github.com/surgekit/surge/internal/benchkit"
	"github.com/surgekit/surge/internal/kafkatest"
	"github.com/surgekit/surge/internal/pgtest"
)

// outboxDB opens a fresh database of the dialect: SQLite in WAL mode with synchronous=NORMAL
// (its usual production setting), or a new database on pg, a PostgreSQL server with fsync on.
type outboxDB func(b *testing.B) (*sql.DB, outbox.Dialect)

func outboxDialects(b *testing.B) map[string]outboxDB {
	var (
		once sync.Once
		pg   *pgtest.PG
	)
	return map[string]outboxDB{
		"sqlite": func(b *testing.B) (*sql.DB, outbox.Dialect) {
			db, err := sql.Open("sqlite", "file:"+filepath.Join(b.TempDir(), "outbox.db")+
				"?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate")
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = db.Close() })
			return db, outbox.SQLite
		},
		"postgres": func(sub *testing.B) (*sql.DB, outbox.Dialect) {
			once.Do(func() { pg = pgtest.Server(b, pgtest.WithDurability()) }) // one server per benchmark
			return pg.DB(sub), outbox.Postgres
		},
	}
}

// ackHook records when the relay handed each event to the producer and when Kafka acknowledged
// it, by its index in the benchmark.
type ackHook struct {
	index map[string]int
	acked []atomic.Int64 // Unix nanoseconds
	buf   []atomic.Int64
	n     atomic.Int64
}

func (h *ackHook) OnProduceRecordBuffered(r *kgo.Record) {
	for _, hd := range r.Headers {
		if hd.Key == events.HeaderID {
			if i, ok := h.index[string(hd.Value)]; ok {
				h.buf[i].CompareAndSwap(0, time.Now().UnixNano())
			}
			return
		}
	}
}

func (h *ackHook) OnProduceRecordUnbuffered(r *kgo.Record, err error) {
	if err != nil {
		return
	}
	for _, hd := range r.Headers {
		if hd.Key == events.HeaderID {
			if i, ok := h.index[string(hd.Value)]; ok && h.acked[i].CompareAndSwap(0, time.Now().UnixNano()) {
				h.n.Add(1)
			}
			return
		}
	}
}

// BenchmarkOutboxRelay measures relay throughput: b.N events committed beforehand (200-byte
// payloads over 1000 keys, 500 per transaction), then one relay with default options publishes
// and deletes them all. It reports events/s.
func BenchmarkOutboxRelay(b *testing.B) {
	for _, name := range []string{"sqlite", "postgres"} {
		b.Run("surge-"+name, func(b *testing.B) {
			db, d := outboxDialects(b)[name](b)
			kc := kafkatest.Cluster(b, "orders")
			ob, err := outbox.New(db, &outbox.Options{Dialect: d})
			if err != nil {
				b.Fatal(err)
			}
			keys := benchkit.Keys(1000)
			ctx := context.Background()
			for i := 0; i < b.N; i += 500 {
				evs := make([]events.Event, 0, 500)
				for j := i; j < min(i+500, b.N); j++ {
					evs = append(evs, events.Event{ID: events.NewID(), Type: "order.created", Key: keys[j%len(keys)],
						Time: time.Now(), Data: benchkit.Payload200})
				}
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				if err := ob.Add(ctx, tx, "orders", evs...); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			p, err := events.NewProducer(events.ProducerConfig{Brokers: kc.Seeds()})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			r, err := outbox.NewRelay(ob, p, nil)
			if err != nil {
				b.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			b.ResetTimer()
			go func() { done <- r.Run(runCtx) }()
			for r.Stats().Published < uint64(b.N) {
				time.Sleep(time.Millisecond)
				if st := r.Stats(); st.Failures > 0 {
					b.Fatalf("relay failed: %v", st.LastError)
				}
			}
			b.StopTimer()
			stop()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkOutboxLatency measures commit-to-publish latency: b.N transactions of one event each
// at 1,000 per second (8 writers, so commits waiting for fsync do not slow the rate), each
// followed by Relay.Notify; the time from Commit's return to Kafka's acknowledgement of the
// event. It reports p50-ms and p99-ms, db-p50-ms and db-p99-ms (from Commit's return to the
// relay handing the event to the producer: the database side of the latency), and events/s,
// to show the rate held.
func BenchmarkOutboxLatency(b *testing.B) {
	for _, name := range []string{"sqlite", "postgres"} {
		b.Run("surge-"+name, func(b *testing.B) {
			db, d := outboxDialects(b)[name](b)
			kc := kafkatest.Cluster(b, "orders")
			ob, err := outbox.New(db, &outbox.Options{Dialect: d})
			if err != nil {
				b.Fatal(err)
			}
			keys := benchkit.Keys(1000)
			evs := make([]events.Event, b.N)
			hook := &ackHook{index: make(map[string]int, b.N), acked: make([]atomic.Int64, b.N), buf: make([]atomic.Int64, b.N)}
			for i := range evs {
				evs[i] = events.Event{ID: events.NewID(), Type: "order.created", Key: keys[i%len(keys)], Data: benchkit.Payload200}
				hook.index[evs[i].ID] = i
			}
			committed := make([]int64, b.N)
			p, err := events.NewProducer(events.ProducerConfig{Brokers: kc.Seeds(), KafkaOptions: []kgo.Opt{kgo.WithHooks(hook)}})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			r, err := outbox.NewRelay(ob, p, nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()
			for !r.Stats().Leader {
				time.Sleep(time.Millisecond)
			}

			b.ResetTimer()
			start := time.Now()
			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for range 8 {
				wg.Go(func() {
					for {
						i := int(next.Add(1) - 1)
						if i >= b.N {
							return
						}
						time.Sleep(time.Until(start.Add(time.Duration(i) * time.Millisecond)))
						tx, err := db.BeginTx(ctx, nil)
						if err == nil {
							if err = ob.Add(ctx, tx, "orders", evs[i]); err == nil {
								err = tx.Commit()
							} else {
								_ = tx.Rollback()
							}
						}
						if err != nil {
							errs <- err
							return
						}
						committed[i] = time.Now().UnixNano()
						r.Notify()
					}
				})
			}
			wg.Wait()
			close(errs)
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
			for hook.n.Load() < int64(b.N) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			stop()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			lat := make([]float64, b.N)
			for i := range lat {
				lat[i] = max(0, float64(hook.acked[i].Load()-committed[i])/1e6)
			}
			if testing.Verbose() {
				worst := make([]int, len(lat))
				for i := range worst {
					worst[i] = i
				}
				slices.SortFunc(worst, func(a, c int) int { return int(lat[c]*1000 - lat[a]*1000) })
				for _, i := range worst[:min(10, len(worst))] {
					b.Logf("event %d at +%dms: %.1fms", i, (committed[i]-start.UnixNano())/1e6, lat[i])
				}
			}
			dbl := make([]float64, b.N)
			for i := range dbl {
				dbl[i] = float64(hook.buf[i].Load()-committed[i]) / 1e6
			}
			slices.Sort(dbl)
			b.ReportMetric(dbl[len(dbl)/2], "db-p50-ms")
			b.ReportMetric(dbl[len(dbl)*99/100], "db-p99-ms")
			slices.Sort(lat)
			b.ReportMetric(lat[len(lat)/2], "p50-ms")
			b.ReportMetric(lat[min(len(lat)-1, len(lat)*99/100)], "p99-ms")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// kgoPublisher is a watermill Publisher that writes to Kafka with kgo (acks=all, idempotent,
// like surge's producer) and waits for the acknowledgements, as watermill-kafka's does.
type kgoPublisher struct {
	cl   *kgo.Client
	sent atomic.Int64
}

func (p *kgoPublisher) Publish(topic string, msgs ...*message.Message) error {
	recs := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = &kgo.Record{Topic: topic, Key: []byte(m.Metadata.Get("key")), Value: m.Payload,
			Headers: []kgo.RecordHeader{{Key: events.HeaderID, Value: []byte(m.UUID)}}}
	}
	if err := p.cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		return err
	}
	p.sent.Add(int64(len(msgs)))
	return nil
}

func (p *kgoPublisher) Close() error { return nil }

// BenchmarkOutboxRelayWatermill is the peer of BenchmarkOutboxRelay/surge-postgres: the same
// events committed through watermill-sql's PostgreSQL publisher wrapped by watermill's
// Forwarder, whose subscriber (default batch of 100) forwards them to Kafka.
func BenchmarkOutboxRelayWatermill(b *testing.B) {
	b.Run("watermill-forwarder-postgres", func(b *testing.B) {
		db, _ := outboxDialects(b)["postgres"](b)
		kc := kafkatest.Cluster(b, "orders")
		logger := watermill.NopLogger{}
		schema := wsql.DefaultPostgreSQLSchema{}
		sub, err := wsql.NewSubscriber(wsql.BeginnerFromStdSQL(db), wsql.SubscriberConfig{
			SchemaAdapter: schema, OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{},
			InitializeSchema: true, PollInterval: 10 * time.Millisecond}, logger)
		if err != nil {
			b.Fatal(err)
		}
		const fwdTopic = "outbox"
		if err := sub.SubscribeInitialize(fwdTopic); err != nil {
			b.Fatal(err)
		}
		keys := benchkit.Keys(1000)
		ctx := context.Background()
		for i := 0; i < b.N; i += 500 {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			pub, err := wsql.NewPublisher(wsql.TxFromStdSQL(tx), wsql.PublisherConfig{SchemaAdapter: schema}, logger)
			if err != nil {
				b.Fatal(err)
			}
			fp := forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: fwdTopic})
			msgs := make([]*message.Message, 0, 500)
			for j := i; j < min(i+500, b.N); j++ {
				m := message.NewMessage(watermill.NewUUID(), benchkit.Payload200)
				m.Metadata.Set("key", keys[j%len(keys)])
				msgs = append(msgs, m)
			}
			if err := fp.Publish("orders", msgs...); err != nil {
				b.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
		}
		out := &kgoPublisher{cl: kc.Client(b, kgo.RequiredAcks(kgo.AllISRAcks()))}
		fwd, err := forwarder.NewForwarder(sub, out, logger, forwarder.Config{ForwarderTopic: fwdTopic})
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		done := make(chan error, 1)
		go func() { done <- fwd.Run(ctx) }()
		for out.sent.Load() < int64(b.N) {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		if err := fwd.Close(); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}
