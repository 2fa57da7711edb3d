package ratelimit

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgekit/surge/internal/keys"
	"github.com/surgekit/surge/internal/luascript"
)

//go:embed tokenbucket.lua
var tokenBucketLua string

var tokenBucketScript = luascript.New(tokenBucketLua)

//go:embed gcra.lua
var gcraLua string

var gcraScript = luascript.New(gcraLua)

// The scripts of a limiter with one limit: the same algorithm without loops or tables, with a
// scalar reply (an array costs the server and the client more), so the common case costs the
// server least.

//go:embed tokenbucket1.lua
var tokenBucket1Lua string

var tokenBucket1Script = luascript.New(tokenBucket1Lua)

//go:embed gcra1.lua
var gcra1Lua string

var gcra1Script = luascript.New(gcra1Lua)

// Redis is a token-bucket limiter shared by every process that uses the same Redis and prefix.
// Each AllowN is one round trip (EVALSHA of one Lua script) that reads the server's clock, so
// clients' clocks do not matter. Buckets expire once they would be full again.
//
// With [TokenBucket] (the default) keys are Prefix + "{" + key + "}:" + limit name, each a string
// "<tokens> <server time in µs>"; with [GCRA] they are Prefix + "{" + key + "}:gcra:" + limit
// name, each the server time in µs (since 2020-01-01) when the bucket is full again. The user key
// is the cluster hash tag (escaped when it contains '}'), so the buckets of all limits of one key
// live in one slot.
//
// NewRedis starts no goroutine and there is nothing to close; with [RedisOptions.Pipeline],
// AllowN starts a short-lived goroutine to send each batch, which ends when no call is queued.
// All methods are safe for concurrent use.
type Redis struct {
	derived  // Allow, Wait, WaitN, Limits
	rdb      redis.UniversalClient
	prefix   string
	script   *luascript.Script
	pipe     *luascript.Pipe // nil unless RedisOptions.Pipeline
	result   replyReader     // reads script's reply; chosen with it in NewRedis
	suffixes []string        // ":" + limit id (":gcra:" + id with GCRA), one per limit
	params   []any           // per limit, as ARGV strings: rate and burst, or with GCRA per and tau
	mode     FailMode
	fallback *Local
	probe    time.Duration
	log      *slog.Logger
	now      func() time.Time
	dec      decisions // labels: the limits', then the fallback's from fbBase
	fbBase   int
	quietFB  *Local // fallback.quiet(): answers without counting (r counts the call)

	down      atomic.Bool  // Redis failed and has not answered since
	nextProbe atomic.Int64 // unix ns before which requests go straight to the fallback
	stats     struct {
		allowed, denied, redisErrors, failOpen, fallback, probes, recoveries atomic.Uint64
	}
}

// replyReader turns a script's reply into the Result of a call for n tokens and the index of
// the binding limit.
type replyReader func(r *Redis, cmd *redis.Cmd, n int) (Result, int, error)

// Stats is a snapshot of a [Redis] limiter's counters since it was built.
type Stats struct {
	Allowed     uint64 // requests allowed (by Redis, by the fallback or by FailOpen)
	Denied      uint64 // requests denied
	RedisErrors uint64 // calls to Redis that failed (a cancelled caller context is not counted)
	FailOpen    uint64 // requests allowed by FailOpen because Redis failed
	Fallback    uint64 // requests answered by the Fallback limiter
	Probes      uint64 // requests sent to Redis to see whether it is back, while using the fallback
	Recoveries  uint64 // times Redis answered again after failing
}

