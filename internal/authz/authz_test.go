package authz

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/internal/auth"
	"github.com/fhirgate/fhirgate/internal/search"
)

// testTimeout replaces the 50 ms evaluation deadline in tests that are not
// about it: the test machine is shared and loaded.
const testTimeout = 10 * time.Second

func loadShipped(t testing.TB, opts ...Option) *Engine {
	t.Helper()
	e, err := Load(policyDir, append([]Option{WithTimeout(testTimeout)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func sc(ctx, typ, letters string) auth.Scope {
	return auth.Scope{
		Raw: ctx + "/" + typ + "." + letters, Context: ctx, Type: typ,
		Create: strings.Contains(letters, "c"), Read: strings.Contains(letters, "r"),
		Update: strings.Contains(letters, "u"), Delete: strings.Contains(letters, "d"),
		Search: strings.Contains(letters, "s"),
	}
}

func granularScope(ctx, typ, letters, query string) auth.Scope {
	s := sc(ctx, typ, letters)
	s.Raw += "?" + query
	s.Params, _ = url.ParseQuery(query)
	return s
}

const labCategory = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"

// Subjects, one or more per shipped rule.
var (
	clinician = &auth.Subject{ID: "dr1", Kind: auth.KindUser, Roles: []string{auth.RoleClinician},
		Organization: "org1", CareTeam: []string{"p-team"}, PurposeOfUse: "TREAT",
		Scopes: []auth.Scope{sc("user", "*", "cruds")}}
	restricted = &auth.Subject{ID: "dr2", Kind: auth.KindUser, Roles: []string{auth.RoleClinician, auth.RoleRestricted},
		Organization: "org1", PurposeOfUse: "TREAT", Scopes: []auth.Scope{sc("user", "*", "cruds")}}
	consented = &auth.Subject{ID: "dr3", Kind: auth.KindUser, Roles: []string{auth.RoleClinician},
		Organization: "org1", Consents: []string{"42CFRPart2"}, Scopes: []auth.Scope{sc("user", "*", "rs")}}
	readOnlyClinician = &auth.Subject{ID: "dr4", Kind: auth.KindUser, Roles: []string{auth.RoleClinician},
		Organization: "org2", Scopes: []auth.Scope{sc("user", "Observation", "rs"), sc("user", "Patient", "r")}}
	breakGlass = &auth.Subject{ID: "dr5", Kind: auth.KindUser, Roles: []string{auth.RoleClinician, auth.RoleBreakGlass},
		Organization: "org1", PurposeOfUse: "ETREAT", Scopes: []auth.Scope{sc("user", "*", "rs")}}
	breakGlassNoPurpose = &auth.Subject{ID: "dr5", Kind: auth.KindUser, Roles: []string{auth.RoleClinician, auth.RoleBreakGlass},
		Organization: "org1", PurposeOfUse: "TREAT", Scopes: []auth.Scope{sc("user", "*", "rs")}}
	patientApp = &auth.Subject{ID: "pat1", Kind: auth.KindPatient, Patient: "p1",
		Scopes: []auth.Scope{sc("patient", "*", "rs")}}
	labApp = &auth.Subject{ID: "pat1", Kind: auth.KindPatient, Patient: "p1",
		Scopes: []auth.Scope{granularScope("patient", "Observation", "rs", "category="+url.QueryEscape(labCategory)), sc("patient", "Patient", "r")}}
	auditor = &auth.Subject{ID: "aud1", Kind: auth.KindUser, Roles: []string{auth.RoleAuditor},
		Scopes: []auth.Scope{sc("user", "*", "cruds")}}
	admin = &auth.Subject{ID: "adm1", Kind: auth.KindUser, Roles: []string{auth.RoleAdmin}}
	emr   = &auth.Subject{ID: "emr-a.example", Kind: auth.KindEMR, Roles: []string{auth.RoleEMR}, Sources: []string{"emr-a"}}
	noone = &auth.Subject{ID: "x", Kind: auth.KindUser, Scopes: []auth.Scope{sc("user", "*", "cruds")}}

	subjects = map[string]*auth.Subject{
		"clinician": clinician, "restricted": restricted, "consented": consented, "read-only": readOnlyClinician,
		"break-glass": breakGlass, "break-glass-no-purpose": breakGlassNoPurpose, "patient-app": patientApp,
		"lab-app": labApp, "auditor": auditor, "admin": admin, "emr": emr, "no-role": noone, "anonymous": nil,
	}
)

func obs(patient, org string, labels ...string) *Resource {
	return &Resource{Type: "Observation", ID: "o-" + patient, Patients: []string{patient},
		PatientOrganizations: []string{org}, Security: labels}
}

func withSource(r *Resource, src string) *Resource { c := *r; c.Source = src; return &c }

func withTokens(r *Resource, ts ...search.Token) *Resource { c := *r; c.Tokens = ts; return &c }

var labToken = search.Token{Param: "category", System: "http://terminology.hl7.org/CodeSystem/observation-category", Code: "laboratory"}
var vitalsToken = search.Token{Param: "category", System: "http://terminology.hl7.org/CodeSystem/observation-category", Code: "vital-signs"}

// Resources of every kind the rules distinguish.
var resources = map[string]*Resource{
	"obs-team":           obs("p-team", "org9"),
	"obs-org1":           obs("p-x", "org1"),
	"obs-org2":           obs("p-y", "org2"),
	"obs-stranger":       obs("p-s", "org-far"),
	"obs-p1":             obs("p1", "org-far"),
	"obs-p1-lab":         withTokens(obs("p1", "org-far"), labToken),
	"obs-p1-vitals":      withTokens(obs("p1", "org-far"), vitalsToken),
	"obs-org1-R":         obs("p-x", "org1", "R"),
	"obs-org1-V":         obs("p-x", "org1", "V"),
	"obs-org1-HIV":       obs("p-x", "org1", "HIV"),
	"obs-org1-PSY":       obs("p-x", "org1", "PSY"),
	"obs-org1-ETH":       obs("p-x", "org1", "ETH"),
	"obs-org1-SUD":       obs("p-x", "org1", "SUD"),
	"obs-stranger-SUD":   obs("p-s", "org-far", "SUD"),
	"obs-emr-a":          withSource(obs("p-s", "org-far"), "emr-a"),
	"obs-emr-b":          withSource(obs("p-s", "org-far", "SUD"), "emr-b"),
	"obs-unknown":        {Type: "Observation", ID: "o-bad", Patients: []string{""}},
	"obs-no-subject":     {Type: "Observation", ID: "o-dev"},
	"patient-p1":         {Type: "Patient", ID: "p1", Organization: "org-far"},
	"patient-org1":       {Type: "Patient", ID: "p-x", Organization: "org1"},
	"patient-team":       {Type: "Patient", ID: "p-team", Organization: "org9"},
	"patient-new-org1":   {Type: "Patient", Organization: "org1"},
	"practitioner":       {Type: "Practitioner", ID: "pr1"},
	"group":              {Type: "Group", ID: "g1"},
	"condition-org1":     {Type: "Condition", ID: "c1", Patients: []string{"p-x"}, PatientOrganizations: []string{"org1"}},
	"condition-emr-a":    {Type: "Condition", ID: "c2", Patients: []string{"p-s"}, Source: "emr-a"},
	"auditevent":         {Type: "AuditEvent", ID: "a1"},
	"patient-org1-multi": {Type: "Observation", ID: "o-m", Patients: []string{"p-s", "p-x"}, PatientOrganizations: []string{"org-far", "org1"}},
}

type decideCase struct {
	subject, interaction, resource string
	allow                          bool
	reason                         string // one of the reasons
	breakGlass                     bool
}

// The matrix: for every shipped rule an allowed and a denied case.
var matrix = []decideCase{
	// clinician: organization, care team, non-compartment
	{"clinician", Read, "obs-org1", true, "clinician-organization", false},
	{"clinician", Read, "patient-org1", true, "clinician-organization", false},
	{"clinician", Search, "obs-team", true, "clinician-care-team", false},
	{"clinician", VRead, "patient-team", true, "clinician-care-team", false},
	{"clinician", History, "practitioner", true, "clinician-non-compartment", false},
	{"clinician", Read, "obs-org2", false, "compartment", false},
	{"clinician", History, "obs-stranger", false, "compartment", false},
	{"clinician", Read, "obs-unknown", false, "compartment", false},
	{"clinician", Read, "obs-no-subject", true, "clinician-non-compartment", false},
	{"clinician", Read, "patient-org1-multi", true, "clinician-organization", false},
	{"clinician", Create, "patient-new-org1", true, "clinician-organization", false},
	{"clinician", Update, "obs-org2", false, "compartment", false},
	{"clinician", HL7, "obs-org1", false, "no-grant", false},
	{"clinician", Audit, "auditevent", false, "no-grant", false},
	// scopes: types and interactions
	{"read-only", Read, "obs-org2", true, "clinician-organization", false},
	{"read-only", Search, "obs-org2", true, "clinician-organization", false},
	{"read-only", Read, "condition-org1", false, "scope-missing", false},
	{"read-only", Update, "obs-org2", false, "scope-missing", false},
	{"read-only", Search, "patient-org1", false, "scope-missing", false},
	{"read-only", History, "practitioner", false, "scope-missing", false},
	// patient-facing apps
	{"patient-app", Read, "obs-p1", true, "patient-app", false},
	{"patient-app", Search, "patient-p1", true, "patient-app", false},
	{"patient-app", Read, "practitioner", true, "patient-app", false},
	{"patient-app", Read, "obs-team", false, "compartment", false},
	{"patient-app", Read, "group", false, "compartment", false},
	{"patient-app", Create, "obs-p1", false, "scope-missing", false},
	// granular scopes
	{"lab-app", Search, "obs-p1-lab", true, "patient-app", false},
	{"lab-app", Read, "obs-p1-vitals", false, "granular-scope", false},
	{"lab-app", Read, "obs-p1", false, "granular-scope", false},
	{"lab-app", Read, "patient-p1", true, "patient-app", false},
	// labels
	{"clinician", Read, "obs-org1-R", false, "label-restricted", false},
	{"restricted", Read, "obs-org1-R", true, "clinician-organization", false},
	{"clinician", Read, "obs-org1-V", false, "label-restricted", false},
	{"restricted", Search, "obs-org1-V", true, "clinician-organization", false},
	{"clinician", Read, "obs-org1-HIV", false, "label-sensitive", false},
	{"restricted", Read, "obs-org1-HIV", true, "clinician-organization", false},
	{"clinician", Read, "obs-org1-PSY", false, "label-sensitive", false},
	{"restricted", Read, "obs-org1-ETH", true, "clinician-organization", false},
	// 42 CFR Part 2
	{"clinician", Read, "obs-org1-SUD", false, "label-sensitive", false},
	{"restricted", Read, "obs-org1-SUD", false, "label-sensitive", false},
	{"consented", Read, "obs-org1-SUD", true, "clinician-organization", false},
	// break-glass
	{"break-glass", Read, "obs-stranger", true, "break-glass", true},
	{"break-glass", Search, "obs-stranger-SUD", true, "break-glass", true},
	{"break-glass", Read, "obs-org1-HIV", true, "clinician-organization", true},
	{"break-glass", Read, "obs-org1-V", false, "label-restricted", true},
	{"break-glass", Update, "obs-stranger", false, "scope-missing", false},
	{"break-glass-no-purpose", Read, "obs-stranger", false, "compartment", false},
	// auditors
	{"auditor", Audit, "auditevent", true, "auditor", false},
	{"auditor", Read, "obs-org1", false, "auditor-no-clinical", false},
	{"auditor", Search, "practitioner", false, "auditor-no-clinical", false},
	// admins
	{"admin", Admin, "auditevent", true, "admin", false},
	{"admin", Read, "practitioner", false, "admin-no-clinical", false},
	{"clinician", Admin, "auditevent", false, "no-grant", false},
	// EMR senders
	{"emr", Create, "obs-emr-a", true, "emr-source", false},
	{"emr", Update, "condition-emr-a", true, "emr-source", false},
	{"emr", HL7, "obs-emr-a", true, "emr-source", false},
	{"emr", Push, "obs-emr-a", true, "emr-source", false},
	{"emr", Transaction, "obs-emr-a", true, "emr-source", false},
	{"emr", Create, "obs-emr-b", false, "source-not-owned", false},
	{"emr", Create, "obs-stranger", false, "source-not-owned", false},
	{"emr", Read, "obs-emr-a", false, "emr-no-read", false},
	{"emr", Search, "obs-emr-a", false, "emr-no-read", false},
	{"emr", Delete, "obs-emr-a", false, "no-grant", false},
	// nobody else
	{"no-role", Read, "practitioner", false, "no-grant", false},
	{"anonymous", Read, "practitioner", false, "anonymous", false},
}

func TestDecideMatrix(t *testing.T) {
	t.Parallel()
	// With filters cached, Decide evaluates the decision on the cached
	// filter; without, on the subject: both must give the matrix.
	t.Run("cached", func(t *testing.T) { t.Parallel(); testMatrix(t, loadShipped(t)) })
	t.Run("uncached", func(t *testing.T) { t.Parallel(); testMatrix(t, loadShipped(t, WithFilterCache(0, 0))) })
}

func testMatrix(t *testing.T, e *Engine) {
	ctx := context.Background()
	ids := map[string]bool{}
	for _, c := range matrix {
		name := fmt.Sprintf("%s/%s/%s", c.subject, c.interaction, c.resource)
		subj, ok := subjects[c.subject]
		res := resources[c.resource]
		if !ok || res == nil {
			t.Fatalf("%s: unknown subject or resource", name)
		}
		act := Action{Interaction: c.interaction, Type: res.Type, ID: res.ID}
		d, err := e.Decide(ctx, subj, act, res, Env{Time: time.Now(), ClientIP: "10.0.0.1"})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if d.Allow != c.allow || !slices.Contains(d.Reasons, c.reason) || d.BreakGlass != c.breakGlass {
			t.Errorf("%s: got allow=%v reasons=%q breakGlass=%v; want allow=%v with %q breakGlass=%v",
				name, d.Allow, d.Reasons, d.BreakGlass, c.allow, c.reason, c.breakGlass)
		}
		if d.Policy != e.Digest() || !strings.HasPrefix(d.Policy, "sha256:") {
			t.Errorf("%s: policy %q, engine %q", name, d.Policy, e.Digest())
		}
		if ids[d.ID] || !uuidV4.MatchString(d.ID) {
			t.Errorf("%s: decision id %q not a fresh UUID v4", name, d.ID)
		}
		ids[d.ID] = true
		// The filter of the same action agrees.
		f, err := e.Filter(ctx, subj, act, Env{})
		if err != nil {
			t.Errorf("%s: filter: %v", name, err)
			continue
		}
		if got := f.Allows(res); got != c.allow {
			t.Errorf("%s: Filter.Allows = %v, Decide = %v (filter %+v)", name, got, c.allow, f)
		}
		if f.Decision.BreakGlass != c.breakGlass && c.allow {
			t.Errorf("%s: filter break-glass %v", name, f.Decision.BreakGlass)
		}
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestAllowsAgreesWithDecide: for every subject, resource and interaction,
// the filter evaluated in Go admits exactly what Decide allows.
func TestAllowsAgreesWithDecide(t *testing.T) {
	t.Parallel()
	e := loadShipped(t)
	ctx := context.Background()
	interactions := []string{Read, Search, History, Create, Update, Delete, Transaction, HL7, Audit, Admin}
	var n, allowed int
	for sn, subj := range subjects {
		for rn, res := range resources {
			for _, in := range interactions {
				// Both the resource's own type and another (type mismatch).
				for _, typ := range []string{res.Type, "Condition"} {
					act := Action{Interaction: in, Type: typ}
					d, err := e.Decide(ctx, subj, act, res, Env{})
					if err != nil {
						t.Fatal(err)
					}
					f, err := e.Filter(ctx, subj, act, Env{})
					if err != nil {
						t.Fatal(err)
					}
					n++
					if d.Allow {
						allowed++
					}
					if got := f.Allows(res); got != d.Allow {
						t.Errorf("%s %s %s on %s: Allows %v, Decide %v %q; filter %+v", sn, in, typ, rn, got, d.Allow, d.Reasons, f)
					}
					if d.Allow && !f.Decision.Allow {
						t.Errorf("%s %s on %s: resource allowed but type denied", sn, in, rn)
					}
				}
			}
		}
	}
	if allowed == 0 || allowed == n {
		t.Fatalf("%d of %d allowed: the table does not exercise both outcomes", allowed, n)
	}
	t.Logf("%d cases, %d allowed", n, allowed)
}

func TestFilterShapes(t *testing.T) {
	t.Parallel()
	e := loadShipped(t)
	ctx := context.Background()
	f, err := e.Filter(ctx, clinician, Action{Interaction: Search, Type: "Observation"}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	want := Filter{Type: "Observation", Visibility: search.Visibility{Patients: []string{"p-team"}, Organizations: []string{"org1"}, NonCompartment: true,
		ExcludeLabels: []string{"ETH", "HIV", "PSY", "R", "SUD", "V"}, AnySource: true, Sources: []string{}}}
	if !f.Decision.Allow || f.AnyPatient != want.AnyPatient || !slices.Equal(f.Patients, want.Patients) ||
		!slices.Equal(f.Organizations, want.Organizations) || f.NonCompartment != want.NonCompartment ||
		!slices.Equal(f.ExcludeLabels, want.ExcludeLabels) || f.AnySource != want.AnySource || f.Params != nil {
		t.Errorf("clinician filter %+v, want %+v", f, want)
	}

	f, _ = e.Filter(ctx, labApp, Action{Interaction: Search, Type: "Observation"}, Env{})
	if !f.Decision.Allow || f.Params.Get("category") != labCategory || len(f.Params) != 1 || !slices.Equal(f.Patients, []string{"p1"}) {
		t.Errorf("granular filter %+v", f)
	}

	f, _ = e.Filter(ctx, emr, Action{Interaction: Create, Type: "Observation"}, Env{})
	if !f.Decision.Allow || f.AnySource || !slices.Equal(f.Sources, []string{"emr-a"}) || !f.AnyPatient || len(f.ExcludeLabels) != 0 {
		t.Errorf("emr filter %+v", f)
	}

	f, _ = e.Filter(ctx, breakGlass, Action{Interaction: Search, Type: "Observation"}, Env{})
	if !f.Decision.Allow || !f.Decision.BreakGlass || !f.AnyPatient || !slices.Equal(f.ExcludeLabels, []string{"R", "V"}) {
		t.Errorf("break-glass filter %+v", f)
	}

	f, _ = e.Filter(ctx, auditor, Action{Interaction: Search, Type: "Observation"}, Env{})
	if f.Decision.Allow || !slices.Equal(f.Decision.Reasons, []string{"auditor-no-clinical"}) || f.Allows(resources["obs-org1"]) {
		t.Errorf("auditor clinical filter %+v", f)
	}

	// A type-level decision without a resource is the filter's decision.
	d, err := e.Decide(ctx, emr, Action{Interaction: HL7}, nil, Env{})
	if err != nil || !d.Allow || !slices.Equal(d.Reasons, []string{"emr-source"}) {
		t.Errorf("type-level hl7 decision %+v %v", d, err)
	}
	d, _ = e.Decide(ctx, clinician, Action{Interaction: Transaction, Type: "Bundle"}, nil, Env{})
	if !d.Allow {
		t.Errorf("clinician transaction as a whole: %+v", d)
	}
}

// Granular scopes the policy cannot evaluate exactly grant nothing.
func TestUnsupportedGranularScopesGrantNothing(t *testing.T) {
	t.Parallel()
	e := loadShipped(t)
	ctx := context.Background()
	res := withTokens(obs("p1", ""), labToken)
	for _, q := range []string{
		"date=ge2020",                 // not a token parameter
		"category:text=laboratory",    // modifier
		"category=lab\\,oratory",      // escape
		"category=",                   // empty value
		"category=a,,b",               // empty alternative
		"category=a|b|c",              // not a token
		"nonexistent=laboratory",      // unknown parameter
		"category=laboratory&date=ge", // one bad key spoils the scope
	} {
		s := &auth.Subject{ID: "pat1", Kind: auth.KindPatient, Patient: "p1",
			Scopes: []auth.Scope{granularScope("patient", "Observation", "rs", q)}}
		d, err := e.Decide(ctx, s, Action{Interaction: Read, Type: "Observation"}, res, Env{})
		if err != nil || d.Allow || !slices.Contains(d.Reasons, "scope-missing") {
			t.Errorf("scope ?%s: %+v %v; want denied for scope-missing", q, d, err)
		}
	}
	// The supported forms pass, "*" scopes with the action's type.
	for _, s := range []auth.Scope{
		granularScope("patient", "Observation", "rs", "category=laboratory"),
		granularScope("patient", "*", "rs", "category="+url.QueryEscape(labCategory)),
	} {
		subj := &auth.Subject{ID: "pat1", Kind: auth.KindPatient, Patient: "p1", Scopes: []auth.Scope{s}}
		d, err := e.Decide(ctx, subj, Action{Interaction: Read, Type: "Observation"}, res, Env{})
		if err != nil || !d.Allow {
			t.Errorf("scope %s: %+v %v", s.Raw, d, err)
		}
		// On a type without the parameter, a "*" granular scope grants nothing.
		d, _ = e.Decide(ctx, subj, Action{Interaction: Read, Type: "Patient"}, resources["patient-p1"], Env{})
		if d.Allow {
			t.Errorf("scope %s allowed a Patient: %+v", s.Raw, d)
		}
	}
}

func copyPolicies(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files, err := PolicyFiles(policyDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		write(t, dir, filepath.Base(f), string(b))
	}
	return dir
}

func TestLoadRefusesBrokenPolicies(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, file, content, want string
	}{
		{"parse error", "bad.rego", "package fhirgate.authz\n\nx := [1,, 2]\n", `/bad\.rego:3: rego_parse_error`},
		{"v0 syntax", "old.rego", "package fhirgate.authz\n\nold[x] { x := 1 }\n", `/old\.rego:3: rego_parse_error`},
		{"unsafe var", "unsafe.rego", "package fhirgate.authz\n\nleak if {\n\ty == 1\n}\n", `/unsafe\.rego:4: rego_unsafe_var_error`},
		{"type error", "types.rego", "package fhirgate.authz\n\nn := count(1)\n", `/types\.rego:3: rego_type_error`},
		{"conflict", "conflict.rego", "package fhirgate.authz\n\nfilter contains 1\n", `/(authz|conflict)\.rego:\d+: rego_type_error: conflicting rules`},
		{"network", "net.rego", "package fhirgate.authz\n\nr := http.send({\"method\": \"get\", \"url\": \"http://x\"})\n", `/net\.rego:3: .*http\.send`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := copyPolicies(t)
			write(t, dir, c.file, c.content)
			_, err := Load(dir)
			if err == nil || !regexp.MustCompile(c.want).MatchString(err.Error()) {
				t.Fatalf("Load: %v; want an error matching %s", err, c.want)
			}
		})
	}
	t.Run("no entry points", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		write(t, dir, "p.rego", "package fhirgate.authz\n\nfilter := {}\n")
		if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), decisionQuery) {
			t.Fatalf("Load: %v", err)
		}
	})
	t.Run("empty directory", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		write(t, dir, "x_test.rego", "package x\n")
		if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "no .rego") {
			t.Fatalf("Load: %v", err)
		}
	})
	t.Run("test files ignored", func(t *testing.T) {
		t.Parallel()
		dir := copyPolicies(t)
		write(t, dir, "broken_test.rego", "this is not rego")
		if _, err := Load(dir); err != nil {
			t.Fatalf("Load: %v", err)
		}
	})
}

