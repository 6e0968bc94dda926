// Package validate checks a parsed FHIR R4 resource against the structure
// of the base specification (package spec) before it is written: resource
// type, element names, cardinality, choice elements, primitive formats,
// primitive extensions, reference syntax and targets, and contained or
// nested resources (Bundle entries, Parameters), recursively.
//
// It reports one OperationOutcome issue per problem, each naming the
// element's FHIRPath. Diagnostics name the rule and the expected format and
// must never quote the offending value: resources carry PHI. The package
// only reads the decoded content; it never changes a resource (decimal
// precision and everything else stay exactly as received). It does not
// check terminology bindings, invariants or profiles.
package validate

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/spec"
)

// MaxIssues bounds the issues reported for one resource; the walk stops
// when it is reached.
const MaxIssues = 50

// Issue codes used by the validator.
const (
	codeStructure = "structure"
	codeRequired  = "required"
	codeValue     = "value"
	codeInvalid   = "invalid"
)

// Resource validates r against the R4 structure definitions. It returns nil
// or a *fhir.Error of kind fhir.KindInvalid holding one issue per problem
// (at most MaxIssues), sorted by expression.
func Resource(r *fhir.Resource) error {
	if r == nil || r.Content == nil {
		return fhir.Errorf(fhir.KindInvalid, "", "no resource content").WithCode(codeStructure)
	}
	var v validator
	v.path = v.buf[:0]
	v.resource(r.Content, true)
	if len(v.issues) == 0 {
		return nil
	}
	sort.SliceStable(v.issues, func(i, j int) bool {
		return v.issues[i].Expression[0] < v.issues[j].Expression[0]
	})
	return &fhir.Error{Kind: fhir.KindInvalid, Issues: v.issues}
}

// seg is one step of the FHIRPath being walked; it is rendered to a string
// only when an issue is reported.
type seg struct {
	name   string
	ofType string // choice type, rendered as name.ofType(T)
	idx    int    // -1 when not in an array
}

type validator struct {
	path   []seg
	buf    [24]seg
	issues []fhir.Issue
}

func (v *validator) full() bool { return len(v.issues) >= MaxIssues }

func (v *validator) push(name, ofType string, idx int) {
	v.path = append(v.path, seg{name: name, ofType: ofType, idx: idx})
}

func (v *validator) pop() { v.path = v.path[:len(v.path)-1] }

// expr renders the current path plus an optional last step.
func (v *validator) expr(last string) string {
	var b strings.Builder
	for i, s := range v.path {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.name)
		if s.ofType != "" {
			b.WriteString(".ofType(")
			b.WriteString(s.ofType)
			b.WriteByte(')')
		}
		if s.idx >= 0 {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.idx))
			b.WriteByte(']')
		}
	}
	if last != "" {
		if len(v.path) > 0 {
			b.WriteByte('.')
		}
		b.WriteString(last)
	}
	return b.String()
}

func (v *validator) add(code, last, diagnostics string) {
	if v.full() {
		return
	}
	v.issues = append(v.issues, fhir.Issue{
		Severity: "error", Code: code, Diagnostics: diagnostics, Expression: []string{v.expr(last)},
	})
}

// resource validates a resource object: at the root (the path is empty) or
// nested (contained, Bundle.entry.resource, ...; the path names the slot).
func (v *validator) resource(obj map[string]any, root bool) {
	rt, ok := obj["resourceType"].(string)
	if !ok {
		v.add(codeRequired, "resourceType", "a resource needs a resourceType string")
		return
	}
	s, ok := spec.StructOf(rt)
	if !ok || s.Kind != spec.KindResource {
		v.add(codeInvalid, "resourceType", "unknown resource type")
		return
	}
	if root {
		v.push(rt, "", -1)
		defer v.pop()
	}
	// Resource.id is typed string in the snapshots; ids have the id format.
	// An empty id is reported once, by the primitive check.
	if id, ok := obj["id"].(string); ok && id != "" && !fhir.ValidID(id) {
		v.add(codeValue, "id", "invalid resource id: expected 1-64 characters from A-Z a-z 0-9 - .")
	}
	v.object(obj, s, true)
}

// object validates the members of a JSON object against s.
func (v *validator) object(obj map[string]any, s *spec.Struct, resourceRoot bool) {
	if len(obj) == 0 {
		v.add(codeStructure, "", "empty element: objects must have content")
		return
	}
	// Choice elements already seen in this object, to refuse a second value.
	var seenBuf [4]seen
	seenChoice := seenBuf[:0]
	for k, val := range obj {
		if v.full() {
			return
		}
		if k == "resourceType" && resourceRoot {
			continue
		}
		if len(k) > 1 && k[0] == '_' {
			name := k[1:]
			m, ok := s.Member(name)
			if !ok || !m.Primitive {
				v.add(codeStructure, k, "unknown element: a _name member extends a primitive element of that name")
				continue
			}
			sib, hasSib := obj[name]
			if m.Element.Choice && !hasSib {
				seenChoice = v.choice(seenChoice, m, name)
			}
			v.primitiveExt(m, name, k, val, sib, hasSib)
			continue
		}
		m, ok := s.Member(k)
		if !ok {
			if k == "resourceType" {
				v.add(codeStructure, k, "resourceType is allowed only at the root of a resource")
			} else {
				v.add(codeStructure, k, "unknown element for "+s.Name)
			}
			continue
		}
		if m.Element.Choice {
			seenChoice = v.choice(seenChoice, m, k)
		}
		v.value(m, k, val, obj)
	}
	for _, el := range s.Required {
		if !present(obj, el) {
			name := el.Name
			if el.Choice {
				name += "[x]"
			}
			v.add(codeRequired, name, "missing required element (minimum cardinality "+strconv.Itoa(el.Min)+")")
		}
	}
}