// NewRedis returns a Redis limiter enforcing every limit at once on each key. It never closes rdb.
// It returns an error wrapping [ErrInvalidOptions], naming the field, when rdb is nil, no limit is
// given, a Rate is not positive, a Burst is below 1, two limits share a Name, the Prefix holds a
// brace, Fallback got nil, ProbeInterval is negative, the Algorithm is unknown, or with GCRA a
// Rate is above MaxGCRARate. opt may be nil.
//
// go-redis bounds a round trip by the context's deadline only when the client was built with
// ContextTimeoutEnabled; otherwise its ReadTimeout applies (3 s by default). Set one of them so that
// a stalled Redis cannot hold requests for long.
func NewRedis(rdb redis.UniversalClient, opt *RedisOptions, limits ...Limit) (*Redis, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: rdb: nil redis client", ErrInvalidOptions)
	}
	cfg, err := opt.resolve()
	if err != nil {
		return nil, err
	}
	ls, err := validateLimits(limits)
	if err != nil {
		return nil, err
	}
	r := &Redis{rdb: rdb, prefix: cfg.prefix, mode: cfg.mode, fallback: cfg.fallback, probe: cfg.probe,
		log: cfg.log, now: time.Now}
	r.derived = derived{limits: ls, allowN: r.AllowN}
	labels, errLabel := limitLabels(ls)
	r.fbBase = len(labels)
	if r.fallback != nil {
		fb, _ := limitLabels(r.fallback.limits)
		labels = append(labels, fb...)
		r.quietFB = r.fallback.quiet()
	}
	r.dec = newDecisions(cfg.meter, labels, errLabel)
	gcra := cfg.algo == GCRA
	switch {
	case gcra && len(ls) == 1:
		r.script, r.result = gcra1Script, (*Redis).gcra1Result
	case gcra:
		r.script, r.result = gcraScript, (*Redis).gcraResult
	case len(ls) == 1:
		r.script, r.result = tokenBucket1Script, (*Redis).tokenBucket1Result
	default:
		r.script, r.result = tokenBucketScript, (*Redis).tokenBucketResult
	}
	if cfg.pipeline {
		r.pipe = luascript.NewPipe(rdb)
	}
	for i, l := range ls {
		if !gcra {
			r.suffixes = append(r.suffixes, ":"+l.id())
			r.params = append(r.params, strconv.FormatFloat(l.Rate, 'f', -1, 64), strconv.Itoa(l.Burst))
			continue
		}
		if l.Rate > MaxGCRARate {
			return nil, fmt.Errorf("%w: limits[%d] (%s): Rate %v is above MaxGCRARate for GCRA (use TokenBucket)", ErrInvalidOptions, i, l, l.Rate)
		}
		per := 1e6 / l.Rate
		r.suffixes = append(r.suffixes, ":gcra:"+l.id())
		r.params = append(r.params, strconv.FormatFloat(per, 'f', -1, 64), strconv.FormatFloat(per*float64(l.Burst), 'f', -1, 64))
	}
	return r, nil
}

// AllowN takes n tokens from every bucket of key if all of them hold n, and none otherwise, in one
// round trip. n == 0 peeks: it reports whether one event would be allowed and takes nothing.
// It blocks for the round trip and honours ctx.
//
// Errors: [ErrInvalidArgument] for an empty key or negative n, [ErrExceedsBurst] when n is larger
// than a limit's Burst, the context's error, and, with FailClosed, the Redis error (wrapped). With
// FailOpen or Fallback a Redis failure is not returned: see [RedisOptions.OnRedisError].
func (r *Redis) AllowN(ctx context.Context, key string, n int) (Result, error) {
	res, bound, d, err := r.decide(ctx, key, n)
	switch {
	case err != nil:
		r.dec.failed(ctx)
		return res, err
	case res.Allowed:
		r.stats.allowed.Add(1)
	default:
		r.stats.denied.Add(1)
	}
	r.dec.add(ctx, bound, d)
	return res, nil
}

// decide is AllowN without the counting: it also returns the index of the binding limit's label
// in r.dec and the decision to count.
func (r *Redis) decide(ctx context.Context, key string, n int) (Result, int, decision, error) {
	if err := checkCall(r.limits, key, n); err != nil {
		return Result{}, 0, decError, err
	}
	if r.mode == modeFallback && r.down.Load() {
		if !r.takeProbe() {
			return r.useFallback(ctx, key, n)
		}
		r.stats.probes.Add(1)
	}
	res, bound, err := r.eval(ctx, key, n)
	if err == nil {
		if r.down.Load() && r.down.CompareAndSwap(true, false) {
			r.stats.recoveries.Add(1)
			if r.mode != FailClosed {
				r.log.LogAttrs(ctx, slog.LevelInfo, "ratelimit: redis answers again")
			}
		}
		return res, bound, verdict(res.Allowed), nil
	}
	if cerr := ctxEnded(ctx); cerr != nil {
		return Result{}, 0, decError, fmt.Errorf("ratelimit: allow %q: %w (%v)", key, cerr, err)
	}
	r.stats.redisErrors.Add(1)
	// FailClosed returns the error, so it is not logged too.
	if !r.down.Load() && r.down.CompareAndSwap(false, true) && r.mode != FailClosed {
		r.log.LogAttrs(ctx, slog.LevelWarn, "ratelimit: redis failing", slog.String("policy", r.policyName()), slog.Any("error", err))
	}
	switch r.mode {
	case FailOpen:
		r.stats.failOpen.Add(1)
		res, bound := r.fullResult(n)
		return res, bound, decFallback, nil
	case modeFallback:
		r.nextProbe.Store(r.now().Add(r.probe).UnixNano())
		return r.useFallback(ctx, key, n)
	default:
		return Result{}, 0, decError, fmt.Errorf("ratelimit: allow %q: %w", key, err)
	}
}

