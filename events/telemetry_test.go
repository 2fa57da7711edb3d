package events

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/surgekit/surge/internal/kafkatest"
	"github.com/surgekit/surge/internal/oteltest"
	"github.com/surgekit/surge/internal/redistest"
)

func otelProducer(t *testing.T, kc *kafkatest.KafkaCluster, sdk *oteltest.SDK, txID string) *Producer {
	t.Helper()
	p, err := NewProducer(ProducerConfig{Brokers: kc.Seeds(), TransactionalID: txID,
		TracerProvider: sdk.TracerProvider, MeterProvider: sdk.MeterProvider, Propagator: sdk.Propagator})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

// headerValues returns the values of every header of r called key.
func headerValues(r *kgo.Record, key string) []string {
	var out []string
	for _, h := range r.Headers {
		if h.Key == key {
			out = append(out, string(h.Value))
		}
	}
	return out
}

func attrOf(kvs []attribute.KeyValue, key string) (attribute.Value, bool) {
	for _, kv := range kvs {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func requireAttrs(t *testing.T, kvs []attribute.KeyValue, want ...attribute.KeyValue) {
	t.Helper()
	for _, w := range want {
		v, ok := attrOf(kvs, string(w.Key))
		require.True(t, ok, "attribute %s missing from %v", w.Key, kvs)
		require.Equal(t, w.Value, v, "attribute %s", w.Key)
	}
}

func spanByID(spans []sdktrace.ReadOnlySpan, id trace.SpanID) sdktrace.ReadOnlySpan {
	for _, s := range spans {
		if s.SpanContext().SpanID() == id {
			return s
		}
	}
	return nil
}

// TestOneTraceFromPublishToHandler: a span started before Publish (as an HTTP middleware
// would) and the handler's span share one trace id; the records carry traceparent beside the
// event headers, which plain clients still read, and the user's headers are kept.
func TestOneTraceFromPublishToHandler(t *testing.T) {
	kc := kafkatest.Cluster(t, "orders")
	sdk := oteltest.New(t)
	ctx := testCtx(t, 30*time.Second)
	p := otelProducer(t, kc, sdk, "")

	rctx, root := sdk.TracerProvider.Tracer("test").Start(ctx, "POST /orders")
	require.NoError(t, p.Publish(rctx, "orders", Event{ID: "o-1", Key: "k", Type: "order.created",
		Headers: map[string]string{"x-user": "u1"}}))
	async := make(chan error, 1)
	p.PublishAsync(rctx, "orders", Event{ID: "o-2", Key: "k"}, func(err error) { async <- err })
	require.NoError(t, <-async)
	root.End()
	traceID := root.SpanContext().TraceID()

	recs := readAll(t, kc, "orders", 2)
	for _, r := range recs {
		require.Equal(t, HeaderID, r.Headers[0].Key, "event-id stays first")
		tp := headerValues(r, "traceparent")
		require.Len(t, tp, 1)
		require.Contains(t, tp[0], traceID.String(), "traceparent carries the caller's trace")
		ev, err := fromRecord(r)
		require.NoError(t, err)
		if ev.ID == "o-1" {
			require.Equal(t, "u1", ev.Headers["x-user"], "the user's header is kept")
			require.Equal(t, "order.created", ev.Type)
		}
	}

	type seen struct {
		id string
		sc trace.SpanContext
	}
	got := make(chan seen, 2)
	startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"orders"},
		TracerProvider: sdk.TracerProvider, MeterProvider: sdk.MeterProvider, Propagator: sdk.Propagator,
		Handler: func(ctx context.Context, ev Event) error {
			got <- seen{ev.ID, trace.SpanContextFromContext(ctx)}
			return nil
		}})
	handlerSpans := map[string]trace.SpanContext{}
	for range 2 {
		s := <-got
		require.Equal(t, traceID, s.sc.TraceID(), "the handler of %s runs in the caller's trace", s.id)
		handlerSpans[s.id] = s.sc
	}

	sends := sdk.SpansNamed("send orders")
	require.Len(t, sends, 2, "one producer span per Publish and per PublishAsync")
	for _, s := range sends {
		require.Equal(t, trace.SpanKindProducer, s.SpanKind())
		require.Equal(t, root.SpanContext().SpanID(), s.Parent().SpanID())
		require.Equal(t, scopeName, s.InstrumentationScope().Name)
		requireAttrs(t, s.Attributes(), attribute.String(attrSystem, "kafka"), attribute.String(attrDestination, "orders"),
			attribute.String(attrOperationType, "send"))
	}
	require.Eventually(t, func() bool { return len(sdk.SpansNamed("process orders")) == 2 }, 10*time.Second, time.Millisecond)
	for _, s := range sdk.SpansNamed("process orders") {
		require.Equal(t, trace.SpanKindConsumer, s.SpanKind())
		require.Equal(t, scopeName, s.InstrumentationScope().Name)
		require.Equal(t, traceID, s.SpanContext().TraceID())
		require.NotNil(t, spanByID(sends, s.Parent().SpanID()), "the consumer span continues a producer span")
		id, ok := attrOf(s.Attributes(), attrMessageID)
		require.True(t, ok)
		require.Equal(t, handlerSpans[id.AsString()].SpanID(), s.SpanContext().SpanID(), "the handler runs under the consumer span")
		requireAttrs(t, s.Attributes(), attribute.String(attrSystem, "kafka"), attribute.String(attrDestination, "orders"),
			attribute.String(attrGroup, "g"), attribute.String(attrOperationType, "process"))
		_, ok = attrOf(s.Attributes(), attrPartition)
		require.True(t, ok)
	}
}

