package benchcmp

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/surgekit/surge/events"
	"github.com/surgekit/surge/internal/benchkit"
	"github.com/surgekit/surge/internal/kafkatest"
)

func groupOpts() []kgo.Opt {
	return []kgo.Opt{kgo.SessionTimeout(time.Second), kgo.HeartbeatInterval(100 * time.Millisecond),
		kgo.RebalanceTimeout(5 * time.Second)}
}

func BenchmarkEventsPublish(b *testing.B) {
	b.Run("surge", func(b *testing.B) {
		kc := kafkatest.Cluster(b, "p")
		p, err := events.NewProducer(events.ProducerConfig{Brokers: kc.Seeds()})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		now := time.Now()
		benchkit.Produce(b, p.Flush, func(ctx context.Context, key string, done func(error)) {
			p.PublishAsync(ctx, "p", events.Event{Type: "bench", Key: key, Time: now, Data: benchkit.Payload200}, done)
		})
	})
	// The same with an OpenTelemetry SDK installed (every span sampled, in-memory readers, W3C
	// propagator) and a span in the caller's context: what the producer span, the traceparent
	// header and messaging.client.sent.messages cost per event.
	b.Run("surge-otel-sdk", func(b *testing.B) {
		kc := kafkatest.Cluster(b, "p")
		tp, mp := otelSDK(b)
		p, err := events.NewProducer(events.ProducerConfig{Brokers: kc.Seeds(), TracerProvider: tp, MeterProvider: mp,
			Propagator: propagation.TraceContext{}})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		ctx, span := tp.Tracer("bench").Start(context.Background(), "request")
		defer span.End()
		now := time.Now()
		benchkit.Produce(b, p.Flush, func(_ context.Context, key string, done func(error)) {
			p.PublishAsync(ctx, "p", events.Event{Type: "bench", Key: key, Time: now, Data: benchkit.Payload200}, done)
		})
	})
	// kgo: the same key and value, no headers. An Event always carries its ID, type and time as
	// headers (about 100 bytes more per record), so kgo-same-headers is the like-for-like peer.
	b.Run("kgo", func(b *testing.B) {
		cl := kafkatest.Cluster(b, "p").Client(b)
		benchkit.Produce(b, cl.Flush, func(ctx context.Context, key string, done func(error)) {
			cl.Produce(ctx, &kgo.Record{Topic: "p", Key: []byte(key), Value: benchkit.Payload200},
				func(_ *kgo.Record, err error) { done(err) })
		})
	})
	// Like surge, it writes each record's own time: an event's time is formatted per event (here
	// the same instant surge's events carry), not once for the whole run.
	b.Run("kgo-same-headers", func(b *testing.B) {
		cl := kafkatest.Cluster(b, "p").Client(b)
		now := time.Now()
		benchkit.Produce(b, cl.Flush, func(ctx context.Context, key string, done func(error)) {
			hs := []kgo.RecordHeader{{Key: events.HeaderID, Value: []byte(events.NewID())},
				{Key: events.HeaderType, Value: []byte("bench")},
				{Key: events.HeaderTime, Value: now.UTC().AppendFormat(nil, time.RFC3339Nano)}}
			cl.Produce(ctx, &kgo.Record{Topic: "p", Key: []byte(key), Value: benchkit.Payload200, Headers: hs},
				func(_ *kgo.Record, err error) { done(err) })
		})
	})
}

// seedEvents writes n events over 500 keys to topic c of a new cluster and returns it.
func seedEvents(b *testing.B, n int) *kafkatest.KafkaCluster {
	kc := kafkatest.Cluster(b, "c")
	p, err := events.NewProducer(events.ProducerConfig{Brokers: kc.Seeds()})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	evs := make([]events.Event, n)
	for i := range evs {
		evs[i] = events.Event{Type: "bench", Key: "key-" + strconv.Itoa(i%500), Data: []byte(strconv.Itoa(i))}
	}
	for i := 0; i < n; i += 10000 {
		if err := p.Publish(context.Background(), "c", evs[i:min(i+10000, n)]...); err != nil {
			b.Fatal(err)
		}
	}
	return kc
}

