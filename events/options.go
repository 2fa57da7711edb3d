package events

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/surgekit/surge/internal/jitter"
)

// ProducerConfig configures [NewProducer].
type ProducerConfig struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string
	// KafkaOptions are passed to kgo.NewClient after the producer's own. Options that turn
	// idempotent writes off (kgo.DisableIdempotentWrite,
	// kgo.AllowIdempotentProduceCancellation) or acks below all (kgo.RequiredAcks) are rejected.
	KafkaOptions []kgo.Opt
	// TransactionalID turns on transactions: [Producer.Transact] writes all of its events or
	// none. Empty (the default) means a plain idempotent producer.
	TransactionalID string
	// Logger receives background errors; nil discards.
	Logger *slog.Logger
}

// Handler handles one event. It returns nil when done; an error asks for a retry (see
// [Permanent] to skip them). It is called from several goroutines at once, but never
// concurrently for two events of one key in one partition.
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
	// Concurrency is the number of handler goroutines; events with one key (per partition) are
	// still handled one at a time and in order, records without a key one at a time per
	// partition. Default 16.
	Concurrency int
	// MaxAttempts is how many times an event is handled before it is dead-lettered. Default 3.
	MaxAttempts int
	// Backoff returns the wait before attempt n+1 after n failed attempts (n >= 1). While a key
	// waits, other keys keep flowing. Default: exponential from 100ms to 10s with full jitter.
	Backoff func(n int) time.Duration
	// DeadLetterTopic receives events that failed MaxAttempts times, with provenance headers
	// (see [HeaderDLQTopic]); their offset is committed once the write is acknowledged. Empty:
	// the partition is paused instead, and the error logged and counted, so nothing is lost.
	DeadLetterTopic string
	// Deduper, when set, makes handling effectively once: an event ID is claimed before the
	// handler runs, marked done after it succeeds and released when it fails.
	Deduper Deduper
	// DedupeLease is how long a claim lasts before another consumer may take the event over
	// (after a crash). It should exceed the slowest handler. Default 30s.
	DedupeLease time.Duration
	// CommitInterval is how often done offsets are committed; they are also committed on
	// revoke and when Run ends. Default 1s.
	CommitInterval time.Duration
	// MaxBuffered caps the records fetched and not yet done; polling waits above it.
	// Default 64 × Concurrency, at least 1024.
	MaxBuffered int
	// ShutdownTimeout bounds how long Run waits for running handlers when ctx ends; their
	// context is cancelled then. Default 30s.
	ShutdownTimeout time.Duration
	// KafkaOptions are passed to kgo.NewClient before the consumer's own, which win: the group,
	// topics, manual commits, cooperative-sticky balancing and rebalance callbacks are the
	// consumer's. They may override the defaults the consumer sets first: the reset offset
	// (default: the start of the partition, so a new group misses nothing) and the isolation
	// level (default read-committed, so aborted transactions are never handled). Dead letters
	// are written with this client, so with a DeadLetterTopic the producer rules of
	// [ProducerConfig.KafkaOptions] apply.
	KafkaOptions []kgo.Opt
	// Logger receives handler failures, dead letters, pauses and commit errors; nil discards.
	Logger *slog.Logger
}

func discardLogger(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func defaultBackoff(n int) time.Duration {
	return jitter.Exponential(n-1, 100*time.Millisecond, 10*time.Second)
}

func (cfg *ConsumerConfig) withDefaults() (ConsumerConfig, error) {
	c := *cfg
	switch {
	case len(c.Brokers) == 0:
		return c, configError("Brokers", "empty")
	case c.Group == "":
		return c, configError("Group", "empty")
	case len(c.Topics) == 0:
		return c, configError("Topics", "empty")
	case c.Handler == nil:
		return c, configError("Handler", "nil")
	case c.Concurrency < 0:
		return c, configError("Concurrency", "negative (%d)", c.Concurrency)
	case c.MaxAttempts < 0:
		return c, configError("MaxAttempts", "negative (%d)", c.MaxAttempts)
	case c.DedupeLease < 0:
		return c, configError("DedupeLease", "negative (%v)", c.DedupeLease)
	case c.CommitInterval < 0:
		return c, configError("CommitInterval", "negative (%v)", c.CommitInterval)
	case c.MaxBuffered < 0:
		return c, configError("MaxBuffered", "negative (%d)", c.MaxBuffered)
	case c.ShutdownTimeout < 0:
		return c, configError("ShutdownTimeout", "negative (%v)", c.ShutdownTimeout)
	}
	for _, t := range c.Topics {
		if t == "" {
			return c, configError("Topics", "empty topic name")
		}
		if t == c.DeadLetterTopic {
			return c, configError("DeadLetterTopic", "%q is also consumed", t)
		}
	}
	c.Topics = append([]string(nil), c.Topics...)
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 3
	}
	if c.Backoff == nil {
		c.Backoff = defaultBackoff
	}
	if c.DedupeLease == 0 {
		c.DedupeLease = 30 * time.Second
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = time.Second
	}
	if c.MaxBuffered == 0 {
		c.MaxBuffered = max(64*c.Concurrency, 1024)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	c.Logger = discardLogger(c.Logger)
	return c, nil
}
