package events

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Header names that carry the [Event] fields a Kafka record has no slot for. Any Kafka client
// reads them as plain record headers; user headers travel next to them under their own names.
const (
	HeaderID   = "event-id"   // Event.ID
	HeaderType = "event-type" // Event.Type
	HeaderTime = "event-time" // Event.Time, RFC 3339 with nanoseconds
)

// Event is one fact worth telling other services. On the wire Key is the record key, Data the
// record value, and ID, Type, Time and Headers travel as record headers (see [HeaderID]), so
// non-surge clients can read every field.
//
// Headers must not use the names [HeaderID], [HeaderType] or [HeaderTime].
type Event struct {
	ID      string            // unique id; [NewEvent] makes a time-ordered one
	Type    string            // what happened, e.g. "order.created"
	Key     string            // ordering key: events with one key stay in order; "" is a null key
	Time    time.Time         // when it happened; the record timestamp too
	Headers map[string]string // user headers
	Data    []byte            // payload, JSON when made by [NewEvent]
}

// NewEvent returns an event of type typ with key, payload encoded as JSON, the current time and a
// fresh ID. IDs are unique and sort (as strings) in the order they were made, to about a
// quarter of a microsecond. To send raw bytes, build an Event with Data set instead.
// It returns an error when typ is empty or payload cannot be encoded.
func NewEvent(typ, key string, payload any) (Event, error) {
	if typ == "" {
		return Event{}, errors.New("events: NewEvent: empty type")
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return Event{}, fmt.Errorf("events: NewEvent %s: encode payload: %w", typ, err)
	}
	now := time.Now()
	return Event{ID: newID(now), Type: typ, Key: key, Time: now.UTC(), Data: data}, nil
}

// Decode unmarshals the JSON payload into v.
func (e Event) Decode(v any) error {
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("events: decode %s %s: %w", e.Type, e.ID, err)
	}
	return nil
}

// NewID returns a fresh event ID as [NewEvent] makes them: a version 7 UUID in its usual text
// form whose 48-bit millisecond timestamp is followed by 12 bits of sub-millisecond time
// (RFC 9562 section 6.2, method 3) and 62 random bits from crypto/rand.
func NewID() string { return newID(time.Now()) }

func newID(t time.Time) string {
	var s [36]byte
	return string(appendID(s[:0], t))
}

// appendID appends a fresh ID made at t to dst.
func appendID(dst []byte, t time.Time) []byte {
	var b [16]byte
	ns := t.UnixNano()
	ms := ns / 1e6
	sub := uint16((ns % 1e6) * 4096 / 1e6)
	binary.BigEndian.PutUint64(b[0:8], uint64(ms)<<16)
	b[6] = 0x70 | byte(sub>>8)
	b[7] = byte(sub)
	_, _ = rand.Read(b[8:]) // never fails (crypto/rand documents it)
	b[8] = 0x80 | b[8]&0x3f
	n := len(dst)
	dst = append(dst, "00000000-0000-0000-0000-000000000000"...)
	s := dst[n:]
	hex.Encode(s[0:8], b[0:4])
	hex.Encode(s[9:13], b[4:6])
	hex.Encode(s[14:18], b[6:8])
	hex.Encode(s[19:23], b[8:10])
	hex.Encode(s[24:36], b[10:16])
	return dst
}

func reservedHeader(k string) bool {
	return k == HeaderID || k == HeaderType || k == HeaderTime
}

// pubRec is one record on its way to Kafka with everything it needs in one allocation: kgo
// hands it back to the promise through Record.Context, which it embeds (kgo only reads the
// context for cancellation, and our pubRec is that context).
type pubRec struct {
	context.Context // the caller's ctx

	rec kgo.Record
	hs  [3]kgo.RecordHeader
	buf [128]byte // ID, time, type and key bytes when they fit

	p     *Producer
	done  func(error) // PublishAsync
	batch *pubBatch   // Publish
	idx   int
	tx    *Tx // Tx.Publish
}

