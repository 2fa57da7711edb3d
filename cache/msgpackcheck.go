package cache

import "fmt"

// checkMsgpackLengths returns an error when b, MessagePack data, claims more than it holds:
// a string, binary or extension longer than the bytes left, or containers with more elements
// than bytes left (every value takes at least one byte). MsgpackCodec.Unmarshal runs it first:
// the general decoder sizes a slice by the claimed length before it reads any element, so a
// corrupt five-byte entry claiming 2^31 elements of a 128-byte struct would have a read
// allocate 256 GiB, and the process die of it. Anything else malformed (a truncated header,
// the unused type byte 0xc1, trailing bytes) is left to the decoder to report. One pass, no
// allocation.
func checkMsgpackLengths(b []byte) error {
	pending := uint64(1) // values still to read
	for pending > 0 && len(b) > 0 {
		pending--
		c := b[0]
		b = b[1:]
		var head int         // bytes of the length after the type byte
		var values, size int // values the container holds; bytes the value holds after its header
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3: // fixint, nil, bool
		case c <= 0x8f: // fixmap: a key and a value per entry
			values = 2 * int(c&0x0f)
		case c <= 0x9f: // fixarray
			values = int(c & 0x0f)
		case c <= 0xbf: // fixstr
			size = int(c & 0x1f)
		case c == 0xcc || c == 0xd0: // uint8, int8
			size = 1
		case c == 0xcd || c == 0xd1: // uint16, int16
			size = 2
		case c == 0xca || c == 0xce || c == 0xd2: // float32, uint32, int32
			size = 4
		case c == 0xcb || c == 0xcf || c == 0xd3: // float64, uint64, int64
			size = 8
		case c >= 0xd4 && c <= 0xd8: // fixext 1, 2, 4, 8, 16: a type byte and the data
			size = 1 + 1<<(c-0xd4)
		case c == 0xc4 || c == 0xd9 || c == 0xc7: // bin8, str8, ext8 (which adds a type byte)
			head = 1
		case c == 0xc5 || c == 0xda || c == 0xc8 || c == 0xdc || c == 0xde: // 16-bit lengths
			head = 2
		case c == 0xc6 || c == 0xdb || c == 0xc9 || c == 0xdd || c == 0xdf: // 32-bit lengths
			head = 4
		default: // 0xc1: never used
			return nil
		}
		if head > 0 {
			if len(b) < head {
				return nil // a truncated length
			}
			n := uint64(0)
			for _, d := range b[:head] {
				n = n<<8 | uint64(d)
			}
			b = b[head:]
			switch c {
			case 0xdc, 0xdd: // array16, array32
				pending += n
			case 0xde, 0xdf: // map16, map32
				pending += 2 * n
			case 0xc7, 0xc8, 0xc9: // ext: a type byte, then the data
				n++
				fallthrough
			default:
				if n > uint64(len(b)) {
					return fmt.Errorf("cache: msgpack: a value claims %d bytes, %d are left", n, len(b))
				}
				b = b[n:]
			}
		} else {
			if size > len(b) {
				return nil // a truncated value: the decoder reports it
			}
			b = b[size:]
			pending += uint64(values)
		}
		if pending > uint64(len(b)) {
			return fmt.Errorf("cache: msgpack: %d values claimed, %d bytes are left", pending, len(b))
		}
	}
	return nil
}
