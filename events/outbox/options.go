package outbox

import (
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"time"

	"github.com/surgekit/surge/events"
)

// Defaults of the option fields, used where a field is left zero.
const (
	// DefaultTable is Options.Table's default.
	DefaultTable = "surge_outbox"
	// DefaultBatchSize is RelayOptions.BatchSize's default: rows read, published and deleted per
	// round.
	DefaultBatchSize = 500
	// DefaultPollInterval is RelayOptions.PollInterval's default.
	DefaultPollInterval = 500 * time.Millisecond
	// DefaultLeaseTTL is RelayOptions.LeaseTTL's default.
	DefaultLeaseTTL = 15 * time.Second
	// DefaultPublishTimeout is RelayOptions.PublishTimeout's default.
	DefaultPublishTimeout = 5 * time.Second
	// DefaultMinBackoff is RelayOptions.MinBackoff's default.
	DefaultMinBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff is RelayOptions.MaxBackoff's default.
	DefaultMaxBackoff = 10 * time.Second
)

// maxBatchSize bounds RelayOptions.BatchSize (and the rows of one INSERT in Add) so that a
// statement's parameters stay below both engines' limits.
const maxBatchSize = 4000

// Options configures [New]. The zero value (or nil) means all defaults.
type Options struct {
	// Table is the outbox table's name, a plain identifier (PostgreSQL: optionally
	// schema-qualified). The relay's lease lives in Table+"_lease". Both are created when
	// missing. Default [DefaultTable].
	Table string
	// Dialect is the database's SQL dialect. Zero: detected by asking the database.
	Dialect Dialect
	// Logger is the logger of relays built on this outbox whose RelayOptions.Logger is nil.
	// nil discards.
	Logger *slog.Logger
}

type config struct {
	table   string
	dialect Dialect
	log     *slog.Logger
}

var (
	identRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,50}$`)
	pgTableRE = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]{0,50}\.)?[A-Za-z_][A-Za-z0-9_]{0,50}$`)
)

// resolve validates o and fills in defaults; a nil o means all defaults. The dialect is left
// zero when it must be detected.
func (o *Options) resolve() (config, error) {
	var opt Options
	if o != nil {
		opt = *o
	}
	c := config{table: opt.Table, dialect: opt.Dialect, log: opt.Logger}
	if c.table == "" {
		c.table = DefaultTable
	}
	switch c.dialect {
	case 0, Postgres, SQLite:
	default:
		return config{}, fmt.Errorf("%w: Options.Dialect must be Postgres or SQLite, got %d", ErrInvalidOptions, int(c.dialect))
	}
	re := identRE
	if c.dialect != SQLite {
		re = pgTableRE
	}
	if !re.MatchString(c.table) {
		return config{}, fmt.Errorf("%w: Options.Table must be an identifier of letters, digits and _ (PostgreSQL: optionally schema.table), got %q", ErrInvalidOptions, c.table)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// RelayOptions configures [NewRelay]. The zero value (or nil) means all defaults.
type RelayOptions struct {
	// BatchSize is how many rows one round reads, publishes and deletes (at most 4000).
	// Default [DefaultBatchSize].
	BatchSize int
	// PollInterval is how long an idle leader waits before looking for new rows, unless
	// [Relay.Notify] wakes it first; also how often a follower tries to take the lease over.
	// Default [DefaultPollInterval].
	PollInterval time.Duration
	// LeaseTTL is how long leadership lasts without renewal; the leader renews it every
	// LeaseTTL/3, and another relay takes over within LeaseTTL (plus PollInterval) after the
	// leader stops. Default [DefaultLeaseTTL].
	LeaseTTL time.Duration
	// PublishTimeout bounds the wait for Kafka's acknowledgement of one batch; it must be shorter
	// than LeaseTTL, so a leader stops waiting before its lease can run out. A batch not
	// acknowledged in time is not published again by this relay until the producer has settled it
	// (no duplicates from retries). Default [DefaultPublishTimeout].
	PublishTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failed round (database or Kafka error):
	// exponential from MinBackoff up to MaxBackoff with full jitter, so a relay never spins
	// while Kafka or the database is down. Defaults [DefaultMinBackoff], [DefaultMaxBackoff].
	MinBackoff, MaxBackoff time.Duration
	// Name identifies this relay in the lease row and in logs. Default: host name, process id
	// and a random suffix.
	Name string
	// Logger receives failed rounds and leadership changes. nil: the Outbox's Options.Logger.
	Logger *slog.Logger
}

type relayConfig struct {
	batch          int
	poll           time.Duration
	leaseTTL       time.Duration
	publishTimeout time.Duration
	minBackoff     time.Duration
	maxBackoff     time.Duration
	name           string
	log            *slog.Logger
}

func (o *RelayOptions) resolve() (relayConfig, error) {
	var opt RelayOptions
	if o != nil {
		opt = *o
	}
	c := relayConfig{
		batch: opt.BatchSize, poll: opt.PollInterval, leaseTTL: opt.LeaseTTL,
		publishTimeout: opt.PublishTimeout, minBackoff: opt.MinBackoff, maxBackoff: opt.MaxBackoff,
		name: opt.Name, log: opt.Logger,
	}
	ints := []struct {
		name string
		v    *int
		def  int
	}{{"BatchSize", &c.batch, DefaultBatchSize}}
	for _, f := range ints {
		if *f.v < 0 {
			return relayConfig{}, fmt.Errorf("%w: RelayOptions.%s must not be negative, got %d", ErrInvalidOptions, f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if c.batch > maxBatchSize {
		return relayConfig{}, fmt.Errorf("%w: RelayOptions.BatchSize must be at most %d, got %d", ErrInvalidOptions, maxBatchSize, c.batch)
	}
	durs := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"PollInterval", &c.poll, DefaultPollInterval},
		{"LeaseTTL", &c.leaseTTL, DefaultLeaseTTL},
		{"PublishTimeout", &c.publishTimeout, DefaultPublishTimeout},
		{"MinBackoff", &c.minBackoff, DefaultMinBackoff},
		{"MaxBackoff", &c.maxBackoff, DefaultMaxBackoff},
	}
	for _, f := range durs {
		if *f.v < 0 {
			return relayConfig{}, fmt.Errorf("%w: RelayOptions.%s must not be negative, got %v", ErrInvalidOptions, f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if c.leaseTTL < 3*time.Millisecond {
		return relayConfig{}, fmt.Errorf("%w: RelayOptions.LeaseTTL must be at least 3ms, got %v", ErrInvalidOptions, c.leaseTTL)
	}
	if c.publishTimeout >= c.leaseTTL {
		return relayConfig{}, fmt.Errorf("%w: RelayOptions.PublishTimeout (%v) must be shorter than LeaseTTL (%v)", ErrInvalidOptions, c.publishTimeout, c.leaseTTL)
	}
	if c.maxBackoff < c.minBackoff {
		return relayConfig{}, fmt.Errorf("%w: RelayOptions.MaxBackoff (%v) must not be below MinBackoff (%v)", ErrInvalidOptions, c.maxBackoff, c.minBackoff)
	}
	if c.name == "" {
		host, _ := os.Hostname()
		c.name = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), events.NewID()[24:])
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}
