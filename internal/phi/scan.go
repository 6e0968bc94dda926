package phi

import (
	"bytes"
	"encoding/json"

	"github.com/fhirgate/fhirgate/internal/fhir"
)

// Member and element iteration over JSON that fhirgate itself produced
// (compacted, checked by internal/fhir), on internal/fhir's value scanner:
// it never sees arbitrary client bytes, but it still tolerates whitespace
// and never panics on malformed input — a bad value is copied through as
// it is.

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
		i = fhir.SkipString(b, i)
		ne := i
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ':' {
			return
		}
		i = skipWS(b, i+1)
		vs := i
		i = fhir.SkipValue(b, i)
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
		i = fhir.SkipValue(b, i)
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
