package events

import (
	"encoding/binary"
	"time"
)

// parseEventTime parses an event-time header. The form the producer writes,
// "2006-01-02T15:04:05[.fraction]Z" in UTC with one to nine fraction digits, is read directly
// (time.Parse costs several times more per record); anything else goes through time.Parse with
// time.RFC3339Nano, which decides what is valid. Both give the same time.Time.
func parseEventTime(b []byte) (time.Time, error) {
	if t, ok := parseUTC(b); ok {
		return t, nil
	}
	return time.Parse(time.RFC3339Nano, string(b))
}

// parseUTC reads "YYYY-MM-DDTHH:MM:SS[.d{1,9}]Z" with time.Parse's range checks; false for any
// other form or value out of range.
func parseUTC(b []byte) (time.Time, bool) {
	sec, nsec, ok := parseInHour(b)
	if !ok {
		return time.Time{}, false
	}
	hour, ok := parseHour(b)
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(hour+sec, nsec).UTC(), true
}

// parseHour reads the "YYYY-MM-DDTHH:" that starts b with time.Parse's range checks: the
// start of that hour in seconds since 1970; false for any other form or a value out of range.
func parseHour(b []byte) (int64, bool) {
	if len(b) < 14 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' {
		return 0, false
	}
	y1, ok1 := two(b[0], b[1])
	y2, ok2 := two(b[2], b[3])
	month, ok3 := two(b[5], b[6])
	day, ok4 := two(b[8], b[9])
	hour, ok5 := two(b[11], b[12])
	year := y1*100 + y2
	if !(ok1 && ok2 && ok3 && ok4 && ok5) || month < 1 || month > 12 || day < 1 ||
		day > daysIn(month, year) || hour > 23 {
		return 0, false
	}
	return daysFromCivil(year, month, day)*86400 + int64(hour*3600), true
}

// two reads the decimal number of the digits a and b; false when either is not a digit.
func two(a, b byte) (int, bool) {
	a, b = a-'0', b-'0'
	return int(a)*10 + int(b), a <= 9 && b <= 9
}

// daysIn returns the number of days of month (1-12) in year, as the Gregorian calendar counts.
func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	default:
		return 31
	}
}

// daysFromCivil returns the days from 1970-01-01 to the given proleptic Gregorian date
// (H. Hinnant's days_from_civil), for years 0-9999.
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}

// hourCache remembers the hour of the last event-time a worker parsed: the events a worker
// reads together are mostly from one hour, and a time in it then needs only its minutes,
// seconds and fraction read. The zero value is empty.
type hourCache struct {
	prefix [14]byte // "YYYY-MM-DDTHH:" of the hour
	unix   int64    // its start, in seconds since 1970
	set    bool
}

// parse is parseEventTime, reading only the rest of b when b starts with the cached hour, and
// caching the hour of a time in the producer's form.
func (h *hourCache) parse(b []byte) (time.Time, error) {
	sec, nsec, ok := parseInHour(b)
	if !ok {
		return time.Parse(time.RFC3339Nano, string(b))
	}
	if !h.set || [14]byte(b[:14]) != h.prefix {
		hour, ok := parseHour(b)
		if !ok {
			return time.Parse(time.RFC3339Nano, string(b))
		}
		h.prefix, h.unix, h.set = [14]byte(b[:14]), hour, true
	}
	return time.Unix(h.unix+sec, nsec).UTC(), nil
}

// parseInHour reads the "MM:SS[.d{1,9}]Z" that ends b after "YYYY-MM-DDTHH:", whatever those
// first 14 bytes hold: the seconds into the hour and the nanoseconds; false for any other form
// or a value out of range.
func parseInHour(b []byte) (sec, nsec int64, ok bool) {
	n := len(b)
	if n < 20 || n == 21 || n > 30 {
		return 0, 0, false
	}
	b = b[:n:n]
	if b[16] != ':' || b[n-1] != 'Z' {
		return 0, 0, false
	}
	m1, m2, s1, s2 := b[14]-'0', b[15]-'0', b[17]-'0', b[18]-'0'
	if m1 > 5 || m2 > 9 || s1 > 5 || s2 > 9 { // minutes and seconds 00-59
		return 0, 0, false
	}
	sec = int64(m1)*600 + int64(m2)*60 + int64(s1)*10 + int64(s2)
	if n > 20 {
		if b[19] != '.' {
			return 0, 0, false
		}
		frac := b[20 : n-1]
		if len(frac) >= 8 { // the producer's nine digits, unless they end in zeros
			v, ok := eightDigits(frac)
			if !ok {
				return 0, 0, false
			}
			nsec, frac = int64(v), frac[8:]
		}
		for _, c := range frac {
			if c-'0' > 9 {
				return 0, 0, false
			}
			nsec = nsec*10 + int64(c-'0')
		}
		nsec *= pow10[30-n] // n-21 digits were read of nine
	}
	return sec, nsec, true
}

// eightDigits reads the decimal number of b's first eight bytes in a few word operations
// instead of eight dependent multiply-adds; false when any of them is not a digit.
func eightDigits(b []byte) (uint64, bool) {
	x := binary.LittleEndian.Uint64(b) - 0x3030303030303030 // '0' off each byte; the first digit is the low byte
	// A byte was a digit when it is 0-9 now: neither borrowed (>= 0x80) nor above 9 (adding
	// 0x76 reaches 0x80). Carries and borrows between bytes only follow a byte that fails.
	if (x|(x+0x7676767676767676))&0x8080808080808080 != 0 {
		return 0, false
	}
	x = (x*10 + x>>8) & 0x00ff00ff00ff00ff      // two digits in each 16-bit lane
	x = (x*100 + x>>16) & 0x0000ffff0000ffff    // four in each 32-bit lane
	return (x*10000 + x>>32) & 0xffffffff, true // all eight
}

// pow10[i] is 10 to the i.
var pow10 = [10]int64{1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000}
