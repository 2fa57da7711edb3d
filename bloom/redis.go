package bloom

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"

	"github.com/surgekit/surge/internal/keys"
	"github.com/surgekit/surge/internal/luascript"
)

// formatVersion is stored in the config key; bump it when the bit layout changes.
const formatVersion = 1

// maxKeysPerScript bounds the keys one script call sets, so a huge Add does not hold the Redis
// server for long (1000 keys at k=7 is 7000 SETBITs, about a millisecond); larger batches are
// split into several calls sent in one pipeline.
const maxKeysPerScript = 1000

// configErrPrefix starts the error reply the scripts send on a config mismatch.
const configErrPrefix = "BLOOMCONFIG "

var (
	//go:embed config.lua
	configLua string

	//go:embed add.lua
	addLua    string
	addScript = luascript.New(configLua, addLua)

	//go:embed contains.lua
	containsLua    string
	containsScript = luascript.New(configLua, containsLua)
)

// Redis is a Bloom filter kept in Redis bitmaps, shared by every process that uses the same
// name. It has the m and k of bits-and-blooms' EstimateParameters(n, fp) and the same bit
// positions, so with one shard its bitmap equals, bit for bit, a [Local] of the same n and fp
// given the same keys.
//
// Keys: shard s of filter name is the bitmap "{name:s}" and its config "{name:s}:cfg" (name
// escaped inside the hash tag as [keys.Tagged] does), so a shard's two keys share a cluster slot
// and different filters' shards spread over slots. The config holds the format version, the
// bits per shard, k and the shard count; every script checks it (and shard 0's config, stored
// before any other shard is created, is checked whenever a call meets a never-written shard), so
// processes that size the same name differently get [ErrConfigMismatch] instead of silent false
// negatives. To change the sizing, build a filter under a new name (see [Live]) and
// [Redis.Delete] the old one.
//
// NewRedis starts no goroutine and there is nothing to close; with [RedisOptions.Pipeline] a call
// that queues behind another may start a short-lived goroutine that sends the queued calls and
// ends when none is left. Every method is safe for concurrent use. Redis errors (connection,
// timeout, ctx) are returned wrapped; a [Filter] user such as cache.Guard should treat an error
// from MightContain as "maybe".
type Redis struct {
	rdb    redis.UniversalClient
	name   string
	m, k   uint64     // bits per shard, bit positions per key
	shards [][]string // per shard: {bitmap key, config key}
	cfg    string
	cfgArg any             // cfg boxed once, so passing it to a script does not allocate
	kArg   any             // k as a decimal string, boxed once
	pipe   *luascript.Pipe // nil unless RedisOptions.Pipeline
	checks *checks
}

var _ Filter = (*Redis)(nil)

// NewRedis returns a filter stored in Redis under name, sized for n keys at false-positive rate
// fp (m and k from bits-and-blooms' EstimateParameters; with [RedisOptions.Shards] S, each of
// the S bitmaps holds ceil(m/S) bits). It does no I/O: the config key is written by the first
// Add. It fails when rdb is nil, name is empty, n is 0, fp is outside (0, 1), Shards is outside
// [0, 16384], or a shard would need more than 2^32 bits (a Redis string's limit: raise Shards).
// rdb is not closed by the filter.
func NewRedis(rdb redis.UniversalClient, name string, n uint, fp float64, opt *RedisOptions) (*Redis, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: NewRedis: nil Redis client", ErrInvalidOptions)
	}
	if name == "" {
		return nil, fmt.Errorf("%w: NewRedis: empty name", ErrInvalidOptions)
	}
	cfg, err := opt.resolve()
	if err != nil {
		return nil, fmt.Errorf("bloom: NewRedis: %w", err)
	}
	shards := cfg.shards
	m, k, err := sizing(n, fp)
	if err != nil {
		return nil, fmt.Errorf("bloom: NewRedis: %w", err)
	}
	m = (m + shards - 1) / shards
	if m > maxShardBits {
		return nil, fmt.Errorf("bloom: NewRedis: %w: %d bits per shard exceed a Redis string's 2^32; "+
			"set RedisOptions.Shards to at least %d", ErrInvalidOptions, m, (m*shards+maxShardBits-1)/maxShardBits)
	}
	r := &Redis{rdb: rdb, name: name, m: m, k: k, checks: newChecks(cfg.mp, attribute.String(attrName, name))}
	r.cfg = fmt.Sprintf("surge-bloom/%d m=%d k=%d shards=%d", formatVersion, m, k, shards)
	r.cfgArg = r.cfg
	r.kArg = strconv.FormatUint(k, 10)
	if cfg.pipeline {
		r.pipe = luascript.NewPipe(rdb)
	}
	for s := range shards {
		bitmap := keys.Tagged("", name+":"+strconv.FormatUint(s, 10))
		r.shards = append(r.shards, []string{bitmap, bitmap + ":cfg"})
	}
	return r, nil
}

