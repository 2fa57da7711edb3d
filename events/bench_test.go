package events

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/surgekit/surge/internal/benchkit"
	"github.com/surgekit/surge/internal/kafkatest"
	"github.com/surgekit/surge/internal/oteltest"
)

// BenchmarkPublishAsync measures PublishAsync + Flush of 200-byte events on kfake; compare
// with BenchmarkRawKgoProduce, the same records through kgo directly.
func BenchmarkPublishAsync(b *testing.B) {
	kc := kafkatest.Cluster(b, "bench")
	p := newTestProducer(b, kc)
	now := time.Now()
	benchkit.Produce(b, p.Flush, func(ctx context.Context, key string, failed func(error)) {
		p.PublishAsync(ctx, "bench", Event{Type: "bench", Key: key, Time: now, Data: benchkit.Payload200}, failed)
	})
}

// BenchmarkPublishAsyncOTelSDK is BenchmarkPublishAsync with an OpenTelemetry SDK installed
// (in-memory exporters, every span sampled): the cost of the producer span, the traceparent
// header and the sent counter per event.
func BenchmarkPublishAsyncOTelSDK(b *testing.B) {
	kc := kafkatest.Cluster(b, "bench")
	sdk := oteltest.New(b)
	p, err := NewProducer(ProducerConfig{Brokers: kc.Seeds(), TracerProvider: sdk.TracerProvider,
		MeterProvider: sdk.MeterProvider, Propagator: sdk.Propagator})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	ctx, span := sdk.TracerProvider.Tracer("bench").Start(context.Background(), "request")
	defer span.End()
	now := time.Now()
	benchkit.Produce(b, p.Flush, func(_ context.Context, key string, failed func(error)) {
		p.PublishAsync(ctx, "bench", Event{Type: "bench", Key: key, Time: now, Data: benchkit.Payload200}, failed)
	})
}

// BenchmarkRawKgoProduce is the baseline for BenchmarkPublishAsync: kgo Produce + Flush of
// records with the same key and value and no headers.
func BenchmarkRawKgoProduce(b *testing.B) {
	cl := kafkatest.Cluster(b, "bench").Client(b)
	benchkit.Produce(b, cl.Flush, func(ctx context.Context, key string, failed func(error)) {
		cl.Produce(ctx, &kgo.Record{Topic: "bench", Key: []byte(key), Value: benchkit.Payload200},
			func(_ *kgo.Record, err error) { failed(err) })
	})
}

// BenchmarkRawKgoProduceWithHeaders is raw kgo producing the same bytes an Event carries (the
// three event headers), to separate the wire format's cost from the wrapper's.
func BenchmarkRawKgoProduceWithHeaders(b *testing.B) {
	cl := kafkatest.Cluster(b, "bench").Client(b)
	ts := []byte(time.Now().UTC().Format(time.RFC3339Nano))
	benchkit.Produce(b, cl.Flush, func(ctx context.Context, key string, failed func(error)) {
		hs := []kgo.RecordHeader{{Key: HeaderID, Value: []byte(NewID())}, {Key: HeaderType, Value: []byte("bench")},
			{Key: HeaderTime, Value: ts}}
		cl.Produce(ctx, &kgo.Record{Topic: "bench", Key: []byte(key), Value: benchkit.Payload200, Headers: hs},
			func(_ *kgo.Record, err error) { failed(err) })
	})
}

// BenchmarkConsumer handles b.N events with a 1 ms handler over 3 partitions and reports
// events/s for several Concurrency values. "per-partition" uses null keys, so at most one
// event per partition is in flight: the one-in-flight-per-partition model of simpler runners.
func BenchmarkConsumer(b *testing.B) {
	for _, tc := range []struct {
		name        string
		concurrency int
		keys        int
	}{
		{"concurrency=1", 1, 500},
		{"concurrency=4", 4, 500},
		{"concurrency=16", 16, 500},
		{"per-partition", 16, 0},
	} {
		b.Run(tc.name, func(b *testing.B) { benchConsumer(b, tc.concurrency, tc.keys, nil) })
	}
}

// BenchmarkConsumerOTelSDK is BenchmarkConsumer's concurrency=16 case with an OpenTelemetry SDK
// installed on both sides: every record carries a traceparent, and each handler call runs
// under a recorded consumer span and is measured.
func BenchmarkConsumerOTelSDK(b *testing.B) {
	benchConsumer(b, 16, 500, oteltest.New(b))
}

