package events

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// parseEventTime must give what time.Parse gives, error or time, for every input.
func TestParseEventTimeAgreesWithTimeParse(t *testing.T) {
	same := func(s string) {
		t.Helper()
		want, werr := time.Parse(time.RFC3339Nano, s)
		got, gerr := parseEventTime([]byte(s))
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("%q: error %v, time.Parse says %v", s, gerr, werr)
		}
		if got != want {
			t.Fatalf("%q: %v (%#v), time.Parse says %v (%#v)", s, got, got, want, want)
		}
	}
	for _, s := range []string{
		"2024-02-29T23:59:59.999999999Z", "2023-02-29T00:00:00Z", "2000-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
		"0000-01-01T00:00:00Z", "0000-02-29T12:00:00.5Z", "9999-12-31T23:59:59.123Z", "1970-01-01T00:00:00Z",
		"1969-12-31T23:59:59.000000001Z", "2024-13-01T00:00:00Z", "2024-00-01T00:00:00Z", "2024-04-31T00:00:00Z",
		"2024-01-01T24:00:00Z", "2024-01-01T23:60:00Z", "2024-01-01T23:59:60Z", "2024-01-01T00:00:00.Z",
		"2024-01-01T00:00:00.1234567891Z", "2024-01-01T00:00:00.12345678912Z", "2024-01-01T00:00:00+02:00",
		"2024-01-01T00:00:00.5+02:00", "2024-01-01t00:00:00Z", "2024-01-01T00:00:00z", "2024-01-01 00:00:00Z",
		"2024-1-01T00:00:00Z", "+024-01-01T00:00:00Z", "2024-01-01T00:00:00,5Z", "2024-01-01T00:00:00.-5Z",
		"2024-01-01T00:00:00.5", "", "Z", "not a time at all, but thirty", "2024-01-01T00:00:0aZ",
	} {
		same(s)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	lo := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	hi := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC).Unix()
	for range 20000 {
		tm := time.Unix(lo+rng.Int64N(hi-lo), rng.Int64N(1e9)).UTC()
		switch rng.IntN(4) {
		case 0:
			tm = tm.Truncate(time.Second)
		case 1:
			tm = tm.Truncate(time.Millisecond)
		}
		same(tm.Format(time.RFC3339Nano))
	}
}

func BenchmarkParseEventTime(b *testing.B) {
	v := []byte(time.Now().UTC().Format(time.RFC3339Nano))
	b.Run("fast", func(b *testing.B) {
		for range b.N {
			if _, err := parseEventTime(v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("time.Parse", func(b *testing.B) {
		for range b.N {
			if _, err := time.Parse(time.RFC3339Nano, string(v)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A worker's hourCache gives what time.Parse gives, error or time, for every input, whatever
// hour it holds: inputs of the cached hour, of other hours, and malformed ones after it.
func TestHourCacheAgreesWithTimeParse(t *testing.T) {
	var h hourCache
	same := func(s string) {
		t.Helper()
		want, werr := time.Parse(time.RFC3339Nano, s)
		got, gerr := h.parse([]byte(s))
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("%q: error %v, time.Parse says %v", s, gerr, werr)
		}
		if got != want {
			t.Fatalf("%q: %v (%#v), time.Parse says %v (%#v)", s, got, got, want, want)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	hours := []string{"2024-02-29T23:", "1970-01-01T00:", "0000-01-01T00:", "9999-12-31T23:", "2026-11-26T18:"}
	tails := []string{"00:00Z", "59:59.999999999Z", "07:05.5Z", "60:00Z", "00:60Z", "5:00Z", "00:00.Z", "00:00.1234567891Z",
		"00:00+02:00", "00:00.5+02:00", "00:00z", "00:0aZ", "00:00,5Z", "00:00.-5Z", "00:00", "0a:00Z", ""}
	for range 20000 {
		prefix := hours[rng.IntN(len(hours))]
		switch rng.IntN(8) {
		case 0:
			same(prefix + tails[rng.IntN(len(tails))])
		case 1: // the hour's bytes changed: same hour prefix length, not the cached hour
			b := []byte(prefix + tails[rng.IntN(3)])
			b[rng.IntN(14)] = "0123456789-T:x"[rng.IntN(14)]
			same(string(b))
		default:
			same(fmt.Sprintf("%s%02d:%02d.%0*d%s", prefix, rng.IntN(60), rng.IntN(60), 1+rng.IntN(9), rng.IntN(10), "Z"))
		}
	}
}

// Every byte that is not a digit, at every place of a fraction of eight or nine digits (read a
// word at a time), makes the time invalid as it does for time.Parse; every digit there keeps
// the value time.Parse reads.
func TestEventTimeFractionBytes(t *testing.T) {
	var h hourCache
	for _, frac := range []string{"123456789", "98765432", "000000001"} {
		for pos := range len(frac) {
			for c := range 256 {
				b := []byte("2026-11-27T01:02:03." + frac + "Z")
				b[20+pos] = byte(c)
				want, werr := time.Parse(time.RFC3339Nano, string(b))
				for name, parse := range map[string]func([]byte) (time.Time, error){"parseEventTime": parseEventTime, "hourCache": h.parse} {
					got, gerr := parse(b)
					if (werr != nil) != (gerr != nil) || got != want {
						t.Fatalf("%s(%q) = %v, %v; time.Parse says %v, %v", name, b, got, gerr, want, werr)
					}
				}
			}
		}
	}
}
