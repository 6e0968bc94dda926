package mapping

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Result compares the resources of two FHIR Bundles as multisets of leaf
// values (strings, codes, dates, numbers, booleans) keyed by
// ResourceType.element.path, per resource type.
type Result struct {
	Expected int // leaves in the expected bundle
	Got      int // leaves in ours
	Matched  int // leaves present in both (multiset intersection)
	// Missing counts, per resource type, the expected leaves we lack.
	Missing map[string]int
	Err     string // a bundle could not be read
}

// Recall is the share of expected leaves present in ours.
func (r Result) Recall() float64 { return ratio(r.Matched, r.Expected) }

// Precision is the share of our leaves present in the expected bundle.
func (r Result) Precision() float64 { return ratio(r.Matched, r.Got) }

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Reason says in one line where most missing leaves are.
func (r Result) Reason() string {
	if r.Err != "" {
		return r.Err
	}
	type kv struct {
		k string
		n int
	}
	var list []kv
	for k, n := range r.Missing {
		list = append(list, kv{k, n})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].n > list[j].n || (list[i].n == list[j].n && list[i].k < list[j].k) })
	var parts []string
	for i, x := range list {
		if i == 3 {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d", x.k, x.n))
	}
	return fmt.Sprintf("missing %d of %d leaves, mostly %s", r.Expected-r.Matched, r.Expected, strings.Join(parts, ", "))
}

// Score compares two Bundles. Ids, fullUrls, reference values, meta and
// narrative are ignored (ids differ between converters). Values are
// compared as strings, except that a dateTime or instant with a time and
// an offset matches the same instant written in another offset.
func Score(expected, got []byte) Result {
	var r Result
	exp, err := leaves(expected)
	if err != nil {
		r.Err = "expected bundle: " + err.Error()
		return r
	}
	ours, err := leaves(got)
	if err != nil {
		r.Err = "our bundle: " + err.Error()
		return r
	}
	r.Missing = map[string]int{}
	for k, n := range exp {
		r.Expected += n
		m := min(n, ours[k])
		r.Matched += m
		if n > m {
			r.Missing[k[:strings.IndexByte(k, '.')]] += n - m
		}
	}
	for _, n := range ours {
		r.Got += n
	}
	return r
}

func leaves(b []byte) (map[string]int, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var bundle struct {
		Entry []struct {
			Resource map[string]any `json:"resource"`
		} `json:"entry"`
	}
	if err := dec.Decode(&bundle); err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, e := range bundle.Entry {
		rt, _ := e.Resource["resourceType"].(string)
		if rt == "" {
			continue
		}
		for k, v := range e.Resource {
			switch k {
			case "resourceType", "id", "meta", "text", "contained":
				continue
			}
			flatten(out, rt+"."+k, k, v)
		}
	}
	return out, nil
}

func flatten(out map[string]int, path, key string, v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if k == "reference" || k == "fullUrl" {
				continue
			}
			flatten(out, path+"."+k, k, c)
		}
	case []any:
		for _, c := range x {
			flatten(out, path, key, c)
		}
	case string:
		out[path+"\x00"+normalise(x)]++
	case json.Number:
		out[path+"\x00"+x.String()]++
	case bool:
		if x {
			out[path+"\x00true"]++
		} else {
			out[path+"\x00false"]++
		}
	}
}

// normalise renders a dateTime with time and offset as the UTC instant, so
// the same instant matches in any offset; everything else is unchanged.
func normalise(s string) string {
	if len(s) < 20 || s[4] != '-' || s[10] != 'T' {
		return s
	}
	for _, layout := range []string{time.RFC3339Nano, time.RFC3339} {
		if t, err := time.Parse(layout, s); err == nil {
			return "@" + t.UTC().Format(time.RFC3339Nano)
		}
	}
	return s
}