// newPubRec builds the record for ev, filling a missing ID or Time. ev is the caller's copy:
// a generated ID goes straight into the record's bytes, never into a string.
func newPubRec(ctx context.Context, topic string, ev *Event) (*pubRec, error) {
	for k := range ev.Headers {
		if reservedHeader(k) {
			return nil, fmt.Errorf("events: event %s: header %q is reserved", ev.ID, k)
		}
	}
	var now time.Time
	if ev.ID == "" || ev.Time.IsZero() {
		now = time.Now()
	}
	if ev.Time.IsZero() {
		ev.Time = now.UTC()
	}
	pr := &pubRec{Context: ctx}
	var buf []byte
	if need := max(len(ev.ID), 36) + len(time.RFC3339Nano) + 6 + len(ev.Type) + len(ev.Key); need <= len(pr.buf) {
		buf = pr.buf[:0]
	} else {
		buf = make([]byte, 0, need)
	}
	// Each slice is cut right after its append, so a reallocation never invalidates it.
	if ev.ID == "" {
		buf = appendID(buf, now)
	} else {
		buf = append(buf, ev.ID...)
	}
	id := buf[:len(buf):len(buf)]
	n := len(buf)
	buf = ev.Time.AppendFormat(buf, time.RFC3339Nano)
	ts := buf[n:len(buf):len(buf)]
	n = len(buf)
	buf = append(buf, ev.Type...)
	typ := buf[n:len(buf):len(buf)]
	n = len(buf)
	buf = append(buf, ev.Key...)
	key := buf[n:len(buf):len(buf)]

	hs := pr.hs[:0]
	if len(ev.Headers) > 0 {
		hs = make([]kgo.RecordHeader, 0, 3+len(ev.Headers))
	}
	hs = append(hs, kgo.RecordHeader{Key: HeaderID, Value: id})
	if ev.Type != "" {
		hs = append(hs, kgo.RecordHeader{Key: HeaderType, Value: typ})
	}
	hs = append(hs, kgo.RecordHeader{Key: HeaderTime, Value: ts})
	for k, v := range ev.Headers {
		hs = append(hs, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	pr.rec = kgo.Record{Topic: topic, Value: ev.Data, Headers: hs, Timestamp: ev.Time, Context: pr}
	if ev.Key != "" {
		pr.rec.Key = key
	}
	return pr, nil
}

// toRecord is newPubRec for callers that only want the record; it fills ev.ID too.
func toRecord(topic string, ev *Event) (*kgo.Record, error) {
	pr, err := newPubRec(context.Background(), topic, ev)
	if err != nil {
		return nil, err
	}
	if ev.ID == "" {
		ev.ID = string(pr.rec.Headers[0].Value)
	}
	return &pr.rec, nil
}

// fromRecord decodes r. A record without an ID header (written by another client) gets the
// stable ID "topic/partition/offset", so redeliveries still dedupe; a missing time header falls
// back to the record timestamp.
func fromRecord(r *kgo.Record) (Event, error) {
	ev := Event{Key: string(r.Key), Data: r.Value}
	if name, err := decodeHeaders(r.Headers, &ev); err != nil {
		return Event{}, &DecodeError{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Header: name, Err: err}
	}
	if ev.ID == "" {
		b := make([]byte, 0, len(r.Topic)+24)
		b = append(b, r.Topic...)
		b = append(b, '/')
		b = strconv.AppendInt(b, int64(r.Partition), 10)
		b = append(b, '/')
		b = strconv.AppendInt(b, r.Offset, 10)
		ev.ID = string(b)
	}
	if ev.Time.IsZero() {
		ev.Time = r.Timestamp
	}
	return ev, nil
}

var (
	errDupHeader   = errors.New("appears more than once")
	errEmptyHeader = errors.New("is empty")
)

// decodeHeaders reads the reserved headers into ev.ID, ev.Type and ev.Time and the others into
// ev.Headers (the last value wins when a user header repeats). On error it returns the name of
// the offending header.
func decodeHeaders(hs []kgo.RecordHeader, ev *Event) (string, error) {
	var seenID, seenType, seenTime bool
	for i := range hs {
		h := &hs[i]
		switch h.Key {
		case HeaderID:
			if seenID {
				return h.Key, errDupHeader
			}
			if len(h.Value) == 0 {
				return h.Key, errEmptyHeader
			}
			seenID = true
			ev.ID = string(h.Value)
		case HeaderType:
			if seenType {
				return h.Key, errDupHeader
			}
			seenType = true
			ev.Type = string(h.Value)
		case HeaderTime:
			if seenTime {
				return h.Key, errDupHeader
			}
			seenTime = true
			t, err := time.Parse(time.RFC3339Nano, string(h.Value))
			if err != nil {
				return h.Key, fmt.Errorf("not RFC 3339: %q", h.Value)
			}
			ev.Time = t
		default:
			if ev.Headers == nil {
				ev.Headers = make(map[string]string, len(hs)-i)
			}
			ev.Headers[h.Key] = string(h.Value)
		}
	}
	return "", nil
}