// ctxEnded returns ctx's error, or DeadlineExceeded once its deadline has passed: a client with
// ContextTimeoutEnabled fails the read at the deadline, a moment before ctx's own timer fires.
func ctxEnded(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// eval runs the script once. It returns the index of the binding limit with the Result.
func (r *Redis) eval(ctx context.Context, key string, n int) (Result, int, error) {
	sc := scratchPool.Get().(*scratch)
	sc.keys = r.keys(sc.keys[:0], key)
	sc.args = append(append(sc.args[:0], n), r.params...)
	// go-redis copies keys and args into the command (and a queued call copies them), so the
	// scratch can go back right after.
	var cmd *redis.Cmd
	if r.pipe != nil {
		cmd = r.pipe.Run(ctx, r.script, sc.keys, sc.args...)
	} else {
		cmd = r.script.Run(ctx, r.rdb, sc.keys, sc.args...)
	}
	clear(sc.keys)
	clear(sc.args)
	scratchPool.Put(sc)
	return r.result(r, cmd, n)
}

// tokenBucketResult reads tokenbucket.lua's answer: 1 when allowed (else 0), then each bucket's
// tokens left, as strings.
func (r *Redis) tokenBucketResult(cmd *redis.Cmd, n int) (Result, int, error) {
	vals, err := cmd.Slice()
	if err != nil {
		return Result{}, 0, err
	}
	if len(vals) != 1+len(r.limits) {
		return Result{}, 0, fmt.Errorf("ratelimit: script returned %d values, want %d", len(vals), 1+len(r.limits))
	}
	var buf [4]float64
	tokens := buf[:0]
	for _, v := range vals[1:] {
		s, ok := v.(string)
		if !ok {
			return Result{}, 0, fmt.Errorf("ratelimit: script returned %T, want a string", v)
		}
		f, err := parseTokens(s, s)
		if err != nil {
			return Result{}, 0, err
		}
		tokens = append(tokens, f)
	}
	allowed, _ := vals[0].(int64)
	res, bound := bindingResult(r.limits, tokens, allowed == 1, n)
	return res, bound, nil
}

// parseTokens reads s, a bucket's tokens as a token-bucket script sends them, which must be a
// finite number >= 0; errors quote reply, the script's answer s came from.
func parseTokens(s string, reply any) (float64, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("ratelimit: script returned %q: %w", reply, err)
	}
	if !(f >= 0) || math.IsInf(f, 0) { // also NaN
		return 0, fmt.Errorf("ratelimit: script returned %q, want a finite number of tokens >= 0", reply)
	}
	return f, nil
}

// tokenBucket1Result reads tokenbucket1.lua's answer: the tokens left, as a string, with a '-'
// in front when the call was denied.
func (r *Redis) tokenBucket1Result(cmd *redis.Cmd, n int) (Result, int, error) {
	s, err := cmd.Text()
	if err != nil {
		return Result{}, 0, err
	}
	allowed := true
	if len(s) > 0 && s[0] == '-' {
		allowed, s = false, s[1:]
	}
	tk, err := parseTokens(s, cmd.Val())
	if err != nil {
		return Result{}, 0, err
	}
	res, bound := bindingResult(r.limits, []float64{tk}, allowed, n)
	return res, bound, nil
}

// gcra1Result reads gcra1.lua's answer: the debt in ns when allowed, -1 - debt when denied.
func (r *Redis) gcra1Result(cmd *redis.Cmd, n int) (Result, int, error) {
	v, err := cmd.Int64()
	if err != nil {
		return Result{}, 0, err
	}
	allowed := v >= 0
	if !allowed {
		v = -1 - v
	}
	tk := gcraTokens(r.limits[0], v)
	res, bound := bindingResult(r.limits, []float64{tk}, allowed, n)
	return res, bound, nil
}

