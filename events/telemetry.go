package events

// OpenTelemetry: the producer span and trace headers of a publish, the consumer span of each
// processed record, and the package's metrics. Everything here goes through the OTel API only;
// with no SDK installed the instruments are no-ops and no trace header is written.

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/surgekit/surge/internal/otelx"
)

// Telemetry names: the OpenTelemetry contract of the package (see the package documentation).
const (
	scopeName = otelx.ScopePrefix + "events"

	metricSent            = "messaging.client.sent.messages"
	metricConsumed        = "messaging.client.consumed.messages"
	metricProcessDuration = "messaging.process.duration"
	metricRetries         = "surge.events.retries"
	metricDeadLettered    = "surge.events.dead_lettered"
	metricDeduped         = "surge.events.deduped"
	metricLag             = "surge.events.lag"
	metricLagAge          = "surge.events.lag.age"
	metricLagStatus       = "surge.events.lag.status"

	attrSystem        = "messaging.system"
	attrDestination   = "messaging.destination.name"
	attrPartition     = "messaging.destination.partition.id"
	attrGroup         = "messaging.consumer.group.name"
	attrErrorType     = "error.type"
	attrOperationType = "messaging.operation.type"
	attrOperationName = "messaging.operation.name"
	attrMessageID     = "messaging.message.id"
	attrOffset        = "messaging.kafka.offset"
	attrBatchCount    = "messaging.batch.message_count"
	attrAttempt       = "surge.events.attempt"  // span events: handler attempts made so far
	attrDLQTopic      = "surge.events.dlq.name" // span event dead_letter: the DeadLetterTopic

	systemKafka = "kafka"

	spanEventRetry       = "retry"        // the handler failed; the event will be tried again
	spanEventDeadLetter  = "dead_letter"  // the event was written to the DeadLetterTopic
	spanEventDeduplicate = "deduplicated" // the Deduper had the event done: the handler did not run
	spanEventPaused      = "paused"       // failed for good without a DeadLetterTopic
)

// defaultTracerProvider is the global tracer provider as it is until the application installs
// one (a no-op that would delegate to it), or nil when one was installed before this package
// was initialised.
var defaultTracerProvider = func() trace.TracerProvider {
	tp := otel.GetTracerProvider()
	if reflect.TypeOf(tp).String() == "*global.tracerProvider" {
		return tp
	}
	return nil
}()

// defaultPropagator is the global propagator as it is until the application installs one (a
// no-op behind a lock that would delegate to it), or nil when one was installed before this
// package was initialised.
var defaultPropagator = func() propagation.TextMapPropagator {
	p := otel.GetTextMapPropagator()
	if reflect.TypeOf(p).String() == "*global.textMapPropagator" {
		return p
	}
	return nil
}()

// tracing reports whether spans may record: always with a provider of the caller's (global is
// false), and with the global one once the application installed an SDK. Without one a span
// would be a no-op that still costs three allocations, so publish and process skip it and only
// pass the caller's (or the record's) trace context on. Checked per call: an SDK installed
// after the constructor ran is used from then on.
func tracing(global bool) bool {
	return !global || defaultTracerProvider == nil || otel.GetTracerProvider() != defaultTracerProvider
}

// noSpan stands for a span not opened: ending it or adding to it does nothing.
var noSpan trace.Span = noop.Span{}

// error.type values of the consumer metrics (a fixed set, so attribute sets are built once).
type errType uint8

const (
	errHandler   errType = iota // the handler returned an error
	errPermanent                // the handler returned a Permanent error
	errPanic                    // the handler panicked
	errCanceled                 // the handler's context ended (shutdown, revoke, lost claim)
	numErrTypes
)

var errTypeNames = [numErrTypes]string{"handler_error", "permanent", "panic", "canceled"}

// errPanicked marks a handler panic turned into an error by Consumer.call.
var errPanicked = errors.New("events: handler panic")

func errTypeOf(err error) errType {
	switch {
	case errors.Is(err, errPanicked):
		return errPanic
	case IsPermanent(err):
		return errPermanent
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errCanceled
	default:
		return errHandler
	}
}

// publishErrType names a failed write: the Kafka error code (a fixed set), the context's end,
// or "_OTHER".
func publishErrType(err error) string {
	var ke *kerr.Error
	switch {
	case errors.As(err, &ke):
		return ke.Message
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	case errors.Is(err, kgo.ErrClientClosed):
		return "client_closed"
	default:
		return "_OTHER"
	}
}

// headerCarrier reads and writes record headers for a propagator. A pointer to it is passed,
// so no interface conversion allocates.
type headerCarrier []kgo.RecordHeader

// Get returns the value of the first header called key, or "".
func (c *headerCarrier) Get(key string) string {
	for i := range *c {
		if (*c)[i].Key == key {
			return string((*c)[i].Value)
		}
	}
	return ""
}

// Set appends a header.
func (c *headerCarrier) Set(key, value string) {
	*c = append(*c, kgo.RecordHeader{Key: key, Value: []byte(value)})
}

