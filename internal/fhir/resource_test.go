package fhir

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseKeepsBytesAndOrder(t *testing.T) {
	t.Parallel()
	in := `{ "resourceType" : "Observation", "status": "final",
	  "valueQuantity": {"value": 1.50, "unit": "mg"}, "_status": {"extension": [{"url": "http://x", "valueString": "é😀"}]},
	  "zeta": 1e3 }`
	r, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"resourceType":"Observation","status":"final","valueQuantity":{"value":1.50,"unit":"mg"},"_status":{"extension":[{"url":"http://x","valueString":"é😀"}]},"zeta":1e3}`
	if diff := cmp.Diff(want, string(r.Bytes())); diff != "" {
		t.Errorf("Bytes (-want +got):\n%s", diff)
	}
	if got := r.Content["valueQuantity"].(map[string]any)["value"]; got != json.Number("1.50") {
		t.Errorf("decimal decoded as %#v, want json.Number(\"1.50\")", got)
	}
	if r.Type != "Observation" || r.ID != "" {
		t.Errorf("Type, ID = %q, %q", r.Type, r.ID)
	}
}

func TestSetIDAndMeta(t *testing.T) {
	t.Parallel()
	r, err := Parse([]byte(`{"resourceType":"Patient","meta":{"profile":["http://p"],"versionId":"9"},"active":true}`))
	if err != nil {
		t.Fatal(err)
	}
	r.SetID("abc")
	r.SetMeta("2", time.Date(2024, 1, 2, 3, 4, 5, 6000, time.UTC))
	want := `{"resourceType":"Patient","id":"abc","meta":{"profile":["http://p"],"versionId":"2","lastUpdated":"2024-01-02T03:04:05.000006Z"},"active":true}`
	if diff := cmp.Diff(want, string(r.Bytes())); diff != "" {
		t.Errorf("Bytes (-want +got):\n%s", diff)
	}
	meta := r.Content["meta"].(map[string]any)
	if meta["versionId"] != "2" || r.Content["id"] != "abc" {
		t.Errorf("decoded view not updated: %v", r.Content)
	}
	// A resource without meta gets one after id.
	r2, _ := Parse([]byte(`{"resourceType":"Patient","active":true}`))
	r2.SetMeta("1", time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC))
	want2 := `{"resourceType":"Patient","meta":{"versionId":"1","lastUpdated":"2024-01-02T03:04:05.000000Z"},"active":true}`
	if diff := cmp.Diff(want2, string(r2.Bytes())); diff != "" {
		t.Errorf("Bytes (-want +got):\n%s", diff)
	}
	r2.SetID("")
	if strings.Contains(string(r2.Bytes()), `"id"`) {
		t.Errorf("SetID(\"\") left an id: %s", r2.Bytes())
	}
}

func TestRewriteStringsTouchesValuesOnly(t *testing.T) {
	t.Parallel()
	r, err := Parse([]byte(`{"resourceType":"Observation","urn:uuid:1":"urn:uuid:1","subject":{"reference":"urn:uuid:1"},"focus":[{"reference":"urn:uuid:2"},{"reference":"urn:uuid:1"}],"note":[{"text":"urn:uuid:1 is mentioned"}],"esc":"urn:uuid:\u0031"}`))
	if err != nil {
		t.Fatal(err)
	}
	r.RewriteStrings(map[string]string{"urn:uuid:1": "Patient/p1"})
	want := `{"resourceType":"Observation","urn:uuid:1":"Patient/p1","subject":{"reference":"Patient/p1"},"focus":[{"reference":"urn:uuid:2"},{"reference":"Patient/p1"}],"note":[{"text":"urn:uuid:1 is mentioned"}],"esc":"Patient/p1"}`
	if diff := cmp.Diff(want, string(r.Bytes())); diff != "" {
		t.Errorf("Bytes (-want +got):\n%s", diff)
	}
	if got := r.Content["subject"].(map[string]any)["reference"]; got != "Patient/p1" {
		t.Errorf("decoded view reference = %v", got)
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat(`{"a":`, MaxDepth+2) + "1" + strings.Repeat("}", MaxDepth+2)
	tests := []struct {
		name, in, expr string
	}{
		{"empty", ``, ""},
		{"not json", `{resourceType: Patient}`, ""},
		{"array", `[{"resourceType":"Patient"}]`, ""},
		{"no resourceType", `{"id":"x"}`, "resourceType"},
		{"numeric resourceType", `{"resourceType":1}`, "resourceType"},
		{"duplicate top-level member", `{"resourceType":"Patient","active":true,"active":false}`, "active"},
		{"duplicate nested member", `{"resourceType":"Patient","name":[{"family":"a","family":"b"}]}`, "name[0].family"},
		{"numeric id", `{"resourceType":"Patient","id":7}`, "Patient.id"},
		{"duplicate after escaping", `{"resourceType":"Patient","active":true,"\u0061ctive":false}`, "active"},
		{"duplicate in a large object", `{"resourceType":"Basic","code":{"text":"x"},"extension":[{"url":"u","k01":1,"k02":1,"k03":1,"k04":1,"k05":1,"k06":1,"k07":1,"k08":1,"k09":1,"k10":1,"k11":1,"k12":1,"k13":1,"k14":1,"k15":1,"k16":1,"k17":1,"k03":2}]}`, "extension[0].k03"},
		{"trailing garbage", `{"resourceType":"Patient"} x`, ""},
		{"too deep", `{"resourceType":"Patient","x":` + deep + `}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.in))
			fe, ok := err.(*Error)
			if !ok || fe.Kind != KindInvalid {
				t.Fatalf("Parse(%q) = %v, want a KindInvalid *Error", tt.in, err)
			}
			if tt.expr != "" && (len(fe.Issues[0].Expression) == 0 || fe.Issues[0].Expression[0] != tt.expr) {
				t.Errorf("expression = %v, want %q", fe.Issues[0].Expression, tt.expr)
			}
		})
	}
}

