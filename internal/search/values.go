package search

import (
	"strings"
	"time"
)

// DateRange parses a FHIR date, dateTime or instant (or a search value of
// the same forms, including hh:mm without seconds) into the closed UTC range
// it covers at its precision: "2020" is [2020-01-01T00:00:00Z,
// 2020-12-31T23:59:59.999999Z]. A value with a time but no timezone is
// taken as UTC; so are dates, which carry no timezone. Ranges end at
// microseconds, PostgreSQL's precision.
func DateRange(s string) (lo, hi time.Time, ok bool) {
	n := len(s)
	if n < 4 {
		return lo, hi, false
	}
	year, ok := digits(s, 0, 4)
	if !ok || year < 1 {
		return lo, hi, false
	}
	month, day := 1, 1
	hour, minute, sec, nsec := 0, 0, 0, 0
	var unit time.Duration
	next := func() time.Time { return time.Time{} }
	p := 4
	switch {
	case n == 4:
		next = func() time.Time { return lo.AddDate(1, 0, 0) }
	case n == 7 && s[4] == '-':
		if month, ok = digits(s, 5, 2); !ok || month < 1 || month > 12 {
			return lo, hi, false
		}
		next = func() time.Time { return lo.AddDate(0, 1, 0) }
		p = 7
	default:
		if n < 10 || s[4] != '-' || s[7] != '-' {
			return lo, hi, false
		}
		if month, ok = digits(s, 5, 2); !ok || month < 1 || month > 12 {
			return lo, hi, false
		}
		if day, ok = digits(s, 8, 2); !ok || day < 1 || day > daysIn(year, month) {
			return lo, hi, false
		}
		p = 10
		if n == 10 {
			next = func() time.Time { return lo.AddDate(0, 0, 1) }
			break
		}
		if s[10] != 'T' || n < 16 || s[13] != ':' {
			return lo, hi, false
		}
		if hour, ok = digits(s, 11, 2); !ok || hour > 23 {
			return lo, hi, false
		}
		if minute, ok = digits(s, 14, 2); !ok || minute > 59 {
			return lo, hi, false
		}
		p = 16
		unit = time.Minute
		if p < n && s[p] == ':' {
			if n < 19 {
				return lo, hi, false
			}
			if sec, ok = digits(s, 17, 2); !ok || sec > 60 {
				return lo, hi, false
			}
			if sec == 60 {
				sec = 59 // leap second
			}
			p = 19
			unit = time.Second
			if p < n && s[p] == '.' {
				p++
				start := p
				scale := int(time.Second)
				for p < n && s[p] >= '0' && s[p] <= '9' {
					if scale > 1 {
						scale /= 10
						nsec += int(s[p]-'0') * scale
					}
					p++
				}
				if p == start {
					return lo, hi, false
				}
				unit = time.Duration(scale)
				if unit < time.Microsecond {
					unit = time.Microsecond
				}
			}
		}
	}
	loc := time.UTC
	if p < n {
		if unit == 0 {
			return lo, hi, false
		}
		switch s[p] {
		case 'Z':
			if p+1 != n {
				return lo, hi, false
			}
		case '+', '-':
			if n != p+6 || s[p+3] != ':' {
				return lo, hi, false
			}
			th, ok1 := digits(s, p+1, 2)
			tm, ok2 := digits(s, p+4, 2)
			if !ok1 || !ok2 || th > 14 || tm > 59 {
				return lo, hi, false
			}
			off := th*3600 + tm*60
			if s[p] == '-' {
				off = -off
			}
			loc = time.FixedZone("", off)
		default:
			return lo, hi, false
		}
	}
	lo = time.Date(year, time.Month(month), day, hour, minute, sec, nsec, loc).UTC()
	var end time.Time
	if unit != 0 {
		end = lo.Add(unit)
	} else {
		end = next()
	}
	lo = lo.Truncate(time.Microsecond)
	return lo, end.Add(-time.Microsecond).Truncate(time.Microsecond), true
}

func digits(s string, at, n int) (int, bool) {
	if at+n > len(s) {
		return 0, false
	}
	v := 0
	for i := at; i < at+n; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, true
}

func daysIn(year, month int) int {
	return time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// decimalRange returns the range a decimal implies by its precision, as
// decimal strings whose midpoint is the value: "1.5" is ["1.45","1.55"],
// "100" is ["99.5","100.5"], "1e2" is ["50","150"].
func decimalRange(s string) (lo, hi string, ok bool) {
	neg := false
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		neg = s[i] == '-'
		i++
	}
	var mant []byte
	scale := 0 // digits after the point
	seenDigit, seenPoint := false, false
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			seenDigit = true
			if len(mant) > 0 || c != '0' {
				mant = append(mant, c)
			}
			if seenPoint {
				scale++
			}
		case c == '.' && !seenPoint:
			seenPoint = true
		case c == 'e' || c == 'E':
			exp, eok := parseExp(s[i+1:])
			if !eok || !seenDigit {
				return "", "", false
			}
			scale -= exp
			i = len(s)
		default:
			return "", "", false
		}
	}
	if !seenDigit {
		return "", "", false
	}
	// value = mant × 10^-scale; half a unit of the last digit is 5 × 10^-(scale+1).
	places := scale + 1
	if len(mant) == 0 {
		half := formatScaled([]byte("5"), places)
		return "-" + half, half, true
	}
	up := append(append([]byte(nil), mant...), '5')
	down := decrement(mant)
	down = append(down, '5')
	a, b := formatScaled(down, places), formatScaled(up, places)
	if neg {
		return "-" + b, "-" + a, true
	}
	return a, b, true
}

func parseExp(s string) (int, bool) {
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if s == "" || len(s) > 4 {
		return 0, false
	}
	v := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		v = v*10 + int(s[i]-'0')
	}
	if neg {
		v = -v
	}
	return v, true
}

// decrement returns the decimal digit string d minus one (d > 0).
func decrement(d []byte) []byte {
	out := append([]byte(nil), d...)
	for i := len(out) - 1; i >= 0; i-- {
		if out[i] > '0' {
			out[i]--
			break
		}
		out[i] = '9'
	}
	for len(out) > 1 && out[0] == '0' {
		out = out[1:]
	}
	if len(out) == 1 && out[0] == '0' {
		return out[:0]
	}
	return out
}

// formatScaled renders the integer digit string d × 10^-places.
func formatScaled(d []byte, places int) string {
	if places <= 0 {
		return string(d) + strings.Repeat("0", -places)
	}
	if len(d) <= places {
		return "0." + strings.Repeat("0", places-len(d)) + string(d)
	}
	return string(d[:len(d)-places]) + "." + string(d[len(d)-places:])
}
