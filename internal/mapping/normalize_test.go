package mapping

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/validate"
)

func mustParse(t *testing.T, s string) *fhir.Resource {
	t.Helper()
	r, err := fhir.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestProfiles(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	if diff := cmp.Diff([]string{"default", "example-lab"}, e.Profiles()); diff != "" {
		t.Errorf("Profiles (-want +got):\n%s", diff)
	}
	for name, want := range map[string]bool{"": true, "default": true, "example-lab": true, "nope": false} {
		if got := e.HasProfile(name); got != want {
			t.Errorf("HasProfile(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestNormalizeFHIR(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	tests := []struct {
		name    string
		profile string
		in      string
		want    string
		changed []string
	}{
		{
			name:    "patient MRN authority, bare OID, URI kept, contact point untouched",
			profile: "example-lab",
			in: `{"resourceType":"Patient","id":"p1","extension":[{"url":"http://x.example/e","valueString":"a"}],` +
				`"identifier":[{"system":"MRN","value":"12345","type":{"coding":[{"system":"HL70203","code":"MR"}]}},` +
				`{"system":"2.16.840.1.113883.4.1","value":"999"},{"system":"http://hl7.org/fhir/sid/us-ssn","value":"1"}],` +
				`"telecom":[{"system":"phone","value":"555"}],"zzUnknown":{"system":"MRN"},` +
				`"managingOrganization":{"identifier":{"system":"MRN","value":"org"}}}`,
			want: `{"resourceType":"Patient","id":"p1","extension":[{"url":"http://x.example/e","valueString":"a"}],` +
				`"identifier":[{"system":"https://hospital.example/mrn","value":"12345","type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR"}]}},` +
				`{"system":"urn:oid:2.16.840.1.113883.4.1","value":"999"},{"system":"http://hl7.org/fhir/sid/us-ssn","value":"1"}],` +
				`"telecom":[{"system":"phone","value":"555"}],"zzUnknown":{"system":"MRN"},` +
				`"managingOrganization":{"identifier":{"system":"https://hospital.example/mrn","value":"org"}}}`,
			changed: []string{
				"Patient.identifier[0].system",
				"Patient.identifier[0].type.coding[0].system",
				"Patient.identifier[1].system",
				"Patient.managingOrganization.identifier.system",
			},
		},
		{
			name:    "observation local code gets LOINC beside it",
			profile: "example-lab",
			in: `{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"L","code":"GLU","display":"Glucose"}],"text":"glu"},` +
				`"valueQuantity":{"value":5.40,"unit":"mmol/L"}}`,
			want: `{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"L","code":"GLU","display":"Glucose"},` +
				`{"code":"2345-7","display":"Glucose [Mass/volume] in Serum or Plasma","system":"http://loinc.org"}],"text":"glu"},` +
				`"valueQuantity":{"value":5.40,"unit":"mmol/L"}}`,
			changed: []string{"Observation.code.coding"},
		},
		{
			name:    "coding system aliases; standard coding already present is not added twice",
			profile: "example-lab",
			in: `{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"LN","code":"2345-7"},{"system":"L","code":"GLU"}]},` +
				`"interpretation":[{"coding":[{"system":"SCT","code":"1"}]}]}`,
			want: `{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2345-7"},{"system":"L","code":"GLU"}]},` +
				`"interpretation":[{"coding":[{"system":"http://snomed.info/sct","code":"1"}]}]}`,
			changed: []string{"Observation.code.coding[0].system", "Observation.interpretation[0].coding[0].system"},
		},
		{
			name:    "default profile: no concept maps, template for unknown authority, contained resources",
			profile: "",
			in: `{"resourceType":"Observation","status":"final","contained":[{"resourceType":"Patient","id":"c","identifier":[{"system":"HOSP","value":"1"}]}],` +
				`"code":{"coding":[{"system":"L","code":"GLU"}]}}`,
			want: `{"resourceType":"Observation","status":"final","contained":[{"resourceType":"Patient","id":"c","identifier":[{"system":"urn:fhirgate:identifier:HOSP","value":"1"}]}],` +
				`"code":{"coding":[{"system":"L","code":"GLU"}]}}`,
			changed: []string{"Observation.contained[0].ofType(Patient).identifier[0].system"},
		},
		{
			name:    "nothing to do",
			profile: "default",
			in:      `{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.3","value":"x"}],"gender":"male"}`,
			want:    `{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.3","value":"x"}],"gender":"male"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := mustParse(t, tt.in)
			before := string(in.Bytes())
			got, changed, err := e.NormalizeFHIR(in, tt.profile)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(got.Bytes())); diff != "" {
				t.Errorf("bytes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.changed, changed); diff != "" {
				t.Errorf("changed (-want +got):\n%s", diff)
			}
			if string(in.Bytes()) != before {
				t.Error("input resource modified")
			}
			if got == in {
				t.Error("input resource returned")
			}
			if got.Type != in.Type || got.ID != in.ID {
				t.Errorf("type/id %s/%s, want %s/%s", got.Type, got.ID, in.Type, in.ID)
			}
		})
	}
}

func TestNormalizeFHIRErrors(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	r := mustParse(t, `{"resourceType":"Patient"}`)
	if _, _, err := e.NormalizeFHIR(r, "nope"); fhir.KindOf(err) != fhir.KindInvalid {
		t.Errorf("unknown profile: %v, want KindInvalid", err)
	}
	u := mustParse(t, `{"resourceType":"NotAType"}`)
	if _, _, err := e.NormalizeFHIR(u, ""); fhir.KindOf(err) != fhir.KindInvalid {
		t.Errorf("unknown type: %v, want KindInvalid", err)
	}
}

func TestNormalizedStaysValid(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	r := mustParse(t, `{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"L","code":"GLU"}]},`+
		`"subject":{"identifier":{"system":"MRN","value":"1"}}}`)
	got, _, err := e.NormalizeFHIR(r, "example-lab")
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Resource(got); err != nil {
		t.Errorf("normalized resource invalid: %v", err)
	}
}

// TestIdentityOfConvergesWithMap maps an ADT^A01 and pushes the same
// patient (same MRN and authority) as FHIR: both must get one id.
func TestIdentityOfConvergesWithMap(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	out, err := mapMsg(t, e, adtA01)
	if err != nil {
		t.Fatal(err)
	}
	var practitionerID string
	for _, r := range out.Resources {
		if r.Type == "Practitioner" {
			practitionerID = r.ID
		}
	}
	tests := []struct {
		name, json, want string
		ok               bool
	}{
		{"patient by MRN authority", `{"resourceType":"Patient","identifier":[{"system":"USSSA","value":"999-99-9999"},` +
			`{"system":"MRN","value":"12345","type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR"}]}}]}`,
			out.Resources[0].ID, true},
		{"practitioner by NPI", `{"resourceType":"Practitioner","identifier":[{"system":"2.16.840.1.113883.4.6","value":"1234"}]}`,
			practitionerID, true},
		{"encounter by visit number", `{"resourceType":"Encounter","status":"finished","class":{"code":"IMP"},"identifier":[{"system":"MAIN","value":"V100"}]}`,
			byTypeID(out, "Encounter"), true},
		{"patient without identifier", `{"resourceType":"Patient"}`, "", false},
		{"patient identifier without system", `{"resourceType":"Patient","identifier":[{"value":"1"}]}`, "", false},
		{"observation", `{"resourceType":"Observation","status":"final","code":{"text":"x"}}`, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			norm, _, err := e.NormalizeFHIR(mustParse(t, tt.json), "example-lab")
			if err != nil {
				t.Fatal(err)
			}
			id, ok := e.IdentityOf(norm, "t1")
			if ok != tt.ok || id != tt.want {
				t.Errorf("IdentityOf = %q, %v; want %q, %v", id, ok, tt.want, tt.ok)
			}
		})
	}
}

func byTypeID(out *Output, typ string) string {
	for _, r := range out.Resources {
		if r.Type == typ {
			return r.ID
		}
	}
	return ""
}
