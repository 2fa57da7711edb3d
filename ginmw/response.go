package ginmw

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/gin-gonic/gin"
)

// storedResponse is a response kept for later: a cached GET (see [Cache]).
type storedResponse struct {
	Status int
	Header http.Header // only what the handler set
	Body   []byte
	Stored int64 // Unix ms when it was produced
}

// responseCodec is the cache.Codec of [Cache]: a compact binary form (JSON would base64 the
// body). Layout, integers as uvarints unless noted:
//
//	version (1 byte, responseCodecVersion)
//	status
//	stored (varint, Unix ms)
//	header count; per header: name length, name, value count; per value: length, value
//	body (the rest)
type responseCodec struct{}

const responseCodecVersion = 1

var errBadResponse = errors.New("ginmw: malformed stored response")

func (responseCodec) Marshal(v any) ([]byte, error) {
	var r *storedResponse
	switch x := v.(type) {
	case storedResponse:
		r = &x
	case *storedResponse:
		r = x
	default:
		return nil, fmt.Errorf("ginmw: response codec cannot marshal %T", v)
	}
	return appendResponse(nil, r), nil
}

func appendResponse(b []byte, r *storedResponse) []byte {
	n := 16 + len(r.Body)
	for k, vs := range r.Header {
		n += len(k) + 4
		for _, v := range vs {
			n += len(v) + 2
		}
	}
	b = slices.Grow(b, n)
	b = append(b, responseCodecVersion)
	b = binary.AppendUvarint(b, uint64(r.Status))
	b = binary.AppendVarint(b, r.Stored)
	b = binary.AppendUvarint(b, uint64(len(r.Header)))
	for k, vs := range r.Header {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	return append(b, r.Body...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func (responseCodec) Unmarshal(data []byte, v any) error {
	r, ok := v.(*storedResponse)
	if !ok {
		return fmt.Errorf("ginmw: response codec cannot unmarshal into %T", v)
	}
	return decodeResponse(data, r)
}

// decodeResponse parses data into r. Anything malformed (truncated, a length past the end, an
// unknown version, a status outside 100-999) is an error wrapping errBadResponse, never a panic.
func decodeResponse(data []byte, r *storedResponse) error {
	d := decoder{b: data}
	if len(data) == 0 || data[0] != responseCodecVersion {
		return fmt.Errorf("%w: unknown version", errBadResponse)
	}
	d.b = d.b[1:]
	status := d.uvarint()
	stored := d.varint()
	nh := d.uvarint()
	if d.err != nil || status < 100 || status > 999 || nh > uint64(len(d.b)) {
		return fmt.Errorf("%w: bad head", errBadResponse)
	}
	h := make(http.Header, nh)
	for range nh {
		k := d.str()
		nv := d.uvarint()
		if d.err != nil || nv > uint64(len(d.b)) {
			return fmt.Errorf("%w: bad header", errBadResponse)
		}
		vs := make([]string, nv)
		for j := range vs {
			vs[j] = d.str()
		}
		if d.err != nil {
			return fmt.Errorf("%w: bad header %q", errBadResponse, k)
		}
		h[k] = vs
	}
	*r = storedResponse{Status: int(status), Header: h, Body: d.b, Stored: stored}
	return nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 { return readVarint(d, binary.Uvarint) }
func (d *decoder) varint() int64   { return readVarint(d, binary.Varint) }

// readVarint reads one varint with read (binary.Uvarint or binary.Varint).
func readVarint[T uint64 | int64](d *decoder, read func([]byte) (T, int)) T {
	if d.err != nil {
		return 0
	}
	v, n := read(d.b)
	if n <= 0 {
		d.err = errBadResponse
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errBadResponse
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// writeStored writes r to c's writer after the headers already there (its own replace them),
// with extra headers, then aborts the chain. The stored slices are clipped so that a later append
// to a header cannot write into a value shared with other requests.
func writeStored(c *gin.Context, r *storedResponse, extra ...string) {
	h := c.Writer.Header()
	for k, vs := range r.Header {
		h[k] = slices.Clip(vs)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = []string{extra[i+1]}
	}
	c.Abort()
	c.Writer.WriteHeader(r.Status)
	c.Writer.WriteHeaderNow()
	if len(r.Body) > 0 {
		_, _ = c.Writer.Write(r.Body)
	}
}

// itoa64 formats n in base 10.
func itoa64(n int64) string { return strconv.FormatInt(n, 10) }
