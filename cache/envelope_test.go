package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/surgekit/surge/internal/redistest"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	h := header{version: envelopeVersion, soft: 1_700_000_000_123, hard: 1_700_000_600_456, loadDur: 1234 * time.Microsecond}
	b := appendEnvelope(nil, h, []byte(`{"id":"1"}`))
	require.Len(t, b, headerLen+10)
	got, payload, err := decodeEnvelope(b)
	require.NoError(t, err)
	require.Equal(t, h, got)
	require.Equal(t, `{"id":"1"}`, string(payload))

	ts := appendEnvelope(nil, header{tombstone: true, hard: 5}, nil)
	got, payload, err = decodeEnvelope(ts)
	require.NoError(t, err)
	require.True(t, got.tombstone)
	require.Empty(t, payload)

	long := appendEnvelope(nil, header{loadDur: 100 * time.Hour}, nil)
	got, _, err = decodeEnvelope(long)
	require.NoError(t, err)
	require.Equal(t, time.Duration(0xFFFFFFFF)*time.Microsecond, got.loadDur, "saturates")
}

func TestEnvelopeRejects(t *testing.T) {
	valid := appendEnvelope(nil, header{hard: 1}, []byte("{}"))
	future := bytes.Clone(valid)
	future[0] = envelopeVersion + 1
	flags := bytes.Clone(valid)
	flags[1] = 0x80
	tombWithPayload := appendEnvelope(nil, header{tombstone: true}, []byte("x"))
	legacyS2 := appendEnvelope(nil, header{version: legacyEnvelopeVersion, compressed: true}, []byte("x"))
	for name, b := range map[string][]byte{
		"empty": nil, "short": valid[:headerLen-1], "future version": future,
		"unknown flag": flags, "tombstone with payload": tombWithPayload, "S2 in version 1": legacyS2,
	} {
		_, _, err := decodeEnvelope(b)
		require.ErrorIs(t, err, errDecode, name)
	}
}

// FuzzDecodeEnvelope feeds the decoder (and the Cache's decode on top of it) arbitrary bytes:
// it must never panic, and whatever it accepts must re-encode to the same bytes.
func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(appendEnvelope(nil, header{soft: 1, hard: 2, loadDur: time.Millisecond}, []byte(`{"id":"1","name":"x"}`)))
	f.Add(appendEnvelope(nil, header{tombstone: true, hard: 2}, nil))
	f.Add([]byte("garbage"))
	f.Add([]byte{})
	f.Add(append([]byte{envelopeVersion + 1}, make([]byte, headerLen)...))
	f.Add(append([]byte{envelopeVersion, 0xFF}, make([]byte, headerLen)...))
	f.Add(appendEnvelope(nil, header{hard: 2}, []byte(`{"id":`)))
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled: decode does no I/O
	f.Cleanup(func() { _ = rdb.Close() })
	c, err := New[user](rdb, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := decodeEnvelope(b)
		if err == nil {
			if again := appendEnvelope(nil, h, payload); !bytes.Equal(again, b) {
				t.Fatalf("decoded %x to %+v %q, which encodes to %x", b, h, payload, again)
			}
		}
		_, _, _ = c.decode(b)
	})
}

// FuzzDecodeNotice does the same for pub/sub notices (varints need not be minimal, so the check
// is that a decoded notice survives a round trip).
func FuzzDecodeNotice(f *testing.F) {
	f.Add(encodeNotice(noticeInvalidate, "abc", []string{"k1", "", "k}3"}))
	f.Add(encodeNotice(noticeFilled, "abc", []string{"k"}))
	f.Add("i\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		kind, id, keys, err := decodeNotice(s)
		if err != nil {
			return
		}
		kind2, id2, keys2, err := decodeNotice(encodeNotice(kind, id, keys))
		if err != nil || kind2 != kind || id2 != id || len(keys2) != len(keys) {
			t.Fatalf("%q decoded to %c %q %q, which does not survive a round trip", s, kind, id, keys)
		}
		for i := range keys {
			if keys[i] != keys2[i] {
				t.Fatalf("key %d: %q became %q", i, keys[i], keys2[i])
			}
		}
	})
}

