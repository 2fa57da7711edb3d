package cache

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/surgekit/surge/internal/redistest"
)

// planRecord is a typical cached record: json tags, omitempty, a []string.
type planRecord struct {
	ID      int64    `json:"id"`
	Name    string   `json:"name"`
	Email   string   `json:"email,omitempty"`
	Tags    []string `json:"tags"`
	Score   float64  `json:"score"`
	Active  bool     `json:"active"`
	Created string   `json:"created"`
	Note    string   `json:"note,omitempty"`
}

// planNumbers has every scalar kind, msgpack tags over json ones, skipped and unexported fields.
type planNumbers struct {
	I      int     `msgpack:"i" json:"ignored"`
	I8     int8    `json:"i8"`
	I16    int16   `json:"i16"`
	I32    int32   `json:"i32"`
	I64    int64   `json:"i64,omitempty"`
	U      uint    `json:"u"`
	U8     uint8   `json:"u8"`
	U16    uint16  `json:"u16"`
	U32    uint32  `json:"u32"`
	U64    uint64  `json:"u64"`
	F32    float32 `json:"f32"`
	F64    float64 `json:"f64"`
	B      bool
	Skip   string `json:"-"`
	hidden int
}

// planNarrow reads planNumbers' and planRecord's fields as other types: integers truncate, a
// float64 is no float32, a string is no integer, and the other fields are unknown to it.
type planNarrow struct {
	I    int8     `json:"i"`
	I64  uint8    `json:"i64"`
	U64  int16    `json:"u64"`
	F64  float32  `json:"f64"`
	ID   string   `json:"id"`
	Tags []string `json:"tags"`
}

// decodeLikeCache decodes b as unmarshalPayload does: the plan when it serves, else the Codec
// from a zero value. planned says whether the plan served.
func decodeLikeCache[V any](p *msgpackPlan, b []byte) (v V, planned bool, err error) {
	if p.decode(b, unsafe.Pointer(&v)) {
		return v, true, nil
	}
	var zero V
	v = zero
	return v, false, MsgpackCodec{}.Unmarshal(b, &v)
}

// requireSameDecode checks that decoding b into a V the cache's way gives what the Codec
// gives: the same value, or an error both ways.
func requireSameDecode[V any](t *testing.T, p *msgpackPlan, b []byte) (planned bool) {
	t.Helper()
	got, planned, gotErr := decodeLikeCache[V](p, b)
	var want V
	wantErr := MsgpackCodec{}.Unmarshal(b, &want)
	if wantErr != nil {
		require.Error(t, gotErr, "input %x", b)
		require.False(t, planned, "input %x: the plan accepted what the Codec refuses", b)
		return planned
	}
	require.NoError(t, gotErr, "input %x", b)
	// Compared as their encodings: bit for bit, a NaN equal to itself, a nil slice not equal
	// to an empty one.
	wantB, err := MsgpackCodec{}.Marshal(want)
	require.NoError(t, err)
	gotB, err := MsgpackCodec{}.Marshal(got)
	require.NoError(t, err)
	require.Equal(t, wantB, gotB, "input %x (planned %v): want %+v, got %+v", b, planned, want, got)
	return planned
}

func randString(r *rand.Rand) string {
	b := make([]byte, r.IntN(3)*r.IntN(90)) // 0 bytes often, up to a str16
	for i := range b {
		b[i] = byte(' ' + r.IntN(95))
	}
	return string(b)
}

func randStrings(r *rand.Rand) []string {
	switch r.IntN(4) {
	case 0:
		return nil
	case 1:
		return []string{}
	}
	ss := make([]string, r.IntN(20))
	for i := range ss {
		ss[i] = randString(r)
	}
	return ss
}

// randInt returns integers of every encoding size, negative ones too.
func randInt(r *rand.Rand) int64 {
	switch r.IntN(5) {
	case 0:
		return int64(r.IntN(256)) - 128
	case 1:
		return int64(r.Int32())
	case 2:
		return -int64(r.Uint32())
	case 3:
		return []int64{0, math.MaxInt64, math.MinInt64, 127, 128, -32, -33, 255, 256, 65535, 65536}[r.IntN(11)]
	}
	return int64(r.Uint64())
}

