package search

import (
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fhirgate/fhirgate/internal/fhir"
)

// Query is a parsed search request.
type Query struct {
	Type        string
	Params      []Param // conditions, ANDed
	Count       int     // page size: default 20, at most 1000
	Sort        []SortKey
	Total       string // "accurate" (also for "estimate"), "none", or "" (not asked: counted only when free)
	Includes    []Include
	RevIncludes []Include
	Elements    []string // _elements, recorded for the caller
	Summary     string   // _summary
	Format      string   // _format
	Pretty      string   // _pretty
	Ignored     []string // unknown or unsupported parameters skipped in lenient mode
}

// Param is one search condition: its values are ORed.
type Param struct {
	Name     string // parameter code
	Modifier string // "", "not", "missing", "exact", "contains", "text", "below", "above", or a resource type
	Values   []Value
	def      *Parameter
	// blind: the parameter is served by idx_blind (ApplyBlind), matching
	// any of tokens.
	blind  bool
	tokens [][]byte
}

// Value is one parsed value of a Param.
type Value struct {
	Raw    string // as given, for Canonical
	Prefix string // number, date and quantity: eq ne gt lt ge le sa eb ap

	System, Code string // token; quantity unit
	AnySystem    bool   // token "code" (no "|"): any system
	AnyCode      bool   // token "system|": any code in the system

	Lo, Hi time.Time // date: the search value's range
	Number string    // number and quantity: the decimal

	TargetType, TargetID string // reference

	Missing bool // :missing=true
}

// SortKey is one _sort key.
type SortKey struct {
	Param string
	Desc  bool
}

// Include is one _include or _revinclude: SourceType:Param[:TargetType].
// Param is "*" for every reference parameter.
type Include struct {
	SourceType, Param, TargetType string
	Iterate                       bool
}

// Page size bounds.
const (
	DefaultCount = 20
	MaxCount     = 1000
)

var prefixes = map[string]bool{"eq": true, "ne": true, "gt": true, "lt": true, "ge": true, "le": true, "sa": true, "eb": true, "ap": true}

func invalid(name, format string, args ...any) error {
	return fhir.Errorf(fhir.KindInvalid, "", "search parameter %q: "+format, append([]any{name}, args...)...)
}

// Parse reads the search parameters of a search on resourceType. In strict
// mode an unknown or unsupported parameter is an error; otherwise it is
// recorded in Ignored. Chained parameters, _has and unknown modifiers are
// always errors: ignoring them would broaden the results. Errors are
// fhir.KindInvalid and name the parameter, never its value.
func Parse(resourceType string, values url.Values, strict bool) (*Query, error) {
	if !IsResourceType(resourceType) {
		return nil, fhir.Errorf(fhir.KindInvalid, "", "unknown resource type %q", resourceType)
	}
	q := &Query{Type: resourceType, Count: DefaultCount}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		for _, raw := range values[key] {
			if err := q.add(key, raw, strict); err != nil {
				return nil, err
			}
		}
	}
	return q, nil
}

func (q *Query) add(key, raw string, strict bool) error {
	name, modifier, _ := strings.Cut(key, ":")
	switch name {
	case "_count":
		n, err := strconv.Atoi(raw)
		if err != nil || n < 0 {
			return invalid(key, "must be a non-negative integer")
		}
		q.Count = min(n, MaxCount)
		return nil
	case "_sort":
		q.Sort = q.Sort[:0]
		for _, s := range strings.Split(raw, ",") {
			k := SortKey{Param: s}
			if strings.HasPrefix(s, "-") {
				k = SortKey{Param: s[1:], Desc: true}
			}
			p := Lookup(q.Type, k.Param)
			if p == nil || p.Unsupported != "" || (p.column == "" && p.Type != TypeDate && p.Type != TypeString && p.Type != TypeToken) {
				return invalid(key, "cannot sort by %q", k.Param)
			}
			q.Sort = append(q.Sort, k)
		}
		return nil
	case "_total":
		switch raw {
		case "accurate", "estimate":
			q.Total = "accurate"
		case "none":
			q.Total = "none"
		default:
			return invalid(key, "must be none, estimate or accurate")
		}
		return nil
	case "_include", "_revinclude":
		inc, err := q.parseInclude(key, name, modifier, raw)
		if err != nil {
			return err
		}
		if name == "_include" {
			q.Includes = append(q.Includes, inc)
		} else {
			q.RevIncludes = append(q.RevIncludes, inc)
		}
		return nil
	case "_elements":
		for _, e := range strings.Split(raw, ",") {
			if e = strings.TrimSpace(e); e != "" {
				q.Elements = append(q.Elements, e)
			}
		}
		return nil
	case "_summary":
		switch raw {
		case "true", "false", "text", "data", "count":
			q.Summary = raw
			return nil
		}
		return invalid(key, "must be true, false, text, data or count")
	case "_format":
		q.Format = raw
		return nil
	case "_pretty":
		q.Pretty = raw
		return nil
	case "_has":
		return invalid(key, "_has is not supported")
	}
	if strings.Contains(name, ".") || strings.Contains(modifier, ".") {
		return invalid(key, "chained parameters are not supported")
	}
	def := Lookup(q.Type, name)
	if def == nil || def.Unsupported != "" {
		if strict {
			if def == nil {
				return fhir.Errorf(fhir.KindInvalid, "", "unknown search parameter %q for %s", name, q.Type)
			}
			return fhir.Errorf(fhir.KindInvalid, "", "search parameter %q for %s is not supported", name, q.Type)
		}
		q.Ignored = append(q.Ignored, key)
		return nil
	}
	if raw == "" {
		q.Ignored = append(q.Ignored, key) // an empty value is no condition
		return nil
	}
	p := Param{Name: name, Modifier: modifier, def: def}
	if err := p.checkModifier(key); err != nil {
		return err
	}
	for _, v := range splitRaw(raw) {
		val, err := p.parseValue(key, v)
		if err != nil {
			return err
		}
		p.Values = append(p.Values, val)
	}
	q.Params = append(q.Params, p)
	return nil
}