func TestReloadKeepsOldPolicyOnError(t *testing.T) {
	t.Parallel()
	dir := copyPolicies(t)
	e, err := Load(dir, WithTimeout(testTimeout))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	act := Action{Interaction: Read, Type: "Practitioner"}
	res := resources["practitioner"]
	old := e.Digest()

	write(t, dir, "broken.rego", "package fhirgate.authz\n\nbroken if {\n")
	if err := e.Reload(dir); err == nil || !strings.Contains(err.Error(), "broken.rego:") {
		t.Fatalf("Reload: %v", err)
	}
	d, err := e.Decide(ctx, clinician, act, res, Env{})
	if err != nil || !d.Allow || d.Policy != old || e.Digest() != old {
		t.Fatalf("after failed reload: %+v %v, digest %s", d, err, e.Digest())
	}

	// A valid change takes effect: deny every clinical read of Practitioner.
	if err := os.Remove(filepath.Join(dir, "broken.rego")); err != nil {
		t.Fatal(err)
	}
	write(t, dir, "extra.rego", "package fhirgate.authz\n\ndeny contains \"practitioners-hidden\" if input.action.type == \"Practitioner\"\n")
	if err := e.Reload(dir); err != nil {
		t.Fatal(err)
	}
	d, err = e.Decide(ctx, clinician, act, res, Env{})
	if err != nil || d.Allow || !slices.Equal(d.Reasons, []string{"practitioners-hidden"}) || d.Policy == old {
		t.Fatalf("after reload: %+v %v", d, err)
	}
	// Filters cached under the old policy are gone with it.
	f, _ := e.Filter(ctx, clinician, Action{Interaction: Search, Type: "Practitioner"}, Env{})
	if f.Decision.Allow {
		t.Fatalf("stale filter after reload: %+v", f)
	}
}

