// Package backend gives the example programs their Redis and Kafka: the servers named by
// REDIS_ADDR / KAFKA_BROKERS when those are set, otherwise an embedded miniredis and an
// in-process kfake cluster, so every example runs with nothing installed but Go. Each
// constructor prints one line saying which backend is in use.
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Redis is a connected Redis client and, in embedded mode, the miniredis behind it.
type Redis struct {
	Client   redis.UniversalClient // the client the example uses; closed by Close
	Addr     string                // host:port of the server
	Embedded bool                  // true when Addr is an in-process miniredis
	mini     *miniredis.Miniredis
	stop     chan struct{} // ends the TTL clock
	stopped  chan struct{} // closed when the TTL clock has ended
}

// StartRedis connects to REDIS_ADDR when it is set and answers PING, otherwise starts a
// miniredis whose TTLs follow the wall clock (like a real server), with one goroutine moving
// them on. It prints the backend in use to w. Close the result when done.
func StartRedis(ctx context.Context, w io.Writer) (*Redis, error) {
	if addr := strings.TrimSpace(os.Getenv("REDIS_ADDR")); addr != "" {
		c := redis.NewClient(&redis.Options{Addr: addr})
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if err := c.Ping(pctx).Err(); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("backend: REDIS_ADDR=%s does not answer PING: %w", addr, err)
		}
		fmt.Fprintf(w, "redis: %s (from REDIS_ADDR)\n", addr)
		return &Redis{Client: c, Addr: addr}, nil
	}
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		return nil, fmt.Errorf("backend: start miniredis: %w", err)
	}
	r := &Redis{
		Client: redis.NewClient(&redis.Options{Addr: m.Addr()}), Addr: m.Addr(), Embedded: true,
		mini: m, stop: make(chan struct{}), stopped: make(chan struct{}),
	}
	go r.clock()
	fmt.Fprintf(w, "redis: embedded miniredis at %s (set REDIS_ADDR to use a real server)\n", m.Addr())
	return r, nil
}

// ttlTick is how often the embedded server's TTLs are moved on.
const ttlTick = 100 * time.Millisecond

// clock makes miniredis expire keys in real time, as a real server does, to within ttlTick.
// (miniredis's own ClockTTL does the same on every command, and each FastForward scans and
// sorts every key under the server's lock: on every command, or even every 20ms, that makes
// a server holding 10k keys the demo's bottleneck.)
func (r *Redis) clock() {
	defer close(r.stopped)
	t := time.NewTicker(ttlTick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-r.stop:
			return
		case now := <-t.C:
			r.mini.FastForward(now.Sub(last))
			last = now
		}
	}
}

// Close closes the client and stops the embedded server, if any.
func (r *Redis) Close() error {
	err := r.Client.Close()
	if r.mini != nil {
		close(r.stop)
		<-r.stopped
		r.mini.Close()
	}
	return err
}

// Kafka names the brokers to use and, in embedded mode, owns the kfake cluster behind them.
type Kafka struct {
	Brokers  []string // seed brokers, host:port
	Embedded bool     // true when Brokers is an in-process kfake cluster
	fake     *kfake.Cluster
}

// Partitions is the number of partitions given to every topic the examples create.
const Partitions = 3

// StartKafka uses KAFKA_BROKERS (comma separated) when set, otherwise starts a one-broker
// kfake cluster. Either way it makes sure topics exist with [Partitions] partitions, and
// prints the backend in use to w. Close the result when done.
func StartKafka(ctx context.Context, w io.Writer, topics ...string) (*Kafka, error) {
	if env := strings.TrimSpace(os.Getenv("KAFKA_BROKERS")); env != "" {
		brokers := strings.Split(env, ",")
		for i := range brokers {
			brokers[i] = strings.TrimSpace(brokers[i])
		}
		if err := createTopics(ctx, brokers, topics); err != nil {
			return nil, err
		}
		fmt.Fprintf(w, "kafka: %s (from KAFKA_BROKERS)\n", env)
		return &Kafka{Brokers: brokers}, nil
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(Partitions),
		kfake.GroupMinSessionTimeout(100 * time.Millisecond),
	}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(Partitions, topics...))
	}
	fake, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("backend: start kfake: %w", err)
	}
	brokers := fake.ListenAddrs()
	fmt.Fprintf(w, "kafka: embedded kfake at %s (set KAFKA_BROKERS to use a real cluster)\n", strings.Join(brokers, ","))
	return &Kafka{Brokers: brokers, Embedded: true, fake: fake}, nil
}

// Close stops the embedded cluster, if any.
func (k *Kafka) Close() {
	if k.fake != nil {
		k.fake.Close()
	}
}

// createTopics creates topics on a real cluster, accepting those that already exist.
func createTopics(ctx context.Context, brokers, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return fmt.Errorf("backend: kafka client for %v: %w", brokers, err)
	}
	defer cl.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopics(cctx, Partitions, -1, nil, topics...)
	if err != nil {
		return fmt.Errorf("backend: create topics %v on %v: %w", topics, brokers, err)
	}
	for _, r := range resp {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("backend: create topic %q: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// Main runs an example's body: run gets a context cancelled on Ctrl-C or SIGTERM, and after
// timeout when it is positive. An error is printed to stderr as "name: error" and the program
// exits 1.
func Main(name string, timeout time.Duration, run func(ctx context.Context) error) {
	ctx, stop := RunContext(timeout)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// RunContext returns a context cancelled on Ctrl-C or SIGTERM, or after d when d > 0.
// Call stop to release its resources.
func RunContext(d time.Duration) (ctx context.Context, stop context.CancelFunc) {
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if d <= 0 {
		return ctx, stopSignals
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	return ctx, func() { cancel(); stopSignals() }
}
