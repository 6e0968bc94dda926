package mapping

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fhirgate/fhirgate/internal/hl7v2"
	"github.com/fhirgate/fhirgate/internal/validate"
)

func mapMsg(t testing.TB, e *Engine, msg string) (*Output, error) {
	t.Helper()
	m, err := hl7v2.Parse([]byte(strings.ReplaceAll(msg, "\n", "\r")))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return e.Map(m, "t1")
}

// mapValid maps msg, failing the test if it is not mapped or any resource
// it maps to is not valid FHIR R4.
func mapValid(t testing.TB, e *Engine, msg string) *Output {
	t.Helper()
	out, err := mapMsg(t, e, msg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range out.Resources {
		if err := validate.Resource(r); err != nil {
			t.Errorf("%s invalid: %v", r.Type, err)
		}
	}
	return out
}

// only returns the one resource of type typ in out, failing the test
// when there is not exactly one.
func only(t testing.TB, out *Output, typ string) map[string]any {
	t.Helper()
	list := byType(out, typ)
	if len(list) != 1 {
		t.Fatalf("%d resources of type %s, want 1", len(list), typ)
	}
	return list[0]
}

func byType(out *Output, typ string) []map[string]any {
	var list []map[string]any
	for _, r := range out.Resources {
		if r.Type == typ {
			list = append(list, r.Content)
		}
	}
	return list
}

const adtA01 = `MSH|^~\&|EPIC|EXAMPLE-LAB|RCV|FAC|20240301101500||ADT^A01^ADT_A01|CTL1|P|2.5.1
EVN|A01|20240301101500
PID|1||12345^^^MRN^MR~999-99-9999^^^USSSA^SS||Doe^John^Quincy^Jr^Dr^MD^L||19800102|M|||1 Main St^Apt 2^Springfield^IL^62701^USA^H||^PRN^PH^^1^217^5551234~^NET^Internet^john@example.com|||M
PV1|1|I|ICU^101^A^MAIN||||1234^Smith^Anna^^^^^^NPI&2.16.840.1.113883.4.6&ISO|||MED|||||||||V100^^^MAIN^VN|||||||||||||||||||||||||20240301101000
OBX|1|NM|GLU^Glucose^L||5.40|mmol/L^mmol/L^UCUM|3.9-5.5|N|||F|||20240301100000
ZPI|1|Corner Pharmacy
`

func TestMapADTA01(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	out, err := mapMsg(t, e, adtA01)
	if err != nil {
		t.Fatal(err)
	}
	if out.Profile != "example-lab" || out.Version != e.Version() || out.Version == "" {
		t.Errorf("profile %q version %q", out.Profile, out.Version)
	}
	for _, r := range out.Resources {
		if err := validate.Resource(r); err != nil {
			t.Errorf("%s invalid: %v", r.Type, err)
		}
	}
	p := only(t, out, "Patient")
	wantID := StableID("t1", "Patient", "https://hospital.example/mrn", "12345")
	if got := out.Resources[0].ID; got != wantID {
		t.Errorf("patient id %s, want %s", got, wantID)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"gender", p["gender"], "male"},
		{"birthDate", p["birthDate"], "1980-01-02"},
		{"family", p["name"].([]any)[0].(map[string]any)["family"], "Doe"},
		{"given", p["name"].([]any)[0].(map[string]any)["given"], []any{"John", "Quincy"}},
		{"name use", p["name"].([]any)[0].(map[string]any)["use"], "official"},
		{"mrn system", p["identifier"].([]any)[0].(map[string]any)["system"], "https://hospital.example/mrn"},
		{"ssn system", p["identifier"].([]any)[1].(map[string]any)["system"], "http://hl7.org/fhir/sid/us-ssn"},
		{"phone", p["telecom"].([]any)[0], map[string]any{"system": "phone", "use": "home", "value": "+1 217 5551234"}},
		{"email", p["telecom"].([]any)[1].(map[string]any)["value"], "john@example.com"},
		{"address use", p["address"].([]any)[0].(map[string]any)["use"], "home"},
		{"z-segment", p["extension"].([]any)[0].(map[string]any)["valueString"], "Corner Pharmacy"},
	}
	for _, c := range checks {
		if diff := cmp.Diff(c.want, c.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, diff)
		}
	}
	enc := byType(out, "Encounter")[0]
	if enc["status"] != "in-progress" || enc["class"].(map[string]any)["code"] != "IMP" {
		t.Errorf("encounter status/class = %v / %v", enc["status"], enc["class"])
	}
	// Sender time zone America/Chicago (CST, -06:00) applies without offset.
	if got := enc["period"].(map[string]any)["start"]; got != "2024-03-01T10:10:00-06:00" {
		t.Errorf("period.start = %v", got)
	}
	obs := byType(out, "Observation")[0]
	q := obs["valueQuantity"].(map[string]any)
	if q["value"].(interface{ String() string }).String() != "5.40" || q["system"] != "http://unitsofmeasure.org" {
		t.Errorf("valueQuantity = %v", q)
	}
	// The example-lab concept map adds LOINC beside the local code.
	codings := obs["code"].(map[string]any)["coding"].([]any)
	if len(codings) != 2 || codings[1].(map[string]any)["system"] != "http://loinc.org" {
		t.Errorf("codings = %v", codings)
	}
	if obs["subject"].(map[string]any)["reference"] != "Patient/"+wantID {
		t.Errorf("subject = %v", obs["subject"])
	}
	// ICU^101^A^MAIN: point of care, room, bed and facility, each partOf
	// the broader one; the Encounter refers to the bed.
	locs := map[string]map[string]any{}
	for _, r := range out.Resources {
		if r.Type == "Location" {
			locs["Location/"+r.ID] = r.Content
		}
	}
	if len(byType(out, "Practitioner")) != 1 || len(locs) != 4 {
		t.Errorf("want one Practitioner and four Locations, got %d", len(locs))
	}
	var chain []string
	ref := enc["location"].([]any)[0].(map[string]any)["location"].(map[string]any)["reference"].(string)
	for ref != "" && len(chain) < 5 {
		l := locs[ref]
		chain = append(chain, l["name"].(string)+"/"+l["physicalType"].(map[string]any)["coding"].([]any)[0].(map[string]any)["code"].(string))
		ref = ""
		if p, ok := l["partOf"].(map[string]any); ok {
			ref = p["reference"].(string)
		}
	}
	if diff := cmp.Diff([]string{"A/bd", "101/ro", "ICU/lvl", "MAIN/si"}, chain); diff != "" {
		t.Errorf("location chain (-want +got):\n%s", diff)
	}
	hdr := byType(out, "MessageHeader")
	if len(hdr) != 1 || hdr[0]["eventCoding"].(map[string]any)["code"] != "A01" || hdr[0]["source"].(map[string]any)["name"] != "EPIC" {
		t.Errorf("MessageHeader = %v", hdr)
	}
	// Re-sent: same ids.
	again, err := mapMsg(t, e, adtA01)
	if err != nil {
		t.Fatal(err)
	}
	for i := range out.Resources {
		if out.Resources[i].ID != again.Resources[i].ID {
			t.Errorf("resource %d id changed on re-send", i)
		}
	}
}