func TestParseReference(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Reference
		ok   bool
	}{
		{"Patient/123", Reference{Type: "Patient", ID: "123"}, true},
		{"Patient/123/_history/4", Reference{Type: "Patient", ID: "123", Version: "4"}, true},
		{"http://ex.org/fhir/Patient/123", Reference{Base: "http://ex.org/fhir", Type: "Patient", ID: "123"}, true},
		{"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", Reference{}, false},
		{"#contained", Reference{}, false},
		{"Patient?identifier=x|1", Reference{}, false},
		{"patient/123", Reference{}, false},
		{"Patient/", Reference{}, false},
		{"a/b/Patient/1", Reference{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseReference(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParseReference(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestErrorsRenderAsOperationOutcome(t *testing.T) {
	t.Parallel()
	err := Errorf(KindPreconditionFailed, "Patient.id", "version %d expected", 3)
	if KindOf(err) != KindPreconditionFailed || err.Kind.Status() != 412 {
		t.Fatalf("kind %v status %d", KindOf(err), err.Kind.Status())
	}
	var oo Outcome
	if e := json.Unmarshal(OperationOutcome(err.Issues...), &oo); e != nil {
		t.Fatal(e)
	}
	want := Outcome{ResourceType: "OperationOutcome", Issue: []Issue{{Severity: "error", Code: "conflict",
		Diagnostics: "version 3 expected", Expression: []string{"Patient.id"}}}}
	if diff := cmp.Diff(want, oo); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	internal := AsError(errorString("pq: value 'Smith' is bad"))
	if internal.Kind != KindInternal || strings.Contains(internal.Issues[0].Diagnostics, "Smith") {
		t.Errorf("AsError leaked the cause into diagnostics: %+v", internal.Issues)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

// FuzzParse: no input may panic Parse, and whatever Parse accepts must
// re-parse from its own bytes to the same bytes.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"resourceType":"Patient","id":"x","name":[{"given":["a"]}],"_birthDate":{"extension":[]}}`))
	f.Add([]byte(`{"resourceType":"Observation","valueQuantity":{"value":1.50}}`))
	f.Add([]byte(`[1,2]`))
	f.Add([]byte(`{"a":{"b":{"c":"\u00e9\\"}}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := Parse(in)
		if err != nil {
			return
		}
		r.SetID("fuzz")
		r.SetMeta("1", time.Unix(0, 0))
		r.RewriteStrings(map[string]string{"a": "b"})
		out := r.Bytes()
		r2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of own output failed: %v\n%s", err, out)
		}
		if string(r2.Bytes()) != string(out) {
			t.Fatalf("not stable:\n%s\n%s", out, r2.Bytes())
		}
	})
}