// Name returns the name the filter was created with.
func (r *Redis) Name() string { return r.name }

// Cap returns the bits of one shard (m of the whole filter when Shards is 1).
func (r *Redis) Cap() uint { return uint(r.m) }

// K returns the number of bit positions per key.
func (r *Redis) K() uint { return uint(r.k) }

// Shards returns the number of bitmaps the filter is split over.
func (r *Redis) Shards() int { return len(r.shards) }

// ShardKeys returns the Redis keys of shard s: its bitmap and its config; two empty strings
// when s is outside [0, Shards()).
func (r *Redis) ShardKeys(s int) (bitmap, config string) {
	if s < 0 || s >= len(r.shards) {
		return "", ""
	}
	return r.shards[s][0], r.shards[s][1]
}

// shardOf picks the shard of a key from its base hashes. The bits within the shard come from
// h mod m; the shard index comes from a strongly mixed combination of the words, so the two are
// independent even when S divides m.
func (r *Redis) shardOf(h *[4]uint64) int {
	if len(r.shards) == 1 {
		return 0
	}
	hi, _ := bits.Mul64(fmix(h[1]^bits.RotateLeft64(h[3], 32)), uint64(len(r.shards)))
	return int(hi)
}

// appendOffsets appends the k bit offsets of a key as 4-byte little-endian numbers.
func (r *Redis) appendOffsets(buf []byte, h *[4]uint64) []byte {
	for i := range r.k {
		off := uint32(location(h, i) % r.m)
		buf = append(buf, byte(off), byte(off>>8), byte(off>>16), byte(off>>24))
	}
	return buf
}

// MightContain reports whether key may have been added: false means certainly not, true means
// added or a false positive. It makes one round trip (one script reading the key's k bits in
// its shard) and blocks until Redis answers or ctx ends. A filter never added to answers false
// (with one more round trip, to check the shard-0 config, when the key's shard is not shard 0).
// Errors: [ErrConfigMismatch] when the stored filter has another size, else the Redis error
// wrapped; treat an error as "maybe" when guarding a cache. The answer (or the error) is counted
// in surge.bloom.checks.
func (r *Redis) MightContain(ctx context.Context, key string) (bool, error) {
	maybe, err := r.mightContain(ctx, key)
	if err != nil {
		r.checks.failed(ctx, 1)
	} else {
		r.checks.answer(ctx, maybe)
	}
	return maybe, err
}

func (r *Redis) mightContain(ctx context.Context, key string) (bool, error) {
	h := hashKey(key)
	s := r.shardOf(&h)
	offs := r.appendOffsets(make([]byte, 0, 4*r.k), &h)
	var cmd *redis.Cmd
	if r.pipe != nil {
		cmd = r.pipe.Run(ctx, containsScript, r.shards[s], r.cfgArg, offs, r.kArg)
	} else {
		cmd = containsScript.Run(ctx, r.rdb, r.shards[s], r.cfgArg, offs, r.kArg)
	}
	v, err := cmd.Text()
	if err != nil {
		return false, r.wrap("might contain", s, err)
	}
	if v == "" { // the shard was never written
		return false, r.checkAnchor(ctx, "might contain", s)
	}
	return v == "1", nil
}

// MightContainMany is [Redis.MightContain] for several keys: out[i] answers keys[i]. It makes
// one round trip (one script per shard touched and per 1000 keys, pipelined), blocks until Redis
// answers or ctx ends, does not keep or modify keys and is safe for concurrent use. Errors are
// those of MightContain; on error out is nil. Every key's answer (or the error, once per key) is
// counted in surge.bloom.checks.
func (r *Redis) MightContainMany(ctx context.Context, keys []string) ([]bool, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	out, err := r.mightContainMany(ctx, keys)
	if err != nil {
		r.checks.failed(ctx, len(keys))
	} else {
		r.checks.answers(ctx, out)
	}
	return out, err
}

