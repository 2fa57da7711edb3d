package events

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric"
)

// Status is a consumer group's (or one partition's) health, judged Burrow-style over a window
// of samples. Higher values are worse.
type Status uint8

const (
	// StatusOK: lag was zero at some point in the window, or commits are moving and lag is not
	// growing.
	StatusOK Status = iota
	// StatusWarn: commits are moving but lag grew at every sample of the window.
	StatusWarn
	// StatusRewind: the committed offset went backwards (someone reset the group).
	StatusRewind
	// StatusStall: members are present and lag is non-zero, but the committed offset has not
	// moved over the whole window (stuck handlers, a paused partition).
	StatusStall
	// StatusStop: the group has no members and lag is non-zero: nobody is consuming.
	StatusStop
)

var statusNames = [...]string{"OK", "WARN", "REWIND", "STALL", "STOP"}

// String returns the Burrow name: OK, WARN, REWIND, STALL or STOP.
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", s)
}

// LagConfig configures [NewLagMonitor].
type LagConfig struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string
	// Group is the consumer group to watch. Required.
	Group string
	// Topics are the topics the group consumes; the report covers every partition of them.
	// A partition the group has never committed to (or a group that does not exist yet: never
	// joined, never committed) counts its lag from the partition's log start, which is where a
	// [Consumer] starts reading (unless its KafkaOptions reset it elsewhere), and its Commit is
	// -1; such a group has 0 members, so a backlog there is STOP after a full Window and
	// MaxLag/MaxLagAge fire from the first check: a consumer that never starts is alerted on.
	// Empty means every topic the group has offsets for or is assigned; then a group that does
	// not exist yet has nothing to measure and Check returns [ErrGroupNotFound]. Set Topics.
	Topics []string
	// KafkaOptions are passed to kgo.NewClient after the monitor's own.
	KafkaOptions []kgo.Opt
	// Interval is how often Run checks. Default [DefaultLagInterval].
	Interval time.Duration
	// Window is how many samples per partition the evaluation looks at; STALL, STOP and WARN
	// need a full window. Default [DefaultLagWindow] (5 minutes at the default Interval).
	Window int
	// MaxLag is the group's total lag above which the report is in breach: a page-worthy
	// backlog. Default [DefaultMaxLag]; negative disables.
	MaxLag int64
	// MaxLagAge is the age of the oldest unconsumed record above which the report is in breach
	// (the signal to add consumers): how long ago the record at a partition's committed offset
	// was published (its record timestamp, which a [Producer] sets to the publish time, not to
	// Event.Time, so replays and an outbox catching up do not look late). Default [DefaultMaxLagAge]; negative disables.
	MaxLagAge time.Duration
	// MaxFailureRate is the share of failed handler calls over the window above which the
	// report is in breach (time to look at the dead letters). Needs Stats. Default
	// [DefaultMaxFailureRate]; at most 1; negative disables.
	MaxFailureRate float64
	// Stats, when set, is read at each check for the failure rate; pass [Consumer.Stats].
	Stats func() ConsumerStats
	// OnAlert is called from Check (and so from Run) when the [Condition] changes, including
	// the return to healthy. It must not block for long.
	OnAlert func(Alert)
	// Logger receives Run's check errors; nil discards.
	Logger *slog.Logger
	// MeterProvider records, at each check, the gauges surge.events.lag, surge.events.lag.age
	// (s) and surge.events.lag.status (the partition's [Status] as a number, 0 OK to 4 STOP)
	// per topic, partition and group (see the package documentation). Nil means the global
	// provider, otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
}

// Condition is what alerts are about: the worst partition status and the threshold breaches.
type Condition struct {
	Status              Status // the worst partition status
	LagExceeded         bool   // TotalLag > MaxLag
	AgeExceeded         bool   // MaxAge > MaxLagAge
	FailureRateExceeded bool   // FailureRate > MaxFailureRate
}

// Healthy reports whether nothing is wrong.
func (c Condition) Healthy() bool { return c == Condition{} }

// PartitionLag is one partition's figures in a [LagReport].
type PartitionLag struct {
	Topic     string        // the partition's topic
	Partition int32         // the partition number
	Commit    int64         // committed offset; -1 when the group has none (or does not exist)
	End       int64         // high watermark
	Lag       int64         // End - Commit (from the log start when nothing is committed)
	Age       time.Duration // how long ago the oldest unconsumed record was published (see LagConfig.MaxLagAge); 0 without lag
	Status    Status        // this partition's status over the window
}