// TestTransactInjectsTraceContext: a transaction's records carry the trace too.
func TestTransactInjectsTraceContext(t *testing.T) {
	kc := kafkatest.Cluster(t, "orders", "payments")
	sdk := oteltest.New(t)
	ctx := testCtx(t, 30*time.Second)
	p := otelProducer(t, kc, sdk, "tx-otel")
	rctx, root := sdk.TracerProvider.Tracer("test").Start(ctx, "checkout")
	require.NoError(t, p.Transact(rctx, func(ctx context.Context, tx *Tx) error {
		if err := tx.Publish(ctx, "orders", Event{ID: "o-1"}); err != nil {
			return err
		}
		return tx.Publish(ctx, "payments", Event{ID: "p-1"})
	}))
	require.NoError(t, p.Publish(rctx, "orders", Event{ID: "o-2"}), "Publish as its own transaction")
	root.End()
	for topic, n := range map[string]int{"orders": 2, "payments": 1} {
		for _, r := range readAll(t, kc, topic, n) {
			tp := headerValues(r, "traceparent")
			require.Len(t, tp, 1, "%s/%s", topic, eventID(r))
			require.Contains(t, tp[0], root.SpanContext().TraceID().String())
		}
	}
	require.Len(t, sdk.SpansNamed("send orders"), 2)
	require.Len(t, sdk.SpansNamed("send payments"), 1)
	require.Equal(t, 3.0, sdk.Sum(t, metricSent, attribute.String(attrSystem, "kafka")))
}

// TestTraceHeadersOfTheUser: an Event's own traceparent travels as given, once (a relay
// forwarding a stored context), the publish's context goes where the user set none, and with
// no SDK (the global no-op providers) and no incoming trace nothing is added.
func TestTraceHeadersOfTheUser(t *testing.T) {
	kc := kafkatest.Cluster(t, "given", "mixed", "plain")
	sdk := oteltest.New(t)
	ctx := testCtx(t, 30*time.Second)
	p := otelProducer(t, kc, sdk, "")
	const stored = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	ev := Event{Headers: map[string]string{"traceparent": stored, "x": "y"}}
	require.NoError(t, p.Publish(ctx, "given", ev))
	sctx, span := sdk.TracerProvider.Tracer("test").Start(ctx, "forward")
	require.NoError(t, p.Publish(sctx, "mixed", ev, Event{Key: "k"}))
	span.End()

	r := readAll(t, kc, "given", 1)[0]
	require.Equal(t, []string{stored}, headerValues(r, "traceparent"))
	require.Equal(t, []string{"y"}, headerValues(r, "x"))
	for _, r := range readAll(t, kc, "mixed", 2) {
		if len(headerValues(r, "x")) > 0 {
			require.Equal(t, []string{stored}, headerValues(r, "traceparent"), "the user's traceparent wins")
			continue
		}
		tp := headerValues(r, "traceparent")
		require.Len(t, tp, 1)
		require.Contains(t, tp[0], span.SpanContext().TraceID().String())
	}

	plain := newTestProducer(t, kc) // global providers: no SDK installed
	require.NoError(t, plain.Publish(sctx, "plain", Event{ID: "e"}))
	r = readAll(t, kc, "plain", 1)[0]
	require.Len(t, r.Headers, 2, "only event-id and event-time: %v", r.Headers)
}

