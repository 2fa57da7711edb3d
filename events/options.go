package events

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/surgekit/surge/internal/jitter"
)

// ProducerConfig configures [NewProducer].
type ProducerConfig struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string
	// KafkaOptions are passed to kgo.NewClient after the producer's own. Options that turn
	// idempotent writes off (kgo.DisableIdempotentWrite,
	// kgo.AllowIdempotentProduceCancellation), acks below all (kgo.RequiredAcks) or replace the
	// murmur2 key placement (kgo.RecordPartitioner) are rejected.
	KafkaOptions []kgo.Opt
	// TransactionalID turns on transactions: [Producer.Transact] writes all of its events or
	// none. Empty (the default) means a plain idempotent producer.
	TransactionalID string
	// Logger receives background errors; nil discards.
	Logger *slog.Logger
	// TracerProvider opens a producer span ("send <topic>", kind producer) per Publish,
	// PublishAsync and Tx.Publish call; its context goes into the records' headers (see
	// Propagator). Nil means the global provider, otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// MeterProvider records messaging.client.sent.messages (see the package documentation).
	// Nil means the global provider, otel.GetMeterProvider(); with no SDK installed recording
	// costs next to nothing.
	MeterProvider metric.MeterProvider
	// Propagator writes the publishing context into each record's headers, next to
	// [HeaderID]: with the W3C propagators, traceparent and tracestate (and baggage), plain
	// headers any Kafka client reads. A header of the same name in Event.Headers wins (a relay
	// forwarding a stored context keeps it; a handler re-publishing a consumed Event keeps the
	// upstream traceparent unless it deletes it). Nil means the global propagator,
	// otel.GetTextMapPropagator(), which writes nothing until the application sets one.
	Propagator propagation.TextMapPropagator
}

// Handler handles one event. It returns nil when done; an error asks for a retry (see
// [Permanent] to skip them). It is called from several goroutines at once, but never
// concurrently for two events of one key in one partition.
//
// The Event's Data shares memory with the fetched records, and its ID, Type and Key strings
// share 4 KB blocks with other events' strings: a handler that keeps many of them long after
// it returns should keep copies (bytes.Clone, strings.Clone), or each kept value keeps its
// block alive. Data must not be changed.
type Handler func(ctx context.Context, ev Event) error

// ConsumerConfig configures [NewConsumer].
type ConsumerConfig struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string
	// Group is the consumer group. Required.
	Group string
	// Topics to consume. Required, at least one.
	Topics []string
	// Handler handles each event. Required.
	Handler Handler
	// Concurrency is how many handler calls run at once, at most: the number of handler
	// goroutines; events with one key (per partition) are still handled one at a time and in
	// order, records without a key one at a time per partition. Cheap handlers may also run on
	// the fetching goroutine (see [Consumer]) while no goroutine handles anything; a call of it
	// that runs long takes one goroutine's place until it returns. Default [DefaultConcurrency].
	Concurrency int
	// MaxAttempts is how many times an event is handled before it is dead-lettered. Default [DefaultMaxAttempts].
	MaxAttempts int
	// Backoff returns the wait before attempt n+1 after n failed attempts (n >= 1). While a key
	// waits, other keys keep flowing. Default: exponential from [DefaultBackoffMin] to
	// [DefaultBackoffMax] with full jitter.
	Backoff func(n int) time.Duration
	// DeadLetterTopic receives events that failed MaxAttempts times, with provenance headers
	// (see [HeaderDLQTopic]); their offset is committed once the write is acknowledged. Empty:
	// the partition is paused instead, and the error logged and counted, so nothing is lost.
	DeadLetterTopic string
	// Deduper, when set, makes handling effectively once: an event ID is claimed before the
	// handler runs (renewed while it runs when the Deduper is a [DedupeRenewer]), marked done
	// after it succeeds and released when it fails. A dead-lettered record is marked done as a
	// record, not as an event, so a redelivery of it is not dead-lettered twice while the same
	// event published again (a re-driven dead letter) is handled.
	Deduper Deduper
	// DedupeLease is how long a claim lasts before another consumer may take the event over
	// (after a crash). A [DedupeRenewer] claim is renewed every DedupeLease/3 while its handler
	// runs; with any other Deduper it should exceed the slowest handler. Default
	// [DefaultDedupeLease].
	DedupeLease time.Duration
	// CommitInterval is how often done offsets are committed; they are also committed on
	// revoke and when Run ends. Default [DefaultCommitInterval].
	CommitInterval time.Duration
	// MaxBuffered caps the records queued for the workers and not yet done; no more are
	// queued above it. Besides them the consumer holds the rest of kgo's last fetch, taken
	// whole so that kgo fetches the next while the workers handle this one (so up to two
	// fetches, each at most kgo.FetchMaxBytes, are in memory). Default
	// [DefaultBufferedPerWorker] × Concurrency, at least [DefaultMinBuffered].
	MaxBuffered int
	// ShutdownTimeout bounds how long Run waits for running handlers when ctx ends; their
	// context is cancelled then. Default [DefaultShutdownTimeout].
	ShutdownTimeout time.Duration
	// KafkaOptions are passed to kgo.NewClient before the consumer's own, which win: the group,
	// topics, manual commits, cooperative-sticky balancing, kept control records and rebalance
	// callbacks are the consumer's; kgo.ConsumeRegex is refused (Topics are names). They may override the defaults the consumer sets first: the reset offset
	// (default: the start of the partition, so a new group misses nothing) and the isolation
	// level (default read-committed, so aborted transactions are never handled). Dead letters
	// are written with this client, so with a DeadLetterTopic the producer rules of
	// [ProducerConfig.KafkaOptions] apply.
	KafkaOptions []kgo.Opt
	// Logger receives handler failures, dead letters, pauses and commit errors; nil discards.
	Logger *slog.Logger
	// TracerProvider opens a consumer span ("process <topic>", kind consumer) around each try
	// at a record (the handler call, or the dedupe skip or dead-letter write that replaces
	// it), continuing the trace context of the record's headers (see Propagator); retries,
	// dead letters, deduplicated records and pauses are span events. Nil means the global
	// provider, otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// MeterProvider records messaging.client.consumed.messages, messaging.process.duration,
	// surge.events.retries, surge.events.dead_lettered and surge.events.deduped (see the
	// package documentation). Nil means the global provider, otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// Propagator reads the trace context from each record's headers (traceparent and
	// tracestate with the W3C propagators). A record with no header but [HeaderID],
	// [HeaderType] and [HeaderTime] has none to read, and the propagator is not called for
	// it. Nil means the global propagator, otel.GetTextMapPropagator().
	Propagator propagation.TextMapPropagator
}