// LagReport is the result of one [LagMonitor.Check].
type LagReport struct {
	Condition                  // the worst partition status and the threshold breaches
	Group       string         // the consumer group
	Time        time.Time      // when the sample was taken
	Members     int            // members in the group now; 0 when the group does not exist
	TotalLag    int64          // sum of the partitions' lag
	MaxAge      time.Duration  // the largest partition Age
	FailureRate float64        // failed / (handled + failed) over the window; 0 without Stats
	Partitions  []PartitionLag // every monitored partition, by topic and partition
}

// Alert is passed to LagConfig.OnAlert when the condition changes.
type Alert struct {
	Report   LagReport // the check that found the new condition
	Previous Condition // the condition before it
}

// LagSample is one observation of a partition, the input of the window evaluation.
type LagSample struct {
	Time    time.Time // when it was taken
	Commit  int64     // committed offset; -1: nothing committed
	Start   int64     // log start offset: lag counts from it while nothing is committed
	End     int64     // high watermark
	Members int       // members of the group at the time
}

func (s LagSample) lag() int64 {
	if s.Commit < 0 {
		return max(s.End-s.Start, 0)
	}
	return max(s.End-s.Commit, 0)
}

// EvaluateWindow judges one partition from its samples, oldest first, Burrow-style. full says
// whether the window is complete; STALL, STOP and WARN are only given on a full window.
// It is a pure function, safe for concurrent use.
func EvaluateWindow(samples []LagSample, full bool) Status {
	if len(samples) == 0 {
		return StatusOK
	}
	for i := 1; i < len(samples); i++ {
		if prev, cur := samples[i-1].Commit, samples[i].Commit; prev >= 0 && cur < prev {
			return StatusRewind
		}
	}
	for _, s := range samples {
		if s.lag() == 0 {
			return StatusOK
		}
	}
	if !full || len(samples) < 2 {
		return StatusOK
	}
	first, last := samples[0], samples[len(samples)-1]
	if first.Commit == last.Commit {
		if last.Members == 0 {
			return StatusStop
		}
		return StatusStall
	}
	for i := 1; i < len(samples); i++ {
		if samples[i].lag() < samples[i-1].lag() {
			return StatusOK
		}
	}
	if last.lag() > first.lag() {
		return StatusWarn
	}
	return StatusOK
}

// LagMonitor samples a consumer group's committed and end offsets with kadm and raises alerts.
// It is safe for concurrent use. Build it with [NewLagMonitor]; Close releases its client.
type LagMonitor struct {
	cfg  lagConfig
	log  *slog.Logger
	cl   *kgo.Client
	adm  *kadm.Client
	mu   sync.Mutex // serialises checks
	hist map[tp][]LagSample
	runs []ConsumerStats
	last Condition
	once sync.Once
	now  func() time.Time
}

// NewLagMonitor validates cfg and builds the monitor's kgo client, which starts franz-go's
// background goroutines (metadata refresh, connection reaping) at once; [LagMonitor.Close]
// stops them, so always Close a monitor. It does not block: the client connects on the first
// Check. The error wraps [ErrInvalidOptions] naming the bad field.
func NewLagMonitor(cfg LagConfig) (*LagMonitor, error) {
	c, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Brokers...)}, c.KafkaOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("%w: LagConfig.KafkaOptions: %w", ErrInvalidOptions, err)
	}
	return &LagMonitor{cfg: c, log: c.Logger, cl: cl, adm: kadm.NewClient(cl),
		hist: map[tp][]LagSample{}, now: time.Now}, nil
}

// Close stops the goroutines of the monitor's client and closes its connections. It is
// idempotent, blocks until they are gone, and must not run concurrently with Check.
func (m *LagMonitor) Close() { m.once.Do(m.cl.Close) }

