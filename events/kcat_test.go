package events

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/kafkatest"
)

func TestKcatReadsPublishedEvents(t *testing.T) {
	kcat := kafkatest.Kcat(t)
	kc := kafkatest.Cluster(t, "orders")
	p := newTestProducer(t, kc)
	ctx := testCtx(t, 20*time.Second)
	ev := Event{ID: "ev-1", Type: "order.created", Key: "o-1", Time: time.Date(2026, 5, 6, 7, 8, 9, 123, time.UTC),
		Headers: map[string]string{"tenant": "t1"}, Data: []byte(`{"total":10}`)}
	require.NoError(t, p.Publish(ctx, "orders", ev))

	cmd := exec.CommandContext(ctx, kcat, "-C", "-b", strings.Join(kc.Seeds(), ","), "-t", "orders",
		"-o", "beginning", "-c", "1", "-e", "-q", "-f", `%k|%s|%h\n`)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	fields := strings.SplitN(strings.TrimSpace(string(out)), "|", 3)
	require.Len(t, fields, 3, "%s", out)
	require.Equal(t, "o-1", fields[0])
	require.Equal(t, `{"total":10}`, fields[1])
	hs := strings.Split(fields[2], ",")
	require.ElementsMatch(t, []string{"event-id=ev-1", "event-type=order.created",
		"event-time=2026-05-06T07:08:09.000000123Z", "tenant=t1"}, hs)
}

func TestConsumerHandlesEventsProducedByKcat(t *testing.T) {
	kcat := kafkatest.Kcat(t)
	kc := oneTopic(t, "in")
	ctx := testCtx(t, 20*time.Second)
	cmd := exec.CommandContext(ctx, kcat, "-P", "-b", strings.Join(kc.Seeds(), ","), "-t", "in", "-K", ":",
		"-H", "source=kcat")
	cmd.Stdin = strings.NewReader("k1:hello\n")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)

	got := make(chan Event, 1)
	startConsumer(t, kc, ConsumerConfig{Group: "g", Topics: []string{"in"},
		Handler: func(_ context.Context, ev Event) error { got <- ev; return nil }})
	select {
	case ev := <-got:
		require.Equal(t, "k1", ev.Key)
		require.Equal(t, "hello", string(ev.Data))
		require.Equal(t, map[string]string{"source": "kcat"}, ev.Headers)
		require.Regexp(t, `^in/0/0/[0-9a-f]{32}$`, ev.ID, "topic/partition/offset/topic ID")
		require.False(t, ev.Time.IsZero())
	case <-ctx.Done():
		t.Fatal("the kcat record was not handled")
	}
}
