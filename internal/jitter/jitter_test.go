package jitter

import (
	"testing"
	"time"
)

func TestSpreadStaysInBoundsAndSpreads(t *testing.T) {
	const d = 10 * time.Minute
	lo, hi := d, d
	for range 2000 {
		got := Spread(d, 0.1)
		if got < d-d/10 || got > d+d/10 {
			t.Fatalf("Spread(%v, 0.1) = %v, outside ±10%%", d, got)
		}
		lo, hi = min(lo, got), max(hi, got)
	}
	// 2000 uniform draws cover nearly the whole ±60s window.
	if lo > d-50*time.Second || hi < d+50*time.Second {
		t.Fatalf("draws cover only [%v, %v]: not spread across the window", lo, hi)
	}
}

func TestSpreadWithIsExactAtTheEdges(t *testing.T) {
	if got := SpreadWith(time.Second, 0.5, func() float64 { return 0 }); got != 500*time.Millisecond {
		t.Fatalf("low edge: %v", got)
	}
	if got := SpreadWith(time.Second, 0.5, func() float64 { return 0.5 }); got != time.Second {
		t.Fatalf("middle: %v", got)
	}
	if got := SpreadWith(time.Second, 0, func() float64 { return 0.9 }); got != time.Second {
		t.Fatalf("frac 0 must not move d: %v", got)
	}
	if got := SpreadWith(time.Second, 5, func() float64 { return 0 }); got != 1 {
		t.Fatalf("frac clamps to 1 and the result stays positive: %v", got)
	}
}

func TestFullAndExponential(t *testing.T) {
	if Full(0) != 0 || Exponential(3, 0, time.Second) != 0 {
		t.Fatal("zero inputs must give zero")
	}
	for attempt := range 10 {
		ceil := min(10*time.Millisecond<<attempt, 200*time.Millisecond)
		for range 100 {
			if got := Exponential(attempt, 10*time.Millisecond, 200*time.Millisecond); got < 0 || got >= ceil {
				t.Fatalf("attempt %d: %v outside [0, %v)", attempt, got, ceil)
			}
		}
	}
}