func TestMapA40Merge(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	out, err := mapMsg(t, e, `MSH|^~\&|A|B|C|D|20240301||ADT^A40^ADT_A39|C2|P|2.5
EVN|A40|20240301
PID|1||NEW1^^^HOSP&1.2.3&ISO^MR||Doe^Jane
MRG|OLD9^^^HOSP&1.2.3&ISO^MR
`)
	if err != nil {
		t.Fatal(err)
	}
	newID := StableID("t1", "Patient", "urn:oid:1.2.3", "NEW1")
	oldID := StableID("t1", "Patient", "urn:oid:1.2.3", "OLD9")
	got := map[string]any{}
	for _, r := range out.Resources {
		if r.Type == "Patient" {
			got[r.ID] = map[string]any{"link": r.Content["link"], "active": r.Content["active"]}
		}
	}
	want := map[string]any{
		newID: map[string]any{"link": []any{map[string]any{"other": map[string]any{"reference": "Patient/" + oldID}, "type": "replaces"}}, "active": nil},
		oldID: map[string]any{"link": []any{map[string]any{"other": map[string]any{"reference": "Patient/" + newID}, "type": "replaced-by"}}, "active": false},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("merge (-want +got):\n%s", diff)
	}
}

func TestMapErrors(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	tests := []struct {
		name   string
		msg    string
		reject bool
		want   hl7v2.AckError
	}{
		{"unknown type", "MSH|^~\\&|A|B|C|D|20240301||ZZZ^Z01|C|P|2.5\n", true,
			hl7v2.AckError{Segment: "MSH", SegmentIndex: 1, Field: 9, Rep: 1, Comp: 1, Code: "200", Severity: "E", Text: "unsupported message type"}},
		{"unknown event", "MSH|^~\\&|A|B|C|D|20240301||ADT^A99|C|P|2.5\n", true,
			hl7v2.AckError{Segment: "MSH", SegmentIndex: 1, Field: 9, Rep: 1, Comp: 2, Code: "201", Severity: "E", Text: "unsupported event code"}},
		{"missing PID-3", "MSH|^~\\&|A|B|C|D|20240301||ADT^A01|C|P|2.5\nPID|1||||Doe^J\n", false,
			hl7v2.AckError{Segment: "PID", SegmentIndex: 1, Field: 3, Code: "101", Severity: "E", Text: "required field missing"}},
		{"missing PID", "MSH|^~\\&|A|B|C|D|20240301||ADT^A01|C|P|2.5\nEVN|A01\n", false,
			hl7v2.AckError{Segment: "PID", Code: "100", Severity: "E", Text: "required segment missing"}},
		{"bad vaccine date", "MSH|^~\\&|A|B|C|D|20240301||VXU^V04|C|P|2.5\nPID|1||1^^^X^MR\nRXA|0|1|2024130||08^HepB^CVX\n", false,
			hl7v2.AckError{Segment: "RXA", SegmentIndex: 1, Field: 3, Code: "102", Severity: "E", Text: "not a valid HL7 date/time"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := mapMsg(t, e, tc.msg)
			var me *MapError
			if !errors.As(err, &me) {
				t.Fatalf("err = %v, want *MapError", err)
			}
			if me.Reject != tc.reject || len(me.Errs) == 0 {
				t.Fatalf("Reject = %v errs %v", me.Reject, me.Errs)
			}
			if diff := cmp.Diff(tc.want, me.Errs[0]); diff != "" {
				t.Errorf("first error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadRefusesBadFiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file, from, to string
		want                 string // regexp over the error
	}{
		{"unknown converter", "hl7v2/segments.yaml", "{from: PID-5, to: name, type: XPN}", "{from: PID-5, to: name, type: XPQ}",
			`segments\.yaml:\d+: segments\.Patient-PID\.fields\[\d+\]\.type: unknown datatype converter "XPQ"`},
		{"unknown element", "hl7v2/segments.yaml", "{from: PID-7, to: birthDate, type: TS}", "{from: PID-7, to: birthDay, type: TS}",
			`segments\.yaml:\d+: .*\.to: unknown target element Patient\.birthDay`},
		{"bad path", "hl7v2/segments.yaml", "{from: PID-7, to: birthDate, type: TS}", "{from: PID7, to: birthDate, type: TS}",
			`segments\.yaml:\d+: .*\.from: bad segment path "PID7"`},
		{"unknown code map", "hl7v2/segments.yaml", "map: administrative-gender}", "map: gender-x}",
			`segments\.yaml:\d+: .*\.map: unknown code map "gender-x"`},
		{"duplicate type", "hl7v2/mapping.yaml", "[ORU^R01, ORU^R30,", "[ORU^R01, ADT^A01,",
			`mapping\.yaml:\d+: messages\[\d+\]\.types\[1\]: duplicate message type "ADT\^A01"`},
		{"unknown key", "sources/default.yaml", "timezone: UTC", "timezone: UTC\ntimezon: UTC",
			`default\.yaml: .*unknown field "timezon"`},
		{"bad zone", "sources/default.yaml", "timezone: UTC", "timezone: Mars/Base",
			`default\.yaml:\d+: timezone: unknown time zone`},
		{"into another type", "hl7v2/mapping.yaml", "map: Patient-NK1, into: patient}", "map: Patient-NK1, into: related}",
			`mapping\.yaml:\d+: messages\[\d+\]\.resources\[\d+\]\.into: segment map "Patient-NK1" makes a Patient; "related" is not a resource of that type`},
		{"into unknown", "hl7v2/mapping.yaml", "map: Patient-NK1, into: patient}", "map: Patient-NK1, into: nobody}",
			`mapping\.yaml:\d+: .*\.into: unknown resource id "nobody"`},
		{"ref to joined", "hl7v2/mapping.yaml", "{to: patient, ref: patient}]", "{to: patient, ref: contact}]",
			`mapping\.yaml:\d+: .*\.ref: resource "contact" is joined into another and cannot be referenced`},
		{"sibling without array", "hl7v2/segments.yaml", "{from: IN1-9, to: class.name, type: XON, sibling: true}", "{from: IN1-9, to: network, type: XON, sibling: true}",
			`segments\.yaml:\d+: segments\.Coverage-IN1\.fields\[\d+\]\.sibling: sibling needs a path below a top-level array`},
		{"sibling of another array", "hl7v2/segments.yaml", "{from: IN1-2.2, to: class.name, type: ST, sibling: true}", "{from: IN1-2.2, to: contract.display, type: ST, sibling: true}",
			`segments\.yaml:\d+: segments\.Coverage-IN1\.fields\[\d+\]\.sibling: the rule before does not write contract`},
		{"item not repeating", "hl7v2/segments.yaml", "item: contact", "item: gender",
			`segments\.yaml:\d+: segments\.Patient-NK1\.item: Patient\.gender is not a repeating element with children`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := copyMappings(t)
			p := filepath.Join(dir, tc.file)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), tc.from) {
				t.Fatalf("%s lacks %q", tc.file, tc.from)
			}
			if err := os.WriteFile(p, []byte(strings.Replace(string(b), tc.from, tc.to, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = Load(dir)
			if err == nil || !regexp.MustCompile(tc.want).MatchString(err.Error()) {
				t.Errorf("Load error = %v, want match %s", err, tc.want)
			}
		})
	}
}

func copyMappings(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	src := filepath.Join("..", "..", "mappings")
	for _, sub := range []string{"hl7v2", "codemaps", "sources"} {
		files, _ := filepath.Glob(filepath.Join(src, sub, "*.yaml"))
		if err := os.MkdirAll(filepath.Join(dst, sub), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, sub, filepath.Base(f)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dst
}

func TestStableID(t *testing.T) {
	t.Parallel()
	a, b := StableID("t", "Patient", "s", "1"), StableID("t", "Patient", "s1", "")
	if a == b || len(a) != 32 || a != StableID("t", "Patient", "s", "1") || !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(a) {
		t.Errorf("StableID: %s %s", a, b)
	}
}

func TestTimestamps(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, typ, want string }{
		{"2024", "dateTime", "2024"},
		{"202403", "dateTime", "2024-03"},
		{"20240301", "dateTime", "2024-03-01"},
		{"2024030110", "dateTime", "2024-03-01T10:00:00-06:00"},
		{"202403011015+0215", "dateTime", "2024-03-01T10:15:00+02:15"},
		{"20240301101530.25", "instant", "2024-03-01T10:15:30.25-06:00"},
		{"20240701101530", "dateTime", "2024-07-01T10:15:30-05:00"},
		{"20240301101530-0500", "date", "2024-03-01"},
	}
	e := loadEngine(t)
	prof := e.profiles[0]
	for _, p := range e.profiles {
		if p.name == "example-lab" {
			prof = p
		}
	}
	for _, tc := range tests {
		ts, ok := parseTS(tc.in)
		if !ok {
			t.Errorf("parseTS(%q) failed", tc.in)
			continue
		}
		if got, _ := ts.render(tc.typ, prof.loc); got != tc.want {
			t.Errorf("%s as %s = %s, want %s", tc.in, tc.typ, got, tc.want)
		}
	}
	for _, bad := range []string{"20241301", "20240230", "2024030125", "abc", "20240301+2500"} {
		if _, ok := parseTS(bad); ok {
			t.Errorf("parseTS(%q) accepted", bad)
		}
	}
}

func BenchmarkMapADTA01(b *testing.B) {
	e := loadEngine(b)
	m, err := hl7v2.Parse([]byte(strings.ReplaceAll(adtA01, "\n", "\r")))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Map(m, "t1"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMapIGVocabularyAndRoles(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	out := mapValid(t, e, `MSH|^~\&|APP|FAC|RCV|RFAC|20240301101500||ADT^A01^ADT_A01|CTL9|P|2.5.1
PID|1||12345^^^MRN^MR||Doe^John||19800102|M|||||||ara^Arabic^HL70296|M||ACC1^^^MRN^AN
ROL|1|AD|PP^Primary Care Provider^HL70443|77^Smith^Ann^^^^^^NPI|||||||||
NK1|1|Doe^Jane|SPO^Spouse^HL70063|1000&Hospital Lane^Ste. 1^Town^MI^1^USA^BI|555^PRN^CP
PV1|1|I
OBX|1|NM|GLU^Glucose^L||5.40|mmol/L|3.9-5.5|H|||F
`)
	p := byType(out, "Patient")[0]
	rp := byType(out, "RelatedPerson")[0]
	tests := []struct {
		name      string
		got, want any
	}{
		{"marital status", p["maritalStatus"], map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M", "display": "Married"}}}},
		{"language", p["communication"], []any{map[string]any{"preferred": true, "language": map[string]any{"coding": []any{map[string]any{"system": "urn:ietf:bcp:47", "code": "ar", "display": "Arabic"}}}}}},
		{"interpretation", byType(out, "Observation")[0]["interpretation"], []any{map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "H", "display": "High"}}}}},
		{"role code", byType(out, "PractitionerRole")[0]["code"], []any{map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0443", "code": "PP", "display": "Primary Care Provider"}}}}},
		{"account", byType(out, "Account")[0]["identifier"].([]any)[0].(map[string]any)["value"], "ACC1"},
		{"address lines", rp["address"].([]any)[0].(map[string]any)["line"], []any{"1000", "Hospital Lane", "Ste. 1"}},
		{"address use", rp["address"].([]any)[0].(map[string]any)["use"], "billing"},
		{"telecom use from XTN-2", rp["telecom"].([]any)[0].(map[string]any)["use"], "home"},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
}

// NK1 joins the patient as Patient.contact, one item per segment, while
// still making its RelatedPerson; OBX-16 and OBX-25 make the observer's
// and the medical director's PractitionerRole.
func TestMapContactsAndResultRoles(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	msg := `MSH|^~\&|APP|FAC|RCV|FAC|20240301101500||ADT^A01^ADT_A01|CTL9|P|2.5.1
PID|1||12345^^^MRN^MR||Doe^John||19800102|M
NK1|1|Doe^Jane|SPO^Spouse^HL70063|1 Main St^^Springfield^IL^62701||^WPN^PH^^1^217^5550000|N|20200101|||||||F
NK1|2||||||||||||Acme Corp
OBX|1|NM|GLU^Glucose^L||5.40|mmol/L|||||F|||20240301100000||77^Observer^Olga|||||||Big Lab||88^Director^Dan
`
	out, err := mapMsg(t, e, msg)
	if err != nil {
		t.Fatal(err)
	}
	if out.Resources[0].Type != "Patient" {
		t.Fatalf("first resource %s, want Patient", out.Resources[0].Type)
	}
	for _, r := range out.Resources {
		if err := validate.Resource(r); err != nil {
			t.Errorf("%s invalid: %v", r.Type, err)
		}
	}
	contacts := byType(out, "Patient")[0]["contact"].([]any)
	if len(contacts) != 2 {
		t.Fatalf("%d contacts, want 2: %v", len(contacts), contacts)
	}
	first := contacts[0].(map[string]any)
	org, _ := contacts[1].(map[string]any)["organization"].(map[string]any)
	if org == nil || len(contacts[1].(map[string]any)) != 1 {
		t.Errorf("second contact = %v, want only the organization", contacts[1])
	}
	delete(first, "telecom")
	want := map[string]any{
		"name":    map[string]any{"family": "Doe", "given": []any{"Jane"}},
		"address": map[string]any{"line": []any{"1 Main St"}, "city": "Springfield", "state": "IL", "postalCode": "62701"},
		"relationship": []any{
			map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N", "display": "Next-of-Kin"}}},
			map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0063", "code": "SPO", "display": "Spouse"}}},
		},
		"gender": "female",
		"period": map[string]any{"start": "2020-01-01"},
	}
	if d := cmp.Diff(want, first); d != "" {
		t.Errorf("first contact (-want +got):\n%s", d)
	}
	if n := len(byType(out, "RelatedPerson")); n != 2 {
		t.Errorf("%d RelatedPerson, want 2", n)
	}
	var codes []string
	for _, r := range byType(out, "PractitionerRole") {
		c := r["code"].([]any)[0].(map[string]any)["coding"].([]any)[0].(map[string]any)
		codes = append(codes, c["code"].(string))
		if c["code"] == "MDIR" && r["organization"] == nil {
			t.Errorf("medical director without organization: %v", r)
		}
	}
	if d := cmp.Diff([]string{"RO", "MDIR"}, codes); d != "" {
		t.Errorf("role codes (-want +got):\n%s", d)
	}
}

// TestConstantsAreNotShared: what a mapping's constants (set:, const:,
// value:) put into a resource is the resource's own copy, so a later rule
// writing into it (the function a set: made, then its text) cannot change
// the constant every message shares.
func TestConstantsAreNotShared(t *testing.T) {
	t.Parallel()
	set := map[string]any{"function": map[string]any{"coding": []any{map[string]any{"code": "AP"}}}}
	performer, err := resolveTarget("Immunization", "performer")
	if err != nil {
		t.Fatal(err)
	}
	text, err := resolveTarget("Immunization", "performer.function.text")
	if err != nil {
		t.Fatal(err)
	}
	obj := map[string]any{}
	put(obj, performer, "Reference", map[string]any{"actor": map[string]any{"reference": "Practitioner/1"}}, set, nil, "performer", false)
	// A later rule writes into the item the set: completed.
	put(obj, text, "string", "Administering Provider", nil, nil, "performer", false)
	f := set["function"].(map[string]any)
	if _, ok := f["text"]; ok || len(f) != 1 {
		t.Errorf("the shared set: constant was changed by a later rule: %v", set)
	}
	constant := map[string]any{"coding": []any{map[string]any{"code": "X"}}}
	vaccine, err := resolveTarget("Immunization", "vaccineCode")
	if err != nil {
		t.Fatal(err)
	}
	put(obj, vaccine, "CodeableConcept", cloneConst(constant), nil, nil, "", false)
	obj["vaccineCode"].(map[string]any)["text"] = "changed"
	if _, ok := constant["text"]; ok {
		t.Errorf("a const: value joined the resource without being copied")
	}
}
