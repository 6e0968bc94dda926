package mapping

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPatientExtensions maps the demographic extensions of PID and the
// MessageHeader of MSH.
func TestPatientExtensions(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	out, err := mapMsg(t, e, `MSH|^~\&|APP^1.2.3^ISO|FAC|RCV^2.3.4^ISO|RFAC|20240301||ADT^A04^ADT_A01|C9|P|2.5.1
PID|1||77^^^MRN^MR||Doe^Jane||19800102|F||2106-3^White^CDCREC~2028-9^Asian^CDCREC||||||||||||N^Not Hispanic^HL70189|Springfield|||US^United States^ISO3166_1
PV1|1|O
`)
	if err != nil {
		t.Fatal(err)
	}
	p := byType(out, "Patient")[0]
	byURL := map[string]any{}
	for _, x := range p["extension"].([]any) {
		m := x.(map[string]any)
		byURL[m["url"].(string)] = m
	}
	race := byURL["http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"]
	wantRace := map[string]any{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race", "extension": []any{
		map[string]any{"url": "ombCategory", "valueCoding": map[string]any{"system": cdcRaceSystem, "code": "2106-3", "display": "White"}},
		map[string]any{"url": "ombCategory", "valueCoding": map[string]any{"system": cdcRaceSystem, "code": "2028-9", "display": "Asian"}},
		map[string]any{"url": "text", "valueString": "White+Asian"},
	}}
	if diff := cmp.Diff(wantRace, race); diff != "" {
		t.Errorf("race (-want +got):\n%s", diff)
	}
	eth := byURL["http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"].(map[string]any)
	if c := eth["extension"].([]any)[0].(map[string]any)["valueCoding"].(map[string]any)["code"]; c != "2186-5" {
		t.Errorf("ethnicity code %v", c)
	}
	bp := byURL["http://hl7.org/fhir/StructureDefinition/patient-birthPlace"].(map[string]any)
	if diff := cmp.Diff(map[string]any{"text": "Springfield"}, bp["valueAddress"]); diff != "" {
		t.Errorf("birthPlace (-want +got):\n%s", diff)
	}
	cz := byURL["http://hl7.org/fhir/StructureDefinition/patient-citizenship"].(map[string]any)
	if u := cz["extension"].([]any)[0].(map[string]any)["url"]; u != "code" {
		t.Errorf("citizenship inner url %v", u)
	}
	h := byType(out, "MessageHeader")[0]
	want := map[string]any{"name": "APP", "endpoint": "urn:oid:1.2.3"}
	if diff := cmp.Diff(want, h["source"]); diff != "" {
		t.Errorf("source (-want +got):\n%s", diff)
	}
	if d := h["destination"].([]any)[0].(map[string]any); d["endpoint"] != "urn:oid:2.3.4" || d["receiver"] == nil {
		t.Errorf("destination %v", d)
	}
	for _, r := range out.Resources {
		if r.Type == "MessageHeader" && r.ID != StableID("t1", "MessageHeader", "APP|FAC", "C9") {
			t.Errorf("MessageHeader id %s is not the sender + control id", r.ID)
		}
	}
}
