package bloom

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sync/atomic"

	"github.com/bits-and-blooms/bitset"
)

// Local is an in-process Bloom filter with the sizing, hashing and serialised form of
// github.com/bits-and-blooms/bloom/v3, safe for concurrent use without locks: bits are set with
// atomic OR and read with atomic loads, so readers never wait for each other or for writers.
//
// A key whose [Local.Add] has returned is seen by every later [Local.MightContain]; a
// MightContain that overlaps the Add of the same key may answer either way.
//
// The zero Local holds no filter: its methods return [ErrNoFilter] until [Local.ReadFrom] loads
// one. Use [NewLocal].
//
// Telemetry: each answer of MightContain and MightContainMany is counted in the OpenTelemetry
// counter surge.bloom.checks (surge.bloom.result = maybe or absent) of the global MeterProvider;
// with no SDK installed that costs an atomic load and allocates nothing.
type Local struct {
	st atomic.Pointer[localState]
}

// localState is one filter; ReadFrom replaces it whole.
type localState struct {
	m, k   uint64
	words  []uint64
	checks *checks
}

var _ Filter = (*Local)(nil)

// NewLocal returns an empty filter sized for n keys at false-positive rate fp, with m and k from
// bits-and-blooms' EstimateParameters(n, fp). It fails, with an error wrapping
// [ErrInvalidOptions], when n is 0 or fp is outside (0, 1).
func NewLocal(n uint, fp float64) (*Local, error) {
	m, k, err := sizing(n, fp)
	if err != nil {
		return nil, fmt.Errorf("bloom: NewLocal: %w", err)
	}
	l := &Local{}
	l.st.Store(&localState{m: m, k: k, words: make([]uint64, (m+63)/64), checks: newChecks(nil)})
	return l, nil
}

func (l *Local) state() (*localState, error) {
	if s := l.st.Load(); s != nil {
		return s, nil
	}
	return nil, ErrNoFilter
}

// Add inserts keys. It never blocks, ignores ctx, does not keep or modify keys and is safe for
// concurrent use. Its only error is [ErrNoFilter] on a zero Local.
func (l *Local) Add(_ context.Context, keys ...string) error {
	s, err := l.state()
	if err != nil {
		return err
	}
	for _, key := range keys {
		s.add(key)
	}
	return nil
}

func (s *localState) add(key string) {
	h := hashKey(key)
	for i := range s.k {
		loc := location(&h, i) % s.m
		w, bit := &s.words[loc>>6], uint64(1)<<(loc&63)
		// Skip the write when the bit is already set: set bits are the common case in a
		// loaded filter, and a plain load keeps the cache line shared between cores.
		if atomic.LoadUint64(w)&bit == 0 {
			atomic.OrUint64(w, bit)
		}
	}
}

// MightContain reports whether key may have been added: false means it certainly was not, true
// means it was or is a false positive. It never blocks and is safe for concurrent use; ctx only
// reaches the telemetry (the answer is counted in surge.bloom.checks on the global
// MeterProvider). Its only error is [ErrNoFilter] on a zero Local.
func (l *Local) MightContain(ctx context.Context, key string) (bool, error) {
	s, err := l.state()
	if err != nil {
		return false, err
	}
	maybe := s.test(key)
	s.checks.answer(ctx, maybe)
	return maybe, nil
}

func (s *localState) test(key string) bool {
	h := hashKey(key)
	for i := range s.k {
		loc := location(&h, i) % s.m
		if atomic.LoadUint64(&s.words[loc>>6])&(1<<(loc&63)) == 0 {
			return false
		}
	}
	return true
}

// MightContainMany is [Local.MightContain] for several keys: out[i] answers keys[i] (the same
// call as [Redis.MightContainMany]). It never blocks, ignores ctx, does not keep or modify keys
// and is safe for concurrent use. Its only error is [ErrNoFilter] on a zero Local.
func (l *Local) MightContainMany(ctx context.Context, keys []string) ([]bool, error) {
	s, err := l.state()
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(keys))
	for i, key := range keys {
		out[i] = s.test(key)
	}
	s.checks.answers(ctx, out)
	return out, nil
}

// Cap returns m, the number of bits (0 on a zero Local).
func (l *Local) Cap() uint {
	if s := l.st.Load(); s != nil {
		return uint(s.m)
	}
	return 0
}

// K returns the number of bit positions per key (0 on a zero Local).
func (l *Local) K() uint {
	if s := l.st.Load(); s != nil {
		return uint(s.k)
	}
	return 0
}

// count returns the number of set bits, reading each word atomically.
func (s *localState) count() uint64 {
	var c int
	for i := range s.words {
		c += bits.OnesCount64(atomic.LoadUint64(&s.words[i]))
	}
	return uint64(c)
}

// FillRatio returns the fraction of bits set, in [0, 1]. It reads the whole bitmap (O(m/64)) and
// is safe for concurrent use; 0 on a zero Local. The false-positive rate of the filter right now
// is about FillRatio^K; a filter loaded with its design n sits near 0.5.
func (l *Local) FillRatio() float64 {
	s := l.st.Load()
	if s == nil {
		return 0
	}
	return float64(s.count()) / float64(s.m)
}