// slowPolicy answers after ~1e8 evaluation steps (seconds), unless cancelled.
const slowPolicy = `package fhirgate.authz

n := count([1 | some i in numbers.range(1, 10000); some j in numbers.range(1, 10000)])

filter := {"allow": n > 0, "reasons": [], "break_glass": false, "any_patient": true, "patients": [], "organizations": [],
	"non_compartment": true, "exclude_labels": [], "params": null, "any_source": true, "sources": []}

decision := {"allow": n > 0, "reasons": [], "break_glass": false}
`

func TestFailClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	res := resources["practitioner"]
	act := Action{Interaction: Read, Type: "Practitioner"}
	check := func(t *testing.T, d Decision, err error, want error) {
		t.Helper()
		if d.Allow || !slices.Equal(d.Reasons, []string{ReasonPolicyError}) || d.ID == "" || d.Policy == "" {
			t.Errorf("decision %+v; want a denial for policy-error", d)
		}
		if err == nil || (want != nil && !errors.Is(err, want)) {
			t.Errorf("error %v; want %v", err, want)
		}
	}

	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		write(t, dir, "slow.rego", slowPolicy)
		e, err := Load(dir, WithTimeout(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		d, err := e.Decide(ctx, clinician, act, res, Env{})
		check(t, d, err, context.DeadlineExceeded)
		f, err := e.Filter(ctx, clinician, act, Env{})
		check(t, f.Decision, err, context.DeadlineExceeded)
		if f.Allows(res) {
			t.Error("failed filter admits a resource")
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("timeouts took %v", el)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		e := loadShipped(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		d, err := e.Decide(cctx, clinician, act, res, Env{})
		check(t, d, err, context.Canceled)
		f, err := e.Filter(cctx, clinician, act, Env{})
		check(t, f.Decision, err, context.Canceled)
	})
	t.Run("runtime error", func(t *testing.T) {
		t.Parallel()
		dir := copyPolicies(t)
		// A builtin error (strict mode): a number expected, a string given.
		write(t, dir, "oops.rego", "package fhirgate.authz\n\ndeny contains \"x\" if to_number(input.subject.id) > 1\n")
		e, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		d, err := e.Decide(ctx, clinician, act, res, Env{})
		check(t, d, err, nil)
		f, err := e.Filter(ctx, clinician, act, Env{})
		check(t, f.Decision, err, nil)
	})
	t.Run("undefined or malformed result", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		write(t, dir, "p.rego", "package fhirgate.authz\n\nfilter := {\"allow\": true} if input.subject.id == \"x\"\n\ndecision := {\"allow\": \"yes\", \"reasons\": [], \"break_glass\": false}\n")
		e, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		d, err := e.Decide(ctx, clinician, act, res, Env{})
		check(t, d, err, nil)
		f, err := e.Filter(ctx, clinician, act, Env{}) // undefined
		check(t, f.Decision, err, nil)
		f, err = e.Filter(ctx, noone, act, Env{}) // fields missing
		check(t, f.Decision, err, nil)
	})
}