func (p *Param) checkModifier(key string) error {
	m := p.Modifier
	if m == "" || m == "missing" {
		return nil
	}
	ok := false
	switch p.def.Type {
	case TypeToken:
		ok = m == "not" && p.def.column == ""
	case TypeString:
		ok = m == "exact" || m == "contains"
	case TypeURI:
		ok = m == "below" || m == "above"
	case TypeReference:
		ok = IsResourceType(m)
	}
	if !ok {
		return invalid(key, "modifier %q is not supported", m)
	}
	return nil
}

func (q *Query) parseInclude(key, name, modifier, raw string) (Include, error) {
	inc := Include{}
	switch modifier {
	case "":
	case "iterate", "recurse":
		inc.Iterate = true
	default:
		return inc, invalid(key, "modifier %q is not supported", modifier)
	}
	if raw == "*" {
		return Include{SourceType: q.Type, Param: "*", Iterate: inc.Iterate}, nil
	}
	parts := strings.Split(raw, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return inc, invalid(key, "must be SourceType:parameter[:TargetType]")
	}
	inc.SourceType, inc.Param = parts[0], parts[1]
	if !IsResourceType(inc.SourceType) {
		return inc, invalid(key, "unknown resource type %q", inc.SourceType)
	}
	if inc.Param != "*" {
		p := Lookup(inc.SourceType, inc.Param)
		if p == nil || p.Type != TypeReference || p.Unsupported != "" {
			return inc, invalid(key, "%q is not a reference parameter of %s", inc.Param, inc.SourceType)
		}
	}
	if len(parts) == 3 {
		inc.TargetType = parts[2]
		if !IsResourceType(inc.TargetType) {
			return inc, invalid(key, "unknown resource type %q", inc.TargetType)
		}
	}
	if name == "_include" && inc.SourceType != q.Type && !inc.Iterate {
		return inc, invalid(key, "source type must be %s", q.Type)
	}
	return inc, nil
}

// splitEscaped splits s on sep, honouring FHIR's backslash escapes (\, \|
// \$ \\), which it removes.
func splitEscaped(s string, sep byte) []string {
	if strings.IndexByte(s, '\\') < 0 {
		return strings.Split(s, string(sep))
	}
	var out []string
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case c == sep:
			out = append(out, b.String())
			b.Reset()
		default:
			b.WriteByte(c)
		}
	}
	return append(out, b.String())
}

// splitRaw splits s on unescaped commas; the parts keep their escapes.
func splitRaw(s string) []string {
	var out []string
	for {
		before, after, found := cutUnescaped(s, ',')
		out = append(out, before)
		if !found {
			return out
		}
		s = after
	}
}

// cutUnescaped cuts s at the first unescaped sep; the parts keep escapes.
func cutUnescaped(s string, sep byte) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func unescape(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	return strings.Join(splitEscaped(s, 0), "")
}

