package cache

import (
	"bytes"
	"encoding/json"
	"fmt"
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

// JSONCodec is the default [Codec]: encoding/json. Safe for concurrent use.
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