// ApproximateCount estimates how many distinct keys were added, from the fill ratio
// (-m/k·ln(1-X/m) for X set bits, as bits-and-blooms' ApproximatedSize). It reads the whole
// bitmap and is safe for concurrent use. Rebuild a larger filter when it passes about 80% of the
// n the filter was sized for: past n the false-positive rate climbs quickly (see [Live]).
func (l *Local) ApproximateCount() uint {
	s := l.st.Load()
	if s == nil {
		return 0
	}
	return approximateCount(s.count(), s.m, s.k)
}

// approximateCount estimates the keys behind x set bits of an m-bit filter with k bits per key.
func approximateCount(x, m, k uint64) uint {
	if x >= m {
		x = m - 1 // a full filter: report the largest finite estimate
		if m == 1 {
			return 1
		}
	}
	n := -float64(m) / float64(k) * math.Log1p(-float64(x)/float64(m))
	return uint(math.Round(n))
}

// WriteTo writes the filter in bits-and-blooms' binary format (m and k as big-endian uint64,
// then the bitset), readable by bloom.BloomFilter.ReadFrom and by [Local.ReadFrom]. It is safe
// for concurrent use; Adds that overlap it may or may not be included. It returns the number of
// bytes written and any error of w ([ErrNoFilter] on a zero Local).
func (l *Local) WriteTo(w io.Writer) (int64, error) {
	s, err := l.state()
	if err != nil {
		return 0, err
	}
	words := make([]uint64, len(s.words))
	for i := range s.words {
		words[i] = atomic.LoadUint64(&s.words[i])
	}
	var head [16]byte
	binary.BigEndian.PutUint64(head[:8], s.m)
	binary.BigEndian.PutUint64(head[8:], s.k)
	n, err := w.Write(head[:])
	if err != nil {
		return int64(n), fmt.Errorf("bloom: write filter: %w", err)
	}
	nb, err := bitset.FromWithLength(uint(s.m), words).WriteTo(w)
	if err != nil {
		return int64(n) + nb, fmt.Errorf("bloom: write filter: %w", err)
	}
	return int64(n) + nb, nil
}

// maxK bounds the hash count ReadFrom accepts (EstimateParameters gives about 1000 at fp=1e-300).
const maxK = 4096

// ReadFrom replaces the filter with one read from r in bits-and-blooms' binary format (as
// written by [Local.WriteTo] or bloom.BloomFilter.WriteTo, with bitset's current byte order); m
// and k come from the stream, so [Local.Cap] and [Local.K] may change. It works on a zero Local.
// Memory grows with the bytes actually read, so a corrupt header cannot make it allocate more
// than the stream holds. It is safe for concurrent use, but Adds that overlap it may land in the
// replaced filter and be lost. On error the filter is unchanged. It returns the number of bytes
// read.
func (l *Local) ReadFrom(r io.Reader) (int64, error) {
	var head [24]byte // m, k (big-endian), bitset length in bits (bitset's byte order)
	n, err := io.ReadFull(r, head[:])
	if err != nil {
		return int64(n), fmt.Errorf("bloom: read filter header: %w", noEOF(err))
	}
	order := bitset.BinaryOrder()
	m, k, length := binary.BigEndian.Uint64(head[:8]), binary.BigEndian.Uint64(head[8:16]), order.Uint64(head[16:])
	switch {
	case m == 0 || k == 0 || k > maxK:
		return int64(n), fmt.Errorf("bloom: read filter: m=%d k=%d, need m >= 1 and k in [1, %d]", m, k, maxK)
	case length < m:
		return int64(n), fmt.Errorf("bloom: read filter: bitset of %d bits cannot hold m=%d", length, m)
	case length > math.MaxInt64:
		return int64(n), fmt.Errorf("bloom: read filter: bitset of %d bits is too long", length)
	}
	nw := m/64 + min(m%64, 1)
	streamWords := length/64 + min(length%64, 1)
	words := make([]uint64, 0, min(nw, 1<<16))
	var buf [8 * 512]byte
	total := int64(n)
	for uint64(len(words)) < nw {
		chunk := buf[:8*min(nw-uint64(len(words)), 512)]
		n, err := io.ReadFull(r, chunk)
		total += int64(n)
		if err != nil {
			return total, fmt.Errorf("bloom: read filter bits: %w", noEOF(err))
		}
		for i := 0; i < len(chunk); i += 8 {
			words = append(words, order.Uint64(chunk[i:]))
		}
	}
	if extra := streamWords - nw; extra > 0 { // words past m (a bitset longer than the filter)
		n, err := io.CopyN(io.Discard, r, int64(8*extra))
		total += n
		if err != nil {
			return total, fmt.Errorf("bloom: read filter bits: %w", noEOF(err))
		}
	}
	if m%64 != 0 {
		words[nw-1] &= 1<<(m%64) - 1 // bits past m are never used; do not let them count
	}
	l.st.Store(&localState{m: m, k: k, words: words[:nw:nw], checks: newChecks(nil)})
	return total, nil
}

// noEOF turns io.EOF into io.ErrUnexpectedEOF: a stream that ends inside a filter is truncated.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
