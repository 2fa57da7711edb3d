package ginmw

import (
	"encoding/hex"
	"math/rand/v2"
	"net/http"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel/trace"
)

const (
	headerTraceparent = "Traceparent"
	headerTracestate  = "Tracestate"
	traceparentLen    = 55 // "00-" + 32 + "-" + 16 + "-" + 2
	maxRequestIDLen   = 128
	maxTracestateLen  = 512 // W3C: vendors must propagate at least 512 characters
)

// Trace is the W3C Trace Context (https://www.w3.org/TR/trace-context/) of one request: the
// trace it belongs to and the span [Telemetry] opened for it, or the span id [RequestID] made for
// it when no OpenTelemetry span is on the request.
type Trace struct {
	// TraceID is the trace's id: 32 lowercase hex characters, never all zeros.
	TraceID string
	// SpanID is this request's span id: 16 lowercase hex characters, freshly generated.
	SpanID string
	// ParentID is the caller's span id from the incoming traceparent, or "" when the trace
	// started at this request.
	ParentID string
	// Flags are the trace-flags (bit 0: sampled), taken from the caller or 0 for a new trace; the
	// span's flags when [Telemetry] opened one.
	Flags byte
	// State is the incoming tracestate header, for handlers that propagate it; "" when absent.
	State string
}

// Sampled reports whether the caller marked the trace as sampled (trace-flags bit 0).
func (t Trace) Sampled() bool { return t.Flags&1 == 1 }

// Traceparent formats t as a version 00 traceparent header value naming this request's span as
// the parent, the value to send on outgoing calls made while handling the request.
func (t Trace) Traceparent() string {
	var b [traceparentLen]byte
	formatTraceparent(&b, t.TraceID, t.SpanID, t.Flags)
	return string(b[:])
}

// formatTraceparent writes a version 00 traceparent into b; empty ids leave their bytes as they are.
func formatTraceparent(b *[traceparentLen]byte, traceID, spanID string, flags byte) {
	b[0], b[1], b[2] = '0', '0', '-'
	copy(b[3:35], traceID)
	b[35] = '-'
	copy(b[36:52], spanID)
	b[52] = '-'
	b[53], b[54] = hexDigits[flags>>4], hexDigits[flags&0xf]
}

const hexDigits = "0123456789abcdef"

// NewRequestID is [RequestID] returning an error (wrapping [ErrInvalidOptions]) when opt is
// invalid instead of panicking.
func NewRequestID(opt *RequestIDOptions) (gin.HandlerFunc, error) {
	o, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	return func(c *gin.Context) {
		s := stateOf(c)
		h := c.Request.Header
		id := ""
		if !o.ignoreIncoming {
			if v := h[o.header]; len(v) == 1 && validRequestID(v[0]) {
				id = v[0]
			}
		}
		if id == "" {
			id = o.generate()
		}
		s.requestID = id

		var tp string
		switch sc := trace.SpanContextFromContext(c.Request.Context()); {
		case s.hasTrace && s.hdr[1][0] != "": // Telemetry ran before: its span is this request's
			tp = s.hdr[1][0]
		case sc.IsValid() && !sc.IsRemote(): // another OpenTelemetry middleware opened a span
			parentID := ""
			if traceID, pid, _, ok := parseTraceparent(h[headerTraceparent]); ok && hexIs(traceID, sc.TraceID()) {
				parentID = pid
			}
			s.trace, tp = spanTrace(sc, parentID, h)
		default:
			traceID, parentID, flags, ok := parseTraceparent(h[headerTraceparent])
			s.trace, tp = newTrace(traceID, parentID, flags)
			if ok {
				s.trace.State = tracestate(h)
			}
		}
		s.hasTrace = true

		wh := c.Writer.Header()
		s.hdr[0][0], s.hdr[1][0] = id, tp
		wh[o.header] = s.hdr[0][:]
		wh[headerTraceparent] = s.hdr[1][:]
		c.Next()
	}, nil
}

// RequestID returns middleware that gives every request an id and a W3C trace context.
//
// The incoming request id header (default X-Request-ID) is accepted only when it is a single value
// matching ^[A-Za-z0-9._:-]{1,128}$ (and opt.IgnoreIncoming is false); anything else (CR/LF,
// non-ASCII, oversize, repeated header) is replaced by a generated id. The id is echoed on every
// response. A valid incoming traceparent (lowercase hex, version not ff, non-zero ids) is
// continued with a new span id; an invalid or missing one starts a new trace. When [Telemetry]
// (or another OpenTelemetry middleware) ran before and opened a span, the trace is that span's:
// its trace id, span id and flags. The response
// carries the traceparent naming this request's span. Both are on the request's
// context.Context: see [RequestIDFrom], [TraceFrom] and [LoggerFrom].
//
// opt may be nil (defaults). RequestID panics at wiring time on an invalid opt; use
// [NewRequestID] to get the error instead. The handler never blocks and is safe for concurrent
// use.
func RequestID(opt *RequestIDOptions) gin.HandlerFunc {
	return must(NewRequestID(opt))
}

