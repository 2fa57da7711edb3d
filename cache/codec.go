package cache

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"unsafe"

	"github.com/klauspost/compress/s2"
	"github.com/vmihailenco/msgpack/v5"
)

// Codec turns values into bytes for the Redis tier and back. Implementations must be safe for
// concurrent use. Unmarshal receives a pointer to a V; it must neither modify data nor keep it
// (concurrent readers of one key decode the same bytes). Changing the codec (or V) of a cache in
// place is safe: entries that no longer decode are misses (counted in Stats.DecodeErrors) and
// are replaced by the next load.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSONCodec is a [Codec] using encoding/json (the default before [MsgpackCodec]): slower and
// larger, but readable in redis-cli and by other languages' JSON libraries. Safe for concurrent
// use.
type JSONCodec struct{}

// Marshal is json.Marshal.
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal is json.Unmarshal.
func (JSONCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// BytesCodec stores a Cache[[]byte] or Cache[string] as the raw bytes, without JSON's base64
// and quoting (cached HTTP bodies, values the caller encodes itself). Other types are an error.
// Safe for concurrent use.
type BytesCodec struct{}

// Marshal returns v's bytes; v must be a []byte or a string.
func (BytesCodec) Marshal(v any) ([]byte, error) {
	switch v := v.(type) {
	case []byte:
		return v, nil
	case string:
		return []byte(v), nil
	}
	return nil, fmt.Errorf("cache: BytesCodec cannot marshal %T", v)
}

// Unmarshal copies data into v, which must be a *[]byte or a *string.
func (BytesCodec) Unmarshal(data []byte, v any) error {
	switch v := v.(type) {
	case *[]byte:
		*v = bytes.Clone(data)
		if *v == nil {
			*v = []byte{}
		}
		return nil
	case *string:
		*v = string(data)
		return nil
	}
	return fmt.Errorf("cache: BytesCodec cannot unmarshal into %T", v)
}

// MsgpackCodec is the default [Codec]: MessagePack (github.com/vmihailenco/msgpack/v5), which
// encodes and decodes a typical struct several times faster than encoding/json, in fewer bytes.
// Struct fields follow their `msgpack` tags, else their `json` tags (names, omitempty, "-"), so
// a type written for encoding/json caches the same fields. Values must be types msgpack
// round-trips (a type whose state lives only in MarshalJSON/UnmarshalJSON methods needs
// [JSONCodec]). A Cache whose V is a plain struct (exported fields of predeclared scalar types
// or []string, no decoding methods) decodes the entries it reads straight from the bytes, with
// the same results as the general decoder, which takes every entry that path does not. A V
// with a decoder registered with msgpack.Register before [New] keeps it: New decodes a sample
// value both ways and leaves V to the general decoder when they differ. Register before New (in
// an init function); to be sure a later registration is honoured, wrap MsgpackCodec in a Codec
// of your own, which turns the direct path off. Safe for concurrent use.
type MsgpackCodec struct{}

// Marshal encodes v as MessagePack.
func (MsgpackCodec) Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.GetEncoder()
	enc.Reset(&buf)
	enc.SetCustomStructTag("json")
	err := enc.Encode(v)
	msgpack.PutEncoder(enc)
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Unmarshal decodes MessagePack data into v, a pointer. Data that claims more elements or bytes
// than it holds (a corrupt entry) is refused with an error before decoding, which would size
// slices by the claim.
func (MsgpackCodec) Unmarshal(data []byte, v any) error {
	if err := checkMsgpackLengths(data); err != nil {
		return err
	}
	d := msgpackDecoders.Get().(*msgpackDecoder)
	d.r.Reset(data)
	d.dec.Reset(&d.r)
	d.dec.SetCustomStructTag("json")
	err := d.dec.Decode(v)
	d.dec.Reset(nil)
	d.r.Reset(nil)
	msgpackDecoders.Put(d)
	return err
}

// msgpackDecoder is a decoder with the reader it reads from, pooled together so a decode does
// not allocate a reader.
type msgpackDecoder struct {
	dec *msgpack.Decoder
	r   bytes.Reader
}

var msgpackDecoders = sync.Pool{New: func() any { return &msgpackDecoder{dec: msgpack.NewDecoder(nil)} }}

// marshalPayload encodes v with the Codec and compresses the result with S2 when it is at least
// CompressAbove bytes, at most maxCompressed, and compression saves space; compressed says
// whether it did.
func (c *Cache[V]) marshalPayload(v V) (payload []byte, compressed bool, err error) {
	payload, err = c.cfg.Codec.Marshal(v)
	if err != nil || c.cfg.CompressAbove < 0 || len(payload) < c.cfg.CompressAbove || len(payload) > c.cfg.maxS2 {
		return payload, false, err
	}
	z := s2.Encode(nil, payload)
	if len(z) >= len(payload) {
		return payload, false, nil
	}
	return z, true, nil
}

// unmarshalPayload decodes the payload of an entry with header h: an entry of the legacy
// envelope version holds the bytes of the codec of that time (see config.legacyCodec). The plan
// decodes into a V of its own on the stack; only the Codec's decoding, which takes a pointer
// as an interface, moves the V to the heap.
func (c *Cache[V]) unmarshalPayload(h header, payload []byte) (V, error) {
	if h.compressed {
		n, err := s2.DecodedLen(payload)
		if err == nil && n > c.cfg.maxS2 {
			err = fmt.Errorf("claims %d bytes decompressed, more than the %d a cache compresses", n, c.cfg.maxS2)
		}
		if err == nil {
			payload, err = s2.Decode(nil, payload)
		}
		if err != nil {
			var zero V
			return zero, fmt.Errorf("s2: %w", err)
		}
	}
	codec := c.cfg.Codec
	if h.version == legacyEnvelopeVersion {
		codec = c.cfg.legacyCodec
	} else if c.plan != nil {
		var v V // zero: the plan leaves the fields a payload omits as they are
		if c.plan.decode(payload, unsafe.Pointer(&v)) {
			return v, nil
		}
	}
	v := new(V) // not a payload the plan decodes exactly: the Codec's, from scratch
	err := codec.Unmarshal(payload, v)
	return *v, err
}
