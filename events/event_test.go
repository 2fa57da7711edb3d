package events

import (
	"bytes"
	"errors"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestNewEventIDsAreUniqueAndTimeOrdered(t *testing.T) {
	const n = 20000
	ids := make([]string, n)
	for i := range ids {
		ev, err := NewEvent("order.created", "o-1", map[string]int{"i": i})
		require.NoError(t, err)
		ids[i] = ev.ID
	}
	seen := make(map[string]struct{}, n)
	for _, id := range ids {
		require.Len(t, id, 36)
		require.Equal(t, byte('7'), id[14], "version nibble of %s", id)
		require.Contains(t, "89ab", string(id[19]), "variant of %s", id)
		seen[id] = struct{}{}
	}
	require.Len(t, seen, n, "ids must be unique")

	// Ordered across clock ticks: ids made at later times sort later.
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var prev string
	for i := range 5000 {
		id := newID(base.Add(time.Duration(i) * 300 * time.Nanosecond))
		require.Greater(t, id, prev, "id %d", i)
		prev = id
	}
	// Made one after another on the real clock, their time parts never go down.
	for i := 1; i < n; i++ {
		require.GreaterOrEqual(t, ids[i][:18], ids[i-1][:18], "id %d", i)
	}
}

func TestNewEventValidates(t *testing.T) {
	_, err := NewEvent("", "k", 1)
	require.ErrorContains(t, err, "empty type")
	_, err = NewEvent("t", "k", make(chan int))
	require.ErrorContains(t, err, "encode payload")

	ev, err := NewEvent("t", "k", map[string]string{"a": "b"})
	require.NoError(t, err)
	var got map[string]string
	require.NoError(t, ev.Decode(&got))
	require.Equal(t, "b", got["a"])
	require.ErrorContains(t, ev.Decode(new(int)), ev.ID)
}

func TestWireRoundTrip(t *testing.T) {
	ev := Event{ID: "id-1", Type: "order.paid", Key: "o-9", Time: time.Date(2026, 3, 4, 5, 6, 7, 890123456, time.UTC),
		Headers: map[string]string{"trace": "abc", "tenant": "t1"}, Data: []byte(`{"x":1}`)}
	r, err := toRecord("orders", &ev)
	require.NoError(t, err)
	require.Equal(t, "o-9", string(r.Key))
	require.True(t, r.Timestamp.IsZero(), "the record timestamp is left to kgo: the publish time")
	hs := map[string]string{}
	for _, h := range r.Headers {
		hs[h.Key] = string(h.Value)
	}
	require.Equal(t, map[string]string{HeaderID: "id-1", HeaderType: "order.paid",
		HeaderTime: "2026-03-04T05:06:07.890123456Z", "trace": "abc", "tenant": "t1"}, hs)

	r.Partition, r.Offset = 2, 17
	got, err := fromRecord(r)
	require.NoError(t, err)
	require.True(t, ev.Time.Equal(got.Time))
	got.Time = ev.Time
	require.Equal(t, ev, got)

	// Null key, no type, no user headers, missing ID and time are filled.
	ev2 := Event{Data: []byte("x")}
	r2, err := toRecord("t", &ev2)
	require.NoError(t, err)
	require.Nil(t, r2.Key)
	require.NotEmpty(t, ev2.ID)
	require.False(t, ev2.Time.IsZero())
	got2, err := fromRecord(r2)
	require.NoError(t, err)
	require.Nil(t, got2.Headers)
	require.Equal(t, ev2.ID, got2.ID)
}

func TestReservedHeaderRejected(t *testing.T) {
	for _, h := range []string{HeaderID, HeaderType, HeaderTime} {
		ev := Event{ID: "x", Headers: map[string]string{h: "v"}}
		_, err := toRecord("t", &ev)
		require.ErrorContains(t, err, h)
	}
}

func TestForeignRecordDecodes(t *testing.T) {
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &kgo.Record{Topic: "orders", Partition: 1, Offset: 42, Key: []byte("k"), Value: []byte("v"), Timestamp: ts,
		Headers: []kgo.RecordHeader{{Key: "a", Value: []byte("1")}, {Key: "a", Value: []byte("2")}}}
	ev, err := fromRecord(r)
	require.NoError(t, err)
	require.Equal(t, "orders/1/42/t"+strconv.FormatInt(ts.UnixMilli(), 10), ev.ID, "a record without an ID header gets a stable one")
	ev, err = decodeRecord(r, [16]byte{0xab, 15: 0x01})
	require.NoError(t, err)
	require.Equal(t, "orders/1/42/ab000000000000000000000000000001", ev.ID, "the topic ID tells incarnations apart")
	require.Equal(t, ts, ev.Time)
	require.Equal(t, map[string]string{"a": "2"}, ev.Headers, "the last repeated user header wins")
}

func TestBadHeadersNameTheRecord(t *testing.T) {
	cases := map[string][]kgo.RecordHeader{
		HeaderTime: {{Key: HeaderTime, Value: []byte("yesterday")}},
		HeaderID:   {{Key: HeaderID, Value: []byte("a")}, {Key: HeaderID, Value: []byte("b")}},
		HeaderType: {{Key: HeaderType, Value: []byte("a")}, {Key: HeaderType, Value: []byte("a")}},
	}
	cases["empty id"] = []kgo.RecordHeader{{Key: HeaderID}}
	for name, hs := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := fromRecord(&kgo.Record{Topic: "orders", Partition: 3, Offset: 99, Headers: hs})
			require.ErrorIs(t, err, ErrDecode)
			var de *DecodeError
			require.True(t, errors.As(err, &de))
			require.EqualValues(t, 99, de.Offset)
			require.Contains(t, err.Error(), "orders/3@99")
		})
	}
}

