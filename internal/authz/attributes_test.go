package authz

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/search"
)

func TestAttributes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, typ, id, body string
		want                Resource
	}{
		{
			name: "observation", typ: "Observation", id: "o1",
			body: `{"resourceType":"Observation","id":"o1","status":"final",
				"meta":{"source":"emr-a#42","security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"},
					{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"HIV"},{"code":"R"},{"display":"no code"}]},
				"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],
				"code":{"coding":[{"system":"http://loinc.org","code":"1234-5"}]},
				"subject":{"reference":"Patient/p1","display":"\u0001fg1.1.c2VhbGVk"}}`,
			want: Resource{Type: "Observation", ID: "o1", Patients: []string{"p1"}, Security: []string{"R", "HIV"}, Source: "emr-a#42"},
		},
		{
			name: "group subject is no compartment", typ: "Observation", id: "o2",
			body: `{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"x"},"subject":{"reference":"Group/g1"}}`,
			want: Resource{Type: "Observation", ID: "o2"},
		},
		{
			name: "absolute patient reference is an unknown patient", typ: "Observation", id: "o5",
			body: `{"resourceType":"Observation","id":"o5","status":"final","code":{"text":"x"},
				"subject":{"reference":"http://other.example/fhir/Patient/p7"}}`,
			want: Resource{Type: "Observation", ID: "o5", Patients: []string{""}},
		},
		{
			name: "patient with organization", typ: "Patient", id: "p1",
			body: `{"resourceType":"Patient","id":"p1","name":"\u0001fg1.1.c2VhbGVk","birthDate":"\u0001fg1.1.c2VhbGVk",
				"managingOrganization":{"reference":"Organization/org1/_history/3"},"meta":{"security":[{"code":"V"}]}}`,
			want: Resource{Type: "Patient", ID: "p1", Patients: []string{"p1"}, Organization: "org1", Security: []string{"V"}},
		},
		{
			name: "patient with absolute organization", typ: "Patient", id: "p2",
			body: `{"resourceType":"Patient","id":"p2","managingOrganization":{"reference":"http://x.example/fhir/Organization/o9"}}`,
			want: Resource{Type: "Patient", ID: "p2", Patients: []string{"p2"}, Organization: "o9"},
		},
		{
			name: "patient with a sealed or odd organization", typ: "Patient", id: "p3",
			body: `{"resourceType":"Patient","id":"p3","managingOrganization":"\u0001fg1.1.c2VhbGVk","link":[{"other":{"reference":"Practitioner/x"}}]}`,
			want: Resource{Type: "Patient", ID: "p3", Patients: []string{"p3"}},
		},
		{
			name: "practitioner", typ: "Practitioner", id: "pr1",
			body: `{"resourceType":"Practitioner","id":"pr1","name":"\u0001fg1.1.c2VhbGVk"}`,
			want: Resource{Type: "Practitioner", ID: "pr1"},
		},
		{
			name: "unreadable body fails closed", typ: "Observation", id: "o3", body: `{"resourceType":`,
			want: Resource{Type: "Observation", ID: "o3", Patients: []string{""}},
		},
		{
			name: "not an object", typ: "Observation", id: "o4", body: `null`,
			want: Resource{Type: "Observation", ID: "o4", Patients: []string{""}},
		},
	} {
		got := Attributes(c.typ, c.id, []byte(c.body))
		if got.Type != c.want.Type || got.ID != c.want.ID || !slices.Equal(got.Patients, c.want.Patients) ||
			got.Organization != c.want.Organization || !slices.Equal(got.Security, c.want.Security) || got.Source != c.want.Source {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestAttributesTokensAndFilters(t *testing.T) {
	t.Parallel()
	body, err := os.ReadFile("../search/testdata/extract-observation.json")
	if err != nil {
		t.Fatal(err)
	}
	r := Attributes("Observation", "o1", body)
	if !slices.Equal(r.Patients, []string{"p1"}) {
		t.Fatalf("patients %q", r.Patients)
	}
	if !slices.Contains(r.Tokens, vitalsToken) {
		t.Fatalf("tokens lack the category: %+v", r.Tokens)
	}
	e := loadShipped(t)
	ctx := context.Background()
	act := Action{Interaction: Read, Type: "Observation", ID: "o1"}
	// The vital-signs Observation of p1: the patient app sees it, the lab
	// app (laboratory only) does not, nor does another patient's app.
	for _, c := range []struct {
		name  string
		allow bool
	}{{"patient-app", true}, {"lab-app", false}, {"clinician", false}, {"break-glass", true}} {
		d, err := e.Decide(ctx, subjects[c.name], act, &r, Env{})
		f, _ := e.Filter(ctx, subjects[c.name], act, Env{})
		if err != nil || d.Allow != c.allow || f.Allows(&r) != c.allow {
			t.Errorf("%s: decide %+v %v, allows %v; want %v", c.name, d, err, f.Allows(&r), c.allow)
		}
	}
	// An unreadable body is admitted only where any patient is.
	bad := Attributes("Observation", "o9", []byte("garbage"))
	for name, s := range subjects {
		f, _ := e.Filter(ctx, s, Action{Interaction: Read, Type: "Observation"}, Env{})
		if f.Allows(&bad) && !f.AnyPatient {
			t.Errorf("%s: unreadable resource admitted by %+v", name, f)
		}
	}
}

func TestAllowsTokenForms(t *testing.T) {
	t.Parallel()
	sys := "http://terminology.hl7.org/CodeSystem/observation-category"
	withSys := search.Token{Param: "category", System: sys, Code: "laboratory"}
	noSys := search.Token{Param: "category", Code: "laboratory"}
	other := search.Token{Param: "code", System: sys, Code: "laboratory"}
	for _, c := range []struct {
		value  string
		tokens []search.Token
		want   bool
	}{
		{"laboratory", []search.Token{withSys}, true},
		{"laboratory", []search.Token{noSys}, true},
		{"|laboratory", []search.Token{noSys}, true},
		{"|laboratory", []search.Token{withSys}, false},
		{sys + "|", []search.Token{withSys}, true},
		{sys + "|", []search.Token{noSys}, false},
		{sys + "|laboratory", []search.Token{withSys}, true},
		{sys + "|laboratory", []search.Token{noSys}, false},
		{"a|b|c", []search.Token{withSys}, false},
		{"imaging,laboratory", []search.Token{withSys}, true},
		{"laboratory", []search.Token{other}, false},
		{"laboratory", nil, false},
	} {
		f := Filter{Decision: Decision{Allow: true}, Type: "Observation", Visibility: search.Visibility{AnyPatient: true, AnySource: true,
			Params: map[string][]string{"category": {c.value}}}}
		r := &Resource{Type: "Observation", Patients: []string{"p1"}, Tokens: c.tokens}
		if got := f.Allows(r); got != c.want {
			t.Errorf("category=%s on %+v: %v, want %v", c.value, c.tokens, got, c.want)
		}
	}
}

// TestCompartmentAttributesAgree: the partial decode gives the same
// compartment, organization, labels and source as the full one, for every
// official example.
func TestCompartmentAttributesAgree(t *testing.T) {
	files, err := filepath.Glob("../api/testdata/fhir-examples/*.json")
	if err != nil || len(files) < 600 {
		t.Fatalf("examples: %d files, %v", len(files), err)
	}
	compartments := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r, err := fhir.Parse(raw)
		if err != nil {
			continue // the few spec-invalid examples
		}
		body := r.Bytes()
		full := Attributes(r.Type, r.ID, body)
		fast := CompartmentAttributes(r.Type, r.ID, body)
		full.Tokens = nil
		if !reflect.DeepEqual(full, fast) {
			t.Errorf("%s: CompartmentAttributes = %+v, Attributes = %+v", filepath.Base(f), fast, full)
		}
		if len(full.Patients) > 0 {
			compartments++
		}
	}
	if compartments < 100 {
		t.Errorf("only %d examples are in a patient compartment: the comparison covers too little", compartments)
	}
}
