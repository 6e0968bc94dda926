package search

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func readContent(tb testing.TB, name string) map[string]any {
	tb.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		tb.Fatal(err)
	}
	return m
}

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestExtract(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file string
		want Entries
	}{
		{"extract-patient.json", Entries{
			Tokens: []Token{
				{"_tag", "http://example.org/tags", "t1"},
				{"active", "", "true"},
				{"email", "", "jm@example.org"},
				{"gender", "", "male"},
				{"identifier", "", "noSystem"},
				{"identifier", "http://hospital.example/mrn", "MRN-1"},
				{"phone", "", "555-1234"},
				{"telecom", "", "555-1234"},
				{"telecom", "", "jm@example.org"},
			},
			Strings: []String{
				{"address", "1 main st", "1 Main St"},
				{"address", "8000", "8000"},
				{"address", "ch", "CH"},
				{"address", "zurich", "Zürich"},
				{"address-city", "zurich", "Zürich"},
				{"address-country", "ch", "CH"},
				{"address-postalcode", "8000", "8000"},
				{"family", "muller", "Müller"},
				{"given", "ana", "Ana"},
				{"given", "jose", "José"},
				{"name", "ana", "Ana"},
				{"name", "dr.", "Dr."},
				{"name", "jose", "José"},
				{"name", "jose muller", "Jose Muller"},
				{"name", "muller", "Müller"},
				{"phonetic", "ana", "Ana"},
				{"phonetic", "dr.", "Dr."},
				{"phonetic", "jose", "José"},
				{"phonetic", "jose muller", "Jose Muller"},
				{"phonetic", "muller", "Müller"},
			},
			Dates: []Date{{"birthdate", ts("1970-03-01T00:00:00Z"), ts("1970-03-31T23:59:59.999999Z")}},
			References: []Reference{
				{"general-practitioner", "Practitioner", "pr1"},
				{"organization", "", "http://other.example/fhir/Organization/o1"},
			},
			URIs: []URI{{"_profile", "http://example.org/StructureDefinition/p"}},
		}},
		{"extract-observation.json", Entries{
			Tokens: []Token{
				{"category", "http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs"},
				{"code", "http://loinc.org", "29463-7"},
				{"combo-code", "http://loinc.org", "29463-7"},
				{"combo-code", "http://loinc.org", "8480-6"},
				{"component-code", "http://loinc.org", "8480-6"},
				{"status", "", "final"},
			},
			// effectivePeriod: start in +02:00 to UTC, end a whole day.
			Dates: []Date{{"date", ts("2020-05-01T08:00:00Z"), ts("2020-05-02T23:59:59.999999Z")}},
			References: []Reference{
				{"encounter", "Encounter", "e1"},
				{"patient", "Patient", "p1"},
				{"subject", "Patient", "p1"},
			},
			Quantities: []Quantity{
				{"combo-value-quantity", "", "mm[Hg]", "119.5", "120.5"},
				{"combo-value-quantity", "http://unitsofmeasure.org", "kg", "72.45", "72.55"},
				{"component-value-quantity", "", "mm[Hg]", "119.5", "120.5"},
				{"value-quantity", "http://unitsofmeasure.org", "kg", "72.45", "72.55"},
			},
		}},
		{"extract-encounter.json", Entries{
			Tokens: []Token{
				{"class", "http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB"},
				{"status", "", "finished"},
				{"type", "http://snomed.info/sct", "185349003"},
			},
			Dates: []Date{{"date", ts("2020-05-01T10:00:00Z"), MaxTime}},
			References: []Reference{
				{"participant", "Practitioner", "pr1"},
				{"participant", "RelatedPerson", "rp1"},
				{"patient", "Patient", "p1"},
				{"practitioner", "Practitioner", "pr1"},
				{"service-provider", "Organization", "o1"},
				{"subject", "Patient", "p1"},
			},
			Quantities: []Quantity{{"length", "http://unitsofmeasure.org", "min", "29.5", "30.5"}},
		}},
		{"extract-condition.json", Entries{
			Tokens: []Token{
				{"clinical-status", "http://terminology.hl7.org/CodeSystem/condition-clinical", "active"},
				{"code", "http://snomed.info/sct", "44054006"},
			},
			Strings: []String{{"abatement-string", "in remission", "in remission"}},
			Dates: []Date{
				{"onset-date", ts("2019-01-15T00:00:00Z"), ts("2019-01-15T23:59:59.999999Z")},
				{"recorded-date", ts("2019-01-16T13:30:00.123Z"), ts("2019-01-16T13:30:00.123999Z")},
			},
			References: []Reference{
				{"patient", "Patient", "p1"},
				{"subject", "Patient", "p1"},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			c := readContent(t, tt.file)
			got := Extract(c["resourceType"].(string), c)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Extract mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"smith": "smith", "Smith": "smith", "Müller": "muller", "ÉLODIE": "elodie", "Ǆemal": "ǆemal", "": "",
	} {
		if got := Normalize(in); got != want {
			t.Errorf("Normalize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDateRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in     string
		lo, hi string // "" when invalid
	}{
		{"2020", "2020-01-01T00:00:00Z", "2020-12-31T23:59:59.999999Z"},
		{"2020-02", "2020-02-01T00:00:00Z", "2020-02-29T23:59:59.999999Z"},
		{"2020-02-03", "2020-02-03T00:00:00Z", "2020-02-03T23:59:59.999999Z"},
		{"2020-02-03T10:20", "2020-02-03T10:20:00Z", "2020-02-03T10:20:59.999999Z"},
		{"2020-02-03T10:20Z", "2020-02-03T10:20:00Z", "2020-02-03T10:20:59.999999Z"},
		{"2020-02-03T10:20:30", "2020-02-03T10:20:30Z", "2020-02-03T10:20:30.999999Z"},
		{"2020-02-03T10:20:30+05:30", "2020-02-03T04:50:30Z", "2020-02-03T04:50:30.999999Z"},
		{"2020-02-03T10:20:30.5-01:00", "2020-02-03T11:20:30.5Z", "2020-02-03T11:20:30.599999Z"},
		{"2020-02-03T10:20:30.1234567Z", "2020-02-03T10:20:30.123456Z", "2020-02-03T10:20:30.123456Z"},
		{"2020-13", "", ""},
		{"2021-02-29", "", ""},
		{"2020-02-03T25:00", "", ""},
		{"2020-02-03X", "", ""},
		{"2020Z", "", ""},
		{"2020-02-03T10:20:30+5", "", ""},
		{"20", "", ""},
		{"abcd", "", ""},
	}
	for _, tt := range tests {
		lo, hi, ok := DateRange(tt.in)
		if tt.lo == "" {
			if ok {
				t.Errorf("DateRange(%q) accepted, want rejected", tt.in)
			}
			continue
		}
		if !ok || !lo.Equal(ts(tt.lo)) || !hi.Equal(ts(tt.hi)) {
			t.Errorf("DateRange(%q) = %v, %v, %v; want %s, %s", tt.in, lo, hi, ok, tt.lo, tt.hi)
		}
	}
}

func TestDecimalRange(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, lo, hi string }{
		{"1.5", "1.45", "1.55"},
		{"100", "99.5", "100.5"},
		{"1.50", "1.495", "1.505"},
		{"0", "-0.5", "0.5"},
		{"0.05", "0.045", "0.055"},
		{"-2.5", "-2.55", "-2.45"},
		{"10", "9.5", "10.5"},
		{"1e2", "50", "150"},
		{"1.5e-3", "0.00145", "0.00155"},
		{"x", "", ""},
		{"1.2.3", "", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		lo, hi, ok := decimalRange(tt.in)
		if ok != (tt.lo != "") || lo != tt.lo || hi != tt.hi {
			t.Errorf("decimalRange(%q) = %q, %q, %v; want %q, %q", tt.in, lo, hi, ok, tt.lo, tt.hi)
		}
	}
}

func TestDefinitions(t *testing.T) {
	t.Parallel()
	if n := len(Definitions()); n != 1378 {
		t.Errorf("len(Definitions()) = %d, want 1378", n)
	}
	for _, c := range []struct{ typ, code string }{
		{"Observation", "patient"}, {"Observation", "value-quantity"}, {"Patient", "_tag"},
		{"Patient", "phone"}, {"Condition", "onset-date"}, {"Library", "depends-on"}, {"InsurancePlan", "name"},
	} {
		p := Lookup(c.typ, c.code)
		if p == nil || p.Unsupported != "" {
			t.Errorf("Lookup(%s, %s) = %+v, want a supported parameter", c.typ, c.code, p)
		}
	}
	if p := Lookup("Patient", "deceased"); p == nil || p.Unsupported == "" {
		t.Errorf("Patient deceased should be known but unsupported, got %+v", p)
	}
}

func BenchmarkExtractObservation(b *testing.B) {
	c := readContent(b, "synthea-observation.json")
	b.ReportAllocs()
	for b.Loop() {
		Extract("Observation", c)
	}
}
