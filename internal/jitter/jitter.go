// Package jitter spreads durations so that events scheduled together do not fire together.
//
// All functions are safe for concurrent use; they draw from math/rand/v2's goroutine-safe source.
package jitter

import (
	"math/rand/v2"
	"time"
)

// Spread returns d moved uniformly within [d-frac·d, d+frac·d]. frac is clamped to [0,1];
// frac 0 or d <= 0 returns d unchanged. The result is never below 1ns when d > 0.
func Spread(d time.Duration, frac float64) time.Duration {
	return SpreadWith(d, frac, rand.Float64)
}

// SpreadWith is [Spread] drawing from float64s uniform in [0,1); tests inject a fixed source.
func SpreadWith(d time.Duration, frac float64, float64s func() float64) time.Duration {
	if d <= 0 || frac <= 0 {
		return d
	}
	frac = min(frac, 1)
	delta := float64(d) * frac
	out := time.Duration(float64(d) - delta + 2*delta*float64s())
	return max(out, 1)
}

// Full returns a duration uniform in [0, d) ("full jitter"); d <= 0 returns 0.
func Full(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// Exponential returns full-jitter exponential backoff for a 0-based attempt:
// uniform in [0, min(maxDelay, base·2^attempt)). base <= 0 returns 0.
func Exponential(attempt int, base, maxDelay time.Duration) time.Duration {
	if base <= 0 {
		return 0
	}
	ceil := base
	for i := 0; i < attempt && ceil < maxDelay; i++ {
		ceil *= 2
	}
	if maxDelay > 0 {
		ceil = min(ceil, maxDelay)
	}
	return Full(ceil)
}