// Defaults of the configuration fields, used where a field is left zero.
const (
	// DefaultConcurrency is ConsumerConfig.Concurrency's default.
	DefaultConcurrency = 16
	// DefaultMaxAttempts is ConsumerConfig.MaxAttempts's default.
	DefaultMaxAttempts = 3
	// DefaultBackoffMin is the first wait of the default ConsumerConfig.Backoff, which doubles
	// up to DefaultBackoffMax, with full jitter.
	DefaultBackoffMin = 100 * time.Millisecond
	// DefaultBackoffMax caps the default ConsumerConfig.Backoff.
	DefaultBackoffMax = 10 * time.Second
	// DefaultDedupeLease is ConsumerConfig.DedupeLease's default.
	DefaultDedupeLease = 30 * time.Second
	// DefaultCommitInterval is ConsumerConfig.CommitInterval's default.
	DefaultCommitInterval = time.Second
	// DefaultBufferedPerWorker times Concurrency, but at least DefaultMinBuffered, is
	// ConsumerConfig.MaxBuffered's default.
	DefaultBufferedPerWorker = 64
	// DefaultMinBuffered is the floor of ConsumerConfig.MaxBuffered's default.
	DefaultMinBuffered = 1024
	// DefaultShutdownTimeout is ConsumerConfig.ShutdownTimeout's default.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultDedupeTTL is how long [NewRedisDeduper] remembers a handled event when its ttl is
	// not positive.
	DefaultDedupeTTL = 24 * time.Hour
	// DefaultLagInterval is LagConfig.Interval's default.
	DefaultLagInterval = 30 * time.Second
	// DefaultLagWindow is LagConfig.Window's default.
	DefaultLagWindow = 10
	// DefaultMaxLag is LagConfig.MaxLag's default.
	DefaultMaxLag = 10000
	// DefaultMaxLagAge is LagConfig.MaxLagAge's default.
	DefaultMaxLagAge = 5 * time.Minute
	// DefaultMaxFailureRate is LagConfig.MaxFailureRate's default.
	DefaultMaxFailureRate = 0.05
)

// commitTimeout bounds each offset commit: on the interval, on revoke and at the end of Run.
const commitTimeout = 10 * time.Second

func discardLogger(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

func defaultBackoff(n int) time.Duration {
	return jitter.Exponential(n-1, DefaultBackoffMin, DefaultBackoffMax)
}

// invalid returns an error wrapping ErrInvalidOptions that names the field, e.g.
// "events: invalid options: ConsumerConfig.Group must not be empty".
func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s %s", ErrInvalidOptions, field, fmt.Sprintf(format, args...))
}

// producerConfig is ProducerConfig resolved: validated, defaults filled in.
type producerConfig struct {
	ProducerConfig
	tel *producerTelemetry
}

