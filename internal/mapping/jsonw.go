package mapping

import (
	"encoding/json"
	"slices"
	"strconv"

	"github.com/fhirgate/fhirgate/internal/fhir"
)

// appendJSON appends the compact JSON of a value built by the converters
// (map[string]any, []any, string, json.Number, bool, integers, floats,
// nil). Object members are sorted and strings escaped exactly as
// encoding/json does with HTML escaping off, so the output is what
// json.Marshal gave, without its reflection and allocations.
func appendJSON(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return fhir.AppendString(b, x), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case json.Number:
		if x == "" {
			return append(b, '0'), nil
		}
		return append(b, x...), nil
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case uint64:
		return strconv.AppendUint(b, x, 10), nil
	case map[string]any:
		if len(x) == 0 {
			return append(b, "{}"...), nil
		}
		start := len(b)
		b, err := appendMembers(b, x)
		if err != nil {
			return nil, err
		}
		b[start] = '{' // the first member's comma
		return append(b, '}'), nil
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendJSON(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	}
	// Anything else (floats and other YAML constants): encoding/json.
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, j...), nil
}

// appendMembers appends ,"key":value for each member of m, keys sorted.
func appendMembers(b []byte, m map[string]any) ([]byte, error) {
	var buf [16]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = append(b, ',')
		b = fhir.AppendString(b, k)
		b = append(b, ':')
		var err error
		if b, err = appendJSON(b, m[k]); err != nil {
			return nil, err
		}
	}
	return b, nil
}