func (r *Redis) mightContainMany(ctx context.Context, keys []string) ([]bool, error) {
	calls := r.group(keys, true)
	cmds, err := r.run(ctx, containsScript, "might contain", calls, func(call) any { return r.kArg })
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(keys))
	for i, c := range calls {
		v, err := cmds[i].Text()
		if v == "" && err == nil {
			if err := r.checkAnchor(ctx, "might contain", c.shard); err != nil {
				return nil, err
			}
			continue // all false
		}
		if err != nil || len(v) != len(c.idx) {
			return nil, fmt.Errorf("bloom: might contain %q: unexpected script reply %.40q for %d keys (err %v)", r.name, v, len(c.idx), err)
		}
		for j, at := range c.idx {
			out[at] = v[j] == '1'
		}
	}
	return out, nil
}

// Shard 0 is the anchor of a sharded filter: its config is stored before any other shard is
// created, and checked when a call meets a shard that was never written. Each script can only
// check its own shard (one slot), so without the anchor a process with another Shards value
// would silently read and create shards the other processes never use.

// checkAnchor is called when shard s was found never written: it fails with ErrConfigMismatch
// when shard 0 holds another config.
func (r *Redis) checkAnchor(ctx context.Context, op string, s int) error {
	if s == 0 {
		return nil
	}
	stored, err := r.rdb.Get(ctx, r.shards[0][1]).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return nil
	case err != nil:
		return fmt.Errorf("bloom: %s %q: read config: %w", op, r.name, err)
	case stored != r.cfg:
		return r.mismatch(op, 0, stored)
	}
	return nil
}

// claimAnchor stores the config in shard 0 unless one is there, and fails with ErrConfigMismatch
// when the one there differs.
func (r *Redis) claimAnchor(ctx context.Context, op string) error {
	stored, err := r.rdb.SetArgs(ctx, r.shards[0][1], r.cfg, redis.SetArgs{Mode: "NX", Get: true}).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return nil // stored now
	case err != nil:
		return fmt.Errorf("bloom: %s %q: store config: %w", op, r.name, err)
	case stored != r.cfg:
		return r.mismatch(op, 0, stored)
	}
	return nil
}

// call is one script invocation on one shard.
type call struct {
	shard  int
	offs   []byte
	n      int   // keys in offs
	idx    []int // positions of those keys in the caller's slice, when asked for
	create bool  // Add: create the shard if it was never written
}

// Add script flags (ARGV[3]): whether the script may create a never-written shard.
const (
	mayCreate = "1"
	mustExist = "0"
)

func addFlag(c call) any {
	if c.shard == 0 || c.create {
		return mayCreate
	}
	return mustExist
}

// Add inserts keys. It makes one round trip whatever the number of keys: one script per shard
// touched (and per 1000 keys), sent as a pipeline when there are several; each script is atomic,
// the whole Add is not. The first write to a shard other than shard 0 takes two more round trips
// (the shard-0 config check). It blocks until Redis answers or ctx ends, does not keep or modify
// keys and is safe for concurrent use. Errors: [ErrConfigMismatch] when the stored filter has
// another size (nothing is written to that shard), else the Redis error wrapped; after an error
// some keys may have been added.
func (r *Redis) Add(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	calls := r.group(keys, false)
	cmds, err := r.run(ctx, addScript, "add", calls, addFlag)
	if err != nil {
		return err
	}
	var fresh []call
	for i, c := range calls {
		if v, _ := cmds[i].Int64(); v == 0 { // a shard never written: check shard 0 first
			c.create = true
			fresh = append(fresh, c)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	if err := r.claimAnchor(ctx, "add"); err != nil {
		return err
	}
	_, err = r.run(ctx, addScript, "add", fresh, addFlag)
	return err
}

// group splits keys into script calls: per shard, at most maxKeysPerScript keys each; with
// withIdx each call records the positions of its keys in keys.
func (r *Redis) group(keys []string, withIdx bool) []call {
	if len(keys) == 1 { // the common single-key Add: no map
		h := hashKey(keys[0])
		c := call{shard: r.shardOf(&h), offs: r.appendOffsets(make([]byte, 0, 4*r.k), &h), n: 1}
		if withIdx {
			c.idx = []int{0}
		}
		return []call{c}
	}
	var calls []call
	open := make(map[int]int) // shard -> index in calls of its call being filled
	for at, key := range keys {
		h := hashKey(key)
		s := r.shardOf(&h)
		i, ok := open[s]
		if !ok || calls[i].n == maxKeysPerScript {
			per := min(len(keys), maxKeysPerScript)
			if len(r.shards) > 1 {
				per = min(per, 2*len(keys)/len(r.shards)+1) // a guess at this shard's share
			}
			calls = append(calls, call{shard: s, offs: make([]byte, 0, per*4*int(r.k))})
			i = len(calls) - 1
			open[s] = i
		}
		calls[i].offs = r.appendOffsets(calls[i].offs, &h)
		calls[i].n++
		if withIdx {
			calls[i].idx = append(calls[i].idx, at)
		}
	}
	return calls
}

// run sends calls, each with the config, its offsets and extra(c) as arguments, in one round trip
// through [luascript.RunAll] (which heals NOSCRIPT after a restart or flush), or, for one call
// with Pipeline, through the pipe. It returns the
// commands in the order of calls, or the first error (with a count of the others).
func (r *Redis) run(ctx context.Context, script *luascript.Script, op string, calls []call, extra func(call) any) ([]*redis.Cmd, error) {
	runs := make([]luascript.Call, len(calls))
	for i, c := range calls {
		runs[i] = luascript.Call{Script: script, Keys: r.shards[c.shard], Args: []any{r.cfgArg, c.offs, extra(c)}}
	}
	var cmds []*redis.Cmd
	if r.pipe != nil && len(runs) == 1 {
		c := runs[0]
		cmds = []*redis.Cmd{r.pipe.Run(ctx, c.Script, c.Keys, c.Args...)}
	} else {
		cmds = luascript.RunAll(ctx, r.rdb, runs)
	}
	failed, first := 0, -1
	for i, cmd := range cmds {
		if cmd.Err() != nil {
			failed++
			if first < 0 {
				first = i
			}
		}
	}
	if failed == 0 {
		return cmds, nil
	}
	err := r.wrap(op, calls[first].shard, cmds[first].Err())
	if failed > 1 {
		err = fmt.Errorf("%w (and %d more of %d script calls failed)", err, failed-1, len(calls))
	}
	return nil, err
}

// wrap turns a script error into the package's error for an operation on shard s.
func (r *Redis) wrap(op string, s int, err error) error {
	var rerr redis.Error
	if errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), configErrPrefix) {
		return r.mismatch(op, s, strings.TrimPrefix(rerr.Error(), configErrPrefix))
	}
	return fmt.Errorf("bloom: %s %q: %w", op, r.name, err)
}

