package auth

import (
	"net/url"
	"strings"
)

// maxScopeLen bounds one scope string; longer ones are ignored.
const maxScopeLen = 1024

// ParseScope parses one SMART on FHIR resource scope:
//
//	v1: patient/Observation.read, user/*.write, system/*.*
//	v2: patient/*.rs, user/Observation.cruds,
//	    patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory
//
// v1 "read" grants r and s, "write" grants c, u and d, "*" grants all five.
// v2 permissions are a non-empty subset of "cruds" in that order. A query
// (granular scope) is only valid on v2 permissions. It reports false for
// anything else (openid, launch/patient, malformed scopes): such scopes
// grant nothing.
func ParseScope(raw string) (Scope, bool) {
	if raw == "" || len(raw) > maxScopeLen {
		return Scope{}, false
	}
	ctx, rest, ok := strings.Cut(raw, "/")
	if !ok {
		return Scope{}, false
	}
	switch ctx {
	case "patient", "user", "system":
	default:
		return Scope{}, false
	}
	rest, query, hasQuery := strings.Cut(rest, "?")
	typ, perms, ok := strings.Cut(rest, ".")
	if !ok || !validScopeType(typ) {
		return Scope{}, false
	}
	s := Scope{Raw: raw, Context: ctx, Type: typ}
	v1 := true
	switch perms {
	case "read":
		s.Read, s.Search = true, true
	case "write":
		s.Create, s.Update, s.Delete = true, true, true
	case "*":
		s.Create, s.Read, s.Update, s.Delete, s.Search = true, true, true, true, true
	default:
		v1 = false
		if !parseV2Perms(perms, &s) {
			return Scope{}, false
		}
	}
	if hasQuery {
		if v1 || query == "" {
			return Scope{}, false
		}
		q, err := url.ParseQuery(query)
		if err != nil || len(q) == 0 {
			return Scope{}, false
		}
		for k, vs := range q {
			if k == "" {
				return Scope{}, false
			}
			for _, v := range vs {
				if v == "" {
					return Scope{}, false
				}
			}
		}
		s.Params = q
	}
	return s, true
}

// parseV2Perms sets s's permissions from a SMART v2 permission string: a
// non-empty subsequence of "cruds" (each letter at most once, in order).
func parseV2Perms(p string, s *Scope) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	const order = "cruds"
	last := -1
	for i := 0; i < len(p); i++ {
		j := strings.IndexByte(order, p[i])
		if j <= last {
			return false
		}
		last = j
		switch p[i] {
		case 'c':
			s.Create = true
		case 'r':
			s.Read = true
		case 'u':
			s.Update = true
		case 'd':
			s.Delete = true
		case 's':
			s.Search = true
		}
	}
	return true
}

// validScopeType accepts "*" or a FHIR resource type name (an upper-case
// ASCII letter followed by letters).
func validScopeType(t string) bool {
	if t == "*" {
		return true
	}
	if t == "" || len(t) > 64 || t[0] < 'A' || t[0] > 'Z' {
		return false
	}
	for i := 1; i < len(t); i++ {
		c := t[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

// ParseScopes parses a space-separated "scope" claim, keeping only valid
// resource scopes (duplicates removed, order kept).
func ParseScopes(claim string) []Scope {
	var out []Scope
	seen := map[string]bool{}
	for _, f := range strings.Fields(claim) {
		if seen[f] {
			continue
		}
		seen[f] = true
		if s, ok := ParseScope(f); ok {
			out = append(out, s)
		}
	}
	return out
}

// String returns the scope as written in the token.
func (s Scope) String() string { return s.Raw }

// Granular reports whether the scope is limited to resources matching
// search parameters (a v2 scope with a query).
func (s Scope) Granular() bool { return len(s.Params) > 0 }

// Allows reports whether the scope grants interaction on resourceType.
// interaction is one of read, vread, search, history, history-instance,
// history-type, create, update, patch, delete; anything else is refused.
// A plain "history" (level unknown) needs both r and s; history-instance
// needs r (as read does) and history-type needs s. An empty resourceType
// (a system-level search or history) is only allowed by a "*" scope.
//
// Allows ignores the context (patient/user/system) and a granular scope's
// Params: the caller must restrict a granular scope's results (and writes)
// to resources matching Params, and a patient/ scope to the patient's
// compartment.
func (s Scope) Allows(interaction, resourceType string) bool {
	if s.Type != "*" && (resourceType == "" || s.Type != resourceType) {
		return false
	}
	switch interaction {
	case "read", "vread", "history-instance":
		return s.Read
	case "search", "history-type":
		return s.Search
	case "history":
		return s.Read && s.Search
	case "create":
		return s.Create
	case "update", "patch":
		return s.Update
	case "delete":
		return s.Delete
	}
	return false
}
