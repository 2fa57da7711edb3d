package cache

import "encoding/json"

// Codec turns values into bytes for the Redis tier and back. Implementations must be safe for
// concurrent use. Unmarshal receives a pointer to a V. Changing the codec (or V) of a cache in
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
