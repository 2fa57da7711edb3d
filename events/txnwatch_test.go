package events

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

type recLogger struct {
	level kgo.LogLevel
	lines []string
}

func (l *recLogger) Level() kgo.LogLevel { return l.level }
func (l *recLogger) Log(_ kgo.LogLevel, msg string, _ ...any) {
	l.lines = append(l.lines, msg)
}

// The watch notes the aborted commit whatever the caller's level and passes on only what the
// caller's logger asked for.
func TestTxnWatchSeesAbortedCommitAndPassesLinesOn(t *testing.T) {
	quiet := &recLogger{level: kgo.LogLevelNone}
	w := &txnWatch{inner: quiet}
	require.Equal(t, kgo.LogLevelInfo, w.Level(), "the watched line is logged at Info")
	w.Log(kgo.LogLevelInfo, "something else")
	require.False(t, w.abortedCommit())
	w.Log(kgo.LogLevelInfo, abortedCommitLog+"; issuing an abort to clear any server-side partition registrations")
	require.True(t, w.abortedCommit())
	require.Empty(t, quiet.lines, "a caller at LogLevelNone hears nothing")
	w.reset()
	require.False(t, w.abortedCommit())

	debug := &recLogger{level: kgo.LogLevelDebug}
	w = &txnWatch{inner: debug}
	require.Equal(t, kgo.LogLevelDebug, w.Level())
	w.Log(kgo.LogLevelDebug, "d")
	w.Log(kgo.LogLevelInfo, "i")
	require.Equal(t, []string{"d", "i"}, debug.lines)

	var none *txnWatch // non-transactional producers have none
	none.reset()
	require.False(t, none.abortedCommit())
	require.Equal(t, kgo.LogLevelInfo, (&txnWatch{}).Level())
}

// A transactional producer's client logs through the watch, and the caller's own logger still
// receives the lines.
func TestTransactionalProducerLogsThroughTheWatch(t *testing.T) {
	mine := &recLogger{level: kgo.LogLevelDebug}
	p, err := NewProducer(ProducerConfig{Brokers: []string{"127.0.0.1:1"}, TransactionalID: "tx-w",
		KafkaOptions: []kgo.Opt{kgo.WithLogger(mine)}})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	require.NotNil(t, p.watch)
	require.Same(t, p.watch, p.cl.OptValue(kgo.WithLogger))
	require.Same(t, mine, p.watch.inner)

	plain, err := NewProducer(ProducerConfig{Brokers: []string{"127.0.0.1:1"}})
	require.NoError(t, err)
	t.Cleanup(plain.Close)
	require.Nil(t, plain.watch)
}

// A transactional Publish may run its transaction again: the events get their IDs and times
// once, before the first run, so every run writes the same ones; the caller's slice is untouched.
func TestWithIdentityFixesIDsOnceWithoutTouchingTheCaller(t *testing.T) {
	full := []Event{{ID: "a", Time: time.Unix(1, 0)}}
	require.Equal(t, &full[0], &withIdentity(full)[0], "nothing missing: no copy")

	evs := []Event{{ID: "a", Time: time.Unix(1, 0)}, {Type: "t"}, {ID: "c"}}
	got := withIdentity(evs)
	require.Equal(t, "a", got[0].ID)
	require.NotEmpty(t, got[1].ID)
	require.NotEqual(t, got[1].ID, got[0].ID)
	require.False(t, got[1].Time.IsZero())
	require.Equal(t, "c", got[2].ID)
	require.False(t, got[2].Time.IsZero())
	require.Empty(t, evs[1].ID, "the caller's events keep their zero ID")
	require.True(t, evs[2].Time.IsZero())
	other := withIdentity(evs)
	require.NotEqual(t, got[1].ID, other[1].ID, "each Publish call gets fresh IDs")
}
