package ratelimit

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Limit is one token bucket: it holds at most Burst tokens, starts full, and refills at Rate tokens
// per second (fractional rates such as 0.5 are fine). Each allowed event takes one token.
//
// Name is an optional label, reported back in [Result.Limit]; [Redis] also uses it in the key of
// the bucket, so names of the limits of one limiter must be distinct. The helpers [PerSecond],
// [PerMinute] and [PerHour] set it ("10/s", "100/min", "1000/h").
type Limit struct {
	Rate  float64 // tokens added per second; must be > 0
	Burst int     // bucket size: the most events allowed at once; must be >= 1
	Name  string  // optional label, distinct among the limits of one limiter
}

// PerSecond returns a Limit of n events per second with a burst of n.
func PerSecond(n int) Limit {
	return Limit{Rate: float64(n), Burst: n, Name: strconv.Itoa(n) + "/s"}
}

// PerMinute returns a Limit of n events per minute (n/60 per second) with a burst of n.
func PerMinute(n int) Limit {
	return Limit{Rate: float64(n) / 60, Burst: n, Name: strconv.Itoa(n) + "/min"}
}

// PerHour returns a Limit of n events per hour (n/3600 per second) with a burst of n.
func PerHour(n int) Limit {
	return Limit{Rate: float64(n) / 3600, Burst: n, Name: strconv.Itoa(n) + "/h"}
}

// String returns the Name, or "rate/s burst b" when the Name is empty.
func (l Limit) String() string {
	if l.Name != "" {
		return l.Name
	}
	return strconv.FormatFloat(l.Rate, 'g', -1, 64) + "/s burst " + strconv.Itoa(l.Burst)
}

// Window returns how long an empty bucket takes to fill completely, Burst/Rate, rounded to the
// nearest nanosecond. The rounding absorbs float error, so the helpers' windows are exact:
// PerSecond(n), PerMinute(n) and PerHour(n) have windows of exactly one second, minute and hour
// for every n (although 11/(11/60.0) is 60.00000000000001 in float64). A header that wants whole
// seconds (RateLimit-Policy's w) should take the integer ceiling of Window, e.g.
// (l.Window() + time.Second - 1) / time.Second, never math.Ceil(float64(Burst)/Rate).
func (l Limit) Window() time.Duration {
	return time.Duration(math.Round(float64(l.Burst) / l.Rate * 1e9))
}

// refillTime is how long an empty bucket takes to fill completely.
func (l Limit) refillTime() time.Duration { return seconds(float64(l.Burst) / l.Rate) }

// Result is the answer of one AllowN call. [Local] and [Redis] fill it with the same meaning.
//
// When a limiter has several limits, every field describes the binding one, which is also copied
// into Limit: when denied, the limit with the longest RetryAfter; when allowed, the one with the
// smallest Remaining (ties: the longest ResetAfter).
type Result struct {
	// Allowed reports whether the n events may happen now; their tokens were taken. For a peek
	// (n == 0) it reports whether one event would be allowed, and nothing is taken.
	Allowed bool
	// Remaining is the whole number of tokens left in the binding bucket after this call.
	Remaining int
	// RetryAfter is, when denied, how long until the same request would be allowed (0 when allowed).
	RetryAfter time.Duration
	// ResetAfter is how long until the binding bucket is full again if nothing else is taken.
	ResetAfter time.Duration
	// Limit is the binding limit.
	Limit Limit
}

// Limiter is what middleware needs from a rate limiter; [*Local] and [*Redis] implement it.
type Limiter interface {
	AllowN(ctx context.Context, key string, n int) (Result, error)
}

var (
	_ Limiter = (*Local)(nil)
	_ Limiter = (*Redis)(nil)
)

// eps absorbs float rounding so that a bucket refilled to 0.9999999999 tokens counts as 1.
const eps = 1e-9

// maxRefill bounds Burst/Rate so that times and key TTLs stay exact in float64 and int64.
const maxRefill = 10 * 365 * 24 * time.Hour