// spanTrace returns the trace of the local span sc and its traceparent header value; parentID is
// the caller's span id ("" when the span started the trace). The id strings are slices of the one
// traceparent string.
func spanTrace(sc trace.SpanContext, parentID string, h http.Header) (Trace, string) {
	var b [traceparentLen]byte
	tid, sid := sc.TraceID(), sc.SpanID()
	hex.Encode(b[3:35], tid[:])
	hex.Encode(b[36:52], sid[:])
	formatTraceparent(&b, "", "", byte(sc.TraceFlags()))
	tp := string(b[:])
	t := Trace{TraceID: tp[3:35], SpanID: tp[36:52], ParentID: parentID, Flags: byte(sc.TraceFlags())}
	if parentID != "" {
		t.State = tracestate(h)
	}
	return t, tp
}

// tracestate returns the incoming tracestate header, or "" when it is missing or too long.
func tracestate(h http.Header) string {
	if v := h[headerTracestate]; len(v) > 0 && len(v[0]) <= maxTracestateLen {
		return v[0]
	}
	return ""
}

// hexIs reports whether s is the lowercase hex form of id.
func hexIs(s string, id trace.TraceID) bool {
	if len(s) != 2*len(id) {
		return false
	}
	for i, c := range id {
		if s[2*i] != hexDigits[c>>4] || s[2*i+1] != hexDigits[c&0xf] {
			return false
		}
	}
	return true
}

// newTrace returns the trace for this request and its traceparent header value: traceID and
// parentID come from the caller ("" for a new trace, which gets a random trace id); the span id is
// always fresh. The id strings are slices of the one traceparent string.
func newTrace(traceID, parentID string, flags byte) (Trace, string) {
	var b [traceparentLen]byte
	formatTraceparent(&b, traceID, "", flags)
	if traceID == "" {
		randomHex(b[3:35])
	}
	randomHex(b[36:52])
	tp := string(b[:])
	return Trace{TraceID: tp[3:35], SpanID: tp[36:52], ParentID: parentID, Flags: flags}, tp
}

// randomHex fills dst with random lowercase hex digits, never all '0' (an invalid W3C id).
func randomHex(dst []byte) {
	var r uint64
	for i := range dst {
		if i%16 == 0 {
			r = rand.Uint64()
		}
		dst[i] = hexDigits[r&0xf]
		r >>= 4
	}
	if allZeroHex(string(dst)) {
		dst[len(dst)-1] = '1'
	}
}

// generateID is the default request id: 32 random lowercase hex characters (128 bits).
func generateID() string {
	var b [32]byte
	randomHex(b[:])
	return string(b[:])
}

// validRequestID reports whether s matches ^[A-Za-z0-9._:-]{1,128}$.
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !requestIDChars[s[i]] {
			return false
		}
	}
	return true
}

var requestIDChars = charTable("._:-")

// parseTraceparent parses the traceparent header values per W3C Trace Context level 1: exactly one
// header; version two lowercase hex digits other than ff; for version 00 exactly 55 characters, for
// later versions at least 55 with a '-' after them; lowercase hex trace id and parent id, neither
// all zeros. ok is false when the header is missing or invalid.
func parseTraceparent(vals []string) (traceID, parentID string, flags byte, ok bool) {
	if len(vals) != 1 {
		return "", "", 0, false
	}
	s := vals[0]
	if len(s) < traceparentLen || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return "", "", 0, false
	}
	version := s[0:2]
	if !lowerHex(version) || version == "ff" {
		return "", "", 0, false
	}
	if version == "00" && len(s) != traceparentLen {
		return "", "", 0, false
	}
	if len(s) > traceparentLen && s[traceparentLen] != '-' {
		return "", "", 0, false
	}
	traceID, parentID = s[3:35], s[36:52]
	if !lowerHex(traceID) || !lowerHex(parentID) || !lowerHex(s[53:55]) ||
		allZeroHex(traceID) || allZeroHex(parentID) {
		return "", "", 0, false
	}
	f := unhex(s[53])<<4 | unhex(s[54])
	return traceID, parentID, f & 0x03, true // sampled and random are the defined flags
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZeroHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'a' + 10
}