// FuzzDecodeHeaders feeds arbitrary header lists to the decoder: it must never panic, and what it
// accepts must survive an encode/decode round trip.
func FuzzDecodeHeaders(f *testing.F) {
	f.Add([]byte("event-id\x00abc\x01event-time\x002026-01-01T00:00:00Z\x01x\x00y"))
	f.Add([]byte("event-time\x00not a time"))
	f.Add([]byte("event-id\x00\x01event-id\x00a"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var hs []kgo.RecordHeader
		for _, part := range splitBytes(raw, 1) {
			kv := splitBytes(part, 0)
			h := kgo.RecordHeader{Key: string(kv[0])}
			if len(kv) > 1 {
				h.Value = kv[1]
			}
			hs = append(hs, h)
		}
		ev, err := fromRecord(&kgo.Record{Topic: "t", Offset: 7, Headers: hs})
		if err != nil {
			require.ErrorIs(t, err, ErrDecode)
			require.Contains(t, err.Error(), "@7")
			return
		}
		r, err := toRecord("t", &ev)
		require.NoError(t, err)
		back, err := fromRecord(r)
		require.NoError(t, err)
		require.Equal(t, ev.ID, back.ID)
		require.Equal(t, ev.Type, back.Type)
		require.True(t, ev.Time.Equal(back.Time), "%v != %v", ev.Time, back.Time)
		require.Equal(t, ev.Headers, back.Headers)
	})
}

func splitBytes(b []byte, sep byte) [][]byte {
	var out [][]byte
	start := 0
	for i, c := range b {
		if c == sep {
			out = append(out, b[start:i])
			start = i + 1
		}
	}
	return append(out, b[start:])
}

// typeOf is the event type TestDecodeWithAnArenaKeepsEarlierEvents gives record i: runs of
// three records share one (a decoder reuses the last type's string), and every tenth has none.
func typeOf(i int) string {
	if i%10 == 9 {
		return ""
	}
	return "type-" + strconv.Itoa(i/3%7)
}

