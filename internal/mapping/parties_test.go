package mapping

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMapPartiesAndIGDetails covers the IG details added in 2026.11.6:
// the mother (PID-21), guarantor (GT1), insured (IN1) and insurer, the
// birth time, one patient-animal extension from two fields, telecom
// values, coding versions and per-triplet value maps, the visit status
// from PV1, the notes right after an OBR, and one identifier for
// ORC-2/OBR-2 naming the same order.
func TestMapPartiesAndIGDetails(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	msg := `MSH|^~\&|APP|FAC|RCV|FAC|20240301101500||ADT^A08^ADT_A08|CTL10|P|2.8
PID|1||12345^^^MRN^MR||Doe^John||198008181126|M|||||^^CP^^^^^^^^^5551234||ara^Arabic^HL70296^eng^English^HL70296^v2^v2.1||||||4711^^^MRN^AND||||||||||||||125097000^Goat^SCT|4880003^Beagle^SCT
PV1|1|P|||||||||||||||||V100^^^MAIN^VN|||||||||||||||||||||||||20240301101000|20240302101000
GT1|1|G1^^^MRN^MR|Roe^Rita||||||F||BRO
IN1|1|PLAN1|INS1^^^MRN^NIIP|Acme Insurance|1 Way^^Town^IL|||||||||||Roe^Richard|SPO
`
	out := mapValid(t, e, msg)
	p := only(t, out, "Patient")
	want := map[string]any{
		"_birthDate": map[string]any{"extension": []any{map[string]any{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1980-08-18T11:26:00Z"}}},
		"telecom":    []any{map[string]any{"system": "phone", "use": "home", "value": "5551234"}},
		"communication": []any{map[string]any{"preferred": true, "language": map[string]any{"coding": []any{
			map[string]any{"system": "urn:ietf:bcp:47", "code": "ar", "display": "Arabic", "version": "v2"},
			map[string]any{"system": "urn:ietf:bcp:47", "code": "en", "display": "English", "version": "v2.1"},
		}}}},
	}
	for k, w := range want {
		if d := cmp.Diff(w, p[k]); d != "" {
			t.Errorf("Patient.%s (-want +got):\n%s", k, d)
		}
	}
	var animals int
	for _, x := range p["extension"].([]any) {
		if x.(map[string]any)["url"] == "http://hl7.org/fhir/StructureDefinition/patient-animal" {
			animals++
			if n := len(x.(map[string]any)["extension"].([]any)); n != 2 {
				t.Errorf("patient-animal has %d parts, want species and breed", n)
			}
		}
	}
	if animals != 1 {
		t.Errorf("%d patient-animal extensions, want 1", animals)
	}
	if s := only(t, out, "Encounter")["status"]; s != "finished" {
		t.Errorf("encounter status %v, want finished (A08 with a discharge date)", s)
	}
	rel := map[string]bool{}
	for _, r := range byType(out, "RelatedPerson") {
		c := r["relationship"].([]any)[0].(map[string]any)["coding"].([]any)[0].(map[string]any)
		rel[c["code"].(string)] = c["system"] == "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
	}
	if d := cmp.Diff(map[string]bool{"MTH": true, "BRO": true, "SPS": true}, rel); d != "" {
		t.Errorf("related persons by RoleCode (-want +got):\n%s", d)
	}
	cov := only(t, out, "Coverage")
	payor := cov["payor"].([]any)
	if len(payor) != 1 || payor[0].(map[string]any)["display"] != "Acme Insurance" || payor[0].(map[string]any)["reference"] == nil {
		t.Errorf("payor %v, want one item with the insurer's name and reference", payor)
	}
	if cov["subscriber"] == nil {
		t.Error("coverage without subscriber")
	}
	insurer := map[string]any(nil)
	for _, o := range byType(out, "Organization") {
		if ref, _ := payor[0].(map[string]any)["reference"].(string); ref == "Organization/"+o["id"].(string) {
			insurer = o
		}
	}
	if insurer == nil || insurer["address"] == nil {
		t.Errorf("the insurer the payor names has no address: %v", insurer)
	}

	orm := `MSH|^~\&|APP|FAC|RCV|FAC|20240301101500||ORM^O01^ORM_O01|CTL11|P|2.8
PID|1||12345^^^MRN^MR||Doe^John||19800818|M
ORC|NW|P1^PLC||||||||||
OBR|1|P1^PLC||GLU^Glucose^L
NTE|1||Fasting
NTE|2||Morning draw
OBX|1|NM|GLU^Glucose^L||5.4|mmol/L
NTE|1||Not an order note
`
	out = mapValid(t, e, orm)
	sr := only(t, out, "ServiceRequest")
	if n := len(sr["identifier"].([]any)); n != 1 {
		t.Errorf("%d identifiers for ORC-2 = OBR-2, want 1", n)
	}
	if d := cmp.Diff([]any{map[string]any{"text": "Fasting"}, map[string]any{"text": "Morning draw"}}, sr["note"]); d != "" {
		t.Errorf("order notes (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]any{map[string]any{"text": "Not an order note"}}, only(t, out, "Observation")["note"]); d != "" {
		t.Errorf("result notes (-want +got):\n%s", d)
	}
}