// The plan decodes what MsgpackCodec writes for plain structs, and gives exactly the Codec's
// value for it; values it does not take (other encodings, unknown fields, other types) it
// leaves to the Codec, so a Cache decodes every payload as the Codec does.
func TestMsgpackPlanDecodesAsTheCodec(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	rec, nums, narrow := newMsgpackPlan[planRecord](), newMsgpackPlan[planNumbers](), newMsgpackPlan[planNarrow]()
	require.NotNil(t, rec)
	require.NotNil(t, nums)
	require.NotNil(t, narrow)
	for range 2000 {
		v := planRecord{ID: randInt(r), Name: randString(r), Email: randString(r), Tags: randStrings(r),
			Score: r.NormFloat64() * 1e6, Active: r.IntN(2) == 0, Created: randString(r), Note: randString(r)}
		b, err := MsgpackCodec{}.Marshal(v)
		require.NoError(t, err)
		require.True(t, requireSameDecode[planRecord](t, rec, b), "the plan takes what the Codec writes")
		requireSameDecode[planNumbers](t, nums, b)
		requireSameDecode[planNarrow](t, narrow, b)

		n := planNumbers{I: int(randInt(r)), I8: int8(randInt(r)), I16: int16(randInt(r)), I32: int32(randInt(r)),
			I64: randInt(r), U: uint(randInt(r)), U8: uint8(randInt(r)), U16: uint16(randInt(r)),
			U32: uint32(randInt(r)), U64: uint64(randInt(r)), F32: float32(r.NormFloat64()),
			F64: r.NormFloat64(), B: r.IntN(2) == 0, Skip: "not encoded", hidden: 7}
		b, err = MsgpackCodec{}.Marshal(n)
		require.NoError(t, err)
		require.True(t, requireSameDecode[planNumbers](t, nums, b), "the plan takes what the Codec writes")
		requireSameDecode[planRecord](t, rec, b)
		requireSameDecode[planNarrow](t, narrow, b)

		// Other writers: structs as arrays, nils, unknown fields, trailing bytes, cut short.
		other, err := msgpack.Marshal(map[string]any{"id": randInt(r), "name": nil, "tags": []any{"a", nil},
			"extra": r.IntN(2) == 0, "score": float32(1.5)})
		require.NoError(t, err)
		requireSameDecode[planRecord](t, rec, other)
		requireSameDecode[planRecord](t, rec, append(b, 0xc0))
		requireSameDecode[planNumbers](t, nums, b[:r.IntN(len(b))])
		requireSameDecode[planRecord](t, rec, []byte{0x90}) // an empty array: a zero struct
	}
}

// FuzzMsgpackPlan: on any input the Cache's decoding (the plan, else the Codec) gives the
// Codec's result.
func FuzzMsgpackPlan(f *testing.F) {
	for _, v := range []any{
		planRecord{ID: 1, Name: "a", Tags: []string{"x", ""}, Score: 2.5, Active: true},
		planNumbers{I8: -3, U64: math.MaxUint64, F32: 1.25},
		map[string]any{"id": "x", "tags": nil},
	} {
		b, err := MsgpackCodec{}.Marshal(v)
		require.NoError(f, err)
		f.Add(b)
	}
	rec, nums, narrow := newMsgpackPlan[planRecord](), newMsgpackPlan[planNumbers](), newMsgpackPlan[planNarrow]()
	f.Fuzz(func(t *testing.T, b []byte) {
		requireSameDecode[planRecord](t, rec, b)
		requireSameDecode[planNumbers](t, nums, b)
		requireSameDecode[planNarrow](t, narrow, b)
	})
}

type textID struct{ v string }

func (t *textID) UnmarshalText(b []byte) error { t.v = string(b); return nil }

type planEmbedded struct{ planRecord }

// A type whose decoding the plan cannot match exactly gets no plan: custom decoders on the type
// or a field, named and composite field types, embedding, tag options but omitempty.
func TestMsgpackPlanOnlyForPlainStructs(t *testing.T) {
	require.Nil(t, newMsgpackPlan[string]())
	require.Nil(t, newMsgpackPlan[*planRecord]())
	require.Nil(t, newMsgpackPlan[map[string]string]())
	require.Nil(t, newMsgpackPlan[textID]())
	require.Nil(t, newMsgpackPlan[struct{ ID textID }]())
	require.Nil(t, newMsgpackPlan[struct{ At time.Time }]())
	require.Nil(t, newMsgpackPlan[struct{ P *int }]())
	require.Nil(t, newMsgpackPlan[struct{ M map[string]int }]())
	require.Nil(t, newMsgpackPlan[struct{ B []byte }]())
	require.Nil(t, newMsgpackPlan[struct{ S time.Duration }]()) // a named type
	require.Nil(t, newMsgpackPlan[planEmbedded]())
	require.Nil(t, newMsgpackPlan[struct {
		S string `msgpack:"s,intern"`
	}]())
	require.Nil(t, newMsgpackPlan[struct {
		S string `msgpack:"s,alias:t"`
	}]())
	require.Nil(t, newMsgpackPlan[struct {
		A string `msgpack:"x"`
		B string `msgpack:"x"`
	}]())
	require.NotNil(t, newMsgpackPlan[struct {
		A string `json:"a,omitempty"`
		b func()
		C []string `json:"-"`
	}]())
}

