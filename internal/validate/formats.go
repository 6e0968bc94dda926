package validate

import "strconv"

// The checks below implement the R4 primitive regexes by hand: they run
// for every primitive of every resource written.

// integer checks -?(0|[1-9][0-9]*) within 32 bits and the type's range.
func integer(typ, s string) string {
	d := s
	if d != "" && d[0] == '-' {
		d = d[1:]
	}
	if d == "" || !allDigits(d) || (len(d) > 1 && d[0] == '0') {
		return "invalid " + typ + ": expected an integer without fraction or exponent"
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return "invalid " + typ + ": out of the 32-bit range"
	}
	switch {
	case typ == "positiveInt" && n < 1:
		return "invalid positiveInt: expected 1 or more"
	case typ == "unsignedInt" && n < 0:
		return "invalid unsignedInt: expected 0 or more"
	}
	return ""
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'
}

// validCode checks [^\s]+(\s[^\s]+)*.
func validCode(s string) bool {
	if isSpace(s[0]) || isSpace(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if isSpace(s[i]) && isSpace(s[i-1]) {
			return false
		}
	}
	return true
}

// validOID checks urn:oid:[0-2](\.(0|[1-9][0-9]*))+.
func validOID(s string) bool {
	const p = "urn:oid:"
	if len(s) < len(p)+3 || s[:len(p)] != p {
		return false
	}
	s = s[len(p):]
	if s[0] < '0' || s[0] > '2' || s[1] != '.' {
		return false
	}
	arcs := 0
	for i := 1; i < len(s); {
		if s[i] != '.' {
			return false
		}
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == i+1 || (s[i+1] == '0' && j > i+2) {
			return false
		}
		arcs++
		i = j
	}
	return arcs > 0
}

// validUUID checks urn:uuid: and a lower-case 8-4-4-4-12 hex UUID.
func validUUID(s string) bool {
	const p = "urn:uuid:"
	if len(s) != len(p)+36 || s[:len(p)] != p {
		return false
	}
	s = s[len(p):]
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

type dtMode int

const (
	dateOnly dtMode = iota
	dateOrDateTime
	instantOnly
)

// validDateTime checks the R4 date, dateTime and instant formats, with
// real calendar days (no 31 April, 29 February only in leap years).
func validDateTime(s string, mode dtMode) bool {
	// Year: four digits, not 0000.
	if len(s) < 4 || !allDigits(s[:4]) || s[:4] == "0000" {
		return false
	}
	year := atoi(s[:4])
	rest := s[4:]
	if rest == "" {
		return mode != instantOnly
	}
	if len(rest) < 3 || rest[0] != '-' || !allDigits(rest[1:3]) {
		return false
	}
	month := atoi(rest[1:3])
	if month < 1 || month > 12 {
		return false
	}
	rest = rest[3:]
	if rest == "" {
		return mode != instantOnly
	}
	if len(rest) < 3 || rest[0] != '-' || !allDigits(rest[1:3]) {
		return false
	}
	day := atoi(rest[1:3])
	if day < 1 || day > daysIn(year, month) {
		return false
	}
	rest = rest[3:]
	if rest == "" {
		return mode != instantOnly
	}
	if mode == dateOnly || rest[0] != 'T' {
		return false
	}
	rest = rest[1:]
	n := timeLen(rest)
	if n == 0 {
		return false
	}
	return validZone(rest[n:])
}

// timeLen returns the length of the hh:mm:ss(.s+) prefix of s, 0 if none.
func timeLen(s string) int {
	if len(s) < 8 || s[2] != ':' || s[5] != ':' || !allDigits(s[0:2]) || !allDigits(s[3:5]) || !allDigits(s[6:8]) {
		return 0
	}
	if atoi(s[0:2]) > 23 || atoi(s[3:5]) > 59 || atoi(s[6:8]) > 60 {
		return 0
	}
	n := 8
	if n < len(s) && s[n] == '.' {
		j := n + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == n+1 {
			return 0
		}
		n = j
	}
	return n
}

// validZone checks Z|(+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00).
func validZone(z string) bool {
	if z == "Z" {
		return true
	}
	if len(z) != 6 || (z[0] != '+' && z[0] != '-') || z[3] != ':' || !allDigits(z[1:3]) || !allDigits(z[4:6]) {
		return false
	}
	h, m := atoi(z[1:3]), atoi(z[4:6])
	return h < 14 && m < 60 || h == 14 && m == 0
}

func validTime(s string) bool {
	return timeLen(s) == len(s)
}

// validBase64 accepts standard base64 (with '/', which the R4 regex omits
// by mistake) in groups of four, padding only at the end, whitespace
// anywhere.
func validBase64(s string) bool {
	n, pad := 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isSpace(c):
			continue
		case c == '=':
			pad++
		case pad > 0:
			return false
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
		default:
			return false
		}
		n++
	}
	return n > 0 && n%4 == 0 && pad <= 2
}

func atoi(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n
}

func daysIn(year, month int) int {
	switch month {
	case 4, 6, 9, 11:
		return 30
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	}
	return 31
}
