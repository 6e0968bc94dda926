package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Build makes a Resource from content assembled in Go (the HL7 v2
// mappings build resources this way), without a JSON round trip: it
// writes the compact JSON — resourceType, id, then the members in sorted
// order, strings escaped as AppendString does — and, in the same walk,
// puts content into the form Parse would have given it: integers and
// floats become json.Number, []map[string]any and the like become []any
// and map[string]any, invalid UTF-8 becomes U+FFFD. Content must not hold
// resourceType or id. Content is only read (its maps may be shared, e.g.
// constants of a mapping used by concurrent messages): the Resource's
// Content is a copy.
//
// Accepted values: map[string]any, []any, []map[string]any, []string,
// string, json.Number, bool, nil, and Go integers and floats. Anything
// else is an error.
func Build(typ, id string, content map[string]any) (*Resource, error) {
	if typ == "" {
		return nil, Errorf(KindInvalid, "resourceType", "resourceType is missing").WithCode("required")
	}
	b := make([]byte, 0, 512)
	b = append(b, `{"resourceType":`...)
	b = AppendString(b, typ)
	if id != "" {
		b = append(b, `,"id":`...)
		b = AppendString(b, id)
	}
	for _, k := range [...]string{"resourceType", "id"} {
		if _, ok := content[k]; ok {
			return nil, fmt.Errorf("fhir: Build: content holds %s", k)
		}
	}
	out := make(map[string]any, len(content)+2)
	b, err := buildMembers(b, content, out, 1)
	if err != nil {
		return nil, err
	}
	b = append(b, '}')
	out["resourceType"] = typ
	if id != "" {
		out["id"] = id
	}
	return &Resource{Type: typ, ID: id, Content: out, fields: splitObject(b)}, nil
}

// AppendJSON appends the compact JSON of v, a value of the kinds Build
// accepts, exactly as Build writes it (members sorted, strings escaped as
// encoding/json does with HTML escaping off).
func AppendJSON(b []byte, v any) ([]byte, error) {
	b, _, err := buildValue(b, v, 1)
	return b, err
}

// buildMembers appends ,"key":value for each member of m in key order and
// puts the decoded form of each value in out.
func buildMembers(b []byte, m, out map[string]any, depth int) ([]byte, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("fhir: Build: nesting deeper than %d", MaxDepth)
	}
	var buf [16]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !utf8.ValidString(k) {
			return nil, fmt.Errorf("fhir: Build: a member name is not valid UTF-8")
		}
		b = append(b, ',')
		b = AppendString(b, k)
		b = append(b, ':')
		var err error
		var v any
		if b, v, err = buildValue(b, m[k], depth+1); err != nil {
			return nil, err
		}
		out[k] = v
	}
	return b, nil
}

// buildValue appends the JSON of v and returns v as Parse would decode it.
func buildValue(b []byte, v any, depth int) ([]byte, any, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil, nil
	case string:
		return AppendString(b, x), validString(x), nil
	case bool:
		return strconv.AppendBool(b, x), x, nil
	case json.Number:
		if x == "" {
			x = "0"
		}
		if !isJSONNumber(string(x)) {
			// The value stays out of the message: it may be PHI.
			return nil, nil, errors.New("fhir: Build: a json.Number that is not a JSON number")
		}
		return append(b, x...), x, nil
	case int:
		return number(strconv.AppendInt(b, int64(x), 10), len(b))
	case int64:
		return number(strconv.AppendInt(b, x, 10), len(b))
	case int32:
		return number(strconv.AppendInt(b, int64(x), 10), len(b))
	case uint64:
		return number(strconv.AppendUint(b, x, 10), len(b))
	case float64:
		j, err := json.Marshal(x) // encoding/json's float format, and its refusal of NaN and Inf
		if err != nil {
			return nil, nil, fmt.Errorf("fhir: Build: %w", err)
		}
		return append(b, j...), json.Number(j), nil
	case map[string]any:
		out := make(map[string]any, len(x))
		if len(x) == 0 {
			return append(b, "{}"...), out, nil
		}
		start := len(b)
		b, err := buildMembers(b, x, out, depth)
		if err != nil {
			return nil, nil, err
		}
		b[start] = '{' // the first member's comma
		return append(b, '}'), out, nil
	case []any:
		return buildArray(b, len(x), func(i int) any { return x[i] }, depth)
	case []map[string]any:
		return buildArray(b, len(x), func(i int) any { return x[i] }, depth)
	case []string:
		return buildArray(b, len(x), func(i int) any { return x[i] }, depth)
	}
	return nil, nil, fmt.Errorf("fhir: Build: unsupported value of type %T", v)
}

func buildArray(b []byte, n int, at func(int) any, depth int) ([]byte, any, error) {
	if depth > MaxDepth {
		return nil, nil, fmt.Errorf("fhir: Build: nesting deeper than %d", MaxDepth)
	}
	arr := make([]any, n)
	b = append(b, '[')
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, arr[i], err = buildValue(b, at(i), depth+1); err != nil {
			return nil, nil, err
		}
	}
	return append(b, ']'), arr, nil
}

// number returns the digits appended at b[from:] as a json.Number.
func number(b []byte, from int) ([]byte, any, error) {
	return b, json.Number(b[from:]), nil
}

// validString is s as a JSON round trip through AppendString would give
// it back: each byte of invalid UTF-8 replaced by U+FFFD.
func validString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var buf bytes.Buffer
	buf.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf.WriteRune(utf8.RuneError)
		} else {
			buf.WriteString(s[i : i+size])
		}
		i += size
	}
	return buf.String()
}

// isJSONNumber reports whether s is a number in JSON's grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(s string) bool {
	i := 0
	digits := func() int {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - start
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}
