package hl7v2

import (
	"strings"
	"unicode/utf8"
)

// unescape decodes the escape sequences in v, a subcomponent that contains
// the escape character. It returns the offset in v of an escape character
// that is never closed, or -1.
//
// Decoding, with \ standing for the declared escape character:
//   - \F\ \S\ \T\ \R\ \E\ become the field, component, subcomponent,
//     repetition and escape characters; \P\ the truncation character when
//     one is declared (v2.7+).
//   - \Xhh...\ becomes the bytes hh..., read as UTF-8 when they are valid
//     UTF-8 and as Latin-1 otherwise.
//   - \.br\ and \.sp\ (with an optional count) become one newline.
//   - Formatting and character-set commands that carry no text (\H\, \N\,
//     \.fi\, \.nf\, \.ce\, \.in±n\, \.ti±n\, \.sk n\, \Zxx\, \Cxxyy\,
//     \Mxxyyzz\) are dropped.
//   - Anything else between two escape characters (including malformed
//     \X..\) is kept verbatim, escape characters included, so a sender's
//     stray backslash pair ("C:\temp\x") loses nothing.
func unescape(v string, d Delimiters) (string, int) {
	e := d.Escape
	var b []byte
	i := 0
	for {
		k := strings.IndexByte(v[i:], e)
		if k < 0 {
			if b == nil {
				return v, -1
			}
			b = append(b, v[i:]...)
			return string(b), -1
		}
		k += i
		j := strings.IndexByte(v[k+1:], e)
		if j < 0 {
			return "", k
		}
		j += k + 1
		if b == nil {
			b = make([]byte, 0, len(v))
		}
		b = append(b, v[i:k]...)
		b = appendEscape(b, v[k+1:j], v[k:j+1], d)
		i = j + 1
	}
}

func appendEscape(b []byte, seq, whole string, d Delimiters) []byte {
	switch seq {
	case "F":
		return append(b, d.Field)
	case "S":
		return append(b, d.Component)
	case "T":
		return append(b, d.Subcomponent)
	case "R":
		return append(b, d.Repetition)
	case "E":
		return append(b, d.Escape)
	case "P":
		if d.Truncation != 0 {
			return append(b, d.Truncation)
		}
		return append(b, whole...)
	case "H", "N", ".fi", ".nf", ".ce":
		return b
	case ".br":
		return append(b, '\n')
	}
	if len(seq) == 0 {
		return append(b, whole...)
	}
	switch seq[0] {
	case 'X':
		hex := seq[1:]
		if len(hex) == 0 || len(hex)%2 != 0 || !isHex(hex) {
			return append(b, whole...)
		}
		raw := make([]byte, len(hex)/2)
		for i := range raw {
			raw[i] = unhex(hex[2*i])<<4 | unhex(hex[2*i+1])
		}
		if utf8.Valid(raw) {
			return append(b, raw...)
		}
		for _, c := range raw {
			b = utf8.AppendRune(b, rune(c))
		}
		return b
	case 'Z':
		return b
	case 'C', 'M':
		if len(seq) > 1 && len(seq)%2 == 1 && isHex(seq[1:]) {
			return b
		}
	case '.':
		cmd, arg := seq[1:min(3, len(seq))], seq[min(3, len(seq)):]
		arg = strings.TrimSpace(arg)
		switch cmd {
		case "sp":
			if isDigits(arg) {
				return append(b, '\n')
			}
		case "sk":
			if isDigits(arg) {
				return b
			}
		case "in", "ti":
			if len(arg) > 0 && (arg[0] == '+' || arg[0] == '-') {
				arg = arg[1:]
			}
			if isDigits(arg) {
				return b
			}
		}
	}
	return append(b, whole...)
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// isDigits reports whether s is empty or all ASCII digits.
func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// Escape is the inverse of unescaping: it replaces each delimiter in s by its
// escape sequence (\F\ \S\ \T\ \R\ \E\, and \P\ for a declared truncation
// character), a newline by \.br\ (\X0A\ when '.' is a delimiter) and a
// carriage return by \X0D\, so that s
// can be placed in a field of a message using d. Parsing the result gives s
// back. The zero Delimiters mean DefaultDelimiters.
func Escape(s string, d Delimiters) string {
	if d.Field == 0 {
		d = DefaultDelimiters
	}
	need := false
	for i := 0; i < len(s) && !need; i++ {
		need = escapeSeq(s[i], d) != ""
	}
	if !need {
		return s
	}
	b := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s); i++ {
		c := s[i]
		seq := escapeSeq(c, d)
		if seq == "" {
			b = append(b, c)
			continue
		}
		b = append(b, d.Escape)
		b = append(b, seq...)
		b = append(b, d.Escape)
	}
	return string(b)
}

func escapeSeq(c byte, d Delimiters) string {
	switch {
	case c == d.Field:
		return "F"
	case c == d.Component:
		return "S"
	case c == d.Subcomponent:
		return "T"
	case c == d.Repetition:
		return "R"
	case c == d.Escape:
		return "E"
	case d.Truncation != 0 && c == d.Truncation:
		return "P"
	case c == '\n':
		if d.Component == '.' || d.Repetition == '.' || d.Subcomponent == '.' || d.Truncation == '.' {
			return "X0A" // \.br\ would be split at the delimiter
		}
		return ".br"
	case c == '\r':
		return "X0D"
	}
	return ""
}
