package cache

import (
	"bytes"
	"context"
	"encoding/binary"
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
// ones and a Cache with compression off store them as they are.
func TestCompressAbove(t *testing.T) {
	ctx := context.Background()
	_, rdb := redistest.Mini(t)
	big := user{ID: "big", Name: strings.Repeat("abcdefgh", 400)}
	for _, tc := range []struct {
		name      string
		opt       *Options
		key       string
		v         user
		compresed bool
	}{
		{"default, small", nil, "small", user{ID: "small", Name: "x"}, false},
		{"default, big", nil, "big", big, true},
		{"off", &Options{CompressAbove: -1}, "big-off", big, false},
		{"json, big", &Options{Codec: JSONCodec{}, CompressAbove: 100}, "big-json", big, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New[user](rdb, tc.opt)
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Close() })
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