func TestNoticeRoundTrip(t *testing.T) {
	keys := []string{"a", "", "ü}{", string(make([]byte, 300))}
	kind, id, got, err := decodeNotice(encodeNotice(noticeInvalidate, "me", keys))
	require.NoError(t, err)
	require.Equal(t, byte(noticeInvalidate), kind)
	require.Equal(t, "me", id)
	require.Equal(t, keys, got)
	for _, bad := range []string{"", "x", "i", "i\x05ab", "i\x01a\x09k"} {
		_, _, _, err := decodeNotice(bad)
		require.ErrorIs(t, err, errNotice, "%q", bad)
	}
}

func TestBytesCodec(t *testing.T) {
	_, m, rdb := newCache(t, nil)
	c, err := New[[]byte](rdb, &Options{Prefix: "b:", Codec: BytesCodec{}})
	require.NoError(t, err)
	defer c.Close()
	ctx := t.Context()
	require.NoError(t, c.Set(ctx, "k", []byte(`<html>`)))
	raw, err := m.Get("b:{k}")
	require.NoError(t, err)
	require.Equal(t, "<html>", raw[headerLen:], "stored as is, after the header")
	got, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, []byte("<html>"), got)

	s, err := New[string](rdb, &Options{Prefix: "s:", Codec: BytesCodec{}})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Set(ctx, "k", "hi"))
	v, err := s.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "hi", v)

	bad, err := New[int](rdb, &Options{Codec: BytesCodec{}})
	require.NoError(t, err)
	defer bad.Close()
	require.ErrorContains(t, bad.Set(ctx, "k", 1), "BytesCodec cannot marshal int")
}

// legacyEntry is an entry exactly as the previous release wrote it: envelope version 1, the
// 22-byte header, then the payload (JSON with the default codec).
func legacyEntry(t *testing.T, payload []byte, hard time.Time) []byte {
	t.Helper()
	b := []byte{1, 0}
	b = binary.BigEndian.AppendUint64(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(hard.UnixMilli()))
	b = binary.BigEndian.AppendUint32(b, 1500)
	return append(b, payload...)
}

// Entries written by the previous release (envelope version 1, JSON) are still served by a
// Cache on the new default codec; with a Codec set they are read with it; one that does not
// decode is a miss the loader replaces, never an error.
func TestLegacyEntriesDecodeOrMiss(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	rdb := srv.Client()
	hard := time.Now().Add(time.Hour)
	noLoad := func(context.Context, string) (user, error) {
		t.Error("loader called for a cached key")
		return user{}, nil
	}

	c, err := New[user](rdb, &Options{Prefix: "legacy:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, rdb.Set(ctx, "legacy:{json}", legacyEntry(t, []byte(`{"id":"json","name":"old"}`), hard), time.Hour).Err())
	u, err := c.Fetch(ctx, "json", noLoad)
	require.NoError(t, err)
	require.Equal(t, user{ID: "json", Name: "old"}, u)
	require.NoError(t, rdb.Set(ctx, "legacy:{gone}", []byte{1, flagTombstone, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, time.Hour).Err())
	_, err = c.Fetch(ctx, "gone", noLoad)
	require.ErrorIs(t, err, ErrNotFound, "a version 1 negative entry still counts")

	// With a Codec set, version 1 payloads are that codec's.
	bc, err := New[string](rdb, &Options{Prefix: "legacy:", Codec: BytesCodec{}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = bc.Close() })
	require.NoError(t, rdb.Set(ctx, "legacy:{raw}", legacyEntry(t, []byte("<html>"), hard), time.Hour).Err())
	s, err := bc.Get(ctx, "raw")
	require.NoError(t, err)
	require.Equal(t, "<html>", s)

	// Undecodable: a miss, then replaced by a load.
	require.NoError(t, rdb.Set(ctx, "legacy:{bad}", legacyEntry(t, []byte(`{"id":`), hard), time.Hour).Err())
	_, err = c.Get(ctx, "bad")
	require.ErrorIs(t, err, ErrMiss)
	u, err = c.Fetch(ctx, "bad", func(context.Context, string) (user, error) { return user{ID: "bad", Name: "new"}, nil })
	require.NoError(t, err)
	require.Equal(t, "new", u.Name)
	u, err = c.Get(ctx, "bad")
	require.NoError(t, err)
	require.Equal(t, "new", u.Name)
}

// Values of at least CompressAbove encoded bytes are stored S2-compressed and read back; smaller
// ones, ones above maxCompressed (lowered here) and a Cache with compression off store them as
// they are.
func TestCompressAbove(t *testing.T) {
	ctx := context.Background()
	_, rdb := redistest.Mini(t)
	big := user{ID: "big", Name: strings.Repeat("abcdefgh", 400)}
	for _, tc := range []struct {
		name      string
		opt       *Options
		maxS2     int // 0: maxCompressed
		key       string
		v         user
		compresed bool
	}{
		{"default, small", nil, 0, "small", user{ID: "small", Name: "x"}, false},
		{"default, big", nil, 0, "big", big, true},
		{"off", &Options{CompressAbove: -1}, 0, "big-off", big, false},
		{"json, big", &Options{Codec: JSONCodec{}, CompressAbove: 100}, 0, "big-json", big, true},
		{"above the bound", nil, 3000, "big-bound", big, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New[user](rdb, tc.opt)
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Close() })
			if tc.maxS2 > 0 {
				c.cfg.maxS2 = tc.maxS2
			}
			require.NoError(t, c.Set(ctx, tc.key, tc.v))
			raw, err := rdb.Get(ctx, "{"+tc.key+"}").Bytes()
			require.NoError(t, err)
			h, _, err := decodeEnvelope(raw)
			require.NoError(t, err)
			require.Equal(t, tc.compresed, h.compressed)
			if tc.compresed {
				require.Less(t, len(raw), 1000, "compressed")
			}
			got, err := c.Get(ctx, tc.key)
			require.NoError(t, err)
			require.Equal(t, tc.v, got)
		})
	}
}

