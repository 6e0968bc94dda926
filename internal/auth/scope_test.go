package auth

import (
	"strings"
	"testing"
)

func TestParseScope(t *testing.T) {
	type perms struct{ c, r, u, d, s bool }
	all := perms{true, true, true, true, true}
	rs := perms{r: true, s: true}
	cud := perms{c: true, u: true, d: true}
	tests := []struct {
		raw    string
		ok     bool
		ctx    string
		typ    string
		p      perms
		params map[string]string
	}{
		// v1
		{raw: "patient/Observation.read", ok: true, ctx: "patient", typ: "Observation", p: rs},
		{raw: "user/*.write", ok: true, ctx: "user", typ: "*", p: cud},
		{raw: "system/*.*", ok: true, ctx: "system", typ: "*", p: all},
		{raw: "user/Patient.*", ok: true, ctx: "user", typ: "Patient", p: all},
		// v2
		{raw: "patient/*.rs", ok: true, ctx: "patient", typ: "*", p: rs},
		{raw: "user/Observation.cruds", ok: true, ctx: "user", typ: "Observation", p: all},
		{raw: "system/*.cruds", ok: true, ctx: "system", typ: "*", p: all},
		{raw: "user/Encounter.r", ok: true, ctx: "user", typ: "Encounter", p: perms{r: true}},
		{raw: "user/Encounter.cud", ok: true, ctx: "user", typ: "Encounter", p: cud},
		{raw: "user/AuditEvent.s", ok: true, ctx: "user", typ: "AuditEvent", p: perms{s: true}},
		// granular
		{raw: "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory", ok: true,
			ctx: "patient", typ: "Observation", p: rs,
			params: map[string]string{"category": "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"}},
		{raw: "patient/Observation.rs?category=laboratory", ok: true, ctx: "patient", typ: "Observation", p: rs,
			params: map[string]string{"category": "laboratory"}},
		{raw: "user/Condition.rs?category=problem-list-item&clinical-status=active", ok: true, ctx: "user", typ: "Condition", p: rs,
			params: map[string]string{"category": "problem-list-item", "clinical-status": "active"}},
		// malformed or not resource scopes: ignored
		{raw: ""},
		{raw: "openid"},
		{raw: "fhirUser"},
		{raw: "launch/patient"},
		{raw: "offline_access"},
		{raw: "admin/*.read"},
		{raw: "patient/*"},
		{raw: "patient/.read"},
		{raw: "patient/observation.read"},   // type must start upper case
		{raw: "patient/Obs-ervation.read"},  // not a type name
		{raw: "patient/Observation.sr"},     // v2 letters out of order
		{raw: "patient/Observation.rr"},     // repeated
		{raw: "patient/Observation.rsx"},    // unknown letter
		{raw: "patient/Observation.cruds2"}, // too long / unknown
		{raw: "patient/Observation."},
		{raw: "patient/Observation.READ"},
		{raw: "patient/Observation.read?category=laboratory"}, // query on v1
		{raw: "patient/Observation.rs?"},
		{raw: "patient/Observation.rs?=x"},
		{raw: "patient/Observation.rs?category="},
		{raw: "patient/Observation.rs?category=%zz"},
		{raw: "Patient/*.rs"},
		{raw: "patient//Observation.rs"},
		{raw: "patient/*.rs " /* callers split on spaces; a raw space is not a type */},
		{raw: strings.Repeat("a", 2000)},
	}
	for _, tt := range tests {
		s, ok := ParseScope(tt.raw)
		if ok != tt.ok {
			t.Errorf("ParseScope(%q) ok = %v, want %v", tt.raw, ok, tt.ok)
			continue
		}
		if !ok {
			if s.Create || s.Read || s.Update || s.Delete || s.Search {
				t.Errorf("ParseScope(%q) refused but grants %+v", tt.raw, s)
			}
			continue
		}
		got := perms{s.Create, s.Read, s.Update, s.Delete, s.Search}
		if s.Raw != tt.raw || s.Context != tt.ctx || s.Type != tt.typ || got != tt.p {
			t.Errorf("ParseScope(%q) = %+v, want ctx %s type %s perms %+v", tt.raw, s, tt.ctx, tt.typ, tt.p)
		}
		if len(s.Params) != len(tt.params) {
			t.Errorf("ParseScope(%q).Params = %v, want %v", tt.raw, s.Params, tt.params)
		}
		for k, v := range tt.params {
			if s.Params.Get(k) != v {
				t.Errorf("ParseScope(%q).Params[%s] = %q, want %q", tt.raw, k, s.Params.Get(k), v)
			}
		}
		if s.Granular() != (len(tt.params) > 0) {
			t.Errorf("ParseScope(%q).Granular() = %v", tt.raw, s.Granular())
		}
	}
}

