package bloom

import (
	"fmt"
	"math"

	bbloom "github.com/bits-and-blooms/bloom/v3"
)

// maxShardBits is the largest bitmap one Redis string holds (512 MiB = 2^32 bits).
const maxShardBits = 1 << 32

// maxShards bounds [RedisOptions.Shards]; more shards than cluster slots spread nothing further.
const maxShards = 16384

// RedisOptions configures [NewRedis]. A nil *RedisOptions means all defaults.
type RedisOptions struct {
	// Shards splits the filter over this many Redis keys so a big filter spreads over the slots
	// (and so the nodes) of a Redis Cluster. Each shard holds about m/Shards bits; a key's k bits
	// all live in the shard chosen by a hash of the key, so every call stays one atomic script
	// per shard. Default 1 (one bitmap, bit for bit equal to a [Local] of the same n and fp).
	// Must be in [0, 16384]; 0 means 1. It is part of the stored config: every process using the
	// name must agree on it. A shard's bitmap soon takes its full ceil(m/S)/8 bytes on its node
	// (Redis grows a string up to the highest bit set); one shard holds at most 2^32 bits.
	Shards int
}

// sizing validates n and fp and returns bits-and-blooms' m and k for them.
func sizing(n uint, fp float64) (m, k uint64, err error) {
	if n == 0 {
		return 0, 0, fmt.Errorf("bloom: n must be at least 1, got 0")
	}
	if !(fp > 0 && fp < 1) { // also rejects NaN
		return 0, 0, fmt.Errorf("bloom: fp must be in (0, 1), got %v", fp)
	}
	bm, bk := bbloom.EstimateParameters(n, fp)
	if float64(bm) >= math.MaxInt64/2 {
		return 0, 0, fmt.Errorf("bloom: n=%d with fp=%v needs %d bits, too many", n, fp, bm)
	}
	return uint64(max(bm, 1)), uint64(max(bk, 1)), nil
}
