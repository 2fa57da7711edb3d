package bloom

import (
	"fmt"
	"math"

	bbloom "github.com/bits-and-blooms/bloom/v3"
	"go.opentelemetry.io/otel/metric"
)

// maxShardBits is the largest bitmap one Redis string holds (512 MiB = 2^32 bits).
const maxShardBits = 1 << 32

// maxShards bounds [RedisOptions.Shards]; more shards than cluster slots spread nothing further.
const maxShards = 16384

// DefaultShards is the number of bitmaps a [Redis] filter uses when [RedisOptions.Shards] is 0.
const DefaultShards = 1

// RedisOptions configures [NewRedis]. A nil *RedisOptions means all defaults.
type RedisOptions struct {
	// Shards splits the filter over this many Redis keys so a big filter spreads over the slots
	// (and so the nodes) of a Redis Cluster. Each shard holds about m/Shards bits; a key's k bits
	// all live in the shard chosen by a hash of the key, so every call stays one atomic script
	// per shard. Default [DefaultShards] (one bitmap, bit for bit equal to a [Local] of the same n
	// and fp). Must be in [0, 16384]; 0 means the default. It is part of the stored config: every process using the
	// name must agree on it. A shard's bitmap soon takes its full ceil(m/S)/8 bytes on its node
	// (Redis grows a string up to the highest bit set); one shard holds at most 2^32 bits.
	Shards int
	// Pipeline, when true, sends the single-key calls (MightContain, and Add of one key) that are
	// made while another is in flight together, in one pipelined round trip (automatic
	// pipelining). A call with nothing else in flight is sent at once on its own, so a lone caller
	// sees no difference; under concurrency Redis and the client do one read and one write per
	// batch instead of per call, which raises throughput, at the cost of a queued call waiting for
	// the round trip in flight to end before its own. Each caller still waits only as long as its
	// ctx allows; a call whose ctx ends before it was sent is never sent. On a cluster client a
	// batch is split per node. Calls with several keys (MightContainMany, Add of several keys) are
	// one round trip already and go out directly. Default false.
	Pipeline bool
	// MeterProvider receives the counter surge.bloom.checks (surge.bloom.result = maybe, absent
	// or error; surge.bloom.name = the filter's name). nil means the global provider.
	MeterProvider metric.MeterProvider
}

// config is [RedisOptions] resolved: defaults filled in, validated.
type config struct {
	shards   uint64
	pipeline bool
	mp       metric.MeterProvider
}

// resolve copies o (nil means all defaults) into a config, filling defaults and rejecting bad
// fields with an error wrapping [ErrInvalidOptions] that names the field.
func (o *RedisOptions) resolve() (config, error) {
	var in RedisOptions
	if o != nil {
		in = *o
	}
	if in.Shards < 0 || in.Shards > maxShards {
		return config{}, fmt.Errorf("%w: RedisOptions.Shards must be in [0, %d], got %d", ErrInvalidOptions, maxShards, in.Shards)
	}
	if in.Shards == 0 {
		in.Shards = DefaultShards
	}
	return config{shards: uint64(in.Shards), pipeline: in.Pipeline, mp: in.MeterProvider}, nil
}

// sizing validates n and fp and returns bits-and-blooms' m and k for them.
func sizing(n uint, fp float64) (m, k uint64, err error) {
	if n == 0 {
		return 0, 0, fmt.Errorf("%w: n must be at least 1, got 0", ErrInvalidOptions)
	}
	if !(fp > 0 && fp < 1) { // also rejects NaN
		return 0, 0, fmt.Errorf("%w: fp must be in (0, 1), got %v", ErrInvalidOptions, fp)
	}
	bm, bk := bbloom.EstimateParameters(n, fp)
	if float64(bm) >= math.MaxInt64/2 {
		return 0, 0, fmt.Errorf("%w: n=%d with fp=%v needs %d bits, too many", ErrInvalidOptions, n, fp, bm)
	}
	return uint64(max(bm, 1)), uint64(max(bk, 1)), nil
}
