package hl7v2

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Precision is how much of a TS/DTM value was sent.
type Precision int

// Precisions, coarsest first. PrecisionFraction means at least one digit of
// fractional seconds.
const (
	PrecisionYear Precision = iota + 1
	PrecisionMonth
	PrecisionDay
	PrecisionHour
	PrecisionMinute
	PrecisionSecond
	PrecisionFraction
)

func (p Precision) String() string {
	switch p {
	case PrecisionYear:
		return "year"
	case PrecisionMonth:
		return "month"
	case PrecisionDay:
		return "day"
	case PrecisionHour:
		return "hour"
	case PrecisionMinute:
		return "minute"
	case PrecisionSecond:
		return "second"
	case PrecisionFraction:
		return "fraction"
	}
	return fmt.Sprintf("Precision(%d)", int(p))
}

var errTS = errors.New("hl7v2: invalid TS/DTM value")

// ParseTS parses an HL7 TS/DTM value, YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]]
// [+/-ZZZZ], and reports the precision it was sent with so a mapper can
// render a FHIR date or dateTime without inventing digits. A value without
// an offset is in loc, the sender's time zone (UTC when loc is nil); one
// with an offset gets a fixed zone of that offset. Surrounding spaces are
// ignored. Calendar errors (month 13, 30 February, 29 February outside leap
// years, hour 24, second 60) and offsets beyond ±14:59 or with minutes over
// 59 are errors; the error never quotes the value.
func ParseTS(s string, loc *time.Location) (t time.Time, precision Precision, err error) {
	if loc == nil {
		loc = time.UTC
	}
	s = strings.Trim(s, " ")
	body, zone := s, ""
	if i := strings.IndexAny(s, "+-"); i >= 0 {
		body, zone = s[:i], s[i:]
	}
	// Split off the fraction.
	frac := ""
	if i := strings.IndexByte(body, '.'); i >= 0 {
		body, frac = body[:i], body[i+1:]
		if len(body) != 14 || len(frac) < 1 || len(frac) > 4 || !isDigits(frac) {
			return time.Time{}, 0, errTS
		}
	}
	if !isDigits(body) {
		return time.Time{}, 0, errTS
	}
	switch len(body) {
	case 4:
		precision = PrecisionYear
	case 6:
		precision = PrecisionMonth
	case 8:
		precision = PrecisionDay
	case 10:
		precision = PrecisionHour
	case 12:
		precision = PrecisionMinute
	case 14:
		precision = PrecisionSecond
	default:
		return time.Time{}, 0, errTS
	}
	if frac != "" {
		precision = PrecisionFraction
	}
	at := func(i, def int) int {
		if i+2 > len(body) {
			return def
		}
		return int(body[i]-'0')*10 + int(body[i+1]-'0')
	}
	year := int(body[0]-'0')*1000 + int(body[1]-'0')*100 + int(body[2]-'0')*10 + int(body[3]-'0')
	month, day, hour, minute, sec := at(4, 1), at(6, 1), at(8, 0), at(10, 0), at(12, 0)
	if month < 1 || month > 12 || day < 1 || day > daysIn(year, month) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, 0, errTS
	}
	nsec := 0
	if frac != "" {
		for i := 0; i < 9; i++ {
			nsec *= 10
			if i < len(frac) {
				nsec += int(frac[i] - '0')
			}
		}
	}
	if zone != "" {
		if len(zone) != 5 || !isDigits(zone[1:]) {
			return time.Time{}, 0, errTS
		}
		zh, zm := int(zone[1]-'0')*10+int(zone[2]-'0'), int(zone[3]-'0')*10+int(zone[4]-'0')
		if zh > 14 || zm > 59 {
			return time.Time{}, 0, errTS
		}
		off := (zh*60 + zm) * 60
		if zone[0] == '-' {
			off = -off
		}
		loc = time.FixedZone(zone, off)
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nsec, loc), precision, nil
}

func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// FormatFHIR renders t at precision p as a FHIR date (year, month, day) or
// dateTime (hour and finer; FHIR requires seconds once a time is given, so
// hour and minute precision get zero seconds). Fractions keep the digits
// HL7 allows (up to 4, trailing zeros trimmed to at least one).
func FormatFHIR(t time.Time, p Precision) string {
	switch p {
	case PrecisionYear:
		return t.Format("2006")
	case PrecisionMonth:
		return t.Format("2006-01")
	case PrecisionDay:
		return t.Format("2006-01-02")
	case PrecisionHour, PrecisionMinute:
		return t.Format("2006-01-02T15:04:00Z07:00")
	case PrecisionFraction:
		s := t.Format("2006-01-02T15:04:05.0000Z07:00")
		// Trim trailing zeros of the fraction, keeping one digit.
		i := strings.IndexByte(s, '.')
		j := i + 5
		k := j
		for k > i+2 && s[k-1] == '0' {
			k--
		}
		return s[:k] + s[j:]
	}
	return t.Format("2006-01-02T15:04:05Z07:00")
}