// BenchmarkEventsConsume handles b.N events over 3 partitions with a 1 ms handler and reports
// events/s: surge's runner at Concurrency 1, 4 and 16, and a watermill-kafka style runner on raw
// kgo that handles one record at a time per partition.
func BenchmarkEventsConsume(b *testing.B) {
	for _, c := range []int{1, 4, 16} {
		b.Run("surge-c"+strconv.Itoa(c), func(b *testing.B) {
			kc := seedEvents(b, b.N)
			var handled atomic.Int64
			all := make(chan struct{})
			cons, err := events.NewConsumer(events.ConsumerConfig{
				Brokers: kc.Seeds(), Group: "g", Topics: []string{"c"}, Concurrency: c, KafkaOptions: groupOpts(),
				Handler: func(context.Context, events.Event) error {
					time.Sleep(time.Millisecond)
					if handled.Add(1) == int64(b.N) {
						close(all)
					}
					return nil
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			b.ResetTimer()
			go func() { done <- cons.Run(ctx) }()
			<-all
			b.StopTimer()
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
	b.Run("one-per-partition", func(b *testing.B) {
		kc := seedEvents(b, b.N)
		cl := kc.Client(b, append(groupOpts(), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("c"),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())...)
		ctx := context.Background()
		handled := 0
		b.ResetTimer()
		for handled < b.N {
			fs := cl.PollFetches(ctx)
			if err := fs.Err0(); err != nil {
				b.Fatal(err)
			}
			var wg sync.WaitGroup
			var n atomic.Int64
			fs.EachPartition(func(p kgo.FetchTopicPartition) {
				wg.Go(func() {
					for range p.Records {
						time.Sleep(time.Millisecond) // the handler, one record at a time per partition
						n.Add(1)
					}
				})
			})
			wg.Wait()
			handled += int(n.Load())
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkEventsPublishSync measures one synchronous publish of a 200-byte event: surge's
// Publish against kgo's ProduceSync of the same record (with and without the event headers).
func BenchmarkEventsPublishSync(b *testing.B) {
	now := time.Now()
	b.Run("surge", func(b *testing.B) {
		kc := kafkatest.Cluster(b, "s")
		p, err := events.NewProducer(events.ProducerConfig{Brokers: kc.Seeds()})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		keys := benchkit.Keys(1000)
		ctx := context.Background()
		if err := p.Publish(ctx, "s", events.Event{Type: "warm"}); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if err := p.Publish(ctx, "s", events.Event{Type: "bench", Key: keys[i%len(keys)], Time: now, Data: benchkit.Payload200}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kgo-same-headers", func(b *testing.B) {
		cl := kafkatest.Cluster(b, "s").Client(b)
		keys := benchkit.Keys(1000)
		ctx := context.Background()
		ts := []byte(now.UTC().Format(time.RFC3339Nano))
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "s"}).FirstErr(); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			hs := []kgo.RecordHeader{{Key: events.HeaderID, Value: []byte(events.NewID())},
				{Key: events.HeaderType, Value: []byte("bench")}, {Key: events.HeaderTime, Value: ts}}
			r := &kgo.Record{Topic: "s", Key: []byte(keys[i%len(keys)]), Value: benchkit.Payload200, Headers: hs}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// consumeEvents is the number of 200-byte events BenchmarkEventsConsumeOverhead reads per op,
// over consumeKeys keys (as many events each). The last event of each key has the type
// lastType, the others "bench".
const (
	consumeEvents = 100_000
	consumeKeys   = 500
	lastType      = "last"
)

// seedPayloadEvents writes n 200-byte events over consumeKeys keys to topic o of a new cluster.
func seedPayloadEvents(b *testing.B, n int) *kafkatest.KafkaCluster {
	kc := kafkatest.Cluster(b, "o")
	p, err := events.NewProducer(events.ProducerConfig{Brokers: kc.Seeds()})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	keys := benchkit.Keys(consumeKeys)
	for i := range n {
		typ := "bench"
		if i >= n-len(keys) {
			typ = lastType // the key's last event
		}
		p.PublishAsync(context.Background(), "o", events.Event{Type: typ, Key: keys[i%len(keys)], Data: benchkit.Payload200},
			func(err error) {
				if err != nil {
					b.Error(err)
				}
			})
	}
	if err := p.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	return kc
}

// BenchmarkEventsConsumeOverhead reads 100k 200-byte events per op with a no-op handler in a
// fresh group: surge's consumer at Concurrency 8 (decoding each record into an Event, per-key
// order, commits) against a bare franz-go group consumer that polls, touches each record and
// commits (kgo-group), and the same reading the fields an Event carries (kgo-group-decode). All
// use the same topic, fetch defaults and read-committed isolation. It reports events/s from
// the first event to the last, so the group join (the same for all, and noisy on a busy
// machine) is left out; ns/op includes it; cpu-ns/event is the process's CPU time (kfake's
// included) per event in that window.
func BenchmarkEventsConsumeOverhead(b *testing.B) {
	b.Run("surge-c8", func(b *testing.B) { consumeOverhead(b, events.ConsumerConfig{}) })
	// The same with an OpenTelemetry SDK installed: a sampled consumer span per event and the
	// consumer metrics.
	b.Run("surge-c8-otel-sdk", func(b *testing.B) {
		tp, mp := otelSDK(b)
		consumeOverhead(b, events.ConsumerConfig{TracerProvider: tp, MeterProvider: mp, Propagator: propagation.TraceContext{}})
	})
	b.Run("kgo-group", func(b *testing.B) {
		bytes := 0
		kgoConsume(b, func(r *kgo.Record) { bytes += len(r.Value) })
	})
	// kgo-group-decode is the like-for-like peer: the same loop reads what an Event carries
	// (key, the event-id, event-type and event-time headers, value) the way a kgo user would,
	// string conversions and time.Parse included.
	b.Run("kgo-group-decode", func(b *testing.B) {
		var last plainEvent
		kgoConsume(b, func(r *kgo.Record) {
			ev := plainEvent{Key: string(r.Key), Data: r.Value}
			for _, h := range r.Headers {
				switch h.Key {
				case events.HeaderID:
					ev.ID = string(h.Value)
				case events.HeaderType:
					ev.Type = string(h.Value)
				case events.HeaderTime:
					t, err := time.Parse(time.RFC3339Nano, string(h.Value))
					if err != nil {
						b.Fatal(err)
					}
					ev.Time = t
				}
			}
			last = ev
		})
		_ = last
	})
}

// plainEvent is what kgo-group-decode reads from each record.
type plainEvent struct {
	ID, Type, Key string
	Time          time.Time
	Data          []byte
}

// kgoConsume is BenchmarkEventsConsumeOverhead's bare franz-go group consumer: per op a fresh
// group polls the 100k events, calls touch on each record and commits after each poll.
func kgoConsume(b *testing.B, touch func(*kgo.Record)) {
	kc := seedPayloadEvents(b, consumeEvents)
	ctx := context.Background()
	var busy, cpu time.Duration
	var slept int64
	b.ResetTimer()
	for i := range b.N {
		cl, err := kgo.NewClient(append(groupOpts(), kgo.SeedBrokers(kc.Seeds()...), kgo.ConsumerGroup("g"+strconv.Itoa(i)),
			kgo.ConsumeTopics("o"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
		if err != nil {
			b.Fatal(err)
		}
		handled := 0
		var first time.Time
		var cpu0 time.Duration
		var sleeps0 int64
		for handled < consumeEvents {
			fs := cl.PollFetches(ctx)
			if err := fs.Err0(); err != nil {
				b.Fatal(err)
			}
			if handled == 0 {
				first, cpu0, sleeps0 = openWindow()
			}
			fs.EachRecord(func(r *kgo.Record) { touch(r); handled++ })
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				b.Fatal(err)
			}
		}
		busy += time.Since(first)
		cpu += processCPU() - cpu0
		slept += sleeps(0) - sleeps0
		b.StopTimer()
		cl.Close()
		b.StartTimer()
	}
	reportConsume(b, busy, cpu, slept)
}

// consumeOverhead is BenchmarkEventsConsumeOverhead's surge case with cfg's telemetry fields.
func consumeOverhead(b *testing.B, cfg events.ConsumerConfig) {
	kc := seedPayloadEvents(b, consumeEvents)
	var busy, cpu time.Duration
	var slept int64
	b.ResetTimer()
	for i := range b.N {
		// The handler does about what kgo-group's loop does per record (handled++): it looks at
		// the type. A key's events are handled one at a time, in order (the Handler contract,
		// which -race checks here), so once the last event of every key is handled, all are;
		// that the handler ran exactly once per event is checked after Run, from Stats.
		var started atomic.Bool
		var keysLeft atomic.Int64
		keysLeft.Store(consumeKeys)
		var first time.Time
		var cpu0 time.Duration
		var sleeps0 int64
		all := make(chan struct{})
		cfg.Brokers, cfg.Group, cfg.Topics, cfg.Concurrency = kc.Seeds(), "g"+strconv.Itoa(i), []string{"o"}, 8
		cfg.KafkaOptions = groupOpts()
		cfg.Handler = func(_ context.Context, ev events.Event) error {
			if !started.Load() && started.CompareAndSwap(false, true) {
				first, cpu0, sleeps0 = openWindow()
			}
			if ev.Type == lastType && keysLeft.Add(-1) == 0 {
				busy += time.Since(first)
				cpu += processCPU() - cpu0
				slept += sleeps(0) - sleeps0
				close(all)
			}
			return nil
		}
		cons, err := events.NewConsumer(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- cons.Run(ctx) }()
		<-all
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		if st := cons.Stats(); st.Handled != consumeEvents {
			b.Fatalf("handled %d events, want %d (%+v)", st.Handled, consumeEvents, st)
		}
		b.StartTimer()
	}
	reportConsume(b, busy, cpu, slept)
}

// openWindow returns the clock, the process's CPU time and its threads' sleeps at the start of
// BenchmarkEventsConsumeOverhead's window, the clock read last: reading every thread's status
// file takes a millisecond or more, which the window must not include (it did, for both the
// surge case and kgo's, until the clock was read last).
func openWindow() (time.Time, time.Duration, int64) {
	slept := sleeps(0)
	cpu := processCPU()
	return time.Now(), cpu, slept
}

// reportConsume reports BenchmarkEventsConsumeOverhead's metrics: events/s from the first event
// to the last, the CPU time the whole process (kfake included) spent per event meanwhile,
// which a busy machine distorts far less than the rate, and how often its threads slept per
// thousand events (see sleeps: on a quiet VM each costs an idle vCPU's wake-up).
func reportConsume(b *testing.B, busy, cpu time.Duration, slept int64) {
	n := float64(b.N * consumeEvents)
	b.ReportMetric(n/busy.Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/event")
	b.ReportMetric(float64(slept)/n*1000, "sleeps/kevent")
}

// otelSDK returns an SDK tracer provider (every span sampled, none exported) and meter provider
// (read by a manual reader), shut down when b ends.
func otelSDK(b *testing.B) (*sdktrace.TracerProvider, *sdkmetric.MeterProvider) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
	return tp, mp
}
