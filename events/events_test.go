package events

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/surgekit/surge/internal/kafkatest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCtx returns a context that ends with the test or after d.
func testCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// groupOpts make group membership changes quick on kfake.
func groupOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.SessionTimeout(time.Second),
		kgo.HeartbeatInterval(100 * time.Millisecond),
		kgo.RebalanceTimeout(5 * time.Second),
	}
}

func newTestProducer(t testing.TB, kc *kafkatest.KafkaCluster, opts ...kgo.Opt) *Producer {
	t.Helper()
	p, err := NewProducer(ProducerConfig{Brokers: kc.Seeds(), KafkaOptions: opts})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

// endOffsets sums the high watermarks of topic's partitions.
func endOffsets(kc *kafkatest.KafkaCluster, topic string) map[int32]int64 {
	out := map[int32]int64{}
	for _, p := range kc.Fake().PartitionInfos(topic) {
		out[p.Partition] = p.HighWatermark
	}
	return out
}

func total(m map[int32]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// readAll reads every record of topic from the start with a plain client.
func readAll(t testing.TB, kc *kafkatest.KafkaCluster, topic string, want int) []*kgo.Record {
	t.Helper()
	ctx := testCtx(t, 20*time.Second)
	cl := kc.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read %d of %d records from %s", len(out), want, topic)
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}