// TestConsumerMetricsAndSpanEvents: consumed, process duration (with error.type), retries,
// dead letters and dedupe skips are counted per topic, partition and group, and appear as
// events on the consumer spans.
func TestConsumerMetricsAndSpanEvents(t *testing.T) {
	kc := kafkatest.Cluster(t, "in", "in.dlq")
	sdk := oteltest.New(t)
	_, rdb := redistest.Mini(t)
	ctx := testCtx(t, 30*time.Second)
	p := otelProducer(t, kc, sdk, "")
	// One key: the records run one at a time, in order.
	require.NoError(t, p.Publish(ctx, "in",
		Event{ID: "flaky", Key: "k"}, Event{ID: "bad", Key: "k"}, Event{ID: "dup", Key: "k"}, Event{ID: "dup", Key: "k"}))

	var mu sync.Mutex
	calls := map[string]int{}
	r := startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"}, DeadLetterTopic: "in.dlq",
		Deduper: NewRedisDeduper(rdb, time.Hour), Backoff: func(int) time.Duration { return time.Millisecond },
		TracerProvider: sdk.TracerProvider, MeterProvider: sdk.MeterProvider, Propagator: sdk.Propagator,
		Handler: func(_ context.Context, ev Event) error {
			mu.Lock()
			calls[ev.ID]++
			n := calls[ev.ID]
			mu.Unlock()
			switch {
			case ev.ID == "flaky" && n == 1:
				return errors.New("flaky")
			case ev.ID == "bad":
				return Permanent(errors.New("bad"))
			}
			return nil
		}})
	require.Eventually(t, func() bool {
		st := r.c.Stats()
		return st.Handled == 2 && st.DeadLettered == 1 && st.Deduped == 1
	}, 20*time.Second, 5*time.Millisecond)
	require.NoError(t, r.stop()) // every span has ended

	in := []attribute.KeyValue{attribute.String(attrSystem, "kafka"), attribute.String(attrDestination, "in"),
		attribute.String(attrGroup, "g")}
	require.Equal(t, 4.0, sdk.Sum(t, metricSent, attribute.String(attrSystem, "kafka"), attribute.String(attrDestination, "in")))
	require.Equal(t, 4.0, sdk.Sum(t, metricConsumed, in...))
	require.Equal(t, 1.0, sdk.Sum(t, metricRetries, in...))
	require.Equal(t, 1.0, sdk.Sum(t, metricDeadLettered, in...))
	require.Equal(t, 1.0, sdk.Sum(t, metricDeduped, in...))
	// flaky twice, bad once, dup once (the second dup is skipped before the handler).
	require.EqualValues(t, 4, sdk.HistogramCount(t, metricProcessDuration, in...))
	require.EqualValues(t, 1, sdk.HistogramCount(t, metricProcessDuration, append(in, attribute.String(attrErrorType, "handler_error"))...))
	require.EqualValues(t, 1, sdk.HistogramCount(t, metricProcessDuration, append(in, attribute.String(attrErrorType, "permanent"))...))
	for _, name := range []string{metricSent, metricConsumed, metricProcessDuration, metricRetries, metricDeadLettered, metricDeduped} {
		m, scope, ok := sdk.Metric(t, name)
		require.True(t, ok, name)
		require.Equal(t, scopeName, scope, name)
		if name == metricProcessDuration {
			require.Equal(t, "s", m.Unit)
		}
	}
	// The dead-lettered record kept the trace headers of its publish.
	dl := readAll(t, kc, "in.dlq", 1)[0]
	require.Len(t, headerValues(dl, "traceparent"), 1)

	events := map[string]int{}
	for _, s := range sdk.SpansNamed("process in") {
		for _, e := range s.Events() {
			events[e.Name]++
		}
	}
	require.Equal(t, 1, events[spanEventRetry])
	require.Equal(t, 1, events[spanEventDeadLetter])
	require.Equal(t, 1, events[spanEventDeduplicate])
}

