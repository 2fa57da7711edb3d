package ratelimit

import (
	"testing"
	"time"
)

// TestWindowExact: the helpers' windows are exactly one second, minute and hour for every n,
// although n/60 and n/3600 are not exact in float64 (11/(11/60.0) is 60.00000000000001).
func TestWindowExact(t *testing.T) {
	for _, h := range []struct {
		mk  func(int) Limit
		win time.Duration
	}{{PerSecond, time.Second}, {PerMinute, time.Minute}, {PerHour, time.Hour}} {
		bad := 0
		for n := 1; n <= 10000; n++ {
			l := h.mk(n)
			if got := l.Window(); got != h.win {
				if bad++; bad <= 3 {
					t.Errorf("%s.Window() = %v (%d ns), want %v", l, got, int64(got), h.win)
				}
			}
		}
		if bad > 0 {
			t.Errorf("%v windows: %d of 10000 wrong", h.win, bad)
		}
	}
	for _, c := range []struct {
		l    Limit
		want time.Duration
	}{
		{Limit{Rate: 2, Burst: 5}, 2500 * time.Millisecond},
		{Limit{Rate: 0.5, Burst: 1}, 2 * time.Second},
		{Limit{Rate: 100.0 / 86400, Burst: 100}, 24 * time.Hour},
		{Limit{Rate: 3, Burst: 10}, 3333333333 * time.Nanosecond},
	} {
		if got := c.l.Window(); got != c.want {
			t.Errorf("%s.Window() = %v, want %v", c.l, got, c.want)
		}
	}
}