// Keys returns the header names.
func (c *headerCarrier) Keys() []string {
	out := make([]string, len(*c))
	for i := range *c {
		out[i] = (*c)[i].Key
	}
	return out
}

// producerTelemetry is a Producer's instruments and its per-topic attributes, resolved once.
type producerTelemetry struct {
	tracer trace.Tracer
	global bool // the tracer is the global provider's
	prop   propagation.TextMapPropagator
	sent   metric.Int64Counter

	mu     sync.Mutex                           // serialises additions to topics
	topics atomic.Pointer[map[string]*pubTopic] // copy on write: lookups take no lock
}

// pubTopic is what a publish to one topic records with, built once per topic.
type pubTopic struct {
	spanName string
	start    []trace.SpanStartOption
	ok       []metric.AddOption
}

// maxCachedTopics bounds the per-topic cache of a Producer; topics beyond it build their
// attributes per call.
const maxCachedTopics = 1024

func newProducerTelemetry(cfg *ProducerConfig) *producerTelemetry {
	m := otelx.Meter(cfg.MeterProvider, scopeName)
	t := &producerTelemetry{
		tracer: otelx.Tracer(cfg.TracerProvider, scopeName),
		global: cfg.TracerProvider == nil,
		prop:   otelx.Propagator(cfg.Propagator),
		sent: otelx.Must(m.Int64Counter(metricSent,
			metric.WithDescription("Events written to Kafka (acknowledged, or failed with error.type), by topic"),
			metric.WithUnit("{message}"))),
	}
	t.topics.Store(&map[string]*pubTopic{})
	return t
}

func (t *producerTelemetry) topic(name string) *pubTopic {
	if pt := (*t.topics.Load())[name]; pt != nil {
		return pt
	}
	base := []attribute.KeyValue{attribute.String(attrSystem, systemKafka), attribute.String(attrDestination, name)}
	pt := &pubTopic{
		spanName: "send " + name,
		start: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(append(base,
			attribute.String(attrOperationType, "send"), attribute.String(attrOperationName, "send"))...)},
		ok: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(base...))},
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.topics.Load()
	if have := old[name]; have != nil {
		return have
	}
	if len(old) < maxCachedTopics {
		m := make(map[string]*pubTopic, len(old)+1)
		for k, v := range old {
			m[k] = v
		}
		m[name] = pt
		t.topics.Store(&m)
	}
	return pt
}

// start opens the producer span of a publish of n events to topic and returns its context
// and the trace headers to write on each record (nil when there is nothing to propagate: no
// valid span context and no baggage, as with no SDK installed and no incoming trace). With
// the global provider and no SDK installed it opens no span and passes ctx's trace on.
func (t *producerTelemetry) start(ctx context.Context, topic string, n int) (context.Context, trace.Span, []kgo.RecordHeader) {
	span := noSpan
	if tracing(t.global) {
		pt := t.topic(topic)
		ctx, span = t.tracer.Start(ctx, pt.spanName, pt.start...)
		if n != 1 && span.IsRecording() {
			span.SetAttributes(attribute.Int(attrBatchCount, n))
		}
	}
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return ctx, span, nil
	}
	var hs headerCarrier
	t.prop.Inject(ctx, &hs)
	return ctx, span, hs
}

// count records one event's publish outcome.
func (t *producerTelemetry) count(ctx context.Context, topic string, err error) {
	if err == nil {
		t.sent.Add(ctx, 1, t.topic(topic).ok...)
		return
	}
	t.sent.Add(ctx, 1, metric.WithAttributes(attribute.String(attrSystem, systemKafka),
		attribute.String(attrDestination, topic), attribute.String(attrErrorType, publishErrType(err))))
}

// endSpan ends a producer span with err's status.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// consumerTelemetry is a Consumer's instruments, resolved once by NewConsumer.
type consumerTelemetry struct {
	tracer       trace.Tracer
	global       bool // the tracer is the global provider's
	prop         propagation.TextMapPropagator
	globalProp   bool // prop is the global propagator: read it per record (see extract)
	group        string
	consumed     metric.Int64Counter
	duration     metric.Float64Histogram
	retries      metric.Int64Counter
	deadLettered metric.Int64Counter
	deduped      metric.Int64Counter
}

// processBuckets are the default bucket boundaries (seconds) of messaging.process.duration:
// the SDK's defaults (0, 5, 10, 25... 10000) are made for milliseconds.
var processBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

func newConsumerTelemetry(cfg *ConsumerConfig) *consumerTelemetry {
	m := otelx.Meter(cfg.MeterProvider, scopeName)
	return &consumerTelemetry{
		tracer:     otelx.Tracer(cfg.TracerProvider, scopeName),
		global:     cfg.TracerProvider == nil,
		prop:       otelx.Propagator(cfg.Propagator),
		globalProp: cfg.Propagator == nil,
		group:      cfg.Group,
		consumed: otelx.Must(m.Int64Counter(metricConsumed,
			metric.WithDescription("Records fetched and handed to the consumer's workers, by topic and partition"),
			metric.WithUnit("{message}"))),
		duration: otelx.Must(m.Float64Histogram(metricProcessDuration,
			metric.WithDescription("Duration of one handler call, with error.type when it failed"),
			metric.WithUnit("s"),
			metric.WithExplicitBucketBoundaries(processBuckets...))),
		retries: otelx.Must(m.Int64Counter(metricRetries,
			metric.WithDescription("Failed handler calls whose event is scheduled for another attempt"),
			metric.WithUnit("{message}"))),
		deadLettered: otelx.Must(m.Int64Counter(metricDeadLettered,
			metric.WithDescription("Events written to the DeadLetterTopic after failing for good"),
			metric.WithUnit("{message}"))),
		deduped: otelx.Must(m.Int64Counter(metricDeduped,
			metric.WithDescription("Records skipped because the Deduper had their event (or dead letter) done"),
			metric.WithUnit("{message}"))),
	}
}