// TestPublishFailureIsCountedWithErrorType: a failed write counts with the Kafka error code.
func TestPublishFailureIsCountedWithErrorType(t *testing.T) {
	kc := kafkatest.Cluster(t, "orders")
	sdk := oteltest.New(t)
	ctx := testCtx(t, 30*time.Second)
	p := otelProducer(t, kc, sdk, "")
	kc.Fake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "orders", Err: kerr.InvalidRecord, Count: -1})
	err := p.Publish(ctx, "orders", Event{ID: "o-bad"})
	require.ErrorIs(t, err, kerr.InvalidRecord)
	require.Equal(t, 1.0, sdk.Sum(t, metricSent, attribute.String(attrDestination, "orders"),
		attribute.String(attrErrorType, "INVALID_RECORD")))
	sends := sdk.SpansNamed("send orders")
	require.Len(t, sends, 1)
	require.Equal(t, "Error", sends[0].Status().Code.String())
}

// TestLagMonitorGauges: each check sets the lag, age and status gauges per partition.
func TestLagMonitorGauges(t *testing.T) {
	kc := kafkatest.ClusterWith(t, kafkatest.Config{Partitions: 2, Topics: []string{"orders"}})
	sdk := oteltest.New(t)
	ctx := testCtx(t, 30*time.Second)
	p := newTestProducer(t, kc)
	for i := range 7 {
		require.NoError(t, p.Publish(ctx, "orders", Event{Key: strings.Repeat("k", i+1)}))
	}
	m, err := NewLagMonitor(LagConfig{Brokers: kc.Seeds(), Group: "g", Topics: []string{"orders"}, MeterProvider: sdk.MeterProvider})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	rep, err := m.Check(ctx)
	require.NoError(t, err)
	require.Len(t, rep.Partitions, 2)
	var total float64
	for _, pl := range rep.Partitions {
		at := []attribute.KeyValue{attribute.String(attrDestination, "orders"), attribute.String(attrGroup, "g"),
			attribute.String(attrPartition, []string{"0", "1"}[pl.Partition])}
		lag, ok := sdk.Gauge(t, metricLag, at...)
		require.True(t, ok)
		require.EqualValues(t, pl.Lag, lag)
		total += lag
		st, ok := sdk.Gauge(t, metricLagStatus, at...)
		require.True(t, ok)
		require.EqualValues(t, pl.Status, st)
		_, ok = sdk.Gauge(t, metricLagAge, at...)
		require.True(t, ok)
	}
	require.Equal(t, 7.0, total)
	_, scope, _ := sdk.Metric(t, metricLag)
	require.Equal(t, scopeName, scope)
}

// TestNoSDKCostsNoAllocation: with the global providers and no SDK installed, opening the
// publish and process telemetry allocates nothing, and a trace already in the caller's context
// (or the record's headers) is still passed on.
func TestNoSDKCostsNoAllocation(t *testing.T) {
	if otelGlobalInstalled() {
		t.Skip("a global tracer provider is installed")
	}
	cfg := ProducerConfig{Brokers: []string{"b:1"}}
	rc, err := cfg.resolve()
	require.NoError(t, err)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		_, span, th := rc.tel.start(ctx, "orders", 1)
		span.End()
		if th != nil {
			panic("trace headers without a trace")
		}
	})
	require.Zero(t, allocs, "publish telemetry with no SDK")

	c := bareConsumer(t)
	pt := c.cfg.tel.forPartition(tp{"orders", 0})
	r := &kgo.Record{Topic: "orders", Headers: []kgo.RecordHeader{{Key: HeaderID, Value: []byte("e")}}}
	allocs = testing.AllocsPerRun(100, func() {
		_, span := c.cfg.tel.startProcess(ctx, pt, r, true)
		span.End()
	})
	require.Zero(t, allocs, "process telemetry with no SDK")

	// An incoming trace is passed on without a span of ours: the W3C propagator stands for the
	// one an application sets globally.
	sdk := oteltest.New(t)
	sctx, span := sdk.TracerProvider.Tracer("test").Start(ctx, "incoming")
	defer span.End()
	pcfg := ProducerConfig{Brokers: []string{"b:1"}, Propagator: sdk.Propagator}
	prc, err := pcfg.resolve()
	require.NoError(t, err)
	_, _, th := prc.tel.start(sctx, "orders", 1)
	require.Len(t, th, 1)
	require.Equal(t, "traceparent", th[0].Key)
	require.Contains(t, string(th[0].Value), span.SpanContext().TraceID().String())

	ccfg := ConsumerConfig{Brokers: []string{"b:1"}, Group: "g", Topics: []string{"orders"}, Propagator: sdk.Propagator,
		Handler: func(context.Context, Event) error { return nil }}
	crc, err := ccfg.resolve()
	require.NoError(t, err)
	hctx, _ := crc.tel.startProcess(ctx, pt, &kgo.Record{Headers: th}, true)
	require.Equal(t, span.SpanContext().TraceID(), trace.SpanContextFromContext(hctx).TraceID())
}