type seen struct {
	el   *spec.Element
	name string
}

// choice records a value for a choice element and reports a second one.
func (v *validator) choice(list []seen, m *spec.Member, name string) []seen {
	for _, s := range list {
		if s.el == m.Element {
			if s.name != name {
				v.add(codeInvalid, m.Element.Name+"[x]", "a choice element takes only one value, of one type")
			}
			return list
		}
	}
	return append(list, seen{el: m.Element, name: name})
}

func present(obj map[string]any, el *spec.Element) bool {
	for _, n := range el.JSONNames() {
		if _, ok := obj[n]; ok {
			return true
		}
		if _, ok := obj["_"+n]; ok {
			return true
		}
	}
	return false
}

// value validates the member k (meaning m) with value val inside parent.
func (v *validator) value(m *spec.Member, k string, val any, parent map[string]any) {
	el := m.Element
	ofType := ""
	name := k
	if el.Choice {
		name, ofType = el.Name, m.Type
	}
	if !el.IsArray() {
		if _, isArr := val.([]any); isArr {
			v.add(codeStructure, k, "element does not repeat (maximum cardinality 1): expected a single value, not an array")
			return
		}
		v.push(name, ofType, -1)
		if val == nil {
			v.add(codeStructure, "", "empty element: null is not a value")
		} else {
			v.item(m, val)
		}
		v.pop()
		return
	}
	arr, ok := val.([]any)
	if !ok {
		v.add(codeStructure, k, "element repeats: expected a JSON array")
		return
	}
	if len(arr) == 0 {
		v.add(codeStructure, k, "empty element: arrays must have at least one item")
		return
	}
	if el.Max > 0 && len(arr) > el.Max {
		v.add(codeStructure, k, "too many items (maximum cardinality "+strconv.Itoa(el.Max)+")")
	}
	var ext []any
	if m.Primitive {
		ext, _ = parent["_"+k].([]any)
	}
	for i, it := range arr {
		if v.full() {
			return
		}
		v.push(name, ofType, i)
		if it == nil {
			if i >= len(ext) || ext[i] == nil {
				v.add(codeStructure, "", "empty element: null is allowed only where the _name array has an extension at the same index")
			}
		} else {
			v.item(m, it)
		}
		v.pop()
	}
}

// item validates one (non-null) value of type m.Type at the current path.
func (v *validator) item(m *spec.Member, val any) {
	if m.Primitive {
		if msg := primitive(m.Type, val); msg != "" {
			v.add(codeValue, "", msg)
		}
		return
	}
	obj, ok := val.(map[string]any)
	if !ok {
		v.add(codeStructure, "", "expected a JSON object of type "+m.Type)
		return
	}
	if k := m.Struct.Kind; k == spec.KindResource || k == spec.KindAbstractResource {
		if rt, _ := obj["resourceType"].(string); k == spec.KindResource && rt != "" && rt != m.Type {
			v.add(codeInvalid, "resourceType", "resource type not allowed here; expected "+m.Type)
			return
		}
		v.resource(obj, false)
		return
	}
	v.object(obj, m.Struct, false)
	if m.Type == "Reference" {
		v.reference(obj, m.Element.TargetProfiles)
	}
}

// primitiveExt validates the _name companion of primitive element name.
func (v *validator) primitiveExt(m *spec.Member, name, k string, val, sib any, hasSib bool) {
	el := m.Element
	ofType := ""
	if el.Choice {
		name, ofType = el.Name, m.Type
	}
	if !el.IsArray() {
		obj, ok := val.(map[string]any)
		if !ok {
			v.add(codeStructure, k, "expected a JSON object with id and/or extension")
			return
		}
		v.push(name, ofType, -1)
		v.object(obj, m.Struct, false)
		v.pop()
		return
	}
	arr, ok := val.([]any)
	if !ok {
		v.add(codeStructure, k, "element repeats: expected a JSON array aligned with the values")
		return
	}
	if len(arr) == 0 {
		v.add(codeStructure, k, "empty element: arrays must have at least one item")
		return
	}
	if hasSib {
		if vals, ok := sib.([]any); ok && len(vals) != len(arr) {
			v.add(codeStructure, k, "the _name array must have one item per value")
		}
	}
	for i, it := range arr {
		if v.full() {
			return
		}
		if it == nil {
			if !hasSib {
				v.push(name, ofType, i)
				v.add(codeStructure, "", "empty element: null in a _name array needs a value at the same index")
				v.pop()
			}
			continue
		}
		obj, ok := it.(map[string]any)
		v.push(name, ofType, i)
		if !ok {
			v.add(codeStructure, "", "expected a JSON object with id and/or extension")
		} else {
			v.object(obj, m.Struct, false)
		}
		v.pop()
	}
}

