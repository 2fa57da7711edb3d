// Package kafkatest starts an in-process Kafka cluster (franz-go's kfake) for tests.
//
// kfake speaks the Kafka protocol on loopback ports, so any client, including kcat, can use it;
// a consumer group joins and reads in milliseconds. Fault injection goes through
// [KafkaCluster.Fake] (kfake's Fault, ControlKey, MoveTopicPartition...).
package kafkatest

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/surgekit/surge/internal/redistest"
)

// Config sizes a cluster for [ClusterWith]. Zero fields take the defaults of [Cluster].
type Config struct {
	Brokers    int         // default 3
	Partitions int         // partitions per seeded topic; default 3
	Topics     []string    // topics created before the cluster is returned
	Opts       []kfake.Opt // more kfake options, applied last
}

// KafkaCluster is an in-process kfake cluster owned by one test and closed when it ends.
type KafkaCluster struct {
	fake  *kfake.Cluster
	seeds []string
}

// Cluster starts 3 kfake brokers with every topic seeded with 3 partitions. Group session
// timeouts as low as 100ms are allowed so rebalance tests are quick.
func Cluster(t testing.TB, topics ...string) *KafkaCluster {
	t.Helper()
	return ClusterWith(t, Config{Topics: topics})
}

// ClusterWith starts a kfake cluster sized by cfg.
func ClusterWith(t testing.TB, cfg Config) *KafkaCluster {
	t.Helper()
	if cfg.Brokers <= 0 {
		cfg.Brokers = 3
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 3
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(cfg.Brokers),
		kfake.DefaultNumPartitions(cfg.Partitions),
		kfake.GroupMinSessionTimeout(100 * time.Millisecond),
	}
	if len(cfg.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(cfg.Partitions), cfg.Topics...))
	}
	opts = append(opts, cfg.Opts...)
	fake, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("kafkatest: start kfake: %v", err)
	}
	t.Cleanup(fake.Close)
	return &KafkaCluster{fake: fake, seeds: fake.ListenAddrs()}
}

// Seeds returns the brokers' host:port addresses.
func (c *KafkaCluster) Seeds() []string { return append([]string(nil), c.seeds...) }

// Fake returns the kfake cluster for fault injection and inspection.
func (c *KafkaCluster) Fake() *kfake.Cluster { return c.fake }

// Client returns a kgo client seeded with the cluster's brokers plus opts, closed when t ends.
func (c *KafkaCluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.seeds...)}, opts...)...)
	if err != nil {
		t.Fatalf("kafkatest: new client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Kcat returns the path of kcat (or kafkacat). It skips t when neither is installed, and fails
// it when SURGE_REQUIRE_SERVERS=1.
func Kcat(t testing.TB) string {
	t.Helper()
	if p, ok := lookKcat(); ok {
		return p
	}
	return redistest.LookPath(t, "kcat", "kcat")
}