func otelGlobalInstalled() bool { return tracing(true) }

// A consumer built with the global propagator reads trace context with whatever propagator
// the application installs, also after NewConsumer, and skips extraction while there is none.
// It runs in a child process: installing a global propagator would leak into other tests.
func TestConsumerUsesAGlobalPropagatorInstalledLater(t *testing.T) {
	if os.Getenv("EVENTS_GLOBAL_PROPAGATOR_CHILD") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestConsumerUsesAGlobalPropagatorInstalledLater$", "-test.count=1")
		cmd.Env = append(os.Environ(), "EVENTS_GLOBAL_PROPAGATOR_CHILD=1")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "child test:\n%s", out)
		require.Contains(t, string(out), "PASS")
		return
	}
	require.Same(t, defaultPropagator, otel.GetTextMapPropagator(), "no propagator installed yet")
	c, err := NewConsumer(ConsumerConfig{Brokers: []string{"b:1"}, Group: "g", Topics: []string{"t"},
		Handler: func(context.Context, Event) error { return nil }})
	require.NoError(t, err)
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte(parent)}}}
	ctx := context.Background()
	require.Equal(t, ctx, c.cfg.tel.extract(ctx, r), "nothing installed: the context is passed on as is")

	otel.SetTextMapPropagator(propagation.TraceContext{})
	sc := trace.SpanContextFromContext(c.cfg.tel.extract(ctx, r))
	require.True(t, sc.IsValid(), "the propagator installed after NewConsumer is used")
	require.Equal(t, "0af7651916cd43dd8448eb211c80319c", sc.TraceID().String())
}

// countingPropagator is the W3C propagator, counting its Extract calls.
type countingPropagator struct {
	propagation.TraceContext
	extracts int
}

func (p *countingPropagator) Extract(ctx context.Context, c propagation.TextMapCarrier) context.Context {
	p.extracts++
	return p.TraceContext.Extract(ctx, c)
}

// A record that carries no header but the event's own has no trace context to extract, so the
// propagator is not asked (it costs every event of a process that installs one globally);
// one with a traceparent is extracted and its handler runs in that trace.
func TestTraceContextIsExtractedOnlyFromRecordsWithOtherHeaders(t *testing.T) {
	prop := &countingPropagator{}
	c, err := NewConsumer(ConsumerConfig{Brokers: []string{"b:1"}, Group: "g", Topics: []string{"t"}, Propagator: prop,
		Handler: func(context.Context, Event) error { return nil }})
	require.NoError(t, err)
	c.work = sync.NewCond(&c.mu)
	c.hctx, c.hcancel = context.WithCancel(context.Background())
	t.Cleanup(c.hcancel)
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	var traces []string
	var headers []map[string]string
	c.cfg.Handler = func(ctx context.Context, ev Event) error {
		traces = append(traces, trace.SpanContextFromContext(ctx).TraceID().String())
		headers = append(headers, ev.Headers)
		return nil
	}
	c.mu.Lock()
	p := c.newPart(tp{"t", 0})
	c.enqueue(p, &kgo.Record{Topic: "t", Offset: 0, Key: []byte("k"), Headers: []kgo.RecordHeader{
		{Key: HeaderID, Value: []byte("e0")}, {Key: HeaderType, Value: []byte("x")}}}, [16]byte{})
	c.enqueue(p, &kgo.Record{Topic: "t", Offset: 1, Key: []byte("k"), Headers: []kgo.RecordHeader{
		{Key: HeaderID, Value: []byte("e1")}, {Key: "traceparent", Value: []byte(parent)}}}, [16]byte{})
	q := c.ready[0]
	c.ready = c.ready[1:]
	run := c.take(q)
	c.mu.Unlock()

	done, _ := c.processRun(0, p, q.key, run, 0, nil, nil)
	require.Equal(t, 2, done)
	require.Equal(t, 1, prop.extracts, "only the record with a traceparent is extracted")
	require.Equal(t, []string{trace.TraceID{}.String(), "0af7651916cd43dd8448eb211c80319c"}, traces)
	require.Equal(t, []map[string]string{nil, {"traceparent": parent}}, headers)
	require.EqualValues(t, 2, c.Stats().Handled)
}
