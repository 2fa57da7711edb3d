package cache

import (
	"encoding"
	"encoding/binary"
	"math"
	"reflect"
	"strings"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"
)

// msgpackPlan decodes the MessagePack that [MsgpackCodec] writes for a plain struct straight
// from the bytes, without the reflection, reader and per-field interface calls of the general
// decoder (a 200-byte record: about 2.5 times faster). It serves only what it can decode
// exactly as the general decoder would: a struct whose exported fields are all of predeclared
// scalar types or []string, not embedded, with no msgpack option but omitempty; and of the
// input only a map of known field names to values in the encodings the encoder writes for
// their types. On anything else (another codec, an unknown or repeated field, a nil, an
// array-encoded struct, trailing bytes, a float where an integer is expected...) decode reports
// false and the caller decodes with the Codec, so results and errors are the general decoder's.
// A V the general decoder does not decode as the plan would (one with a decoder registered with
// msgpack.Register) gets no plan (decodesAsCodec).
type msgpackPlan struct {
	fields []planField
	byName map[string]int
}

// planField is one field of the struct: where it is and how its value is stored.
type planField struct {
	name   string
	offset uintptr
	kind   reflect.Kind // a predeclared scalar kind, or reflect.Slice for []string
}

var (
	planDecoderIfaces = []reflect.Type{
		reflect.TypeFor[msgpack.CustomDecoder](),
		reflect.TypeFor[msgpack.Unmarshaler](),
		reflect.TypeFor[encoding.BinaryUnmarshaler](),
		reflect.TypeFor[encoding.TextUnmarshaler](),
	}
	planScalars = map[reflect.Type]bool{}
)

func init() {
	for _, v := range []any{false, "", int(0), int8(0), int16(0), int32(0), int64(0),
		uint(0), uint8(0), uint16(0), uint32(0), uint64(0), float32(0), float64(0), []string(nil)} {
		planScalars[reflect.TypeOf(v)] = true
	}
}

// newMsgpackPlan returns the plan of V, or nil when V is not a struct it can decode exactly as
// the general decoder does (with the json fallback tag MsgpackCodec sets).
func newMsgpackPlan[V any]() *msgpackPlan {
	t := reflect.TypeFor[V]()
	if t.Kind() != reflect.Struct {
		return nil
	}
	for _, it := range planDecoderIfaces {
		if t.Implements(it) || reflect.PointerTo(t).Implements(it) {
			return nil
		}
	}
	p := &msgpackPlan{byName: map[string]int{}}
	var index []int // of each planned field in t
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("msgpack")
		if tag == "" {
			tag = f.Tag.Get("json")
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if f.Anonymous || f.Name == "_msgpack" {
			return nil // inlining and struct-wide options: the general decoder's
		}
		if !f.IsExported() {
			continue
		}
		for o := range strings.SplitSeq(opts, ",") {
			if o != "" && o != "omitempty" {
				return nil // alias, intern, ...: the general decoder's
			}
		}
		if strings.ContainsAny(tag, "'\":\\() \t\n") {
			return nil // quoting, option values and spaces: the tag parser's
		}
		if name == "" {
			name = f.Name
		}
		if !planScalars[f.Type] {
			return nil
		}
		if _, dup := p.byName[name]; dup {
			return nil
		}
		p.byName[name] = len(p.fields)
		p.fields = append(p.fields, planField{name: name, offset: f.Offset, kind: f.Type.Kind()})
		index = append(index, i)
	}
	if len(p.fields) > 64 {
		return nil // decode tracks the fields seen in a uint64
	}
	if !p.decodesAsCodec(t, index) {
		return nil
	}
	return p
}