// Run checks every Interval until ctx ends, logging check errors, and returns nil then. It
// blocks; OnAlert fires from it on condition changes.
func (m *LagMonitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := m.Check(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("events: lag check", "group", m.cfg.Group, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Check takes one sample of every partition, evaluates the window and returns the report; when
// the condition differs from the previous check's it calls OnAlert before returning (so OnAlert
// must not call Check). It blocks for the admin requests (and, for partitions with lag, one
// fetch of the record at the committed offset, or at the log start when nothing is committed,
// to date it). A group that does not exist yet is not an error when LagConfig.Topics is set:
// it is reported with 0 members and its backlog from the log start; without Topics, Check
// returns [ErrGroupNotFound].
func (m *LagMonitor) Check(ctx context.Context) (LagReport, error) {
	m.mu.Lock()
	rep, prev, err := m.check(ctx)
	m.mu.Unlock()
	if err == nil && rep.Condition != prev && m.cfg.OnAlert != nil {
		m.cfg.OnAlert(Alert{Report: rep, Previous: prev})
	}
	return rep, err
}

// check does Check's work under m.mu and returns the previous condition.
func (m *LagMonitor) check(ctx context.Context) (LagReport, Condition, error) {
	rows, members, err := m.offsets(ctx)
	if err != nil {
		return LagReport{}, Condition{}, fmt.Errorf("events: lag of %s: %w", m.cfg.Group, err)
	}
	now := m.now()
	rep := LagReport{Group: m.cfg.Group, Time: now, Members: members}
	positions := map[string]map[int32]int64{}
	for _, r := range rows {
		pl := PartitionLag{Topic: r.topic, Partition: r.partition, Commit: r.commit, End: r.end, Lag: r.lag()}
		if pl.Lag > 0 {
			pos := r.commit
			if pos < 0 {
				pos = r.start
			}
			if positions[r.topic] == nil {
				positions[r.topic] = map[int32]int64{}
			}
			positions[r.topic][r.partition] = pos
		}
		rep.Partitions = append(rep.Partitions, pl)
	}
	times := m.recordTimes(ctx, positions)
	for i := range rep.Partitions {
		pl := &rep.Partitions[i]
		if ts, ok := times[tp{pl.Topic, pl.Partition}]; ok && pl.Lag > 0 {
			pl.Age = max(now.Sub(ts), 0)
		}
		k := tp{pl.Topic, pl.Partition}
		h := append(m.hist[k], LagSample{Time: now, Commit: pl.Commit, Start: rows[i].start, End: pl.End, Members: rep.Members})
		if len(h) > m.cfg.Window {
			h = slices.Delete(h, 0, len(h)-m.cfg.Window)
		}
		m.hist[k] = h
		pl.Status = EvaluateWindow(h, len(h) == m.cfg.Window)
		rep.Status = max(rep.Status, pl.Status)
		rep.TotalLag += pl.Lag
		rep.MaxAge = max(rep.MaxAge, pl.Age)
	}
	if m.cfg.Stats != nil {
		m.runs = append(m.runs, m.cfg.Stats())
		if len(m.runs) > m.cfg.Window {
			m.runs = slices.Delete(m.runs, 0, len(m.runs)-m.cfg.Window)
		}
		rep.FailureRate = failureRate(m.runs[0], m.runs[len(m.runs)-1])
	}
	rep.LagExceeded = m.cfg.MaxLag >= 0 && rep.TotalLag > m.cfg.MaxLag
	rep.AgeExceeded = m.cfg.MaxLagAge >= 0 && rep.MaxAge > m.cfg.MaxLagAge
	rep.FailureRateExceeded = m.cfg.MaxFailureRate >= 0 && rep.FailureRate > m.cfg.MaxFailureRate
	m.cfg.tel.record(ctx, &rep)
	prev := m.last
	m.last = rep.Condition
	return rep, prev, nil
}

// offsetRow is one partition's offsets as read from the cluster.
type offsetRow struct {
	topic     string
	partition int32
	commit    int64 // -1: nothing committed
	start     int64 // log start offset
	end       int64 // high watermark
}

func (r offsetRow) lag() int64 {
	return LagSample{Commit: r.commit, Start: r.start, End: r.end}.lag()
}

// offsets reads the group's members and every monitored partition's offsets, sorted by topic
// and partition. A group the coordinator does not know (GROUP_ID_NOT_FOUND, or state Dead
// before Kafka 4) has no members; its partitions are those of LagConfig.Topics (or of any
// offsets it still has), with commit -1 where nothing is committed, and without either it
// is ErrGroupNotFound. With Topics set, partitions the group never committed to nor was
// assigned are added with commit -1 too.
func (m *LagMonitor) offsets(ctx context.Context) ([]offsetRow, int, error) {
	lags, err := m.adm.Lag(ctx, m.cfg.Group)
	if err != nil {
		return nil, 0, err
	}
	g, ok := lags[m.cfg.Group]
	if !ok {
		return nil, 0, errors.New("group not described")
	}
	if err := g.DescribeErr; err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return nil, 0, err
	}
	if g.DescribeErr != nil || g.State == "Dead" {
		return m.missingGroup(ctx)
	}
	if err := g.FetchErr; err != nil {
		return nil, 0, err
	}
	var rows []offsetRow
	have := map[tp]bool{}
	for _, l := range g.Lag.Sorted() {
		if !m.monitors(l.Topic) {
			continue
		}
		if l.Err != nil {
			return nil, 0, fmt.Errorf("%s/%d: %w", l.Topic, l.Partition, l.Err)
		}
		// kadm lists start offsets too; without one (a failed listing) count from 0.
		start := l.Start.Offset
		if l.Start.Err != nil {
			start = 0
		}
		rows = append(rows, offsetRow{l.Topic, l.Partition, l.Commit.At, start, l.End.Offset})
		have[tp{l.Topic, l.Partition}] = true
	}
	if len(m.cfg.Topics) == 0 {
		return rows, len(g.Members), nil
	}
	more, err := m.listTopics(ctx, m.cfg.Topics, nil, have)
	if err != nil {
		return nil, 0, err
	}
	return sortRows(append(rows, more...)), len(g.Members), nil
}

// missingGroup reads the offsets of a group the coordinator does not describe: no members,
// and commits only if some remain (FetchOffsets answers for groups DescribeGroups does not).
func (m *LagMonitor) missingGroup(ctx context.Context) ([]offsetRow, int, error) {
	commits, err := m.adm.FetchOffsets(ctx, m.cfg.Group)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return nil, 0, err
	}
	topics := m.cfg.Topics
	if len(topics) == 0 {
		topics = slices.Sorted(maps.Keys(commits))
	}
	if len(topics) == 0 {
		return nil, 0, fmt.Errorf("%w (set LagConfig.Topics to watch a group before it first joins)", ErrGroupNotFound)
	}
	rows, err := m.listTopics(ctx, topics, commits, nil)
	return rows, 0, err
}

// listTopics lists the start and end offsets of every partition of topics not in skip, with
// the group's commit from commits, or -1.
func (m *LagMonitor) listTopics(ctx context.Context, topics []string, commits kadm.OffsetResponses, skip map[tp]bool) ([]offsetRow, error) {
	starts, err := m.adm.ListStartOffsets(ctx, topics...)
	if err = cmp.Or(err, listedErr(starts)); err != nil {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}
	ends, err := m.adm.ListEndOffsets(ctx, topics...)
	if err = cmp.Or(err, listedErr(ends)); err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	var rows []offsetRow
	var ferr error
	ends.Each(func(e kadm.ListedOffset) {
		if skip[tp{e.Topic, e.Partition}] {
			return
		}
		r := offsetRow{topic: e.Topic, partition: e.Partition, commit: -1, end: e.Offset}
		if s, ok := starts.Lookup(e.Topic, e.Partition); ok {
			r.start = s.Offset
		}
		if c, ok := commits.Lookup(e.Topic, e.Partition); ok {
			if c.Err != nil {
				ferr = cmp.Or(ferr, fmt.Errorf("%s/%d: %w", e.Topic, e.Partition, c.Err))
			}
			r.commit = c.At
		}
		rows = append(rows, r)
	})
	return sortRows(rows), ferr
}

// listedErr returns the first partition error of l, naming the topic (a topic that does not
// exist is listed as partition -1 with UNKNOWN_TOPIC_OR_PARTITION).
func listedErr(l kadm.ListedOffsets) error {
	var err error
	l.Each(func(o kadm.ListedOffset) {
		if o.Err != nil && err == nil {
			err = fmt.Errorf("topic %q: %w", o.Topic, o.Err)
		}
	})
	return err
}

func sortRows(rows []offsetRow) []offsetRow {
	slices.SortFunc(rows, func(a, b offsetRow) int {
		return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	})
	return rows
}

// monitors reports whether topic is in the report.
func (m *LagMonitor) monitors(topic string) bool {
	return len(m.cfg.Topics) == 0 || slices.Contains(m.cfg.Topics, topic)
}

// failureRate is the share of failed handler calls between two snapshots.
func failureRate(from, to ConsumerStats) float64 {
	if to.Failed < from.Failed || to.Handled < from.Handled {
		return 0 // counters restarted
	}
	failed := to.Failed - from.Failed
	calls := to.Handled - from.Handled + failed
	if calls == 0 {
		return 0
	}
	return float64(failed) / float64(calls)
}

// recordTimes reads the timestamp of the record at each given offset, waiting at most 2s.
// Partitions it cannot read in time are left out (their age counts as unknown, 0).
func (m *LagMonitor) recordTimes(ctx context.Context, at map[string]map[int32]int64) map[tp]time.Time {
	out := map[tp]time.Time{}
	if len(at) == 0 {
		return out
	}
	offs := map[string]map[int32]kgo.Offset{}
	parts := map[string][]int32{}
	n := 0
	for t, ps := range at {
		offs[t] = map[int32]kgo.Offset{}
		for p, o := range ps {
			offs[t][p] = kgo.NewOffset().At(o)
			parts[t] = append(parts[t], p)
			n++
		}
	}
	m.cl.AddConsumePartitions(offs)
	defer m.cl.RemoveConsumePartitions(parts)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for len(out) < n && ctx.Err() == nil {
		m.cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			k := tp{r.Topic, r.Partition}
			if _, seen := out[k]; !seen && r.Offset >= at[r.Topic][r.Partition] {
				out[k] = r.Timestamp
			}
		})
	}
	return out
}
