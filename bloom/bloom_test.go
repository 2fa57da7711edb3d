package bloom

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"runtime"

	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"sync"
	"testing"

	bbloom "github.com/bits-and-blooms/bloom/v3"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/surgekit/surge/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// randomKeys returns n distinct random keys of varied length, all starting with prefix.
func randomKeys(seed uint64, n int, prefix string) []string {
	rnd := rand.New(rand.NewPCG(seed, 7))
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d:%x", prefix, i, rnd.Uint64()>>(rnd.UintN(60)))
	}
	return out
}

// mustAdd adds keys in batches of 5000 (as a caller would; one Add of 100k keys works too but
// holds miniredis' single Lua VM for long).
func mustAdd(t testing.TB, f Filter, keys []string) {
	t.Helper()
	for b := range slices.Chunk(keys, 5000) {
		require.NoError(t, f.Add(context.Background(), b...))
	}
}

// answers returns f's MightContain for every key (through MightContainMany for a Redis filter).
func answers(t testing.TB, f Filter, keys []string) []bool {
	t.Helper()
	ctx := context.Background()
	if r, ok := f.(*Redis); ok {
		var out []bool
		for b := range slices.Chunk(keys, 5000) {
			got, err := r.MightContainMany(ctx, b)
			require.NoError(t, err)
			out = append(out, got...)
		}
		return out
	}
	out := make([]bool, len(keys))
	var err error
	for i, k := range keys {
		if out[i], err = f.MightContain(ctx, k); err != nil {
			require.NoError(t, err, "key %q", k)
		}
	}
	return out
}

// checkFilter adds n random keys to f (sized for n at fp) and checks there is no false negative
// among them and the false-positive rate on max(n, 10000) other keys is within 1.5x fp.
func checkFilter(t *testing.T, f Filter, n int, fp float64) {
	t.Helper()
	in := randomKeys(1, n, "in:")
	mustAdd(t, f, in)
	for i, ok := range answers(t, f, in) {
		if !ok {
			t.Fatalf("false negative for added key %q (%d of %d)", in[i], i, n)
		}
	}
	// A sample through the single-key path too.
	for _, k := range in[:200] {
		ok, err := f.MightContain(context.Background(), k)
		require.NoError(t, err)
		require.True(t, ok, "false negative for %q", k)
	}
	fps := 0
	probes := max(n, 10_000)
	for _, ok := range answers(t, f, randomKeys(2, probes, "out:")) {
		if ok {
			fps++
		}
	}
	rate := float64(fps) / float64(probes)
	t.Logf("false-positive rate at n=%d: %.4f (target %v)", n, rate, fp)
	require.LessOrEqual(t, rate, 1.5*fp, "false-positive rate")
	require.Greater(t, rate, fp/2, "far fewer false positives than designed: the filter is oversized")
}

func TestNewLocalRejectsBadSizing(t *testing.T) {
	for _, tc := range []struct {
		n    uint
		fp   float64
		want string
	}{
		{0, 0.01, "n must be"},
		{10, 0, "fp must be"},
		{10, 1, "fp must be"},
		{10, -0.5, "fp must be"},
		{10, math.NaN(), "fp must be"},
	} {
		_, err := NewLocal(tc.n, tc.fp)
		require.ErrorContains(t, err, tc.want, "n=%d fp=%v", tc.n, tc.fp)
		require.ErrorIs(t, err, ErrInvalidOptions)
	}
}

func TestNewRedisRejectsBadInput(t *testing.T) {
	_, rdb := redistest.Mini(t)
	for _, tc := range []struct {
		name string
		rdb  redis.UniversalClient
		key  string
		n    uint
		opt  *RedisOptions
		want string
	}{
		{"nil client", nil, "f", 10, nil, "nil Redis client"},
		{"empty name", rdb, "", 10, nil, "empty name"},
		{"zero n", rdb, "f", 0, nil, "n must be"},
		{"negative shards", rdb, "f", 10, &RedisOptions{Shards: -1}, "RedisOptions.Shards"},
		{"too many shards", rdb, "f", 10, &RedisOptions{Shards: 16385}, "RedisOptions.Shards"},
		{"shard over 2^32 bits", rdb, "f", 1 << 32, nil, "set RedisOptions.Shards to at least"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewRedis(tc.rdb, tc.key, tc.n, 0.01, tc.opt)
			require.ErrorContains(t, err, tc.want)
			require.ErrorIs(t, err, ErrInvalidOptions)
		})
	}
	// The same size split over enough shards is accepted.
	f, err := NewRedis(rdb, "f", 1<<32, 0.01, &RedisOptions{Shards: 16})
	require.NoError(t, err)
	require.LessOrEqual(t, f.Cap(), uint(maxShardBits))
}