// mismatch is the ErrConfigMismatch error for shard s holding the config stored.
func (r *Redis) mismatch(op string, s int, stored string) error {
	return fmt.Errorf("%w: %s %q: %s holds %q, this filter is %q "+
		"(n, fp or Shards differ between users of the name?)", ErrConfigMismatch, op, r.name, r.shards[s][1], stored, r.cfg)
}

// bitCounts returns the set bits of every shard, in one pipelined round trip.
func (r *Redis) bitCounts(ctx context.Context) ([]uint64, error) {
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(r.shards))
	for s, ks := range r.shards {
		cmds[s] = pipe.BitCount(ctx, ks[0], nil)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("bloom: bitcount %q: %w", r.name, err)
	}
	out := make([]uint64, len(cmds))
	for s, c := range cmds {
		out[s] = uint64(c.Val())
	}
	return out, nil
}

// FillRatio returns the fraction of the filter's bits that are set, in [0, 1], with one
// pipelined BITCOUNT per shard (O(m) on the server: not for a hot path). It blocks until Redis
// answers or ctx ends and returns the Redis error wrapped. The false-positive rate right now is
// about FillRatio^K.
func (r *Redis) FillRatio(ctx context.Context) (float64, error) {
	counts, err := r.bitCounts(ctx)
	if err != nil {
		return 0, err
	}
	var set uint64
	for _, c := range counts {
		set += c
	}
	return float64(set) / float64(r.m*uint64(len(r.shards))), nil
}

// ApproximateCount estimates how many distinct keys were added, from each shard's fill ratio (as
// [Local.ApproximateCount]), with one pipelined BITCOUNT per shard. Rebuild a larger filter when
// it passes about 80% of the n the filter was sized for (see [Live]). It blocks until Redis
// answers or ctx ends and returns the Redis error wrapped.
func (r *Redis) ApproximateCount(ctx context.Context) (uint, error) {
	counts, err := r.bitCounts(ctx)
	if err != nil {
		return 0, err
	}
	var n uint
	for _, c := range counts {
		n += approximateCount(c, r.m, r.k)
	}
	return n, nil
}

// Delete removes the filter's keys (bitmaps and configs of every shard) in one pipelined round
// trip; the name can then be reused with another size. Processes still using the filter see an
// empty filter (false for every key) until their next Add. It blocks until Redis answers or ctx
// ends and returns the Redis error wrapped.
func (r *Redis) Delete(ctx context.Context) error {
	pipe := r.rdb.Pipeline()
	for _, ks := range r.shards {
		pipe.Del(ctx, ks...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("bloom: delete %q: %w", r.name, err)
	}
	return nil
}