// MsgpackCodec follows json tags: renamed fields, omitted "-" fields.
func TestMsgpackCodecFollowsJSONTags(t *testing.T) {
	type rec struct {
		A      string `json:"a"`
		Secret string `json:"-"`
		N      int    `json:"n,omitempty"`
	}
	b, err := MsgpackCodec{}.Marshal(rec{A: "x", Secret: "s"})
	require.NoError(t, err)
	require.NotContains(t, string(b), "Secret")
	require.NotContains(t, string(b), "s\x00")
	var m map[string]any
	require.NoError(t, MsgpackCodec{}.Unmarshal(b, &m))
	require.Equal(t, map[string]any{"a": "x"}, m)
	var got rec
	require.NoError(t, MsgpackCodec{}.Unmarshal(b, &got))
	require.Equal(t, rec{A: "x"}, got)
}

// A corrupt entry that claims more elements or bytes than it holds is refused before
// MsgpackCodec decodes it: the general decoder allocates up to a million elements (or a
// mebibyte) for such a claim, so a five-byte value in Redis could cost each read tens of MB.
func TestMsgpackCodecRefusesLengthsBeyondThePayload(t *testing.T) {
	type elem struct {
		A, B, C, D string
		N          [8]int64
	}
	for _, tc := range []struct {
		name    string
		payload []byte
		into    func() any
	}{
		{"array32 of 2^31 elements", []byte{0xdd, 0x7f, 0xff, 0xff, 0xff}, func() any { return new([]elem) }},
		{"array16 in a map", []byte{0x81, 0xa1, 'a', 0xdc, 0xff, 0xff}, func() any { return new(map[string][]elem) }},
		{"map32 of 2^31 pairs", []byte{0xdf, 0x7f, 0xff, 0xff, 0xff}, func() any { return new(map[string]elem) }},
		{"str32 of 1 MiB", []byte{0xdb, 0x00, 0x10, 0x00, 0x00, 'x'}, func() any { return new(string) }},
		{"bin32 of 1 MiB", []byte{0xc6, 0x00, 0x10, 0x00, 0x00, 'x'}, func() any { return new([]byte) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			allocated := allocatedBy(func() { err = MsgpackCodec{}.Unmarshal(tc.payload, tc.into()) })
			require.Error(t, err)
			require.Less(t, allocated, uint64(512<<10), "bytes allocated for a %d-byte payload", len(tc.payload))
		})
	}
	// Values that hold what they claim still decode, containers inside containers included.
	in := map[string]any{"a": []any{int64(1), "x", []any{}, map[string]any{"t": true}}, "b": []byte{1, 2}, "c": ""}
	b, err := MsgpackCodec{}.Marshal(in)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, MsgpackCodec{}.Unmarshal(b, &out))
	require.Equal(t, in, out)
}