// decodesAsCodec reports whether the plan decodes a V of non-zero fields (index: each planned
// field's index in t) as MsgpackCodec does. A decoder or encoder registered for V with
// msgpack.Register, which the plan cannot see (the registry has no accessor), then shows as a
// payload the plan refuses or decodes otherwise: the plan is off for V, so such a V decodes
// as the Codec decodes it. A registration after New is not seen.
func (p *msgpackPlan) decodesAsCodec(t reflect.Type, index []int) bool {
	probe := reflect.New(t).Elem()
	for _, i := range index {
		switch f := probe.Field(i); f.Kind() {
		case reflect.String:
			f.SetString("probe")
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			f.SetInt(int64(-1 - i))
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			f.SetUint(uint64(1 + i))
		case reflect.Float32, reflect.Float64:
			f.SetFloat(1.5 + float64(i))
		case reflect.Slice:
			f.Set(reflect.ValueOf([]string{"probe", ""}))
		}
	}
	var codec MsgpackCodec
	b, err := codec.Marshal(probe.Interface())
	if err != nil {
		return false
	}
	want, got := reflect.New(t), reflect.New(t)
	if codec.Unmarshal(b, want.Interface()) != nil || !p.decode(b, got.UnsafePointer()) {
		return false
	}
	return reflect.DeepEqual(want.Interface(), got.Interface())
}

// decode decodes b into the zero struct at v and reports whether it could (see msgpackPlan);
// when it reports false, *v may be partly set and must be reset before decoding otherwise.
func (p *msgpackPlan) decode(b []byte, v unsafe.Pointer) bool {
	r := planReader{b: b}
	n, ok := r.mapLen()
	if !ok {
		return false
	}
	var seen uint64
	for range n {
		name, ok := r.str()
		if !ok {
			return false
		}
		i, known := p.byName[unsafe.String(unsafe.SliceData(name), len(name))]
		if !known || seen&(1<<i) != 0 {
			return false
		}
		seen |= 1 << i
		f := &p.fields[i]
		at := unsafe.Add(v, f.offset)
		switch f.kind {
		case reflect.String:
			s, ok := r.str()
			if !ok {
				return false
			}
			*(*string)(at) = string(s)
		case reflect.Bool:
			switch r.next() {
			case 0xc2:
				*(*bool)(at) = false
			case 0xc3:
				*(*bool)(at) = true
			default:
				return false
			}
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			x, ok := r.integer()
			if !ok {
				return false
			}
			setInteger(at, f.kind, x)
		case reflect.Float64:
			switch r.next() {
			case 0xca:
				u, ok := r.fixed(4)
				if !ok {
					return false
				}
				*(*float64)(at) = float64(math.Float32frombits(uint32(u)))
			case 0xcb:
				u, ok := r.fixed(8)
				if !ok {
					return false
				}
				*(*float64)(at) = math.Float64frombits(u)
			default:
				return false
			}
		case reflect.Float32:
			if r.next() != 0xca {
				return false
			}
			u, ok := r.fixed(4)
			if !ok {
				return false
			}
			// Through a float64, as reflect.Value.SetFloat stores it for the general decoder
			// (which quiets a signaling NaN).
			*(*float32)(at) = float32(widen(math.Float32frombits(uint32(u))))
		case reflect.Slice: // []string
			m, ok := r.arrayLen()
			if !ok {
				return false
			}
			if m < 0 {
				continue // nil: the field stays nil, as the general decoder leaves it
			}
			ss := make([]string, m)
			for j := range ss {
				s, ok := r.str()
				if !ok {
					return false
				}
				ss[j] = string(s)
			}
			*(*[]string)(at) = ss
		default:
			return false
		}
	}
	return len(r.b) == 0
}

// widen is float64(f), in a function the compiler does not fold into float32(float64(f)) == f.
//
//go:noinline
func widen(f float32) float64 { return float64(f) }

