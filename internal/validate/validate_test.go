package validate

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fhirgate/fhirgate/internal/fhir"
)

var (
	// The project keeps one copy of the official examples, beside the API
	// round-trip test that also needs them.
	examplesDir = flag.String("examples", "../api/testdata/fhir-examples", "folder of the official R4 example resources (all must validate, bar knownInvalid)")
	syntheaDir  = flag.String("synthea", "../../../shared/corpus/synthea", "folder of Synthea transaction bundles (every entry must validate)")
)

// issue is the part of an OperationOutcome issue the tests assert.
type issue struct {
	Expr string
	Code string
}

func issuesOf(t *testing.T, err error) []issue {
	t.Helper()
	if err == nil {
		return nil
	}
	var fe *fhir.Error
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is not a *fhir.Error", err)
	}
	if fe.Kind != fhir.KindInvalid {
		t.Errorf("kind = %v, want KindInvalid", fe.Kind)
	}
	var out []issue
	for _, is := range fe.Issues {
		if len(is.Expression) != 1 {
			t.Fatalf("issue %+v: want exactly one expression", is)
		}
		if is.Severity != "error" || is.Diagnostics == "" {
			t.Errorf("issue %+v: want severity error and diagnostics", is)
		}
		out = append(out, issue{is.Expression[0], is.Code})
	}
	return out
}

func validate(t *testing.T, body string) []issue {
	t.Helper()
	r, err := fhir.Parse([]byte(body))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return issuesOf(t, Resource(r))
}

// knownInvalid are official R4 examples that break the base specification,
// with the problems reported (expressions with array indexes removed).
var knownInvalid = map[string][]issue{
	// DeviceMetric.parent allows Reference(Device) only.
	"DeviceMetric-example.json": {{"DeviceMetric.parent.reference", "invalid"}},
	// Observation.performer does not allow Encounter.
	"Observation-clinical-gender.json": {{"Observation.performer.reference", "invalid"}},
	// Nested items lack the mandatory linkId (Questionnaire.item.linkId 1..1).
	"Questionnaire-qs1.json": {{"Questionnaire.item.item.item.item.linkId", "required"}, {"Questionnaire.item.item.item.linkId", "required"}, {"Questionnaire.item.item.linkId", "required"}},
	// name and status are 1..1; one manifest reference has an id over 64 characters.
	"ImplementationGuide-fhir.json": {{"ImplementationGuide.manifest.resource.reference.reference", "value"}, {"ImplementationGuide.name", "required"}, {"ImplementationGuide.status", "required"}},
	"ig-r4.json":                    {{"ImplementationGuide.manifest.resource.reference.reference", "value"}, {"ImplementationGuide.name", "required"}, {"ImplementationGuide.status", "required"}},
}

var indexes = regexp.MustCompile(`\[[0-9]+\]`)

func checkExamples(t *testing.T, dir string) (passed, total int) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r, err := fhir.Parse(b)
		if err != nil {
			t.Errorf("%s: parse: %v", name, err)
			continue
		}
		total++
		got := issuesOf(t, Resource(r))
		if got == nil {
			passed++
		}
		// Reduce to distinct problems so the table stays readable.
		seen := map[issue]bool{}
		var distinct []issue
		for _, is := range got {
			is.Expr = indexes.ReplaceAllString(is.Expr, "")
			if !seen[is] {
				seen[is] = true
				distinct = append(distinct, is)
			}
		}
		sort.Slice(distinct, func(i, j int) bool { return distinct[i].Expr < distinct[j].Expr })
		if diff := cmp.Diff(knownInvalid[name], distinct); diff != "" {
			t.Errorf("%s: issues (-want +got):\n%s", name, diff)
		}
	}
	return passed, total
}