func TestConcurrentDecide(t *testing.T) {
	t.Parallel()
	dir := copyPolicies(t)
	e, err := Load(dir, WithFilterCache(time.Second, 8), WithTimeout(testTimeout))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errc := make(chan error, 100)
	for g := range 8 {
		wg.Go(func() {
			for i := range 60 {
				c := matrix[(g*60+i)%len(matrix)]
				res := resources[c.resource]
				act := Action{Interaction: c.interaction, Type: res.Type}
				d, err := e.Decide(ctx, subjects[c.subject], act, res, Env{})
				if err != nil || d.Allow != c.allow {
					errc <- fmt.Errorf("%v: %+v %v", c, d, err)
					return
				}
				f, err := e.Filter(ctx, subjects[c.subject], act, Env{})
				if err != nil || f.Allows(res) != c.allow {
					errc <- fmt.Errorf("%v: filter %+v %v", c, f, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 3 {
			if err := e.Reload(dir); err != nil {
				errc <- err
				return
			}
		}
	})
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func TestFilterCache(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := loadShipped(t, WithFilterCache(30*time.Second, 100))
	e.now = func() time.Time { return now }
	ctx := context.Background()
	act := Action{Interaction: Search, Type: "Observation"}
	cache := e.cur.Load().cache
	if cache == nil {
		t.Fatal("the shipped policy is not cached")
	}
	f1, _ := e.Filter(ctx, clinician, act, Env{})
	f2, _ := e.Filter(ctx, clinician, act, Env{})
	if cache.len() != 1 || f1.Decision.ID == f2.Decision.ID || !slices.Equal(f1.Patients, f2.Patients) {
		t.Fatalf("cache len %d, ids %s %s", cache.len(), f1.Decision.ID, f2.Decision.ID)
	}
	// Callers may modify what they get.
	f2.Patients[0] = "changed"
	if f3, _ := e.Filter(ctx, clinician, act, Env{}); f3.Patients[0] != "p-team" {
		t.Fatal("cached filter shares its lists with callers")
	}
	// Any change of the subject is another entry, with its own answer.
	bg := *breakGlassNoPurpose
	bg.PurposeOfUse = "ETREAT"
	fBG, _ := e.Filter(ctx, &bg, act, Env{})
	fNo, _ := e.Filter(ctx, breakGlassNoPurpose, act, Env{})
	if !fBG.AnyPatient || fNo.AnyPatient || cache.len() != 3 {
		t.Fatalf("purpose of use not in the key: %+v %+v (len %d)", fBG, fNo, cache.len())
	}
	// Another interaction or type is another entry.
	e.Filter(ctx, clinician, Action{Interaction: Read, Type: "Observation"}, Env{})
	e.Filter(ctx, clinician, Action{Interaction: Search, Type: "Condition"}, Env{})
	// Parameters and ids are not read by the shipped policy: same entry.
	e.Filter(ctx, clinician, Action{Interaction: Search, Type: "Observation", ID: "x", Params: url.Values{"code": {"1"}}}, Env{})
	if cache.len() != 5 {
		t.Fatalf("cache len %d, want 5", cache.len())
	}
	// Entries expire.
	now = now.Add(31 * time.Second)
	if _, ok := cache.get(e.cur.Load().uses.key(clinician, act), now); ok {
		t.Fatal("entry did not expire")
	}
	// The size is bounded.
	for i := range 300 {
		s := *clinician
		s.ID = fmt.Sprint("dr", i)
		e.Filter(ctx, &s, act, Env{})
	}
	if n := cache.len(); n > 100 {
		t.Fatalf("cache holds %d > 100", n)
	}
}

func TestScanUses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		rule string
		want inputUses
	}{
		{`x if input.subject.id == "a"`, inputUses{}},
		{`x if input.action.type == "a"`, inputUses{}},
		{`x if input.action.params.code`, inputUses{params: true}},
		{`x if input.action.id == "1"`, inputUses{id: true}},
		{`x if { a := input.action; a.z }`, inputUses{id: true, params: true}},
		{`x if { some k; input.action[k] }`, inputUses{id: true, params: true}},
		{`x if time.parse_rfc3339_ns(input.env.time) > 0`, inputUses{env: true}},
		{`x if { i := input; i.env }`, inputUses{whole: true}},
		{`x if { some k; input[k] }`, inputUses{whole: true}},
	} {
		dir := copyPolicies(t)
		write(t, dir, "extra.rego", "package fhirgate.authz\n\n"+c.rule+"\n")
		e, err := Load(dir)
		if err != nil {
			t.Fatalf("%s: %v", c.rule, err)
		}
		p := e.cur.Load()
		if p.uses != c.want {
			t.Errorf("%s: uses %+v, want %+v", c.rule, p.uses, c.want)
		}
		if (p.cache == nil) != (c.want.env || c.want.whole) {
			t.Errorf("%s: cache %v", c.rule, p.cache != nil)
		}
	}
}

func TestNilSubjectIsAnonymous(t *testing.T) {
	t.Parallel()
	e := loadShipped(t)
	d, err := e.Decide(context.Background(), nil, Action{Interaction: Read, Type: "Practitioner"}, resources["practitioner"], Env{})
	if err != nil || d.Allow || !slices.Contains(d.Reasons, "anonymous") {
		t.Fatalf("%+v %v", d, err)
	}
	var f *Filter
	if f.Allows(resources["practitioner"]) || (&Filter{Decision: Decision{Allow: true}, Type: "Practitioner", Visibility: search.Visibility{NonCompartment: true}}).Allows(nil) {
		t.Fatal("nil filter or resource admitted")
	}
}

// Intake by an EMR sender is decided on the source profile alone: a
// resource with no type, only a source (as the API does for hl7 and push).
func TestIngestDecisions(t *testing.T) {
	t.Parallel()
	e := loadShipped(t)
	ctx := context.Background()
	for _, c := range []struct {
		subj        *auth.Subject
		interaction string
		source      string
		allow       bool
	}{
		{emr, HL7, "emr-a", true},
		{emr, Push, "emr-a", true},
		{emr, HL7, "emr-b", false},
		{emr, Push, "", false},
		{clinician, HL7, "emr-a", false},
		{clinician, Push, "emr-a", false},
		{patientApp, Push, "emr-a", false},
	} {
		d, err := e.Decide(ctx, c.subj, Action{Interaction: c.interaction}, &Resource{Source: c.source}, Env{})
		if err != nil || d.Allow != c.allow {
			t.Errorf("%s %s as %q: %+v %v; want allow=%v", c.subj.ID, c.interaction, c.source, d, err, c.allow)
		}
	}
}