// partTelemetry is what one partition's records are recorded with, built once when the
// partition gets its first records, so recording allocates nothing.
type partTelemetry struct {
	spanName string
	start    []trace.SpanStartOption
	add      []metric.AddOption                 // messaging.system, destination, partition, group
	ok       []metric.RecordOption              // the same, for the histogram
	failed   [numErrTypes][]metric.RecordOption // the same with error.type
}

func (t *consumerTelemetry) forPartition(k tp) *partTelemetry {
	base := []attribute.KeyValue{
		attribute.String(attrSystem, systemKafka),
		attribute.String(attrDestination, k.topic),
		attribute.String(attrPartition, strconv.Itoa(int(k.partition))),
		attribute.String(attrGroup, t.group),
	}
	set := attribute.NewSet(base...)
	pt := &partTelemetry{
		spanName: "process " + k.topic,
		start: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(append(base,
			attribute.String(attrOperationType, "process"), attribute.String(attrOperationName, "process"))...)},
		add: []metric.AddOption{metric.WithAttributeSet(set)},
		ok:  []metric.RecordOption{metric.WithAttributeSet(set)},
	}
	for e := range numErrTypes {
		pt.failed[e] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(
			append(base[:len(base):len(base)], attribute.String(attrErrorType, errTypeNames[e]))...))}
	}
	return pt
}

// startProcess opens the consumer span of one try at r, continuing the trace context its
// headers carry (none: a new trace); extract false says r has no header a propagator could
// read. With the global provider and no SDK installed it opens no span: the handler's ctx
// carries the record's trace context as extracted.
func (t *consumerTelemetry) startProcess(ctx context.Context, pt *partTelemetry, r *kgo.Record, extract bool) (context.Context, trace.Span) {
	if extract {
		ctx = t.extract(ctx, r)
	}
	if !tracing(t.global) {
		return ctx, noSpan
	}
	ctx, span := t.tracer.Start(ctx, pt.spanName, pt.start...)
	if span.IsRecording() {
		span.SetAttributes(attribute.Int64(attrOffset, r.Offset))
	}
	return ctx, span
}

// extract returns ctx with the trace context of r's headers. With the global propagator and
// none installed it returns ctx as is: the global no-op takes a lock per call, which workers
// handling a record each would contend on.
func (t *consumerTelemetry) extract(ctx context.Context, r *kgo.Record) context.Context {
	prop := t.prop
	if t.globalProp {
		if prop = otel.GetTextMapPropagator(); prop == defaultPropagator {
			return ctx
		}
	}
	return prop.Extract(ctx, (*headerCarrier)(&r.Headers))
}

// lagTelemetry is a LagMonitor's gauges.
type lagTelemetry struct {
	lag    metric.Int64Gauge
	age    metric.Float64Gauge
	status metric.Int64Gauge
}

func newLagTelemetry(mp metric.MeterProvider) *lagTelemetry {
	m := otelx.Meter(mp, scopeName)
	return &lagTelemetry{
		lag: otelx.Must(m.Int64Gauge(metricLag,
			metric.WithDescription("Records of the partition not yet committed by the group (high watermark minus committed offset), at the last check"),
			metric.WithUnit("{message}"))),
		age: otelx.Must(m.Float64Gauge(metricLagAge,
			metric.WithDescription("How long ago the oldest record not committed by the group was published, at the last check (0 without lag)"),
			metric.WithUnit("s"))),
		status: otelx.Must(m.Int64Gauge(metricLagStatus,
			metric.WithDescription("The partition's lag status at the last check: 0 OK, 1 WARN, 2 REWIND, 3 STALL, 4 STOP"),
			metric.WithUnit("1"))),
	}
}

// record sets the gauges of every partition of rep.
func (t *lagTelemetry) record(ctx context.Context, rep *LagReport) {
	for _, pl := range rep.Partitions {
		opt := metric.WithAttributeSet(attribute.NewSet(
			attribute.String(attrSystem, systemKafka),
			attribute.String(attrDestination, pl.Topic),
			attribute.String(attrPartition, strconv.Itoa(int(pl.Partition))),
			attribute.String(attrGroup, rep.Group)))
		t.lag.Record(ctx, pl.Lag, opt)
		t.age.Record(ctx, pl.Age.Seconds(), opt)
		t.status.Record(ctx, int64(pl.Status), opt)
	}
}