func TestLocalIsBitsAndBlooms(t *testing.T) {
	const n, fp = 5000, 0.01
	l, err := NewLocal(n, fp)
	require.NoError(t, err)
	raw := bbloom.NewWithEstimates(n, fp)
	require.Equal(t, raw.Cap(), l.Cap())
	require.Equal(t, raw.K(), l.K())

	in := randomKeys(3, n, "k")
	mustAdd(t, l, in)
	for _, k := range in {
		raw.AddString(k)
	}
	var got, want bytes.Buffer
	_, err = l.WriteTo(&got)
	require.NoError(t, err)
	_, err = raw.WriteTo(&want)
	require.NoError(t, err)
	require.Equal(t, want.Bytes(), got.Bytes(), "serialised filters differ")

	probe := randomKeys(4, 4*n, "p")
	many, err := l.MightContainMany(context.Background(), probe)
	require.NoError(t, err)
	for i, ok := range answers(t, l, probe) {
		require.Equal(t, raw.TestString(probe[i]), ok, "key %q", probe[i])
		require.Equal(t, ok, many[i], "MightContainMany, key %q", probe[i])
	}
}

func TestLocalNoFalseNegativesAndFPRate(t *testing.T) {
	const n, fp = 100_000, 0.01
	l, err := NewLocal(n, fp)
	require.NoError(t, err)
	checkFilter(t, l, n, fp)

	approx := l.ApproximateCount()
	require.InDelta(t, n, float64(approx), 0.03*n, "ApproximateCount")
	require.InDelta(t, 0.5, l.FillRatio(), 0.05, "a filter loaded to its n is about half full")
}

func TestLocalEmptyAndCount(t *testing.T) {
	ctx := context.Background()
	l, err := NewLocal(1000, 0.01)
	require.NoError(t, err)
	ok, err := l.MightContain(ctx, "x")
	require.NoError(t, err)
	require.False(t, ok)
	require.Zero(t, l.ApproximateCount())
	require.Zero(t, l.FillRatio())
	require.NoError(t, l.Add(ctx, "a", "b", "c", "a"))
	require.Equal(t, uint(3), l.ApproximateCount())
}

func TestApproximateCountOfFullFilterIsFinite(t *testing.T) {
	got := approximateCount(100, 100, 3)
	require.Greater(t, got, uint(100))
	require.Less(t, got, uint(1000))
}

func TestLocalWriteToReadFrom(t *testing.T) {
	ctx := context.Background()
	l, err := NewLocal(2000, 0.001)
	require.NoError(t, err)
	in := randomKeys(5, 2000, "w")
	mustAdd(t, l, in)
	var buf bytes.Buffer
	wrote, err := l.WriteTo(&buf)
	require.NoError(t, err)
	require.Equal(t, int64(buf.Len()), wrote)
	data := bytes.Clone(buf.Bytes())

	var z Local // the zero Local loads a filter
	read, err := z.ReadFrom(&buf)
	require.NoError(t, err)
	require.Equal(t, wrote, read)
	require.Equal(t, l.Cap(), z.Cap())
	require.Equal(t, l.K(), z.K())
	probe := append(slices.Clone(in), randomKeys(6, 5000, "x")...)
	require.Equal(t, answers(t, l, probe), answers(t, &z, probe))

	// bits-and-blooms reads what Local wrote.
	var raw bbloom.BloomFilter
	_, err = raw.ReadFrom(bytes.NewReader(data))
	require.NoError(t, err)
	for _, k := range in {
		require.True(t, raw.TestString(k))
	}

	// A truncated or nonsensical stream fails and leaves the filter as it was.
	_, err = z.ReadFrom(bytes.NewReader(data[:len(data)/2]))
	require.ErrorContains(t, err, "bloom: read filter")
	bad := slices.Clone(data)
	clear(bad[8:16]) // k = 0
	_, err = z.ReadFrom(bytes.NewReader(bad))
	require.ErrorContains(t, err, "k=0")
	ok, err := z.MightContain(ctx, in[0])
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, l.Cap(), z.Cap())
}

func TestLocalReadFromHugeHeaderDoesNotAllocate(t *testing.T) {
	var head [24]byte
	binary.BigEndian.PutUint64(head[:8], 1<<40) // m: 128 GiB of bits
	binary.BigEndian.PutUint64(head[8:16], 7)
	binary.BigEndian.PutUint64(head[16:], 1<<40)
	var l Local
	allocs := testing.AllocsPerRun(1, func() {
		_, err := l.ReadFrom(bytes.NewReader(head[:]))
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	})
	require.Less(t, allocs, 20.0)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	require.Less(t, ms.HeapAlloc, uint64(1<<30), "a 24-byte stream made ReadFrom allocate")
	require.Zero(t, l.Cap())

	binary.BigEndian.PutUint64(head[16:], 1<<63) // a bitset far longer than m
	_, err := l.ReadFrom(bytes.NewReader(head[:]))
	require.ErrorContains(t, err, "too long")
}

