package cache

import (
	"encoding/binary"
	"fmt"
	"time"
)

// The Redis tier stores an envelope: a fixed header, then the codec's bytes.
//
//	byte 0      format version (envelopeVersion)
//	byte 1      flags (flagTombstone)
//	bytes 2-9   soft expiry, Unix ms, big endian (0: none); past it the value is stale
//	bytes 10-17 hard expiry, Unix ms, big endian (when Redis drops the key)
//	bytes 18-21 duration of the load that produced the value, µs, big endian (saturates)
//	bytes 22-   payload (empty for a tombstone)
const (
	envelopeVersion = 1
	headerLen       = 22

	flagTombstone = 1 << 0
	knownFlags    = flagTombstone
)

// header is the decoded envelope header.
type header struct {
	tombstone bool
	soft      int64 // Unix ms; 0 none
	hard      int64 // Unix ms
	loadDur   time.Duration
}

// appendEnvelope appends the header and payload to dst.
func appendEnvelope(dst []byte, h header, payload []byte) []byte {
	var flags byte
	if h.tombstone {
		flags |= flagTombstone
	}
	us := h.loadDur.Microseconds()
	if us < 0 {
		us = 0
	}
	if us > 0xFFFFFFFF {
		us = 0xFFFFFFFF
	}
	dst = append(dst, envelopeVersion, flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.soft))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.hard))
	dst = binary.BigEndian.AppendUint32(dst, uint32(us))
	return append(dst, payload...)
}

// decodeEnvelope splits b into header and payload. Anything it does not understand (short input,
// another version, unknown flags, a tombstone with a payload) is an error wrapping errDecode.
func decodeEnvelope(b []byte) (header, []byte, error) {
	if len(b) < headerLen {
		return header{}, nil, fmt.Errorf("%w: %d bytes, header needs %d", errDecode, len(b), headerLen)
	}
	if b[0] != envelopeVersion {
		return header{}, nil, fmt.Errorf("%w: version %d, want %d", errDecode, b[0], envelopeVersion)
	}
	if b[1]&^knownFlags != 0 {
		return header{}, nil, fmt.Errorf("%w: unknown flags %#x", errDecode, b[1])
	}
	h := header{
		tombstone: b[1]&flagTombstone != 0,
		soft:      int64(binary.BigEndian.Uint64(b[2:10])),
		hard:      int64(binary.BigEndian.Uint64(b[10:18])),
		loadDur:   time.Duration(binary.BigEndian.Uint32(b[18:22])) * time.Microsecond,
	}
	payload := b[headerLen:]
	if h.tombstone && len(payload) != 0 {
		return header{}, nil, fmt.Errorf("%w: tombstone with %d payload bytes", errDecode, len(payload))
	}
	return h, payload, nil
}

// bytes returns the encoded header: what claim.lua compares to tell a refreshed value from the
// stale one a reader saw (decodeEnvelope then bytes gives back the stored header).
func (h header) bytes() string {
	return string(appendEnvelope(make([]byte, 0, headerLen), h, nil))
}