func benchConsumer(b *testing.B, concurrency, keys int, sdk *oteltest.SDK) {
	kc := kafkatest.Cluster(b, "bench")
	var p *Producer
	var cfg ConsumerConfig
	ctx := context.Background()
	if sdk == nil {
		p = newTestProducer(b, kc)
	} else {
		var err error
		p, err = NewProducer(ProducerConfig{Brokers: kc.Seeds(), TracerProvider: sdk.TracerProvider,
			MeterProvider: sdk.MeterProvider, Propagator: sdk.Propagator})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(p.Close)
		cfg = ConsumerConfig{TracerProvider: sdk.TracerProvider, MeterProvider: sdk.MeterProvider, Propagator: sdk.Propagator}
		var span trace.Span
		ctx, span = sdk.TracerProvider.Tracer("bench").Start(ctx, "request")
		defer span.End()
	}
	evs := make([]Event, b.N)
	for i := range evs {
		evs[i] = Event{Type: "bench", Data: []byte(strconv.Itoa(i))}
		if keys > 0 {
			evs[i].Key = "key-" + strconv.Itoa(i%keys)
		}
	}
	for i := 0; i < len(evs); i += 10000 {
		if err := p.Publish(ctx, "bench", evs[i:min(i+10000, len(evs))]...); err != nil {
			b.Fatal(err)
		}
	}
	var handled atomic.Int64
	last := make([]atomic.Int64, max(keys, 1))
	var outOfOrder atomic.Int64
	all := make(chan struct{})
	b.ResetTimer()
	cfg.Group, cfg.Topics, cfg.Concurrency = "bench", []string{"bench"}, concurrency
	cfg.Handler = func(_ context.Context, ev Event) error {
		time.Sleep(time.Millisecond)
		if keys > 0 {
			n, _ := strconv.Atoi(string(ev.Data))
			if int64(n) < last[n%keys].Load() {
				outOfOrder.Add(1)
			}
			last[n%keys].Store(int64(n))
		}
		if handled.Add(1) == int64(b.N) {
			close(all)
		}
		return nil
	}
	r := startConsumer(b, kc, cfg)
	<-all
	b.StopTimer()
	if err := r.stop(); err != nil {
		b.Fatal(err)
	}
	if outOfOrder.Load() > 0 {
		b.Fatalf("%d events out of key order", outOfOrder.Load())
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDispatch measures the consumer's own work per record, without Kafka: records as kgo
// returns them (a 200-byte value and the three event headers, 500 keys over 3 partitions) go
// through dispatch, 8 workers and a no-op handler, at most MaxBuffered at a time, as Run's
// poll loop feeds them: "workers" with inline handling off, "inline" as Run has it (the poll
// loop handles them itself). ns/op is per record.
func BenchmarkDispatch(b *testing.B) {
	b.Run("workers", func(b *testing.B) { benchDispatch(b, false) })
	b.Run("inline", func(b *testing.B) { benchDispatch(b, true) })
}

func benchDispatch(b *testing.B, inline bool) {
	const keys, parts = 500, 3
	ts := []byte(time.Now().UTC().Format(time.RFC3339Nano))
	recs := make([]*kgo.Record, 30_000)
	for i := range recs {
		k := i % keys
		recs[i] = &kgo.Record{Topic: "t", Partition: int32(k % parts), Offset: int64(i), Key: []byte("key-" + strconv.Itoa(k)),
			Value: benchkit.Payload200, Timestamp: time.Now(), Headers: []kgo.RecordHeader{
				{Key: HeaderID, Value: []byte(NewID())}, {Key: HeaderType, Value: []byte("bench")}, {Key: HeaderTime, Value: ts}}}
	}
	var handled atomic.Int64
	done := make(chan struct{}, 1)
	total := int64(b.N)
	c, err := NewConsumer(ConsumerConfig{Brokers: []string{"b:1"}, Group: "g", Topics: []string{"t"}, Concurrency: 8,
		Handler: func(context.Context, Event) error {
			if handled.Add(1) == total {
				done <- struct{}{}
			}
			return nil
		}})
	if err != nil {
		b.Fatal(err)
	}
	c.work = sync.NewCond(&c.mu)
	c.hctx, c.hcancel = context.WithCancel(context.Background())
	defer c.hcancel()
	if !inline {
		c.inl.until = time.Now().Add(time.Hour)
	}
	var workers sync.WaitGroup
	for w := range c.cfg.Concurrency {
		workers.Go(func() { c.worker(w) })
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	byPart := make([][]*kgo.Record, parts)
	for i := 0; i < b.N; {
		free, _ := c.waitRoom(ctx)
		for p := range byPart {
			byPart[p] = byPart[p][:0]
		}
		for n := min(free, b.N-i); n > 0; n-- {
			r := recs[i%len(recs)]
			byPart[r.Partition] = append(byPart[r.Partition], r)
			i++
		}
		ft := kgo.FetchTopic{Topic: "t"}
		for p, rs := range byPart {
			ft.Partitions = append(ft.Partitions, kgo.FetchPartition{Partition: int32(p), Records: rs})
		}
		c.addFetches(kgo.Fetches{{Topics: []kgo.FetchTopic{ft}}})
		c.dispatch(ctx, free)
	}
	// A promoted call (the poll loop descheduled for a millisecond on a busy machine) returns
	// from dispatch with records left in the backlog, which Run's next poll loop dispatches.
	for {
		c.mu.Lock()
		left := len(c.backlog)
		c.mu.Unlock()
		if left == 0 {
			break
		}
		free, _ := c.waitRoom(ctx)
		c.dispatch(ctx, free)
	}
	<-done
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	c.mu.Lock()
	c.stopping = true
	c.work.Broadcast()
	c.mu.Unlock()
	workers.Wait()
}

// processCPU returns the user and system CPU time the process has used: a busy machine distorts
// it far less than wall time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
