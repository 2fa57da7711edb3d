package cache

import (
	"encoding/binary"
	"fmt"
	"time"
)

// The Redis tier stores an envelope: a fixed header, then the codec's bytes.
//
//	byte 0      format version (envelopeVersion; legacyEnvelopeVersion is still read)
//	byte 1      flags (flagTombstone; from version 2 on also flagS2)
//	bytes 2-9   soft expiry, Unix ms, big endian (0: none); past it the value is stale
//	bytes 10-17 hard expiry, Unix ms, big endian (when Redis drops the key)
//	bytes 18-21 duration of the load that produced the value, µs, big endian (saturates)
//	bytes 22-   payload (empty for a tombstone), S2-compressed when flagS2 is set
//
// Version 1 payloads are the bytes of the codec of their time: JSON unless Options.Codec was
// set. Version 2 payloads are Options.Codec's (MessagePack by default), possibly compressed.
const (
	envelopeVersion       = 2
	legacyEnvelopeVersion = 1
	headerLen             = 22

	flagTombstone = 1 << 0
	flagS2        = 1 << 1 // the payload is S2-compressed (version 2)
	knownFlags    = flagTombstone | flagS2
	legacyFlags   = flagTombstone
)

// header is the decoded envelope header.
type header struct {
	version    byte // 0 when encoding: envelopeVersion
	compressed bool // flagS2
	tombstone  bool
	soft       int64 // Unix ms; 0 none
	hard       int64 // Unix ms
	loadDur    time.Duration
}

// appendEnvelope appends the header and payload to dst.
func appendEnvelope(dst []byte, h header, payload []byte) []byte {
	var flags byte
	if h.tombstone {
		flags |= flagTombstone
	}
	if h.compressed {
		flags |= flagS2
	}
	version := h.version
	if version == 0 {
		version = envelopeVersion
	}
	us := h.loadDur.Microseconds()
	if us < 0 {
		us = 0
	}
	if us > 0xFFFFFFFF {
		us = 0xFFFFFFFF
	}
	dst = append(dst, version, flags)
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
	known := byte(knownFlags)
	switch b[0] {
	case envelopeVersion:
	case legacyEnvelopeVersion:
		known = legacyFlags
	default:
		return header{}, nil, fmt.Errorf("%w: version %d, want %d or %d", errDecode, b[0], legacyEnvelopeVersion, envelopeVersion)
	}
	if b[1]&^known != 0 {
		return header{}, nil, fmt.Errorf("%w: unknown flags %#x in version %d", errDecode, b[1], b[0])
	}
	h := header{
		version:    b[0],
		compressed: b[1]&flagS2 != 0,
		tombstone:  b[1]&flagTombstone != 0,
		soft:       int64(binary.BigEndian.Uint64(b[2:10])),
		hard:       int64(binary.BigEndian.Uint64(b[10:18])),
		loadDur:    time.Duration(binary.BigEndian.Uint32(b[18:22])) * time.Microsecond,
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
