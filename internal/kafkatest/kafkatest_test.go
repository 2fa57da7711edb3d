package kafkatest

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestRoundTripThroughConsumerGroup(t *testing.T) {
	c := Cluster(t, "orders")
	require.Len(t, c.Seeds(), 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	prod := c.Client(t)
	rec := &kgo.Record{Topic: "orders", Key: []byte("o-1"), Value: []byte("created")}
	require.NoError(t, prod.ProduceSync(ctx, rec).FirstErr())

	cons := c.Client(t,
		kgo.ConsumerGroup("g"), kgo.ConsumeTopics("orders"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(500*time.Millisecond), kgo.HeartbeatInterval(100*time.Millisecond),
	)
	var got *kgo.Record
	for got == nil {
		fs := cons.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "no record consumed in time")
		fs.EachRecord(func(r *kgo.Record) { got = r })
	}
	require.Equal(t, "o-1", string(got.Key))
	require.Equal(t, "created", string(got.Value))
	require.NoError(t, cons.CommitUncommittedOffsets(ctx))

	info := c.Fake().GroupInfo("g")
	require.NotNil(t, info, "the group must be known to the cluster")
}

func TestSeededPartitions(t *testing.T) {
	c := ClusterWith(t, Config{Brokers: 1, Partitions: 5, Topics: []string{"a", "b"}})
	require.Len(t, c.Seeds(), 1)
	require.Len(t, c.Fake().PartitionInfos("a"), 5)
	require.Len(t, c.Fake().PartitionInfos("b"), 5)
}

func TestFaultIsInjected(t *testing.T) {
	c := Cluster(t, "t")
	c.Fake().Fault(kfake.Fault{
		Keys: []kmsg.Key{kmsg.Produce}, Topic: "t",
		Err: kerr.NotLeaderForPartition, Count: 1,
	})
	// The client retries the retriable error: the produce still succeeds, once.
	cl := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("x")}).FirstErr())
	var total int64
	for _, p := range c.Fake().PartitionInfos("t") {
		total += p.HighWatermark
	}
	require.EqualValues(t, 1, total)
}

func TestKcatListsSeededTopics(t *testing.T) {
	kcat := Kcat(t)
	c := Cluster(t, "orders", "payments")
	out, err := exec.Command(kcat, "-L", "-b", c.Seeds()[0], "-m", "10").CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, topic := range []string{`topic "orders"`, `topic "payments"`} {
		require.True(t, strings.Contains(string(out), topic), "kcat -L does not list %s:\n%s", topic, out)
	}
}