// FuzzLocalReadFrom: any input is read or refused without panicking, and what is read writes
// back to a stream that reads back the same.
func FuzzLocalReadFrom(f *testing.F) {
	l, _ := NewLocal(100, 0.05)
	_ = l.Add(context.Background(), "a", "b")
	var buf bytes.Buffer
	_, _ = l.WriteTo(&buf)
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:30])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var got Local
		if _, err := got.ReadFrom(bytes.NewReader(data)); err != nil {
			return
		}
		if got.Cap() > 1<<20 {
			return // a valid but large filter: skip the round trip
		}
		var out bytes.Buffer
		_, err := got.WriteTo(&out)
		require.NoError(t, err)
		var again Local
		_, err = again.ReadFrom(&out)
		require.NoError(t, err)
		require.Equal(t, got.Cap(), again.Cap())
		require.Equal(t, got.K(), again.K())
		require.Equal(t, got.FillRatio(), again.FillRatio())
		ok1, _ := got.MightContain(context.Background(), "a")
		ok2, _ := again.MightContain(context.Background(), "a")
		require.Equal(t, ok1, ok2)
	})
}

func TestZeroLocal(t *testing.T) {
	ctx := context.Background()
	var z Local
	require.ErrorIs(t, z.Add(ctx, "a"), ErrNoFilter)
	_, err := z.MightContain(ctx, "a")
	require.ErrorIs(t, err, ErrNoFilter)
	_, err = z.MightContainMany(ctx, []string{"a"})
	require.ErrorIs(t, err, ErrNoFilter)
	_, err = z.WriteTo(&bytes.Buffer{})
	require.ErrorIs(t, err, ErrNoFilter)
	require.Zero(t, z.Cap())
	require.Zero(t, z.K())
	require.Zero(t, z.ApproximateCount())
	require.Zero(t, z.FillRatio())
}

// TestLocalConcurrent runs writers and readers together (meaningful under -race): each writer
// hands every key it added to a reader, which must then see it.
func TestLocalConcurrent(t *testing.T) {
	ctx := context.Background()
	l, err := NewLocal(40_000, 0.01)
	require.NoError(t, err)
	const writers, perWriter = 4, 5000
	added := make(chan string, 256)
	var wg, readers sync.WaitGroup
	var mu sync.Mutex
	var missed []string
	for w := range writers {
		wg.Go(func() {
			for _, k := range randomKeys(uint64(100+w), perWriter, fmt.Sprintf("w%d:", w)) {
				if err := l.Add(ctx, k); err != nil {
					panic(err)
				}
				added <- k
			}
		})
	}
	for range 4 {
		readers.Go(func() {
			for k := range added {
				if ok, err := l.MightContain(ctx, k); err != nil || !ok {
					mu.Lock()
					missed = append(missed, k)
					mu.Unlock()
				}
			}
		})
	}
	// Snapshots and stats race with the writers too.
	readers.Go(func() {
		for range 20 {
			var buf bytes.Buffer
			if _, err := l.WriteTo(&buf); err != nil {
				panic(err)
			}
			_ = l.FillRatio()
		}
	})
	wg.Wait()
	close(added)
	readers.Wait()
	require.Empty(t, missed, "keys not seen after their Add returned")
	require.InDelta(t, writers*perWriter, float64(l.ApproximateCount()), 0.03*writers*perWriter)
}

// redisBits returns the bits of a Redis bitmap as a bit i -> set function over m bits (Redis
// numbers bits from the most significant bit of the first byte).
func redisBits(t testing.TB, rdb redis.UniversalClient, key string) func(i uint) bool {
	t.Helper()
	raw, err := rdb.Get(context.Background(), key).Bytes()
	require.NoError(t, err)
	return func(i uint) bool {
		if int(i/8) >= len(raw) {
			return false
		}
		return raw[i/8]>>(7-i%8)&1 == 1
	}
}

// checkSameAsLocal fills a one-shard Redis filter and a Local of the same size with the same keys
// and checks that every bit and every answer agrees.
func checkSameAsLocal(t *testing.T, rdb redis.UniversalClient, n uint, fp float64) {
	t.Helper()
	r, err := NewRedis(rdb, t.Name(), n, fp, nil)
	require.NoError(t, err)
	l, err := NewLocal(n, fp)
	require.NoError(t, err)
	require.Equal(t, l.Cap(), r.Cap())
	require.Equal(t, l.K(), r.K())
	in := randomKeys(8, int(n), "same:")
	mustAdd(t, r, in)
	mustAdd(t, l, in)

	var buf bytes.Buffer
	_, err = l.WriteTo(&buf)
	require.NoError(t, err)
	var raw bbloom.BloomFilter
	_, err = raw.ReadFrom(&buf)
	require.NoError(t, err)
	bitmap, _ := r.ShardKeys(0)
	rb := redisBits(t, rdb, bitmap)
	set, differ := 0, 0
	for i := range l.Cap() {
		if raw.BitSet().Test(i) != rb(i) {
			differ++
		}
		if rb(i) {
			set++
		}
	}
	require.Zero(t, differ, "bits that differ between Local and Redis")
	require.Greater(t, set, int(n), "filter barely written")
	probe := append(in[:1000:1000], randomKeys(9, int(n), "probe:")...)
	require.Equal(t, answers(t, l, probe), answers(t, r, probe), "local and Redis answers differ")
	for _, k := range probe[:300] {
		a, err := r.MightContain(context.Background(), k)
		require.NoError(t, err)
		b, _ := l.MightContain(context.Background(), k)
		require.Equal(t, b, a, "key %q", k)
	}
}