// allocatedBy returns the bytes the heap allocated while f ran (this goroutine's and any
// other's: the bounds it is held to leave room for what other goroutines allocate meanwhile,
// far below the megabytes and more that a claim-sized allocation takes).
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// Every type MessagePack has, at each length boundary, passes the length check and decodes as
// before: the check refuses only claims beyond the payload.
func TestMsgpackLengthCheckPassesValidData(t *testing.T) {
	type inner struct {
		S string    `json:"s"`
		T time.Time `json:"t"`
	}
	big := func(n int) string { return strings.Repeat("x", n) }
	arr := func(n int) []any {
		a := make([]any, n)
		for i := range a {
			a[i] = int64(i % 3)
		}
		return a
	}
	obj := func(n int) map[string]any {
		m := make(map[string]any, n)
		for i := range n {
			m[fmt.Sprint("k", i)] = i%2 == 0
		}
		return m
	}
	values := []any{
		nil, true, false, int64(0), int64(127), int64(128), int64(255), int64(256), int64(65535),
		int64(65536), int64(1 << 32), int64(-1), int64(-32), int64(-33), int64(-129), int64(-32769),
		int64(-1 << 40), uint64(1 << 63), float32(1.5), 2.25, "", big(31), big(32), big(255),
		big(256), big(65535), big(65536), []byte{}, []byte(big(255)), []byte(big(256)),
		[]byte(big(65536)), arr(15), arr(16), arr(65535), arr(65536), obj(15), obj(16), obj(65536),
		time.Unix(1, 0).UTC(), time.Unix(1, 5).UTC(), time.Unix(1<<40, 7).UTC(),
		map[string]any{"n": []any{arr(3), obj(2), []any{}, map[string]any{}}, "b": []byte{1}},
		[]inner{{S: "a", T: time.Unix(3, 9).UTC()}, {}},
	}
	for i, v := range values {
		b, err := MsgpackCodec{}.Marshal(v)
		require.NoError(t, err, "value %d", i)
		require.NoError(t, checkMsgpackLengths(b), "value %d (%T)", i, v)
		require.Error(t, checkMsgpackLengths(append([]byte{0xdd, 0, 0, 0, 2}, b...)), "value %d in an array claiming one more", i)
	}
	for i := range len(values) {
		if _, ok := values[i].([]inner); ok {
			continue // decodes into []any as maps, not as the struct
		}
		b, err := MsgpackCodec{}.Marshal(values[i])
		require.NoError(t, err)
		var got any
		require.NoError(t, MsgpackCodec{}.Unmarshal(b, &got), "value %d", i)
	}
}

// FuzzMsgpackLengthCheck: on any input MsgpackCodec.Unmarshal allocates in proportion to the
// input, never by what the input claims.
func FuzzMsgpackLengthCheck(f *testing.F) {
	for _, b := range [][]byte{{0xdd, 0x7f, 0xff, 0xff, 0xff}, {0x81, 0xa1, 'a', 0xdc, 0xff, 0xff}, {0xc6, 0, 0x10, 0, 0}} {
		f.Add(b)
	}
	b, err := MsgpackCodec{}.Marshal(map[string]any{"a": []any{int64(1), "x", []byte{2}}, "t": time.Unix(1, 2)})
	require.NoError(f, err)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var v any
		allocated := allocatedBy(func() { _ = MsgpackCodec{}.Unmarshal(b, &v) })
		require.Less(t, allocated, uint64(256*len(b)+512<<10), "bytes allocated for %d bytes of input", len(b))
	})
}
