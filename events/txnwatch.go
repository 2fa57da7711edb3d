package events

import (
	"strings"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"
)

// abortedCommitLog starts the line franz-go logs when EndTransaction(TryCommit) finds no
// partition registered in the transaction although produces were attempted, and aborts instead.
const abortedCommitLog = "no produce succeeded in this transaction but produces were attempted"

// txnWatch is the kgo logger of a transactional producer: it passes every line on to the
// caller's logger (at the caller's level) and notes when the client turned a commit into an
// abort, which EndTransaction does not report. Transactions run one at a time (Producer.txSem),
// so one flag serves.
type txnWatch struct {
	inner   kgo.Logger
	aborted atomic.Bool
}

// Level is the caller's level, but at least Info, the level of the line watched for.
func (w *txnWatch) Level() kgo.LogLevel {
	if w.inner != nil && w.inner.Level() > kgo.LogLevelInfo {
		return w.inner.Level()
	}
	return kgo.LogLevelInfo
}

// Log notes the aborted commit and passes the line on when the caller's logger wants it.
func (w *txnWatch) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if strings.HasPrefix(msg, abortedCommitLog) {
		w.aborted.Store(true)
	}
	if w.inner != nil && level <= w.inner.Level() {
		w.inner.Log(level, msg, keyvals...)
	}
}

func (w *txnWatch) reset() {
	if w != nil {
		w.aborted.Store(false)
	}
}

func (w *txnWatch) abortedCommit() bool { return w != nil && w.aborted.Load() }