func TestExamplesAll(t *testing.T) {
	t.Parallel()
	passed, total := checkExamples(t, *examplesDir)
	if total != 649 {
		t.Errorf("%s holds %d examples, want the 649 of the R4 examples package", *examplesDir, total)
	}
	if want := total - len(knownInvalid); passed != want {
		t.Errorf("%d of %d examples valid, want %d", passed, total, want)
	}
	t.Logf("%d of %d examples valid", passed, total)
}

func TestSynthea(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join(*syntheaDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Skipf("no Synthea bundles in %s (set -synthea)", *syntheaDir)
	}
	entries := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		bundle, err := fhir.Parse(b)
		if err != nil {
			t.Fatalf("%s: parse: %v", filepath.Base(f), err)
		}
		// Validate each entry as the resource a transaction would write.
		list, _ := bundle.Content["entry"].([]any)
		for i, e := range list {
			res, err := fhir.ParseValue(e.(map[string]any)["resource"])
			if err != nil {
				t.Fatalf("%s entry %d: %v", filepath.Base(f), i, err)
			}
			entries++
			if err := Resource(res); err != nil {
				t.Errorf("%s entry %d (%s): %v", filepath.Base(f), i, res.Type, err)
			}
		}
		if err := Resource(bundle); err != nil {
			t.Errorf("%s: bundle: %v", filepath.Base(f), err)
		}
	}
	t.Logf("%d Synthea resources in %d bundles validated", entries, len(files))
}

func TestValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
	}{
		{"minimal patient", `{"resourceType":"Patient"}`},
		{"primitive extension arrays with nulls", `{"resourceType":"Patient","name":[{"given":["Ann",null,"Bo"],"_given":[null,{"extension":[{"url":"http://x/e","valueCode":"masked"}]},{"id":"g3"}]}]}`},
		{"primitive extension without value", `{"resourceType":"Patient","_birthDate":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/data-absent-reason","valueCode":"unknown"}]}}`},
		{"extension on required primitive satisfies min", `{"resourceType":"Observation","_status":{"extension":[{"url":"http://x/e","valueString":"s"}]},"code":{"text":"t"}}`},
		{"extension on choice primitive", `{"resourceType":"Observation","status":"final","code":{"text":"t"},"valueString":"x","_valueString":{"id":"a"}}`},
		{"contained and fragment reference", `{"resourceType":"Observation","status":"final","code":{"text":"t"},"contained":[{"resourceType":"Patient","id":"p1"}],"subject":{"reference":"#p1"}}`},
		{"reference forms", `{"resourceType":"Observation","status":"final","code":{"text":"t"},
			"subject":{"reference":"Patient/1/_history/2"},
			"basedOn":[{"reference":"https://ehr.example.org/fhir/CarePlan/9"},{"reference":"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"},{"reference":"ServiceRequest?identifier=http://x|1"}],
			"performer":[{"reference":"urn:oid:1.2.3.4"},{"reference":"Organization/o.1-a"}],
			"focus":[{"reference":"Medication/m"}]}`},
		{"decimal precision and exponents", `{"resourceType":"Observation","status":"final","code":{"text":"t"},"valueQuantity":{"value":1.500e3}}`},
		{"datetimes", `{"resourceType":"Observation","status":"final","code":{"text":"t"},"effectiveDateTime":"2024","issued":"2024-02-29T23:59:60.123+14:00","valueTime":"00:00:00"}`},
		{"bundle entries", `{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0","resource":{"resourceType":"Patient","active":true},"request":{"method":"POST","url":"Patient"}},{"request":{"method":"DELETE","url":"Patient/2"}}]}`},
		{"bundle response outcome", `{"resourceType":"Bundle","type":"transaction-response","entry":[{"response":{"status":"200","outcome":{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational"}]}}}]}`},
		{"parameters with resource", `{"resourceType":"Parameters","parameter":[{"name":"r","resource":{"resourceType":"Patient","id":"x"}},{"name":"p","part":[{"name":"q","valueInteger":-3}]}]}`},
		{"nested questionnaire items", `{"resourceType":"Questionnaire","status":"draft","item":[{"linkId":"1","type":"group","item":[{"linkId":"1.1","type":"integer","item":[{"linkId":"1.1.1","type":"display"}]}]}]}`},
		{"base64", `{"resourceType":"Binary","contentType":"text/plain","data":"aGVsbG8/\n d29ybGQ="}`},
		{"narrative", `{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}}`},
		{"example scenario resourceType element", `{"resourceType":"ExampleScenario","status":"draft","instance":[{"resourceId":"a","resourceType":"Patient"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := validate(t, tt.body); got != nil {
				t.Errorf("unexpected issues: %+v", got)
			}
		})
	}
}

func TestInvalid(t *testing.T) {
	t.Parallel()
	const obs = `"resourceType":"Observation","status":"final","code":{"text":"t"}`
	tests := []struct {
		name string
		body string
		want []issue
	}{
		{"unknown resource type", `{"resourceType":"Patience"}`, []issue{{"resourceType", "invalid"}}},
		{"abstract resource type", `{"resourceType":"DomainResource"}`, []issue{{"resourceType", "invalid"}}},
		{"bad id", `{"resourceType":"Patient","id":"a/b"}`, []issue{{"Patient.id", "value"}}},
		{"unknown element", `{"resourceType":"Patient","nickname":"x"}`, []issue{{"Patient.nickname", "structure"}}},
		{"unknown nested element", `{"resourceType":"Patient","name":[{"family":"x"},{"surname":"y"}]}`, []issue{{"Patient.name[1].surname", "structure"}}},
		{"resourceType below root", `{"resourceType":"Patient","name":[{"resourceType":"HumanName","family":"x"}]}`, []issue{{"Patient.name[0].resourceType", "structure"}}},
		{"choice type not allowed", `{` + obs + `,"valueReference":{"reference":"Patient/1"}}`, []issue{{"Observation.valueReference", "structure"}}},
		{"two choice values", `{` + obs + `,"valueString":"a","valueQuantity":{"value":1}}`, []issue{{"Observation.value[x]", "invalid"}}},
		{"choice value and other extension", `{` + obs + `,"valueString":"a","_valueBoolean":{"id":"x"}}`, []issue{{"Observation.value[x]", "invalid"}}},
		{"missing required", `{"resourceType":"Observation"}`, []issue{{"Observation.code", "required"}, {"Observation.status", "required"}}},
		{"missing required choice", `{"resourceType":"MedicationRequest","status":"active","intent":"order","subject":{"reference":"Patient/1"}}`, []issue{{"MedicationRequest.medication[x]", "required"}}},
		{"resource type that is a datatype", `{"resourceType":"Extension"}`, []issue{{"resourceType", "invalid"}}},
		{"extension without url", `{"resourceType":"Patient","extension":[{"valueString":"x"}]}`, []issue{{"Patient.extension[0].url", "required"}}},
		{"missing required in backbone", `{"resourceType":"Patient","link":[{"type":"seealso"}]}`, []issue{{"Patient.link[0].other", "required"}}},
		{"array for max 1", `{"resourceType":"Patient","birthDate":["2000-01-01"]}`, []issue{{"Patient.birthDate", "structure"}}},
		{"object for max *", `{"resourceType":"Patient","name":{"family":"x"}}`, []issue{{"Patient.name", "structure"}}},
		{"empty object", `{"resourceType":"Patient","maritalStatus":{}}`, []issue{{"Patient.maritalStatus", "structure"}}},
		{"empty array", `{"resourceType":"Patient","name":[]}`, []issue{{"Patient.name", "structure"}}},
		{"null value", `{"resourceType":"Patient","gender":null}`, []issue{{"Patient.gender", "structure"}}},
		{"null in array without extension", `{"resourceType":"Patient","name":[{"given":["a",null]}]}`, []issue{{"Patient.name[0].given[1]", "structure"}}},
		{"null in complex array", `{"resourceType":"Patient","name":[null]}`, []issue{{"Patient.name[0]", "structure"}}},
		{"string for object", `{"resourceType":"Patient","maritalStatus":"M"}`, []issue{{"Patient.maritalStatus", "structure"}}},
		{"object for primitive", `{"resourceType":"Patient","gender":{"code":"male"}}`, []issue{{"Patient.gender", "value"}}},
		{"empty string", `{"resourceType":"Patient","name":[{"family":""}]}`, []issue{{"Patient.name[0].family", "value"}}},
		{"code whitespace", `{"resourceType":"Patient","gender":"fe  male"}`, []issue{{"Patient.gender", "value"}}},
		{"boolean as string", `{"resourceType":"Patient","active":"true"}`, []issue{{"Patient.active", "value"}}},
		{"date not in calendar", `{"resourceType":"Patient","birthDate":"2023-02-29"}`, []issue{{"Patient.birthDate", "value"}}},
		{"date with time", `{"resourceType":"Patient","birthDate":"2023-02-01T10:00:00Z"}`, []issue{{"Patient.birthDate", "value"}}},
		{"dateTime without zone", `{` + obs + `,"effectiveDateTime":"2023-02-01T10:00:00"}`, []issue{{"Observation.effective.ofType(dateTime)", "value"}}},
		{"instant without time", `{` + obs + `,"issued":"2023-02-01"}`, []issue{{"Observation.issued", "value"}}},
		{"time out of range", `{` + obs + `,"valueTime":"24:00:00"}`, []issue{{"Observation.value.ofType(time)", "value"}}},
		{"decimal as string", `{` + obs + `,"valueQuantity":{"value":"1.5"}}`, []issue{{"Observation.value.ofType(Quantity).value", "value"}}},
		{"integer with fraction", `{` + obs + `,"valueInteger":1.0}`, []issue{{"Observation.value.ofType(integer)", "value"}}},
		{"integer out of range", `{` + obs + `,"valueInteger":2147483648}`, []issue{{"Observation.value.ofType(integer)", "value"}}},
		{"unsignedInt negative", `{"resourceType":"Patient","photo":[{"size":-1}]}`, []issue{{"Patient.photo[0].size", "value"}}},
		{"positiveInt zero", `{"resourceType":"Patient","_active":{"extension":[{"url":"http://x","valuePositiveInt":0}]}}`, []issue{{"Patient.active.extension[0].value.ofType(positiveInt)", "value"}}},
		{"uri with space", `{"resourceType":"Patient","identifier":[{"system":"http://x y"}]}`, []issue{{"Patient.identifier[0].system", "value"}}},
		{"bad base64", `{"resourceType":"Patient","photo":[{"data":"abc"}]}`, []issue{{"Patient.photo[0].data", "value"}}},
		{"bad oid", `{"resourceType":"Patient","extension":[{"url":"http://x","valueOid":"urn:oid:1.02"}]}`, []issue{{"Patient.extension[0].value.ofType(oid)", "value"}}},
		{"bad uuid", `{"resourceType":"Patient","extension":[{"url":"http://x","valueUuid":"urn:uuid:ABC"}]}`, []issue{{"Patient.extension[0].value.ofType(uuid)", "value"}}},
		{"xhtml not a div", `{"resourceType":"Patient","text":{"status":"generated","div":"<p>x</p>"}}`, []issue{{"Patient.text.div", "value"}}},
		{"_x on complex element", `{"resourceType":"Patient","_name":[{"id":"a"}]}`, []issue{{"Patient._name", "structure"}}},
		{"_x content", `{"resourceType":"Patient","_gender":{"value":"x"}}`, []issue{{"Patient.gender.value", "structure"}}},
		{"_x not an object", `{"resourceType":"Patient","_gender":"x"}`, []issue{{"Patient._gender", "structure"}}},
		{"_x array misaligned", `{"resourceType":"Patient","name":[{"given":["a","b"],"_given":[{"id":"1"}]}]}`, []issue{{"Patient.name[0]._given", "structure"}}},
		{"_x array null without value", `{"resourceType":"Patient","name":[{"_given":[null,{"id":"1"}]}]}`, []issue{{"Patient.name[0].given[0]", "structure"}}},
		{"reference target not allowed", `{` + obs + `,"subject":{"reference":"Medication/1"}}`, []issue{{"Observation.subject.reference", "invalid"}}},
		{"conditional reference target not allowed", `{` + obs + `,"subject":{"reference":"Medication?code=x"}}`, []issue{{"Observation.subject.reference", "invalid"}}},
		{"reference unknown type", `{` + obs + `,"subject":{"reference":"Patients/1"}}`, []issue{{"Observation.subject.reference", "value"}}},
		{"reference bad id", `{` + obs + `,"subject":{"reference":"Patient/a b"}}`, []issue{{"Observation.subject.reference", "value"}}},
		{"reference bad urn", `{` + obs + `,"subject":{"reference":"urn:uuid:123"}}`, []issue{{"Observation.subject.reference", "value"}}},
		{"contained without resourceType", `{"resourceType":"Patient","contained":[{"id":"x"}]}`, []issue{{"Patient.contained[0].resourceType", "required"}}},
		{"contained unknown element", `{"resourceType":"Patient","contained":[{"resourceType":"Practitioner","nickname":"x"}]}`, []issue{{"Patient.contained[0].nickname", "structure"}}},
		{"contained bad id", `{"resourceType":"Patient","contained":[{"resourceType":"Practitioner","id":"#x"}]}`, []issue{{"Patient.contained[0].id", "value"}}},
		{"bundle entry invalid", `{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation","valueBoolean":"yes"}}]}`,
			[]issue{{"Bundle.entry[0].resource.code", "required"}, {"Bundle.entry[0].resource.status", "required"}, {"Bundle.entry[0].resource.value.ofType(boolean)", "value"}, {"Bundle.type", "required"}}},
		{"bundle outcome wrong type", `{"resourceType":"Bundle","type":"batch-response","entry":[{"response":{"status":"200","outcome":{"resourceType":"Patient"}}}]}`, []issue{{"Bundle.entry[0].response.outcome.resourceType", "invalid"}}},
		{"parameters resource invalid", `{"resourceType":"Parameters","parameter":[{"name":"r","resource":{"resourceType":"Patient","gender":1}}]}`, []issue{{"Parameters.parameter[0].resource.gender", "value"}}},
		{"nested questionnaire item", `{"resourceType":"Questionnaire","status":"draft","item":[{"linkId":"1","type":"group","item":[{"type":"string"}]}]}`, []issue{{"Questionnaire.item[0].item[0].linkId", "required"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, validate(t, tt.body)); diff != "" {
				t.Errorf("issues (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMaxIssues(t *testing.T) {
	t.Parallel()
	m := map[string]any{"resourceType": "Patient"}
	for i := 0; i < 2*MaxIssues; i++ {
		m["x"+strings.Repeat("y", i)] = true
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := validate(t, string(b)); len(got) != MaxIssues {
		t.Errorf("%d issues, want %d", len(got), MaxIssues)
	}
}

// TestNoValuesInDiagnostics makes sure messages name rules, not content:
// every bad value below carries a marker that must not appear.
func TestNoValuesInDiagnostics(t *testing.T) {
	t.Parallel()
	const marker = "Smithson"
	body := `{"resourceType":"Patient","id":"Smithson/1","gender":"Smithson  x","birthDate":"Smithson",
		"name":[{"family":["Smithson"]}],"telecom":[{"system":"url","value":{"v":"Smithson"}}],
		"photo":[{"data":"Smithson!","url":"http://Smithson x"}],"text":{"status":"generated","div":"Smithson"},
		"generalPractitioner":[{"reference":"Smithson/Smithson"}],"managingOrganization":{"reference":"urn:uuid:Smithson"}}`
	r, err := fhir.Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	err = Resource(r)
	var fe *fhir.Error
	if !errors.As(err, &fe) || len(fe.Issues) < 10 {
		t.Fatalf("want at least 10 issues, got %v", err)
	}
	for _, is := range fe.Issues {
		if strings.Contains(is.Diagnostics, marker) {
			t.Errorf("diagnostics quote the value: %q", is.Diagnostics)
		}
	}
}

func TestNilResource(t *testing.T) {
	t.Parallel()
	if fhir.KindOf(Resource(nil)) != fhir.KindInvalid {
		t.Error("nil resource: want KindInvalid")
	}
}

// observation is a typical 2 KB vital-signs Observation.
const observation = `{"resourceType":"Observation","id":"bp-1","meta":{"versionId":"3","lastUpdated":"2024-05-01T10:11:12.123456Z","profile":["http://hl7.org/fhir/StructureDefinition/vitalsigns","http://hl7.org/fhir/StructureDefinition/bp"]},
"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs","display":"Vital Signs"}]}],
"code":{"coding":[{"system":"http://loinc.org","code":"85354-9","display":"Blood pressure panel with all children optional"}],"text":"Blood pressure"},
"subject":{"reference":"Patient/example","display":"Amy Shaw"},"encounter":{"reference":"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"},
"effectiveDateTime":"2024-04-30T09:30:10+01:00","issued":"2024-04-30T09:35:00.000+01:00","performer":[{"reference":"Practitioner/example"}],
"interpretation":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation","code":"L","display":"low"}],"text":"Below low normal"}],
"bodySite":{"coding":[{"system":"http://snomed.info/sct","code":"368209003","display":"Right arm"}]},
"identifier":[{"system":"urn:ietf:rfc:3986","value":"urn:uuid:187e0c12-8dd2-67e2-99b2-bf273c878281"}],
"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6","display":"Systolic blood pressure"}]},"valueQuantity":{"value":107.50,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"},
"interpretation":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation","code":"N","display":"normal"}]}]},
{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4","display":"Diastolic blood pressure"}]},"valueQuantity":{"value":60,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"},
"interpretation":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation","code":"L","display":"low"}],"text":"Below low normal"}]}],
"extension":[{"url":"http://example.org/fhir/StructureDefinition/device-position","valueCodeableConcept":{"coding":[{"system":"http://snomed.info/sct","code":"33586001","display":"Sitting position"}]}}],
"note":[{"text":"Measured after five minutes of rest.","time":"2024-04-30T09:31:00Z"}]}`

func BenchmarkValidateObservation(b *testing.B) {
	r, err := fhir.Parse([]byte(observation))
	if err != nil {
		b.Fatal(err)
	}
	if err := Resource(r); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(observation)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Resource(r); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzResource checks that parsing and validating arbitrary input never
// panics and that every failure is a well-formed KindInvalid error.
func FuzzResource(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(*examplesDir, "*.json"))
	for i, file := range files {
		if i%25 != 0 { // a sample of the examples keeps start-up quick
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(observation))
	f.Add([]byte(`{"resourceType":"Patient","name":[{"given":["a",null],"_given":[null,{"id":"x"}]}],"contained":[{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation"}}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := fhir.Parse(body)
		if err != nil {
			return
		}
		err = Resource(r)
		if err == nil {
			return
		}
		var fe *fhir.Error
		if !errors.As(err, &fe) || fe.Kind != fhir.KindInvalid || len(fe.Issues) == 0 || len(fe.Issues) > MaxIssues {
			t.Fatalf("malformed error %#v", err)
		}
		for _, is := range fe.Issues {
			if len(is.Expression) != 1 || is.Code == "" {
				t.Fatalf("malformed issue %+v", is)
			}
		}
	})
}
