package events

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by a [Producer] used after [Producer.Close], and by [Consumer.Run]
	// called a second time.
	ErrClosed = errors.New("events: closed")
	// ErrNotTransactional is returned by [Producer.Transact] on a producer built without
	// ProducerConfig.TransactionalID.
	ErrNotTransactional = errors.New("events: producer has no TransactionalID")
	// ErrTransactional is returned by [Producer.PublishAsync] on a transactional producer: its
	// records must be written inside [Producer.Transact].
	ErrTransactional = errors.New("events: transactional producer: publish inside Transact")
	// ErrNestedTransaction is returned by [Producer.Publish] and [Producer.Transact] on a
	// transactional producer when called with the ctx of a running Transact's fn: publish
	// through its [Tx] instead.
	ErrNestedTransaction = errors.New("events: Publish or Transact inside Transact: publish through the Tx")

	// ErrTxnNotCommitted is returned by [Producer.Transact] when the Kafka client ended a
	// transaction whose records Kafka had acknowledged with an abort instead of the commit that
	// was asked for (franz-go v1.22 does so when it finds no partition registered in the
	// transaction, a race seen about once in 40 first transactions to a topic). Nothing of the
	// transaction is visible to read-committed consumers; running it again is safe when fn is.
	// [Producer.Publish] on a transactional producer retries it by itself.
	ErrTxnNotCommitted = errors.New("events: transaction ended with an abort instead of the commit asked for")
	// ErrInvalidEvent marks an event [Producer.Publish], [Producer.PublishAsync] or
	// [Tx.Publish] refuses before sending anything: a reserved header name, a Time outside the
	// years 0-9999 that RFC 3339 can carry, an empty topic.
	ErrInvalidEvent = errors.New("events: invalid event")
	// ErrDecode marks a record whose key, value or headers cannot be read as an [Event].
	// It is wrapped in a [*DecodeError] naming the record.
	ErrDecode = errors.New("events: bad record")
	// ErrDuplicate is returned by [Deduper.Claim] when the event was already handled.
	ErrDuplicate = errors.New("events: already handled")
	// ErrClaimed is returned by [Deduper.Claim] while another handler holds an unexpired claim.
	ErrClaimed = errors.New("events: claimed by another handler")
	// ErrGroupNotFound is returned by [LagMonitor.Check] when the consumer group does not exist
	// (never joined, no offsets) and LagConfig.Topics is empty, so there is nothing to measure.
	// With Topics set, such a group is reported with its backlog instead.
	ErrGroupNotFound = errors.New("events: consumer group not found")
	// ErrInvalidOptions marks every error a constructor returns for a bad configuration field;
	// the message names the field.
	ErrInvalidOptions = errors.New("events: invalid options")
)

// DecodeError says which record could not be decoded and why. It matches [ErrDecode] with
// errors.Is.
type DecodeError struct {
	Topic     string // the record's topic
	Partition int32  // the record's partition
	Offset    int64  // the record's offset
	Header    string // the offending header name; "" when the problem is not a header
	Err       error  // what is wrong with it
}

// Error names the record and the offending header.
func (e *DecodeError) Error() string {
	if e.Header != "" {
		return fmt.Sprintf("events: decode record %s/%d@%d: header %q: %v", e.Topic, e.Partition, e.Offset, e.Header, e.Err)
	}
	return fmt.Sprintf("events: decode record %s/%d@%d: %v", e.Topic, e.Partition, e.Offset, e.Err)
}

// Unwrap returns ErrDecode and the cause.
func (e *DecodeError) Unwrap() []error { return []error{ErrDecode, e.Err} }

// permanentError marks a handler error that must not be retried.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent wraps err so the [Consumer] skips the remaining attempts and dead-letters the event
// at once (or pauses its partition when there is no DeadLetterTopic). Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked with [Permanent].
func IsPermanent(err error) bool {
	if err == nil {
		return false // and no allocation for the common case
	}
	var p permanentError
	return errors.As(err, &p)
}