// gcraTokens turns a GCRA debt (TAT - now, in ns) into the tokens of a token bucket:
// burst - debt * rate.
func gcraTokens(l Limit, debt int64) float64 {
	tk := float64(l.Burst) - float64(debt)*l.Rate/1e9
	// The debt is rounded to the nanosecond and TAT kept to 1/32 µs: snap what is within a
	// millionth of a whole token to it, so Remaining and RetryAfter match a token bucket's.
	if w := math.Round(tk); math.Abs(tk-w) < 1e-6 {
		tk = w
	}
	return tk
}

// gcraResult reads the GCRA script's answer: allowed, then each bucket's debt (TAT - now) in ns,
// and turns the debts into tokens: burst - debt * rate.
func (r *Redis) gcraResult(cmd *redis.Cmd, n int) (Result, int, error) {
	vals, err := cmd.Int64Slice()
	if err != nil {
		return Result{}, 0, err
	}
	if len(vals) != 1+len(r.limits) {
		return Result{}, 0, fmt.Errorf("ratelimit: script returned %d values, want %d", len(vals), 1+len(r.limits))
	}
	var buf [4]float64
	tokens := buf[:0]
	for i, l := range r.limits {
		tokens = append(tokens, gcraTokens(l, vals[i+1]))
	}
	res, bound := bindingResult(r.limits, tokens, vals[0] == 1, n)
	return res, bound, nil
}

// keys appends the Redis keys of key's buckets, one per limit, all with key as hash tag.
func (r *Redis) keys(dst []string, key string) []string {
	base := keys.Tagged(r.prefix, key)
	for _, s := range r.suffixes {
		dst = append(dst, base+s)
	}
	return dst
}

// scratch holds the per-call slices of eval, reused through scratchPool.
type scratch struct {
	keys []string
	args []any
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// takeProbe reports whether this request is the one that tries Redis in the current interval.
func (r *Redis) takeProbe() bool {
	now := r.now().UnixNano()
	next := r.nextProbe.Load()
	return now >= next && r.nextProbe.CompareAndSwap(next, now+int64(r.probe))
}

// useFallback answers from the Fallback limiter, through its quiet twin: the call is counted
// once, by AllowN, as decFallback with the fallback's binding limit.
func (r *Redis) useFallback(ctx context.Context, key string, n int) (Result, int, decision, error) {
	r.stats.fallback.Add(1)
	res, err := r.quietFB.AllowN(ctx, key, n)
	if err != nil {
		return res, 0, decError, err
	}
	return res, r.fbBase + r.fallback.bindingIndex(res), decFallback, nil
}

// fullResult is the answer of FailOpen: as if every bucket were full before the call.
func (r *Redis) fullResult(n int) (Result, int) {
	var buf [4]float64
	tokens := buf[:0]
	for _, l := range r.limits {
		tokens = append(tokens, float64(l.Burst-n))
	}
	return bindingResult(r.limits, tokens, true, n)
}

func (r *Redis) policyName() string {
	switch r.mode {
	case FailOpen:
		return "fail-open"
	case modeFallback:
		return "fallback"
	default:
		return "fail-closed"
	}
}

// Reset deletes key's buckets in Redis (one DEL; all are in one slot), so the key starts full again,
// and resets the fallback limiter's buckets too. It blocks for the round trip and returns an error
// wrapping the Redis error if the DEL fails, or [ErrInvalidArgument] for an empty key.
func (r *Redis) Reset(ctx context.Context, key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidArgument)
	}
	if r.fallback != nil {
		_ = r.fallback.Reset(ctx, key)
	}
	if err := r.rdb.Del(ctx, r.keys(nil, key)...).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("ratelimit: reset %q: %w", key, err)
	}
	return nil
}

// Stats returns a snapshot of the counters. It is safe for concurrent use.
func (r *Redis) Stats() Stats {
	s := &r.stats
	return Stats{
		Allowed: s.allowed.Load(), Denied: s.denied.Load(), RedisErrors: s.redisErrors.Load(),
		FailOpen: s.failOpen.Load(), Fallback: s.fallback.Load(), Probes: s.probes.Load(),
		Recoveries: s.recoveries.Load(),
	}
}
