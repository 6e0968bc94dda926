package authz

import (
	"slices"
	"strings"

	"github.com/fhirgate/fhirgate/internal/search"
)

// Allows reports whether the filter admits res, by the rules in the Filter
// doc comment: the same answer as Engine.Decide on res for the shipped
// policy, and the semantics the SQL built from the filter must have.
func (f *Filter) Allows(res *Resource) bool {
	if f == nil || res == nil || !f.Decision.Allow || res.Type != f.Type {
		return false
	}
	if !f.compartmentAdmits(res) {
		return false
	}
	for _, l := range res.Security {
		if slices.Contains(f.ExcludeLabels, l) {
			return false
		}
	}
	if !f.AnySource && (res.Source == "" || !slices.Contains(f.Sources, res.Source)) {
		return false
	}
	if f.Params != nil && !paramsMatch(f.Params, res.Tokens) {
		return false
	}
	return true
}

func (f *Filter) compartmentAdmits(r *Resource) bool {
	isPatient := r.Type == "Patient"
	if !isPatient && len(r.Patients) == 0 {
		return f.NonCompartment
	}
	if f.AnyPatient {
		return true
	}
	in := func(s string, set []string) bool { return s != "" && slices.Contains(set, s) }
	if isPatient && in(r.ID, f.Patients) {
		return true
	}
	for _, p := range r.Patients {
		if in(p, f.Patients) {
			return true
		}
	}
	if isPatient && in(r.Organization, f.Organizations) {
		return true
	}
	for _, o := range r.PatientOrganizations {
		if in(o, f.Organizations) {
			return true
		}
	}
	return false
}

// paramsMatch: every value of every key matches some token row.
func paramsMatch(params map[string][]string, tokens []search.Token) bool {
	for k, vs := range params {
		for _, v := range vs {
			if !valueMatches(k, v, tokens) {
				return false
			}
		}
	}
	return true
}

func valueMatches(k, v string, tokens []search.Token) bool {
	for _, alt := range strings.Split(v, ",") {
		for _, t := range tokens {
			if t.Param == k && tokenMatches(alt, t) {
				return true
			}
		}
	}
	return false
}

func tokenMatches(alt string, t search.Token) bool {
	system, code, hasBar := strings.Cut(alt, "|")
	if !hasBar {
		return t.Code == alt
	}
	if strings.Contains(code, "|") {
		return false
	}
	switch {
	case system == "":
		return t.System == "" && t.Code == code
	case code == "":
		return t.System == system
	default:
		return t.System == system && t.Code == code
	}
}