// validateLimits checks the limits given to a constructor and returns a private copy.
func validateLimits(limits []Limit) ([]Limit, error) {
	if len(limits) == 0 {
		return nil, fmt.Errorf("%w: at least one Limit is required", ErrInvalidOptions)
	}
	seen := make(map[string]bool, len(limits))
	out := make([]Limit, len(limits))
	for i, l := range limits {
		switch {
		case math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0) || l.Rate <= 0:
			return nil, fmt.Errorf("%w: limits[%d] (%s): Rate must be a positive number, got %v", ErrInvalidOptions, i, l, l.Rate)
		case l.Burst < 1:
			return nil, fmt.Errorf("%w: limits[%d] (%s): Burst must be at least 1, got %d", ErrInvalidOptions, i, l, l.Burst)
		case l.Burst > 1<<50:
			return nil, fmt.Errorf("%w: limits[%d] (%s): Burst %d is too large (max 2^50)", ErrInvalidOptions, i, l, l.Burst)
		case float64(l.Burst)/l.Rate > maxRefill.Seconds():
			return nil, fmt.Errorf("%w: limits[%d] (%s): Burst/Rate (time to refill) exceeds %v", ErrInvalidOptions, i, l, maxRefill)
		}
		id := l.id()
		if seen[id] {
			return nil, fmt.Errorf("%w: limits[%d]: duplicate limit %q (give each limit a distinct Name)", ErrInvalidOptions, i, id)
		}
		seen[id] = true
		out[i] = l
	}
	return out, nil
}

// id names the bucket of l within a key: the Name, or rate and burst when it has none.
func (l Limit) id() string {
	if l.Name != "" {
		return l.Name
	}
	return strconv.FormatFloat(l.Rate, 'g', -1, 64) + ":" + strconv.Itoa(l.Burst)
}

// checkCall validates the arguments of AllowN.
func checkCall(limits []Limit, key string, n int) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidArgument)
	}
	if n < 0 {
		return fmt.Errorf("%w: key %q: negative n %d", ErrInvalidArgument, key, n)
	}
	for _, l := range limits {
		if n > l.Burst {
			return fmt.Errorf("ratelimit: key %q: n=%d is larger than Burst %d of limit %s: %w", key, n, l.Burst, l, ErrExceedsBurst)
		}
	}
	return nil
}

// seconds converts float seconds to a Duration, rounding up so that waiting RetryAfter is enough.
func seconds(s float64) time.Duration {
	if s <= 0 {
		return 0
	}
	return time.Duration(math.Ceil(s * 1e9))
}

// need is the number of tokens a call with n needs: n, or 1 for a peek.
func need(n int) float64 {
	if n == 0 {
		return 1
	}
	return float64(n)
}

// buildResult turns the tokens of each bucket (after the charge when allowed) into a Result,
// choosing the binding limit. Both Local and Redis use it, so the meaning cannot drift.
func buildResult(limits []Limit, tokens []float64, allowed bool, n int) Result {
	res, _ := bindingResult(limits, tokens, allowed, n)
	return res
}

// bindingResult is buildResult that also returns the index of the binding limit in limits.
func bindingResult(limits []Limit, tokens []float64, allowed bool, n int) (Result, int) {
	want := need(n)
	var res Result
	bound := 0
	for i, l := range limits {
		tk := tokens[i]
		rem := max(int(math.Floor(tk+eps)), 0)
		reset := seconds((float64(l.Burst) - tk) / l.Rate)
		var retry time.Duration
		if !allowed && tk+eps < want {
			retry = seconds((want - tk) / l.Rate)
		}
		better := i == 0
		switch {
		case better:
		case !allowed:
			better = retry > res.RetryAfter || (retry == res.RetryAfter && rem < res.Remaining)
		default:
			better = rem < res.Remaining || (rem == res.Remaining && reset > res.ResetAfter)
		}
		if better {
			res = Result{Allowed: allowed, Remaining: rem, RetryAfter: retry, ResetAfter: reset, Limit: l}
			bound = i
		}
	}
	return res, bound
}
