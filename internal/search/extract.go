package search

import (
	"cmp"
	"encoding/json"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Entries are the search index rows of one resource, deduplicated and
// sorted.
type Entries struct {
	Tokens     []Token
	Strings    []String
	Dates      []Date
	References []Reference
	Numbers    []Number
	Quantities []Quantity
	URIs       []URI
	// Blind holds the tokens of parameters whose elements are encrypted
	// (see ApplyBlind); their plaintext rows are removed.
	Blind []BlindToken
}

// CompartmentParam is the reference parameter whose Patient targets make
// a resource's patient compartment in the index.
const CompartmentParam = "patient"

// Compartments lists the ids of the Patients the resource's "patient"
// parameter refers to, distinct and sorted. Token and date index rows are
// stored once per compartment, so that "patient=P&code=C" is one index
// range over (param, compartment, code) instead of an intersection of
// every P row with every C row.
func (e *Entries) Compartments() []string {
	var out []string
	for _, r := range e.References {
		if r.Param == CompartmentParam && r.TargetType == "Patient" && !slices.Contains(out, r.TargetID) {
			out = append(out, r.TargetID)
		}
	}
	slices.Sort(out)
	return out
}

// Token is an idx_token row. System is "" when the value has none.
type Token struct{ Param, System, Code string }

// String is an idx_string row: Norm is lower-cased without diacritics,
// Exact as written.
type String struct{ Param, Norm, Exact string }

// Date is an idx_date row: the closed range, in UTC, that the value covers
// at its precision. Open Period ends are MinTime and MaxTime.
type Date struct {
	Param  string
	Lo, Hi time.Time
}

// Reference is an idx_reference row: a relative reference as its type and
// id (any _history suffix dropped), an absolute one as ("", url).
type Reference struct{ Param, TargetType, TargetID string }

// Number is an idx_number row: the range implied by the value's precision
// as decimal strings (1.5 is [1.45, 1.55]); its midpoint is the value.
type Number struct {
	Param  string
	Lo, Hi string
}

// Quantity is an idx_quantity row; Code is the unit code, or the unit text
// when the quantity has no code.
type Quantity struct {
	Param, System, Code string
	Lo, Hi              string
}

// URI is an idx_uri row.
type URI struct{ Param, URI string }

// Sentinels for open date range ends.
var (
	MinTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	MaxTime = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
)

type leafKind uint8

const (
	leafOther leafKind = iota
	leafText           // string-like primitives: string, code, id, uri, ...
	leafBoolean
	leafNumber
	leafDate // date, dateTime, instant
	leafCoding
	leafCodeableConcept
	leafIdentifier
	leafContactPoint
	leafHumanName
	leafAddress
	leafPeriod
	leafTiming
	leafReference
	leafQuantity
	leafMoney
	leafRange
)

var leafKinds = map[string]leafKind{
	"string": leafText, "code": leafText, "id": leafText, "uri": leafText, "url": leafText,
	"canonical": leafText, "oid": leafText, "uuid": leafText, "markdown": leafText,
	"boolean": leafBoolean,
	"decimal": leafNumber, "integer": leafNumber, "positiveInt": leafNumber, "unsignedInt": leafNumber,
	"date": leafDate, "dateTime": leafDate, "instant": leafDate,
	"Coding": leafCoding, "CodeableConcept": leafCodeableConcept, "Identifier": leafIdentifier,
	"ContactPoint": leafContactPoint, "HumanName": leafHumanName, "Address": leafAddress,
	"Period": leafPeriod, "Timing": leafTiming, "Reference": leafReference,
	"Quantity": leafQuantity, "Age": leafQuantity, "Duration": leafQuantity, "Count": leafQuantity,
	"Distance": leafQuantity, "SimpleQuantity": leafQuantity, "MoneyQuantity": leafQuantity,
	"Money": leafMoney, "Range": leafRange,
}

// Extract returns the index entries of a resource of resourceType for every
// supported search parameter of that type. content is fhir.Resource.Content.
// Values that do not parse (a malformed date) produce no entry.
func Extract(resourceType string, content map[string]any) Entries {
	x := extractor{}
	for _, p := range extractable[resourceType] {
		x.p = p
		for i := range p.paths {
			x.path = &p.paths[i]
			x.walk(content, 0)
		}
	}
	e := &x.e
	e.Tokens = dedupe(e.Tokens, func(a, b Token) int {
		return cmp.Or(strings.Compare(a.Param, b.Param), strings.Compare(a.System, b.System), strings.Compare(a.Code, b.Code))
	})
	e.Strings = dedupe(e.Strings, func(a, b String) int {
		return cmp.Or(strings.Compare(a.Param, b.Param), strings.Compare(a.Norm, b.Norm), strings.Compare(a.Exact, b.Exact))
	})
	e.Dates = dedupe(e.Dates, func(a, b Date) int {
		return cmp.Or(strings.Compare(a.Param, b.Param), a.Lo.Compare(b.Lo), a.Hi.Compare(b.Hi))
	})
	e.References = dedupe(e.References, func(a, b Reference) int {
		return cmp.Or(strings.Compare(a.Param, b.Param), strings.Compare(a.TargetType, b.TargetType), strings.Compare(a.TargetID, b.TargetID))
	})
	e.Numbers = dedupe(e.Numbers, func(a, b Number) int {
		return cmp.Or(strings.Compare(a.Param, b.Param), strings.Compare(a.Lo, b.Lo), strings.Compare(a.Hi, b.Hi))
	})
	e.Quantities = dedupe(e.Quantities, func(a, b Quantity) int {
		return cmp.Or(strings.Compare(a.Param, b.Param), strings.Compare(a.System, b.System), strings.Compare(a.Code, b.Code),
			strings.Compare(a.Lo, b.Lo), strings.Compare(a.Hi, b.Hi))
	})
	e.URIs = dedupe(e.URIs, func(a, b URI) int {
		return cmp.Or(strings.Compare(a.Param, b.Param), strings.Compare(a.URI, b.URI))
	})
	return x.e
}

func dedupe[T any](s []T, c func(a, b T) int) []T {
	if len(s) < 2 {
		return s
	}
	slices.SortFunc(s, c)
	return slices.CompactFunc(s, func(a, b T) bool { return c(a, b) == 0 })
}

type extractor struct {
	e    Entries
	p    *Parameter
	path *compiledPath
}

func (x *extractor) walk(v any, i int) {
	if arr, ok := v.([]any); ok {
		for _, el := range arr {
			x.walk(el, i)
		}
		return
	}
	if i == len(x.path.steps) {
		x.leaf(v)
		return
	}
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	st := &x.path.steps[i]
	child, ok := m[st.Name]
	if !ok {
		return
	}
	if st.Key == "" {
		x.walk(child, i+1)
		return
	}
	if arr, ok := child.([]any); ok {
		for _, el := range arr {
			if matches(el, st) {
				x.walk(el, i+1)
			}
		}
	} else if matches(child, st) {
		x.walk(child, i+1)
	}
}

func matches(v any, st *Step) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	s, _ := m[st.Key].(string)
	return s == st.Value
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func (x *extractor) leaf(v any) {
	switch x.p.Type {
	case TypeToken:
		x.token(v)
	case TypeString:
		x.string(v)
	case TypeDate:
		x.date(v)
	case TypeReference:
		x.reference(v)
	case TypeNumber:
		if n, ok := v.(json.Number); ok && x.path.leaf == leafNumber {
			if lo, hi, ok := decimalRange(string(n)); ok {
				x.e.Numbers = append(x.e.Numbers, Number{Param: x.p.Code, Lo: lo, Hi: hi})
			}
		}
	case TypeQuantity:
		x.quantity(v)
	case TypeURI:
		if s, ok := v.(string); ok && s != "" {
			x.e.URIs = append(x.e.URIs, URI{Param: x.p.Code, URI: Clip(s)})
		}
	}
}

func (x *extractor) addToken(system, code string) {
	if code != "" {
		x.e.Tokens = append(x.e.Tokens, Token{Param: x.p.Code, System: Clip(system), Code: Clip(code)})
	}
}

func (x *extractor) coding(v any) {
	if m, ok := v.(map[string]any); ok {
		x.addToken(str(m, "system"), str(m, "code"))
	}
}

func (x *extractor) token(v any) {
	switch x.path.leaf {
	case leafText:
		s, _ := v.(string)
		x.addToken("", s)
	case leafBoolean:
		if b, ok := v.(bool); ok {
			if b {
				x.addToken("", "true")
			} else {
				x.addToken("", "false")
			}
		}
	case leafCoding:
		x.coding(v)
	case leafCodeableConcept:
		if m, ok := v.(map[string]any); ok {
			switch c := m["coding"].(type) {
			case []any:
				for _, el := range c {
					x.coding(el)
				}
			case map[string]any:
				x.coding(c)
			}
		}
	case leafIdentifier:
		if m, ok := v.(map[string]any); ok {
			x.addToken(str(m, "system"), str(m, "value"))
		}
	case leafContactPoint:
		if m, ok := v.(map[string]any); ok {
			x.addToken("", str(m, "value"))
		}
	}
}

func (x *extractor) addString(s string) {
	if s != "" {
		x.e.Strings = append(x.e.Strings, String{Param: x.p.Code, Norm: Clip(Normalize(s)), Exact: Clip(s)})
	}
}

func (x *extractor) strings(v any) {
	switch t := v.(type) {
	case string:
		x.addString(t)
	case []any:
		for _, el := range t {
			if s, ok := el.(string); ok {
				x.addString(s)
			}
		}
	}
}

func (x *extractor) string(v any) {
	switch x.path.leaf {
	case leafText:
		s, _ := v.(string)
		x.addString(s)
	case leafHumanName:
		if m, ok := v.(map[string]any); ok {
			for _, k := range [...]string{"family", "given", "prefix", "suffix", "text"} {
				x.strings(m[k])
			}
		}
	case leafAddress:
		if m, ok := v.(map[string]any); ok {
			for _, k := range [...]string{"line", "city", "district", "state", "postalCode", "country", "text"} {
				x.strings(m[k])
			}
		}
	}
}

func (x *extractor) addDate(lo, hi time.Time) {
	x.e.Dates = append(x.e.Dates, Date{Param: x.p.Code, Lo: lo, Hi: hi})
}

func (x *extractor) date(v any) {
	switch x.path.leaf {
	case leafDate:
		if s, ok := v.(string); ok {
			if lo, hi, ok := DateRange(s); ok {
				x.addDate(lo, hi)
			}
		}
	case leafPeriod:
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		lo, hi := MinTime, MaxTime
		start, end := str(m, "start"), str(m, "end")
		if start == "" && end == "" {
			return
		}
		if start != "" {
			l, _, ok := DateRange(start)
			if !ok {
				return
			}
			lo = l
		}
		if end != "" {
			_, h, ok := DateRange(end)
			if !ok {
				return
			}
			hi = h
		}
		x.addDate(lo, hi)
	case leafTiming:
		if m, ok := v.(map[string]any); ok {
			if ev, ok := m["event"].([]any); ok {
				for _, e := range ev {
					if s, ok := e.(string); ok {
						if lo, hi, ok := DateRange(s); ok {
							x.addDate(lo, hi)
						}
					}
				}
			}
		}
	}
}

func (x *extractor) reference(v any) {
	var ref string
	switch x.path.leaf {
	case leafReference:
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		ref = str(m, "reference")
	case leafText: // canonical, uri
		ref, _ = v.(string)
	default:
		return
	}
	typ, id, ok := splitReference(ref)
	if !ok {
		return
	}
	if x.path.target != "" && typ != x.path.target {
		if typ != "" {
			return
		}
		// An absolute URL: keep it only when its type segment matches.
		if t, _, ok := splitReference(lastSegments(id)); !ok || t != x.path.target {
			return
		}
	}
	x.e.References = append(x.e.References, Reference{Param: x.p.Code, TargetType: typ, TargetID: Clip(id)})
}

// lastSegments returns "Type/id" from the end of an absolute URL.
func lastSegments(u string) string {
	u = stripHistory(u)
	i := strings.LastIndexByte(u, '/')
	if i <= 0 {
		return ""
	}
	j := strings.LastIndexByte(u[:i], '/')
	return u[j+1:]
}

func stripHistory(s string) string {
	if i := strings.Index(s, "/_history/"); i >= 0 {
		return s[:i]
	}
	return s
}

// splitReference splits a relative "Type/id[/_history/v]" into type and id;
// an absolute reference (with a scheme) is ("", ref). Contained ("#x") and
// empty references report false.
func splitReference(ref string) (typ, id string, ok bool) {
	if ref == "" || ref[0] == '#' {
		return "", "", false
	}
	if strings.Contains(ref, ":") {
		return "", ref, true
	}
	ref = stripHistory(ref)
	i := strings.IndexByte(ref, '/')
	if i <= 0 || i == len(ref)-1 || strings.IndexByte(ref[i+1:], '/') >= 0 || strings.IndexByte(ref, '?') >= 0 {
		return "", "", false
	}
	typ, id = ref[:i], ref[i+1:]
	if typ[0] < 'A' || typ[0] > 'Z' {
		return "", "", false
	}
	return typ, id, true
}

func (x *extractor) quantity(v any) {
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	switch x.path.leaf {
	case leafQuantity:
		n, ok := m["value"].(json.Number)
		if !ok {
			return
		}
		lo, hi, ok := decimalRange(string(n))
		if !ok {
			return
		}
		code := str(m, "code")
		if code == "" {
			code = str(m, "unit")
		}
		x.e.Quantities = append(x.e.Quantities, Quantity{Param: x.p.Code, System: Clip(str(m, "system")), Code: Clip(code), Lo: lo, Hi: hi})
	case leafMoney:
		n, ok := m["value"].(json.Number)
		if !ok {
			return
		}
		if lo, hi, ok := decimalRange(string(n)); ok {
			x.e.Quantities = append(x.e.Quantities, Quantity{Param: x.p.Code, System: "urn:iso:std:iso:4217", Code: str(m, "currency"), Lo: lo, Hi: hi})
		}
	case leafRange:
		low, _ := m["low"].(map[string]any)
		high, _ := m["high"].(map[string]any)
		ln, ok1 := low["value"].(json.Number)
		hn, ok2 := high["value"].(json.Number)
		if !ok1 || !ok2 {
			return // a half-open Range has no finite numeric bounds to index
		}
		lo, _, ok1 := decimalRange(string(ln))
		_, hi, ok2 := decimalRange(string(hn))
		if !ok1 || !ok2 {
			return
		}
		code := str(low, "code")
		if code == "" {
			code = str(low, "unit")
		}
		x.e.Quantities = append(x.e.Quantities, Quantity{Param: x.p.Code, System: Clip(str(low, "system")), Code: Clip(code), Lo: lo, Hi: hi})
	}
}

// Normalize lower-cases s and strips diacritics (NFD, then drops
// non-spacing marks), as the string index and string searches compare.
func Normalize(s string) string {
	ascii, lower := true, true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
		if c >= 'A' && c <= 'Z' {
			lower = false
		}
	}
	if ascii {
		if lower {
			return s
		}
		return strings.ToLower(s)
	}
	d := norm.NFD.String(s)
	var b strings.Builder
	b.Grow(len(d))
	for _, r := range d {
		if unicode.Is(unicode.Mn, r) {
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// MaxIndexed is the most bytes of a value the index keeps: btree entries
// are bounded (about 2.7 KB), and nobody searches on more. Longer values
// are indexed by their first MaxIndexed bytes, and search values are cut
// the same way, so a search on a longer value can also match a different
// value that shares those first bytes, and :contains does not see past them.
const MaxIndexed = 512

// Clip cuts s to at most MaxIndexed bytes on a UTF-8 boundary.
func Clip(s string) string {
	if len(s) <= MaxIndexed {
		return s
	}
	i := MaxIndexed
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}
