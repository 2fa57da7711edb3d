package events

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Header names that carry the [Event] fields a Kafka record has no slot for. Any Kafka client
// reads them as plain record headers; user headers travel next to them under their own names.
const (
	HeaderID   = "event-id"   // Event.ID
	HeaderType = "event-type" // Event.Type
	HeaderTime = "event-time" // Event.Time, RFC 3339 in UTC with nanoseconds
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
	Time    time.Time         // when it happened, years 0-9999; the record timestamp is the publish time
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

// fromRecord decodes r, read from a topic whose ID the broker did not say.
func fromRecord(r *kgo.Record) (Event, error) { return decodeRecord(r, [16]byte{}) }

// decodeRecord decodes r, read from the topic incarnation topicID (zero when unknown). A
// record without an ID header (written by another client) gets the stable ID of
// [recordIdentity], so redeliveries still dedupe and a re-created topic's records are new; a
// missing time header falls back to the record timestamp.
func decodeRecord(r *kgo.Record, topicID [16]byte) (Event, error) {
	var ev Event
	err := decodeEvent(&ev, r, topicID, "", true, nil)
	return ev, err
}

// decoder is what a consumer's worker keeps from one record's decoding to the next: the
// arena chunk its strings are cut from (see decodeHeaders), how much of it is used, and the
// hour of the last event-time.
type decoder struct {
	arena []byte
	used  int
	hour  hourCache
	typ   string // the last Type it cut from the arena: most records of a batch repeat one
}

// decodeEvent decodes r into ev, as decodeRecord does, with the record's key given: with copyKey
// false the Event's Key is key, a string of r's key the caller holds already (the consumer's
// key queue), which is not copied again. d, when not nil, is the calling worker's decoder. It
// fills ev, which must be the zero Event, in place, as decodeHeaders does: returning the Event
// by value (and the headers by value before it) copied its 100-odd bytes twice per record, a
// fifth of the consumer's own cost per record in BenchmarkDispatch (and an Event returned
// through three calls costs more still). On error ev is left zero.
func decodeEvent(ev *Event, r *kgo.Record, topicID [16]byte, key string, copyKey bool, d *decoder) error {
	var keyBytes []byte
	if copyKey {
		keyBytes = r.Key
	} else {
		ev.Key = key
	}
	ev.Data = r.Value
	if name, err := decodeHeaders(ev, r.Headers, keyBytes, d); err != nil {
		*ev = Event{}
		return &DecodeError{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Header: name, Err: err}
	}
	if ev.ID == "" {
		ev.ID = recordIdentity(r, topicID)
	}
	if ev.Time.IsZero() {
		ev.Time = r.Timestamp
	}
	return nil
}

// arenaChunk is the size of the chunks a consumer's worker cuts Event strings from.
const arenaChunk = 4096

var (
	errDupHeader   = errors.New("appears more than once")
	errEmptyHeader = errors.New("is empty")
)

// decodeHeaders reads key, the reserved headers (ID, type and time) and the others (the user
// headers; the last value wins when one repeats). Key, ID and Type share one allocation, or
// are cut from d's arena when d is not nil: a chunk of arenaChunk bytes that later records'
// strings fill up, so a consumer's worker allocates once per chunk rather than per record (a
// string kept by a handler keeps its chunk alive). Bytes of a chunk are written once, never
// changed. A Type equal to the last one d cut is that string, not a copy. The time is parsed
// with d's hour cache. It fills f's Key (when key is not nil), ID, Type, Time and Headers,
// which must be zero, each once. On error it returns the name of the offending header.
func decodeHeaders(f *Event, hs []kgo.RecordHeader, key []byte, d *decoder) (string, error) {
	var seenID, seenType, seenTime bool
	var id, typ []byte
	var t time.Time
	var headers map[string]string
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
			id = h.Value
		case HeaderType:
			if seenType {
				return h.Key, errDupHeader
			}
			seenType = true
			typ = h.Value
		case HeaderTime:
			if seenTime {
				return h.Key, errDupHeader
			}
			seenTime = true
			var err error
			if d != nil {
				t, err = d.hour.parse(h.Value)
			} else {
				t, err = parseEventTime(h.Value)
			}
			if err != nil {
				return h.Key, fmt.Errorf("not RFC 3339: %q", h.Value)
			}
		default:
			if headers == nil {
				headers = make(map[string]string, len(hs)-i)
			}
			headers[h.Key] = string(h.Value)
		}
	}
	// Each field is written once, Time and Headers only when the record has them: with a
	// collection running, every pointer written through f pays a write barrier.
	if seenTime {
		f.Time = t
	}
	if headers != nil {
		f.Headers = headers
	}
	var typStr string
	if d != nil && len(typ) > 0 && string(typ) == d.typ {
		typStr, typ = d.typ, nil // no copy: the string the last record with this type got
	}
	n := len(key) + len(id) + len(typ)
	var b []byte
	switch {
	case n == 0:
		f.Type = typStr
		return "", nil
	case d == nil || n > arenaChunk/4:
		b = make([]byte, 0, n)
	default:
		if len(d.arena)-d.used < n {
			d.arena, d.used = make([]byte, arenaChunk), 0
		}
		b = d.arena[d.used:d.used]
		d.used += n
	}
	b = append(append(append(b, key...), id...), typ...)
	all := unsafe.String(unsafe.SliceData(b), n) // these bytes are never written again
	if key != nil {
		f.Key = all[:len(key)]
	}
	if len(typ) > 0 {
		typStr = all[len(key)+len(id):]
		if d != nil {
			d.typ = typStr
		}
	}
	f.ID, f.Type = all[len(key):len(key)+len(id)], typStr
	return "", nil
}

// recordIdentity names r uniquely, also across incarnations of its topic (offsets restart when
// a topic is deleted and created again): "topic/partition/offset/" followed by the topic ID in
// hex, or, when the broker does not send topic IDs (before Kafka 3.1), "t" and the record
// timestamp in milliseconds.
func recordIdentity(r *kgo.Record, topicID [16]byte) string {
	b := make([]byte, 0, len(r.Topic)+64)
	b = append(b, r.Topic...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(r.Partition), 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, r.Offset, 10)
	b = append(b, '/')
	if topicID != ([16]byte{}) {
		b = hex.AppendEncode(b, topicID[:])
	} else {
		b = append(b, 't')
		b = strconv.AppendInt(b, r.Timestamp.UnixMilli(), 10)
	}
	return string(b)
}
