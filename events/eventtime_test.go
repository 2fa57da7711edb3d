package events

import (
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
