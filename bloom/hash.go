package bloom

import "math/bits"

// The bit positions of a key must match github.com/bits-and-blooms/bloom/v3 exactly, so that a
// [Local] and a [Redis] filter of the same size agree bit for bit and a filter written by one can
// be read by the other. That package derives a key's positions from four 64-bit words: the
// 128-bit MurmurHash3 (x64 variant, seed 0) of the key, and the same hash of the key with one
// byte 0x01 appended. It exposes them only through Locations, which allocates a slice per call;
// hashKey computes the same words on a string without allocating (hash_test.go checks the
// equivalence against bloom.Locations for many lengths).

const (
	murmurC1 = 0x87c37b91114253d5
	murmurC2 = 0x4cf5ad432745937f
)

// digest is the running MurmurHash3 x64-128 state after some whole 16-byte blocks.
type digest struct{ h1, h2 uint64 }

func (d *digest) block(k1, k2 uint64) {
	d.h1 ^= mixK1(k1)
	d.h1 = bits.RotateLeft64(d.h1, 27) + d.h2
	d.h1 = d.h1*5 + 0x52dce729
	d.h2 ^= mixK2(k2)
	d.h2 = bits.RotateLeft64(d.h2, 31) + d.h1
	d.h2 = d.h2*5 + 0x38495ab5
}

func mixK1(k uint64) uint64 { return bits.RotateLeft64(k*murmurC1, 31) * murmurC2 }
func mixK2(k uint64) uint64 { return bits.RotateLeft64(k*murmurC2, 33) * murmurC1 }

// finish folds in a tail of n < 16 bytes held zero-padded in k1 (bytes 0-7) and k2 (bytes 8-15),
// and the total length, and returns the two 64-bit halves of the hash.
func (d digest) finish(k1, k2 uint64, n int, length uint64) (uint64, uint64) {
	h1, h2 := d.h1, d.h2
	if n > 8 {
		h2 ^= mixK2(k2)
	}
	if n > 0 {
		h1 ^= mixK1(k1)
	}
	h1 ^= length
	h2 ^= length
	h1 += h2
	h2 += h1
	h1, h2 = fmix(h1), fmix(h2)
	h1 += h2
	h2 += h1
	return h1, h2
}

func fmix(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

// le64 reads up to 8 bytes of s little-endian, zero-padding the missing high bytes.
func le64(s string) uint64 {
	if len(s) >= 8 {
		return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
	}
	var v uint64
	for i := len(s) - 1; i >= 0; i-- {
		v = v<<8 | uint64(s[i])
	}
	return v
}

// hashKey returns the four base hash words bits-and-blooms derives from key.
func hashKey(key string) [4]uint64 {
	length := uint64(len(key))
	var d digest
	for len(key) >= 16 {
		d.block(le64(key[:8]), le64(key[8:16]))
		key = key[16:]
	}
	// The tail (0-15 bytes) as two zero-padded words.
	n := len(key)
	var k1, k2 uint64
	if n > 8 {
		k1, k2 = le64(key[:8]), le64(key[8:])
	} else {
		k1 = le64(key)
	}
	a, b := d.finish(k1, k2, n, length)

	// The same hash of key+"\x01": the extra byte goes at tail position n.
	if n < 8 {
		k1 |= 1 << (8 * n)
	} else {
		k2 |= 1 << (8 * (n - 8))
	}
	var c, e uint64
	if n == 15 { // the extra byte completes a block
		d.block(k1, k2)
		c, e = d.finish(0, 0, 0, length+1)
	} else {
		c, e = d.finish(k1, k2, n+1, length+1)
	}
	return [4]uint64{a, b, c, e}
}

// location returns the i-th bit position of a key with base hashes h, before reduction mod m.
// It is the combination bits-and-blooms uses: h[i%2] + i*h[2 or 3], the second word picked by
// ((i + i%2) % 4) / 2.
func location(h *[4]uint64, i uint64) uint64 {
	return h[i&1] + i*h[2+((i+i&1)&3)>>1]
}
