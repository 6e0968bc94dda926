package mapping

import (
	"bytes"
	"encoding/json"
	"regexp"
	"sort"
	"strconv"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/spec"
)

// Profiles lists the source profile names, sorted.
func (e *Engine) Profiles() []string {
	out := make([]string, 0, len(e.profiles))
	for _, p := range e.profiles {
		out = append(out, p.name)
	}
	sort.Strings(out)
	return out
}

// ProfileFor names the source profile that messages from a sender
// (MSH-3.1 application, MSH-4.1 facility) map under.
func (e *Engine) ProfileFor(application, facility string) string {
	mc := &mctx{e: e}
	if p := mc.profileFor(application, facility); p != nil {
		return p.name
	}
	return ""
}

// HasProfile reports whether a source profile of that name exists; ""
// names the default profile.
func (e *Engine) HasProfile(name string) bool { return e.profileNamed(name) != nil }

func (e *Engine) profileNamed(name string) *profile {
	if name == "" {
		return e.defaultProfile
	}
	for _, p := range e.profiles {
		if p.name == name {
			return p
		}
	}
	return nil
}

// NormalizeFHIR applies a source profile ("" = the default) to a pushed
// FHIR resource, so that pushed FHIR and HL7 v2 from the same EMR name
// identifiers and codes alike. It returns a new resource (r is not
// modified) and the paths of the elements it changed, e.g.
// "Patient.identifier[0].system" or "Observation.code.coding" (a coding
// added). It changes only:
//
//   - Identifier.system (anywhere, Reference.identifier included) that is
//     not a URI: an assigning authority the profile maps → its system; a
//     bare OID → urn:oid:; any other name → the profile's template, as
//     the HL7 v2 path does for CX-4.
//   - Coding.system that is not a URI and names a coding system the
//     mappings know ("LN", "SCT", "HL70203", an OID) → its URI.
//   - CodeableConcept.coding: a coding the profile's concept maps match
//     gets the standard coding inserted after it (never replacing it),
//     unless the concept already carries that coding.
//
// Member order, unknown members, extensions and every other value are
// kept byte for byte. The error is a *fhir.Error (KindInvalid) for an
// unknown profile.
func (e *Engine) NormalizeFHIR(r *fhir.Resource, profile string) (*fhir.Resource, []string, error) {
	p := e.profileNamed(profile)
	if p == nil {
		return nil, nil, fhir.Errorf(fhir.KindInvalid, "", "unknown source profile %q", profile)
	}
	if r == nil {
		return nil, nil, fhir.Errorf(fhir.KindInvalid, "", "no resource")
	}
	raw := r.Bytes()
	st, ok := spec.StructOf(r.Type)
	if !ok || st.Kind != spec.KindResource {
		return nil, nil, fhir.Errorf(fhir.KindInvalid, "resourceType", "unknown resource type %q", r.Type)
	}
	n := &normalizer{e: e, p: p}
	out := n.object(raw, st, r.Type)
	if !n.dirty {
		out = bytes.Clone(raw)
	}
	nr, err := fhir.ParseCompacted(out)
	if err != nil {
		return nil, nil, err
	}
	return nr, n.changed, nil
}

// normalizer rewrites one resource's compact JSON.
type normalizer struct {
	e       *Engine
	p       *profile
	changed []string
	dirty   bool
}

var schemeRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)

func isURI(s string) bool { return schemeRe.MatchString(s) }

// object normalizes a JSON object of structure st at path and returns its
// bytes: raw itself when nothing inside changed.
func (n *normalizer) object(raw []byte, st *spec.Struct, path string) []byte {
	ms := fhir.Members(raw)
	if ms == nil {
		return raw
	}
	changed := false
	for i, m := range ms {
		if len(m.Key) == 0 || m.Key[0] == '_' || m.Key == "resourceType" {
			continue
		}
		mem, ok := st.Member(m.Key)
		if !ok {
			continue
		}
		var v []byte
		switch {
		case mem.Primitive:
			v = n.primitive(st, m.Key, m.Value, path+"."+m.Key)
		case mem.Struct != nil:
			v = n.value(m.Value, mem, path+"."+m.Key)
		default:
			continue
		}
		if !bytes.Equal(v, m.Value) {
			ms[i].Value, changed = v, true
		}
	}
	if st.Name == "CodeableConcept" {
		if ms2, ok := n.concepts(ms, path); ok {
			ms, changed = ms2, true
		}
	}
	if !changed {
		return raw
	}
	n.dirty = true
	b := make([]byte, 0, len(raw)+64)
	b = append(b, '{')
	for i, m := range ms {
		if i > 0 {
			b = append(b, ',')
		}
		b = fhir.AppendString(b, m.Key)
		b = append(b, ':')
		b = append(b, m.Value...)
	}
	return append(b, '}')
}

// value normalizes a member's value: an object, or an array of objects.
func (n *normalizer) value(raw []byte, mem *spec.Member, path string) []byte {
	switch {
	case len(raw) > 0 && raw[0] == '[':
		els := fhir.Elements(raw)
		changed := false
		for i, el := range els {
			if v := n.one(el, mem, path+"["+strconv.Itoa(i)+"]"); !bytes.Equal(v, el) {
				els[i], changed = v, true
			}
		}
		if !changed {
			return raw
		}
		return joinArray(els)
	case len(raw) > 0 && raw[0] == '{':
		return n.one(raw, mem, path)
	}
	return raw
}

