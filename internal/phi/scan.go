package phi

import (
	"bytes"
	"encoding/json"
)

// A small scanner over JSON that fhirgate itself produced (compacted,
// checked by internal/fhir): it never sees arbitrary client bytes, but it
// still tolerates whitespace and never panics on malformed input — a bad
// value is copied through as it is.

type member struct {
	rawName []byte // with quotes
	name    []byte // without quotes
	value   []byte
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"'.
// It jumps from quote to quote (bytes.IndexByte), so long strings — a
// narrative's div — cost a vectorized scan, not a byte loop.
func skipString(b []byte, i int) int {
	i++
	for i < len(b) {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return len(b)
		}
		q := i + j
		n := 0 // backslashes right before the quote: odd means escaped
		for p := q - 1; p >= i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q + 1
		}
		i = q + 1
	}
	return len(b)
}

// skipValue returns the index after the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	default:
		for ; i < len(b); i++ {
			switch b[i] {
			case ',', '}', ']', ' ', '\n', '\r', '\t':
				return i
			}
		}
		return len(b)
	}
}

// key returns the member's name decoded: fhir.Parse keeps names as the
// client wrote them, and "birth\u0044ate" is birthDate to every reader.
func (m member) key() []byte {
	if bytes.IndexByte(m.name, '\\') < 0 {
		return m.name
	}
	var s string
	if json.Unmarshal(m.rawName, &s) != nil {
		return m.name
	}
	return []byte(s)
}

// eachMember calls fn for each member of a JSON object, in order, without
// allocating.
func eachMember(b []byte, fn func(m member)) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return
	}
	i++
	for {
		i = skipWS(b, i)
		if i >= len(b) || b[i] != '"' {
			return
		}
		ns := i
		i = skipString(b, i)
		ne := i
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ':' {
			return
		}
		i = skipWS(b, i+1)
		vs := i
		i = skipValue(b, i)
		if ne-ns < 2 {
			return
		}
		fn(member{rawName: b[ns:ne], name: b[ns+1 : ne-1], value: b[vs:i]})
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ',' {
			return
		}
		i++
	}
}

// eachElement calls fn for each element of a JSON array, in order, without
// allocating.
func eachElement(b []byte, fn func(i int, el []byte)) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return
	}
	i++
	for n := 0; ; n++ {
		i = skipWS(b, i)
		if i >= len(b) || b[i] == ']' {
			return
		}
		vs := i
		i = skipValue(b, i)
		if i == vs {
			return
		}
		fn(n, b[vs:i])
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ',' {
			return
		}
		i++
	}
}

// memberString returns the string value of member key of object b.
func memberString(b []byte, key string) (string, bool) {
	var out string
	found, ok := false, false
	eachMember(b, func(m member) {
		if found || string(m.key()) != key {
			return
		}
		found = true
		v := m.value
		if len(v) < 2 || v[0] != '"' {
			return
		}
		if bytes.IndexByte(v, '\\') < 0 {
			out, ok = string(v[1:len(v)-1]), true
			return
		}
		if json.Unmarshal(v, &out) == nil {
			ok = true
		}
	})
	return out, ok
}