// Events decoded with a worker's arena keep their strings while later records fill it and
// move on to new chunks, a type repeated from the record before included.
func TestDecodeWithAnArenaKeepsEarlierEvents(t *testing.T) {
	var d decoder
	evs := make([]Event, 1000)
	for i := range evs {
		r := &kgo.Record{Topic: "t", Offset: int64(i), Key: []byte("key-" + strconv.Itoa(i)), Headers: []kgo.RecordHeader{
			{Key: HeaderID, Value: []byte("id-" + strconv.Itoa(i))}}}
		if typ := typeOf(i); typ != "" {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderType, Value: []byte(typ)})
		}
		var err error
		err = decodeEvent(&evs[i], r, [16]byte{}, "", true, &d)
		require.NoError(t, err)
		for _, h := range r.Headers {
			h.Value[0] = 'X' // the record's bytes may change: the Event owns its own
		}
		r.Key[0] = 'X'
	}
	big := &kgo.Record{Headers: []kgo.RecordHeader{{Key: HeaderID, Value: bytes.Repeat([]byte("i"), arenaChunk)}}}
	var ev Event
	err := decodeEvent(&ev, big, [16]byte{}, "", true, &d)
	require.NoError(t, err, "an ID larger than a chunk")
	require.Len(t, ev.ID, arenaChunk)
	for i, ev := range evs {
		require.Equal(t, "key-"+strconv.Itoa(i), ev.Key)
		require.Equal(t, "id-"+strconv.Itoa(i), ev.ID)
		require.Equal(t, typeOf(i), ev.Type)
		if i > 0 && ev.Type != "" && ev.Type == evs[i-1].Type {
			require.Same(t, unsafe.StringData(evs[i-1].Type), unsafe.StringData(ev.Type),
				"record %d repeats the type of the one before: its string, not a copy", i)
		}
	}
}

// FuzzDecoderAgreesWithDecodeRecord feeds a run of records (header lists and keys) to one
// decoder, as a consumer's worker or poll loop decodes them (strings cut from its arena, the
// last type reused, the hour of the last event-time cached), and checks each Event against
// decodeRecord's, which allocates each record's strings and parses each time alone, and then
// that every earlier Event still holds what it decoded to after the records' bytes changed.
func FuzzDecoderAgreesWithDecodeRecord(f *testing.F) {
	f.Add([]byte("event-id\x00a\x01event-type\x00t\x01event-time\x002026-11-27T03:04:05.123456789Z\x02k" +
		"\x03event-id\x00b\x01event-type\x00t\x01event-time\x002026-11-27T03:59:59Z\x02" +
		"\x03event-type\x00u\x01event-time\x002026-11-27T04:00:00.5Z\x01x\x00y\x02k2"))
	f.Add([]byte("event-time\x002026-11-27T03:04:05.12345678Z\x03event-time\x002026-11-27T03:04:05.1234567a9Z" +
		"\x03event-time\x002026-11-27T03:04:05+01:00\x03event-time\x00bad"))
	f.Add([]byte("event-id\x00\x03event-id\x00a\x01event-id\x00b\x03event-type\x00t\x03event-type\x00t"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var d decoder
		type decoded struct {
			ev  Event
			err error
		}
		var got, want []decoded
		for i, rec := range splitBytes(raw, 3) {
			parts := splitBytes(rec, 2)
			var hs []kgo.RecordHeader
			for _, part := range splitBytes(parts[0], 1) {
				kv := splitBytes(part, 0)
				h := kgo.RecordHeader{Key: string(kv[0])}
				if len(kv) > 1 {
					h.Value = kv[1]
				}
				hs = append(hs, h)
			}
			r := &kgo.Record{Topic: "t", Offset: int64(i), Timestamp: time.UnixMilli(int64(i)), Headers: hs}
			if len(parts) > 1 {
				r.Key = parts[1]
			}
			var ev Event
			err := decodeEvent(&ev, r, [16]byte{}, "", true, &d)
			wev, werr := decodeRecord(r, [16]byte{})
			require.Equal(t, werr, err, "record %d", i)
			require.Equal(t, wev, ev, "record %d", i)
			got, want = append(got, decoded{ev, err}), append(want, decoded{wev, werr})
			// The record's bytes may change once decoded (kgo never does so, a hook might):
			// the Events own theirs.
			for _, h := range hs {
				for j := range h.Value {
					h.Value[j] = 'X'
				}
			}
			for j := range r.Key {
				r.Key[j] = 'X'
			}
		}
		for i := range got {
			require.Equal(t, want[i].ev.ID, got[i].ev.ID, "record %d", i)
			require.Equal(t, want[i].ev.Type, got[i].ev.Type, "record %d", i)
			require.Equal(t, want[i].ev.Key, got[i].ev.Key, "record %d", i)
		}
	})
}