func TestScopeAllows(t *testing.T) {
	interactions := []string{"read", "vread", "search", "history", "history-instance", "history-type", "create", "update", "patch", "delete"}
	tests := []struct {
		scope, typ string
		allowed    []string
	}{
		{"patient/Observation.read", "Observation", []string{"read", "vread", "search", "history", "history-instance", "history-type"}},
		{"patient/Observation.read", "Patient", nil},
		{"patient/Observation.read", "", nil},
		{"user/*.write", "Patient", []string{"create", "update", "patch", "delete"}},
		{"system/*.*", "Encounter", interactions},
		{"system/*.*", "", interactions}, // system-level search / history
		{"patient/*.rs", "Observation", []string{"read", "vread", "search", "history", "history-instance", "history-type"}},
		{"user/Observation.cruds", "Observation", interactions},
		{"user/Observation.cruds", "Condition", nil},
		{"user/Observation.r", "Observation", []string{"read", "vread", "history-instance"}},
		{"user/Observation.s", "Observation", []string{"search", "history-type"}},
		{"user/Observation.c", "Observation", []string{"create"}},
		{"user/Observation.u", "Observation", []string{"update", "patch"}},
		{"user/Observation.d", "Observation", []string{"delete"}},
		{"user/AuditEvent.rs", "AuditEvent", []string{"read", "vread", "search", "history", "history-instance", "history-type"}},
		{"user/AuditEvent.rs", "Patient", nil},
		{"patient/Observation.rs?category=laboratory", "Observation", []string{"read", "vread", "search", "history", "history-instance", "history-type"}},
	}
	for _, tt := range tests {
		s, ok := ParseScope(tt.scope)
		if !ok {
			t.Fatalf("ParseScope(%q) refused", tt.scope)
		}
		for _, in := range interactions {
			want := false
			for _, a := range tt.allowed {
				want = want || a == in
			}
			if got := s.Allows(in, tt.typ); got != want {
				t.Errorf("%s.Allows(%s, %q) = %v, want %v", tt.scope, in, tt.typ, got, want)
			}
		}
		for _, in := range []string{"", "READ", "operation", "export", "transaction"} {
			if s.Allows(in, tt.typ) {
				t.Errorf("%s.Allows(%q, %q) = true for an unknown interaction", tt.scope, in, tt.typ)
			}
		}
	}
	// The zero Scope (what a refused scope parses to) allows nothing.
	for _, in := range interactions {
		if (Scope{}).Allows(in, "Patient") || (Scope{Type: "*"}).Allows(in, "Patient") {
			t.Errorf("zero scope allows %s", in)
		}
	}
}

func TestParseScopes(t *testing.T) {
	got := ParseScopes("openid fhirUser launch/patient patient/*.rs  patient/*.rs bogus/x.y user/Observation.read\tsystem/*.cruds")
	var raws []string
	for _, s := range got {
		raws = append(raws, s.Raw)
	}
	want := "patient/*.rs user/Observation.read system/*.cruds"
	if strings.Join(raws, " ") != want {
		t.Errorf("ParseScopes = %q, want %q", raws, want)
	}
	if ParseScopes("") != nil || ParseScopes("openid profile") != nil {
		t.Error("ParseScopes of no resource scopes is not empty")
	}
}

func FuzzParseScope(f *testing.F) {
	for _, s := range []string{
		"patient/Observation.read", "user/*.write", "system/*.*", "patient/*.rs", "user/Observation.cruds",
		"patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
		"patient/Observation.rs?a=b&c=%20", "launch/patient", "user/Obs.sr", "", "/", "./?", "patient/*.rs?&&",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		s, ok := ParseScope(raw)
		if !ok {
			if s.Create || s.Read || s.Update || s.Delete || s.Search || s.Raw != "" {
				t.Fatalf("refused scope %q grants %+v", raw, s)
			}
			for _, in := range []string{"read", "search", "create", "update", "delete", "history"} {
				if s.Allows(in, "Patient") {
					t.Fatalf("refused scope %q allows %s", raw, in)
				}
			}
			return
		}
		if s.Raw != raw || len(raw) > maxScopeLen {
			t.Fatalf("Raw = %q for %q", s.Raw, raw)
		}
		switch s.Context {
		case "patient", "user", "system":
		default:
			t.Fatalf("context %q from %q", s.Context, raw)
		}
		if !validScopeType(s.Type) {
			t.Fatalf("type %q from %q", s.Type, raw)
		}
		if !(s.Create || s.Read || s.Update || s.Delete || s.Search) {
			t.Fatalf("accepted scope %q grants nothing", raw)
		}
		if !strings.HasPrefix(raw, s.Context+"/"+s.Type+".") {
			t.Fatalf("scope %q parsed as %s/%s", raw, s.Context, s.Type)
		}
		if s.Type != "*" && s.Allows("read", s.Type+"x") {
			t.Fatalf("scope %q allows another type", raw)
		}
		if s.Granular() != strings.Contains(raw, "?") {
			t.Fatalf("granular mismatch for %q", raw)
		}
	})
}