// setInteger stores x, an integer of 64 bits, in the field at of kind k, truncating it as
// reflect.Value.SetInt and SetUint do.
func setInteger(at unsafe.Pointer, k reflect.Kind, x uint64) {
	switch k {
	case reflect.Int:
		*(*int)(at) = int(x)
	case reflect.Int8:
		*(*int8)(at) = int8(x)
	case reflect.Int16:
		*(*int16)(at) = int16(x)
	case reflect.Int32:
		*(*int32)(at) = int32(x)
	case reflect.Int64:
		*(*int64)(at) = int64(x)
	case reflect.Uint:
		*(*uint)(at) = uint(x)
	case reflect.Uint8:
		*(*uint8)(at) = uint8(x)
	case reflect.Uint16:
		*(*uint16)(at) = uint16(x)
	case reflect.Uint32:
		*(*uint32)(at) = uint32(x)
	case reflect.Uint64:
		*(*uint64)(at) = x
	}
}

// planReader reads MessagePack items from b. Its methods report false for an item that is
// short or of another type than asked for.
type planReader struct {
	b []byte
}

// next returns the next byte (a type code), or 0xc1 (never used by MessagePack) at the end.
func (r *planReader) next() byte {
	if len(r.b) == 0 {
		return 0xc1
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// fixed reads a big-endian unsigned integer of n bytes (1, 2, 4 or 8).
func (r *planReader) fixed(n int) (uint64, bool) {
	if len(r.b) < n {
		return 0, false
	}
	var u uint64
	switch n {
	case 1:
		u = uint64(r.b[0])
	case 2:
		u = uint64(binary.BigEndian.Uint16(r.b))
	case 4:
		u = uint64(binary.BigEndian.Uint32(r.b))
	case 8:
		u = binary.BigEndian.Uint64(r.b)
	}
	r.b = r.b[n:]
	return u, true
}

// length reads the length that follows a str8/16/32, array16/32 or map16/32 code (n bytes).
func (r *planReader) length(n int) (int, bool) {
	u, ok := r.fixed(n)
	if !ok || u > uint64(len(r.b)) {
		return 0, false // longer than the input: not ours to judge
	}
	return int(u), true
}

// mapLen reads a map header (not nil).
func (r *planReader) mapLen() (int, bool) {
	switch c := r.next(); {
	case c >= 0x80 && c <= 0x8f:
		return int(c & 0x0f), true
	case c == 0xde:
		return r.length(2)
	case c == 0xdf:
		return r.length(4)
	}
	return 0, false
}

// arrayLen reads an array header: -1 for nil.
func (r *planReader) arrayLen() (int, bool) {
	switch c := r.next(); {
	case c == 0xc0:
		return -1, true
	case c >= 0x90 && c <= 0x9f:
		return int(c & 0x0f), true
	case c == 0xdc:
		return r.length(2)
	case c == 0xdd:
		return r.length(4)
	}
	return 0, false
}

// str reads a string (str codes only, not nil or bin) and returns its bytes within b.
func (r *planReader) str() ([]byte, bool) {
	var n int
	ok := true
	switch c := r.next(); {
	case c >= 0xa0 && c <= 0xbf:
		n = int(c & 0x1f)
	case c == 0xd9:
		n, ok = r.length(1)
	case c == 0xda:
		n, ok = r.length(2)
	case c == 0xdb:
		n, ok = r.length(4)
	default:
		return nil, false
	}
	if !ok || n > len(r.b) {
		return nil, false
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s, true
}

// integer reads an integer of any integer encoding as its 64 bits (a negative one sign-extended),
// as the general decoder does before storing it.
func (r *planReader) integer() (uint64, bool) {
	c := r.next()
	switch {
	case c <= 0x7f:
		return uint64(c), true
	case c >= 0xe0:
		return uint64(int64(int8(c))), true
	}
	switch c {
	case 0xcc:
		return r.fixed(1)
	case 0xcd:
		return r.fixed(2)
	case 0xce:
		return r.fixed(4)
	case 0xcf:
		return r.fixed(8)
	case 0xd0:
		u, ok := r.fixed(1)
		return uint64(int64(int8(u))), ok
	case 0xd1:
		u, ok := r.fixed(2)
		return uint64(int64(int16(u))), ok
	case 0xd2:
		u, ok := r.fixed(4)
		return uint64(int64(int32(u))), ok
	case 0xd3:
		return r.fixed(8)
	}
	return 0, false
}