// A Cache decodes with the plan the entries it writes, and with the Codec an entry it does not
// take: here one written for a newer record type, with a field this one does not know.
func TestCacheDecodesEntriesThePlanDoesNotTake(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := context.Background()
	c, err := New[planRecord](rdb, &Options{Prefix: "plan:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NotNil(t, c.plan)
	want := planRecord{ID: 7, Name: "Ada", Tags: []string{"a"}, Score: 1.5, Active: true}
	require.NoError(t, c.Set(ctx, "own", want))
	got, err := c.Get(ctx, "own")
	require.NoError(t, err)
	require.Equal(t, want, got)

	type newer struct {
		planRecord `msgpack:",inline"`
		Region     string `json:"region"`
	}
	w, err := New[newer](rdb, &Options{Prefix: "plan:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close() })
	require.Nil(t, w.plan)
	require.NoError(t, w.Set(ctx, "newer", newer{planRecord: want, Region: "eu"}))
	b, err := rdb.Get(ctx, w.valueKey("newer")).Bytes()
	require.NoError(t, err)
	_, payload, err := decodeEnvelope(b)
	require.NoError(t, err)
	var skipped planRecord
	require.False(t, c.plan.decode(payload, unsafe.Pointer(&skipped)), "an unknown field is the Codec's")
	got, err = c.Get(ctx, "newer")
	require.NoError(t, err)
	require.Equal(t, want, got, "the known fields decode, the unknown one is skipped")
	require.Zero(t, c.Stats().DecodeErrors)
}

func BenchmarkMsgpackDecode(b *testing.B) {
	v := planRecord{ID: 42, Name: "Ada Lovelace", Email: "ada@example.com", Tags: []string{"vip", "eu", "beta"},
		Score: 97.5, Active: true, Created: "2026-11-24T09:00:00Z", Note: "prefers invoices by post, net 30 days"}
	data, err := MsgpackCodec{}.Marshal(v)
	require.NoError(b, err)
	b.Run("codec", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var got planRecord
			if err := (MsgpackCodec{}).Unmarshal(data, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("plan", func(b *testing.B) {
		p := newMsgpackPlan[planRecord]()
		b.ReportAllocs()
		for b.Loop() {
			var got planRecord
			if !p.decode(data, unsafe.Pointer(&got)) {
				b.Fatal("not planned")
			}
		}
	})
}

// regRecord has a decoder registered with msgpack.Register (in init, before any Cache of it).
type regRecord struct {
	Name string `json:"name"`
	N    int    `json:"n"`
}

func init() {
	msgpack.Register(regRecord{}, nil, func(d *msgpack.Decoder, v reflect.Value) error {
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			return err
		}
		name, _ := m["name"].(string)
		v.FieldByName("Name").SetString("registered:" + name)
		return nil
	})
}

// A decoder registered for V with msgpack.Register is the Codec's way of decoding V, so a
// Cache with the default MsgpackCodec must decode with it too: the plan, which cannot see the
// registry, stays off for a V whose values the Codec does not decode as the plan does.
func TestMsgpackPlanHonoursARegisteredDecoder(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := context.Background()
	c, err := New[regRecord](rdb, &Options{Prefix: "reg:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.Set(ctx, "k", regRecord{Name: "ada", N: 3}))
	b, err := rdb.Get(ctx, c.valueKey("k")).Bytes()
	require.NoError(t, err)
	_, payload, err := decodeEnvelope(b)
	require.NoError(t, err)
	var want regRecord
	require.NoError(t, MsgpackCodec{}.Unmarshal(payload, &want))
	require.Equal(t, "registered:ada", want.Name, "the registered decoder runs in the Codec")
	got, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, want, got, "the Cache decodes as its Codec does")
}

// The general decoder stores a float32 through reflect.Value.SetFloat, a float64 on the way,
// which quiets a signaling NaN: the plan's float32 must carry the same bits, not the payload's.
func TestMsgpackPlanStoresNaNsAsTheCodec(t *testing.T) {
	nums := newMsgpackPlan[planNumbers]()
	require.NotNil(t, nums)
	for _, bits := range []uint32{0x7f800001, 0xffbfffff, 0x7fc00000, 0x7f800000} {
		for _, field := range []string{"f32", "f64"} {
			b := binary.BigEndian.AppendUint32(append(append([]byte{0x81, 0xa3}, field...), 0xca), bits)
			got, planned, err := decodeLikeCache[planNumbers](nums, b)
			require.NoError(t, err)
			require.True(t, planned)
			var want planNumbers
			require.NoError(t, MsgpackCodec{}.Unmarshal(b, &want))
			require.Equal(t, math.Float32bits(want.F32), math.Float32bits(got.F32), "float32 %08x into %s", bits, field)
			require.Equal(t, math.Float64bits(want.F64), math.Float64bits(got.F64), "float32 %08x into %s", bits, field)
		}
	}
}
