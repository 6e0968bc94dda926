package authz

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/search"
)

// Attributes extracts the policy attributes of a stored resource body,
// which may be PHI-sealed (PHI elements replaced by opaque strings; the
// references, meta and codes policies read are never sealed):
//
//   - Patients: the Patient ids of the "patient" search parameter
//     (search.CompartmentParam), and for a Patient its own id; a
//     "patient" reference without a Patient id (an absolute URL) adds ""
//     (an unknown patient, admitted only by filters admitting any);
//   - Organization: for a Patient, managingOrganization's id;
//   - Security: the meta.security codes; Source: meta.source;
//   - Tokens: the token index rows, for granular scopes.
//
// PatientOrganizations is left for the caller (it is not in the body).
// A body that is not a JSON object fails closed: the resource is placed in
// the compartment of an unknown patient (Patients is [""]), which only
// filters admitting any patient admit.
func Attributes(typ, id string, body []byte) Resource {
	r, err := ParseAttributes(typ, id, body)
	if err != nil {
		return Resource{Type: typ, ID: id, Patients: []string{""}}
	}
	return r
}

// ParseAttributes is Attributes with the parse error reported.
func ParseAttributes(typ, id string, body []byte) (Resource, error) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return Resource{}, err
	}
	if m == nil {
		return Resource{}, errors.New("resource body is not a JSON object")
	}
	r := Resource{Type: typ, ID: id}
	e := search.Extract(typ, m)
	r.Patients = e.Compartments()
	// A "patient" reference the index cannot resolve to a Patient id (an
	// absolute URL) still makes a compartment resource, of an unknown
	// patient: as in the SQL, only filters admitting any patient admit it.
	for _, ref := range e.References {
		if ref.Param == search.CompartmentParam && ref.TargetType != "Patient" {
			r.Patients = append([]string{""}, r.Patients...)
			break
		}
	}
	if typ == "Patient" && id != "" && !slices.Contains(r.Patients, id) {
		r.Patients = append(r.Patients, id)
		slices.Sort(r.Patients)
	}
	r.Tokens = e.Tokens
	if meta, ok := m["meta"].(map[string]any); ok {
		r.Source, _ = meta["source"].(string)
		if sec, ok := meta["security"].([]any); ok {
			for _, c := range sec {
				if cm, ok := c.(map[string]any); ok {
					if code, ok := cm["code"].(string); ok && code != "" && !slices.Contains(r.Security, code) {
						r.Security = append(r.Security, code)
					}
				}
			}
		}
	}
	if typ == "Patient" {
		if mo, ok := m["managingOrganization"].(map[string]any); ok {
			ref, _ := mo["reference"].(string)
			r.Organization = organizationID(ref)
		}
	}
	return r, nil
}

// organizationID returns the id of "Organization/id", of an absolute
// ".../Organization/id", with any "/_history/n" dropped; "" otherwise.
func organizationID(ref string) string {
	if i := strings.Index(ref, "/_history/"); i >= 0 {
		ref = ref[:i]
	}
	i := strings.LastIndexByte(ref, '/')
	if i < 0 {
		return ""
	}
	typ := ref[:i]
	if j := strings.LastIndexByte(typ, '/'); j >= 0 {
		typ = typ[j+1:]
	}
	if typ != "Organization" || ref[i+1:] == "" {
		return ""
	}
	return ref[i+1:]
}

// CompartmentAttributes is Attributes without Tokens, for filters without
// granular-scope parameters: it decodes only the members the patient
// compartment, meta and managingOrganization are read from, so checking a
// page of large resources costs a fraction of a full decode. Patients,
// Organization, Security and Source are exactly Attributes'.
func CompartmentAttributes(typ, id string, body []byte) Resource {
	members := fhir.Members(body)
	if members == nil {
		return Attributes(typ, id, body)
	}
	need := compartmentMembers(typ)
	var sub []byte
	sub = append(sub, '{')
	for _, m := range members {
		if m.Key == "meta" || m.Key == "managingOrganization" || need[m.Key] {
			if len(sub) > 1 {
				sub = append(sub, ',')
			}
			sub = fhir.AppendString(sub, m.Key)
			sub = append(sub, ':')
			sub = append(sub, m.Value...)
		}
	}
	sub = append(sub, '}')
	r := Attributes(typ, id, sub)
	r.Tokens = nil
	return r
}

// compartmentMembers lists, per resource type, the top-level members the
// "patient" search parameter reads.
var compartmentMemberCache sync.Map // type -> map[string]bool

func compartmentMembers(typ string) map[string]bool {
	if v, ok := compartmentMemberCache.Load(typ); ok {
		return v.(map[string]bool)
	}
	m := map[string]bool{}
	if p := search.Lookup(typ, search.CompartmentParam); p != nil {
		for _, path := range p.Paths() {
			if len(path.Steps) > 0 {
				m[path.Steps[0]] = true
			}
		}
	}
	compartmentMemberCache.Store(typ, m)
	return m
}