// reference checks Reference.reference syntax and, for relative
// references, the target type. The path is at the Reference.
func (v *validator) reference(obj map[string]any, targets []string) {
	ref, ok := obj["reference"].(string)
	if !ok || ref == "" {
		return // absent, or already reported as a bad primitive
	}
	typ := ""
	switch {
	case ref[0] == '#':
		return // a contained resource, or "#" for the container
	case strings.HasPrefix(ref, "urn:uuid:"):
		if !validUUID(ref) {
			v.add(codeValue, "reference", "invalid reference: expected urn:uuid: followed by a lower-case UUID")
		}
		return
	case strings.HasPrefix(ref, "urn:oid:"):
		if !validOID(ref) {
			v.add(codeValue, "reference", "invalid reference: expected urn:oid: followed by a dotted OID")
		}
		return
	case strings.Contains(ref, "://"):
		if strings.ContainsAny(ref, " \t\r\n") {
			v.add(codeValue, "reference", "invalid reference: an absolute URL must not contain whitespace")
		}
		return
	default:
		if q := strings.IndexByte(ref, '?'); q >= 0 {
			typ = ref[:q]
			if !spec.IsResourceType(typ) {
				v.add(codeValue, "reference", "invalid conditional reference: expected Type?query with a known resource type")
				return
			}
			break
		}
		r, ok := fhir.ParseReference(ref)
		if !ok || r.Base != "" || !spec.IsResourceType(r.Type) {
			v.add(codeValue, "reference", "invalid reference: expected Type/id, Type/id/_history/vid, an absolute URL, urn:uuid:, urn:oid:, #id or Type?query")
			return
		}
		typ = r.Type
	}
	if len(targets) == 0 {
		return
	}
	for _, t := range targets {
		if t == typ || t == "Resource" {
			return
		}
	}
	v.add(codeInvalid, "reference", "reference to a resource type not allowed here; expected one of: "+strings.Join(targets, ", "))
}

// primitive checks a JSON value against the R4 format of a primitive type
// and returns "" or a message naming the rule (never the value).
func primitive(typ string, val any) string {
	switch typ {
	case "boolean":
		if _, ok := val.(bool); !ok {
			return "invalid boolean: expected JSON true or false"
		}
		return ""
	case "decimal":
		if _, ok := val.(json.Number); !ok {
			return "invalid decimal: expected a JSON number"
		}
		return ""
	case "integer", "positiveInt", "unsignedInt":
		n, ok := val.(json.Number)
		if !ok {
			return "invalid " + typ + ": expected a JSON number"
		}
		return integer(typ, string(n))
	}
	s, ok := val.(string)
	if !ok {
		return "invalid " + typ + ": expected a JSON string"
	}
	if s == "" {
		return "empty element: " + typ + " values must not be empty strings"
	}
	switch typ {
	case "string", "markdown":
		if !validChars(s) {
			return "invalid " + typ + ": control characters other than tab, CR and LF are not allowed"
		}
		return ""
	case "code":
		if !validCode(s) {
			return "invalid code: expected no leading, trailing or repeated whitespace"
		}
	case "id":
		if !fhir.ValidID(s) {
			return "invalid id: expected 1-64 characters from A-Z a-z 0-9 - ."
		}
	case "uri", "url", "canonical":
		if strings.ContainsAny(s, " \t\r\n") {
			return "invalid " + typ + ": expected no whitespace"
		}
	case "oid":
		if !validOID(s) {
			return "invalid oid: expected urn:oid: followed by a dotted OID"
		}
	case "uuid":
		if !validUUID(s) {
			return "invalid uuid: expected urn:uuid: followed by a lower-case UUID"
		}
	case "date":
		if !validDateTime(s, dateOnly) {
			return "invalid date: expected YYYY, YYYY-MM or YYYY-MM-DD"
		}
	case "dateTime":
		if !validDateTime(s, dateOrDateTime) {
			return "invalid dateTime: expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss(.sss)+zz:zz"
		}
	case "instant":
		if !validDateTime(s, instantOnly) {
			return "invalid instant: expected YYYY-MM-DDThh:mm:ss(.sss)+zz:zz or Z"
		}
	case "time":
		if !validTime(s) {
			return "invalid time: expected hh:mm:ss(.sss)"
		}
	case "base64Binary":
		if !validBase64(s) {
			return "invalid base64Binary: expected base64 characters in groups of four"
		}
	case "xhtml":
		if !strings.HasPrefix(s, "<div") {
			return "invalid xhtml: expected a <div> element"
		}
	}
	return ""
}

// validChars reports whether s holds no control characters but tab, CR
// and LF (FHIR strings are Unicode without the C0 controls).
func validChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}