func (n *normalizer) one(raw []byte, mem *spec.Member, path string) []byte {
	if len(raw) == 0 || raw[0] != '{' {
		return raw
	}
	st := mem.Struct
	if st.Kind == spec.KindResource || st.Kind == spec.KindAbstractResource {
		// contained, Bundle.entry.resource, Parameters.parameter.resource:
		// the resource's own type decides.
		rt := ""
		for _, m := range fhir.Members(raw) {
			if m.Key == "resourceType" {
				_ = json.Unmarshal(m.Value, &rt)
				break
			}
		}
		s, ok := spec.StructOf(rt)
		if !ok || s.Kind != spec.KindResource {
			return raw
		}
		return n.object(raw, s, path+".ofType("+rt+")")
	}
	return n.object(raw, st, path)
}

// primitive rewrites Identifier.system and Coding.system.
func (n *normalizer) primitive(st *spec.Struct, key string, raw []byte, path string) []byte {
	if key != "system" || (st.Name != "Identifier" && st.Name != "Coding") {
		return raw
	}
	var s string
	if json.Unmarshal(raw, &s) != nil || s == "" || isURI(s) {
		return raw
	}
	var uri string
	if st.Name == "Identifier" {
		uri = n.p.identifierSystem(s, s, "")
	} else {
		uri = n.e.systemURI(s)
	}
	if uri == "" || uri == s {
		return raw
	}
	n.changed = append(n.changed, path)
	return fhir.AppendString(nil, uri)
}

// concepts adds the standard codings the profile's concept maps give for
// the codings of a CodeableConcept (already normalized in ms); ok false
// when none is added. The coding's system as sent is looked up before
// its URI, as on the HL7 v2 path.
func (n *normalizer) concepts(ms []fhir.Member, path string) ([]fhir.Member, bool) {
	if len(n.p.concepts) == 0 {
		return nil, false
	}
	idx := -1
	for i, m := range ms {
		if m.Key == "coding" {
			idx = i
		}
	}
	if idx < 0 {
		return nil, false
	}
	els := fhir.Elements(ms[idx].Value)
	type coding struct{ System, Code string }
	have := map[coding]bool{}
	parsed := make([]coding, len(els))
	for i, el := range els {
		_ = json.Unmarshal(el, &parsed[i])
		have[parsed[i]] = true
	}
	var out [][]byte
	added := false
	for i, el := range els {
		out = append(out, el)
		c := parsed[i]
		if c.Code == "" {
			continue
		}
		uri := c.System
		if !isURI(uri) {
			uri = n.e.systemURI(c.System)
		}
		std, ok := n.p.concept(c.System, uri, c.Code)
		if !ok {
			continue
		}
		key := coding{std["system"].(string), std["code"].(string)}
		if have[key] {
			continue
		}
		have[key] = true
		b, err := fhir.AppendJSON(nil, std)
		if err != nil {
			continue
		}
		out = append(out, b)
		added = true
	}
	if !added {
		return nil, false
	}
	n.changed = append(n.changed, path+".coding")
	ms = append([]fhir.Member(nil), ms...)
	ms[idx].Value = joinArray(out)
	return ms, true
}

func joinArray(els [][]byte) []byte {
	b := []byte{'['}
	for i, el := range els {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, el...)
	}
	return append(b, ']')
}

// IdentityOf returns the stable id the HL7 v2 path gives the resource, so
// that a resource pushed as FHIR and the same one arriving by HL7 v2
// converge: Patient and Encounter by the first identifier typed MR with a
// system and value (else the first identifier with both), as cx: keys
// pick; Practitioner and Organization by their first identifier with a
// system and value, as the XCN and XON converters do. Call it on the
// NormalizeFHIR result: systems must already be the profile's URIs. ok is
// false for other types and when the resource has no usable identifier
// (HL7 v2 ids for those depend on the sender or on message content a
// FHIR resource does not carry).
func (e *Engine) IdentityOf(r *fhir.Resource, tenant string) (id string, ok bool) {
	if r == nil {
		return "", false
	}
	switch r.Type {
	case "Patient", "Encounter":
		sys, val, ok := pickIdentifier(r.Content, true)
		if !ok {
			return "", false
		}
		return StableID(tenant, r.Type, sys, val), true
	case "Practitioner", "Organization":
		sys, val, ok := pickIdentifier(r.Content, false)
		if !ok {
			return "", false
		}
		return StableID(tenant, r.Type, sys, val), true
	}
	return "", false
}

// pickIdentifier returns the system and value of the first identifier
// with both, preferring (with mr) one whose type has the v2-0203 code MR.
func pickIdentifier(content map[string]any, mr bool) (string, string, bool) {
	list, _ := content["identifier"].([]any)
	var sys, val string
	found := false
	for _, x := range list {
		id, _ := x.(map[string]any)
		s, _ := id["system"].(string)
		v, _ := id["value"].(string)
		if s == "" || v == "" {
			continue
		}
		if mr && typeIsMR(id) {
			return s, v, true
		}
		if !found {
			sys, val, found = s, v, true
			if !mr {
				break
			}
		}
	}
	return sys, val, found
}

func typeIsMR(id map[string]any) bool {
	t, _ := id["type"].(map[string]any)
	codings, _ := t["coding"].([]any)
	for _, c := range codings {
		cm, _ := c.(map[string]any)
		if code, _ := cm["code"].(string); code == "MR" {
			s, _ := cm["system"].(string)
			if s == "" || s == v2SystemPrefix+"0203" {
				return true
			}
		}
	}
	return false
}