func (p *Param) parseValue(key, raw string) (Value, error) {
	v := Value{Raw: raw}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c < 0x20 || c == 0x7f {
			return v, invalid(key, "control characters are not allowed in search values")
		}
	}
	if !utf8.ValidString(raw) {
		return v, invalid(key, "the value is not valid UTF-8")
	}
	if p.Modifier == "missing" {
		switch raw {
		case "true":
			v.Missing = true
		case "false":
		default:
			return v, invalid(key, ":missing must be true or false")
		}
		return v, nil
	}
	switch p.def.Type {
	case TypeToken:
		if p.def.column == "id" {
			v.Code = unescape(raw)
			return v, nil
		}
		sys, code, found := cutUnescaped(raw, '|')
		if !found {
			v.AnySystem, v.Code = true, unescape(raw)
		} else {
			v.System, v.Code = unescape(sys), unescape(code)
			v.AnyCode = code == ""
			if v.AnyCode && v.System == "" {
				return v, invalid(key, "token must name a system or a code")
			}
		}
	case TypeString:
		v.Code = unescape(raw)
	case TypeURI:
		v.Code = unescape(raw)
	case TypeDate:
		v.Prefix, raw = cutPrefix(raw)
		lo, hi, ok := DateRange(raw)
		if !ok {
			return v, invalid(key, "invalid date")
		}
		v.Lo, v.Hi = lo, hi
	case TypeNumber:
		v.Prefix, raw = cutPrefix(raw)
		if _, _, ok := decimalRange(raw); !ok {
			return v, invalid(key, "invalid number")
		}
		v.Number = raw
	case TypeQuantity:
		v.Prefix, raw = cutPrefix(raw)
		num, rest, found := cutUnescaped(raw, '|')
		if _, _, ok := decimalRange(num); !ok {
			return v, invalid(key, "invalid quantity")
		}
		v.Number = num
		if found {
			sys, code, ok := cutUnescaped(rest, '|')
			if !ok {
				return v, invalid(key, "quantity must be number|system|code")
			}
			v.System, v.Code = unescape(sys), unescape(code)
		}
	case TypeReference:
		s := unescape(raw)
		switch {
		case strings.Contains(s, "://") || strings.HasPrefix(s, "urn:"):
			v.TargetID = s
		case strings.Contains(s, "/"):
			t, id, ok := splitReference(s)
			if !ok || !IsResourceType(t) {
				return v, invalid(key, "invalid reference")
			}
			v.TargetType, v.TargetID = t, id
		default:
			v.TargetID = s
			if len(p.def.Targets) == 1 {
				v.TargetType = p.def.Targets[0]
			}
		}
		if p.Modifier != "" {
			if v.TargetType != "" && v.TargetType != p.Modifier {
				return v, invalid(key, "reference type does not match the :%s modifier", p.Modifier)
			}
			v.TargetType = p.Modifier
		}
		if v.TargetID == "" {
			return v, invalid(key, "invalid reference")
		}
	}
	return v, nil
}

// cutPrefix splits a comparison prefix from a value. A value that starts
// with two letters that are not a prefix is left whole (and will then fail
// to parse as a date or number).
func cutPrefix(s string) (prefix, rest string) {
	if len(s) >= 2 && prefixes[s[:2]] {
		return s[:2], s[2:]
	}
	return "", s
}

// Canonical returns the parameters the query actually uses, normalized, for
// self and next links.
func (q *Query) Canonical() url.Values {
	out := url.Values{}
	for _, p := range q.Params {
		key := p.Name
		if p.Modifier != "" {
			key += ":" + p.Modifier
		}
		raws := make([]string, len(p.Values))
		for i, v := range p.Values {
			raws[i] = v.Raw
		}
		out.Add(key, strings.Join(raws, ","))
	}
	if len(q.Sort) > 0 {
		keys := make([]string, len(q.Sort))
		for i, k := range q.Sort {
			keys[i] = k.Param
			if k.Desc {
				keys[i] = "-" + k.Param
			}
		}
		out.Set("_sort", strings.Join(keys, ","))
	}
	out.Set("_count", strconv.Itoa(q.Count))
	if q.Total != "" {
		out.Set("_total", q.Total)
	}
	for _, list := range []struct {
		name string
		incs []Include
	}{{"_include", q.Includes}, {"_revinclude", q.RevIncludes}} {
		for _, inc := range list.incs {
			key := list.name
			if inc.Iterate {
				key += ":iterate"
			}
			val := inc.SourceType + ":" + inc.Param
			if inc.TargetType != "" {
				val += ":" + inc.TargetType
			}
			out.Add(key, val)
		}
	}
	if len(q.Elements) > 0 {
		out.Set("_elements", strings.Join(q.Elements, ","))
	}
	if q.Summary != "" {
		out.Set("_summary", q.Summary)
	}
	return out
}
