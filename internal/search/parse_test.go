package search

import (
	"net/url"
	"strings"
	"testing"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	t.Parallel()
	q, err := Parse("Observation", url.Values{
		"code":           {"http://loinc.org|29463-7,8480-6"},
		"date":           {"ge2020-01", "lt2021"},
		"subject":        {"Patient/p1"},
		"patient":        {"p2"},
		"_count":         {"5000"},
		"_sort":          {"-date,_id"},
		"_total":         {"estimate"},
		"_include":       {"Observation:subject:Patient"},
		"_revinclude":    {"Provenance:target"},
		"_elements":      {"id,code"},
		"bogus":          {"x"},
		"value-quantity": {"gt5.4|http://unitsofmeasure.org|mg"},
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	if q.Count != MaxCount || q.Total != "accurate" {
		t.Errorf("Count, Total = %d, %q", q.Count, q.Total)
	}
	if diff := cmp.Diff([]SortKey{{"date", true}, {"_id", false}}, q.Sort); diff != "" {
		t.Errorf("Sort (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"bogus"}, q.Ignored); diff != "" {
		t.Errorf("Ignored (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Include{{SourceType: "Observation", Param: "subject", TargetType: "Patient"}}, q.Includes); diff != "" {
		t.Errorf("Includes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Include{{SourceType: "Provenance", Param: "target"}}, q.RevIncludes); diff != "" {
		t.Errorf("RevIncludes (-want +got):\n%s", diff)
	}
	byName := map[string][]Value{}
	for _, p := range q.Params {
		byName[p.Name] = append(byName[p.Name], p.Values...)
	}
	code := byName["code"]
	if len(code) != 2 || code[0].System != "http://loinc.org" || code[0].Code != "29463-7" || code[0].AnySystem || !code[1].AnySystem || code[1].Code != "8480-6" {
		t.Errorf("code values = %+v", code)
	}
	if d := byName["date"]; len(d) != 2 || d[0].Prefix != "ge" || !d[0].Lo.Equal(ts("2020-01-01T00:00:00Z")) || d[1].Prefix != "lt" {
		t.Errorf("date values = %+v", d)
	}
	if p := byName["patient"]; len(p) != 1 || p[0].TargetType != "Patient" || p[0].TargetID != "p2" {
		t.Errorf("patient values = %+v", p)
	}
	if s := byName["subject"]; len(s) != 1 || s[0].TargetType != "Patient" || s[0].TargetID != "p1" {
		t.Errorf("subject values = %+v", s)
	}
	if v := byName["value-quantity"]; len(v) != 1 || v[0].Prefix != "gt" || v[0].Number != "5.4" || v[0].System != "http://unitsofmeasure.org" || v[0].Code != "mg" {
		t.Errorf("value-quantity values = %+v", v)
	}
	want := url.Values{
		"code": {"http://loinc.org|29463-7,8480-6"}, "date": {"ge2020-01", "lt2021"}, "subject": {"Patient/p1"},
		"patient": {"p2"}, "value-quantity": {"gt5.4|http://unitsofmeasure.org|mg"}, "_count": {"1000"},
		"_sort": {"-date,_id"}, "_include": {"Observation:subject:Patient"}, "_revinclude": {"Provenance:target"},
		"_elements": {"id,code"}, "_total": {"accurate"},
	}
	if diff := cmp.Diff(want, q.Canonical()); diff != "" {
		t.Errorf("Canonical (-want +got):\n%s", diff)
	}
}

func TestParseEscapes(t *testing.T) {
	t.Parallel()
	q, err := Parse("Patient", url.Values{"identifier": {`sys\|a|v\,1,x`}}, true)
	if err != nil {
		t.Fatal(err)
	}
	v := q.Params[0].Values
	if len(v) != 2 || v[0].System != "sys|a" || v[0].Code != "v,1" || v[1].Code != "x" {
		t.Errorf("values = %+v", v)
	}
	if got := q.Canonical().Get("identifier"); got != `sys\|a|v\,1,x` {
		t.Errorf("Canonical identifier = %q", got)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typ    string
		values url.Values
		strict bool
		want   string // substring of the error, naming the parameter
	}{
		{"Patient", url.Values{"bogus": {"1"}}, true, `unknown search parameter "bogus" for Patient`},
		{"Patient", url.Values{"deceased": {"true"}}, true, `"deceased"`},
		{"Patient", url.Values{"birthdate": {"1970-13"}}, false, `"birthdate"`},
		{"Patient", url.Values{"birthdate": {"xx1970"}}, false, `"birthdate"`},
		{"Patient", url.Values{"_count": {"-1"}}, false, `"_count"`},
		{"Patient", url.Values{"_count": {"ten"}}, false, `"_count"`},
		{"Patient", url.Values{"_sort": {"bogus"}}, false, `"_sort"`},
		{"Patient", url.Values{"_sort": {"general-practitioner"}}, false, `"_sort"`},
		{"Patient", url.Values{"_total": {"some"}}, false, `"_total"`},
		{"Patient", url.Values{"_summary": {"maybe"}}, false, `"_summary"`},
		{"Patient", url.Values{"_include": {"Patient"}}, false, `"_include"`},
		{"Patient", url.Values{"_include": {"Patient:name"}}, false, `"_include"`},
		{"Patient", url.Values{"_include": {"Nope:x"}}, false, `"_include"`},
		{"Patient", url.Values{"_include": {"Observation:subject"}}, false, `"_include"`},
		{"Patient", url.Values{"_include:bad": {"Patient:organization"}}, false, `"_include:bad"`},
		{"Patient", url.Values{"_revinclude": {"Observation:subject:Nope"}}, false, `"_revinclude"`},
		{"Patient", url.Values{"name:missing": {"maybe"}}, false, `"name:missing"`},
		{"Patient", url.Values{"name:below": {"x"}}, false, `"name:below"`},
		{"Patient", url.Values{"gender:exact": {"x"}}, false, `"gender:exact"`},
		{"Patient", url.Values{"identifier": {"|"}}, false, `"identifier"`},
		{"Observation", url.Values{"subject:Patient.name": {"x"}}, false, `chained`},
		{"Observation", url.Values{"subject.name": {"x"}}, false, `chained`},
		{"Patient", url.Values{"_has:Observation:patient:code": {"x"}}, false, `"_has:Observation:patient:code"`},
		{"Observation", url.Values{"subject:Nope": {"x"}}, false, `"subject:Nope"`},
		{"Observation", url.Values{"subject:Group": {"Patient/1"}}, false, `"subject:Group"`},
		{"Observation", url.Values{"subject": {"Nope/1"}}, false, `"subject"`},
		{"Observation", url.Values{"value-quantity": {"abc"}}, false, `"value-quantity"`},
		{"Observation", url.Values{"value-quantity": {"5|sys"}}, false, `"value-quantity"`},
		{"RiskAssessment", url.Values{"probability": {"gtx"}}, false, `"probability"`},
		{"Nope", url.Values{}, false, `unknown resource type`},
	}
	for _, tt := range tests {
		_, err := Parse(tt.typ, tt.values, tt.strict)
		if err == nil {
			t.Errorf("Parse(%s, %v) succeeded, want error", tt.typ, tt.values)
			continue
		}
		if fhir.KindOf(err) != fhir.KindInvalid || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%s, %v) = %v (kind %v), want KindInvalid containing %s", tt.typ, tt.values, err, fhir.KindOf(err), tt.want)
		}
	}
}

func TestParseLenientUnsupported(t *testing.T) {
	t.Parallel()
	q, err := Parse("Patient", url.Values{"deceased": {"true"}, "name": {""}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"deceased", "name"}, q.Ignored); diff != "" {
		t.Errorf("Ignored (-want +got):\n%s", diff)
	}
	if got := q.Condition(new([]any)); got != "TRUE" {
		t.Errorf("Condition = %q, want TRUE", got)
	}
}