func (cfg *ProducerConfig) resolve() (producerConfig, error) {
	var c producerConfig
	if cfg != nil {
		c.ProducerConfig = *cfg
	}
	if len(c.Brokers) == 0 {
		return c, invalid("ProducerConfig.Brokers", "must not be empty")
	}
	c.Brokers = slices.Clone(c.Brokers)
	c.KafkaOptions = slices.Clone(c.KafkaOptions)
	c.Logger = discardLogger(c.Logger)
	c.tel = newProducerTelemetry(&c.ProducerConfig)
	return c, nil
}

// consumerConfig is ConsumerConfig resolved: validated, defaults filled in.
type consumerConfig struct {
	ConsumerConfig
	tel *consumerTelemetry
}

func (cfg *ConsumerConfig) resolve() (consumerConfig, error) {
	var c consumerConfig
	if cfg != nil {
		c.ConsumerConfig = *cfg
	}
	neg := func(field string, v any) error {
		return invalid("ConsumerConfig."+field, "must not be negative, got %v", v)
	}
	switch {
	case len(c.Brokers) == 0:
		return c, invalid("ConsumerConfig.Brokers", "must not be empty")
	case c.Group == "":
		return c, invalid("ConsumerConfig.Group", "must not be empty")
	case len(c.Topics) == 0:
		return c, invalid("ConsumerConfig.Topics", "must not be empty")
	case c.Handler == nil:
		return c, invalid("ConsumerConfig.Handler", "must not be nil")
	case c.Concurrency < 0:
		return c, neg("Concurrency", c.Concurrency)
	case c.MaxAttempts < 0:
		return c, neg("MaxAttempts", c.MaxAttempts)
	case c.DedupeLease < 0:
		return c, neg("DedupeLease", c.DedupeLease)
	case c.CommitInterval < 0:
		return c, neg("CommitInterval", c.CommitInterval)
	case c.MaxBuffered < 0:
		return c, neg("MaxBuffered", c.MaxBuffered)
	case c.ShutdownTimeout < 0:
		return c, neg("ShutdownTimeout", c.ShutdownTimeout)
	}
	for _, t := range c.Topics {
		if t == "" {
			return c, invalid("ConsumerConfig.Topics", "must not hold an empty topic name")
		}
		if t == c.DeadLetterTopic {
			return c, invalid("ConsumerConfig.DeadLetterTopic", "must not be consumed, got %q, also in Topics", t)
		}
	}
	c.Brokers = slices.Clone(c.Brokers)
	c.Topics = slices.Clone(c.Topics)
	c.KafkaOptions = slices.Clone(c.KafkaOptions)
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Backoff == nil {
		c.Backoff = defaultBackoff
	}
	if c.DedupeLease == 0 {
		c.DedupeLease = DefaultDedupeLease
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = DefaultCommitInterval
	}
	if c.MaxBuffered == 0 {
		c.MaxBuffered = max(DefaultBufferedPerWorker*c.Concurrency, DefaultMinBuffered)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	c.Logger = discardLogger(c.Logger)
	c.tel = newConsumerTelemetry(&c.ConsumerConfig)
	return c, nil
}

// lagConfig is LagConfig resolved: validated, defaults filled in.
type lagConfig struct {
	LagConfig
	tel *lagTelemetry
}

func (cfg *LagConfig) resolve() (lagConfig, error) {
	var c lagConfig
	if cfg != nil {
		c.LagConfig = *cfg
	}
	switch {
	case len(c.Brokers) == 0:
		return c, invalid("LagConfig.Brokers", "must not be empty")
	case c.Group == "":
		return c, invalid("LagConfig.Group", "must not be empty")
	case c.Interval < 0:
		return c, invalid("LagConfig.Interval", "must not be negative, got %v", c.Interval)
	case c.Window < 0:
		return c, invalid("LagConfig.Window", "must not be negative, got %v", c.Window)
	case math.IsNaN(c.MaxFailureRate) || c.MaxFailureRate > 1:
		return c, invalid("LagConfig.MaxFailureRate", "must be at most 1 (negative: off), got %v", c.MaxFailureRate)
	}
	c.Brokers = slices.Clone(c.Brokers)
	c.Topics = slices.Clone(c.Topics)
	c.KafkaOptions = slices.Clone(c.KafkaOptions)
	if c.Interval == 0 {
		c.Interval = DefaultLagInterval
	}
	if c.Window == 0 {
		c.Window = DefaultLagWindow
	}
	if c.MaxLag == 0 {
		c.MaxLag = DefaultMaxLag
	}
	if c.MaxLagAge == 0 {
		c.MaxLagAge = DefaultMaxLagAge
	}
	if c.MaxFailureRate == 0 {
		c.MaxFailureRate = DefaultMaxFailureRate
	}
	c.Logger = discardLogger(c.Logger)
	c.tel = newLagTelemetry(c.MeterProvider)
	return c, nil
}
