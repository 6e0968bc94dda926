package mapping

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fhirgate/fhirgate/internal/hl7v2"
)

// jsonOf renders v as compact JSON for comparisons of nested content.
func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const ormTwoOrders = `MSH|^~\&|APP|FAC|RCV|RFAC|20240301101500||ORM^O01^ORM_O01|CTL2|P|2.5.1
PID|1||12345^^^MRN^MR||Doe^John
ORC|NW|ORD1
TQ1|1|54^&lbs|P&Post (after)&HL70335^^^^12^min^^PC^120^s|||30^s|202110091600-0800|202111091600-0800|A|as needed|text instruction||2^hr|5
OBR|1|ORD1||GLU^Glucose^L
ORC|NW|ORD2
OBR|2|ORD2||NA^Sodium^L
NTE|1||Fasting||1234^Smith^Anna|202403011015+0000
`

func TestGroupsScopeOrderTiming(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	out := mapValid(t, e, ormTwoOrders)
	srs := byType(out, "ServiceRequest")
	if len(srs) != 2 {
		t.Fatalf("%d ServiceRequests, want 2", len(srs))
	}
	var first, second map[string]any
	for _, sr := range srs {
		switch sr["code"].(map[string]any)["coding"].([]any)[0].(map[string]any)["code"] {
		case "GLU":
			first = sr
		case "NA":
			second = sr
		}
	}
	if first == nil || second == nil {
		t.Fatalf("orders not found: %v", srs)
	}
	want := `{"code":{"coding":[{"code":"P","display":"Post (after)","system":"http://terminology.hl7.org/CodeSystem/v2-0335"}]},` +
		`"repeat":{"boundsPeriod":{"end":"2021-11-09T16:00:00-08:00","start":"2021-10-09T16:00:00-08:00"},"count":5,"duration":2,"durationUnit":"h","offset":2,"period":12,"periodUnit":"min","when":["PC"]}}`
	if diff := cmp.Diff(want, jsonOf(t, first["occurrenceTiming"])); diff != "" {
		t.Errorf("first order's timing (-want +got):\n%s", diff)
	}
	if got := jsonOf(t, first["quantityQuantity"]); got != `{"unit":"lbs","value":54}` {
		t.Errorf("quantity = %s", got)
	}
	if first["priority"] != "asap" || jsonOf(t, first["asNeededCodeableConcept"]) != `{"text":"as needed"}` {
		t.Errorf("priority %v, asNeeded %v", first["priority"], first["asNeededCodeableConcept"])
	}
	// The second order has no TQ1 of its own: it must not take the first's.
	if _, ok := second["occurrenceTiming"]; ok {
		t.Errorf("second order took the first order's timing: %v", second["occurrenceTiming"])
	}
	if _, ok := second["priority"]; ok {
		t.Errorf("second order took the first order's priority")
	}
	// Its note carries the NTE's author and time.
	notes, _ := second["note"].([]any)
	if len(notes) != 1 {
		t.Fatalf("notes = %v", second["note"])
	}
	n := notes[0].(map[string]any)
	if n["text"] != "Fasting" || n["time"] != "2024-03-01T10:15:00Z" || n["authorReference"] == nil {
		t.Errorf("note = %v", n)
	}
}

func TestGroupsOf(t *testing.T) {
	t.Parallel()
	msg := parseMsg(t, "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5\rPID|1\rORC|1\rOBR|1\rOBX|1\rOBR|2\rOBX|2\rORC|2\rTQ1|1\rOBR|3\r")
	inner, groups := groupsOf(msg.Segments, map[string]groupLeader{"ORC": {level: 0}, "OBR": {level: 0, joins: "ORC"}})
	// ORC+OBR: ORC and the OBR after it one order, the second OBR a new
	// one, the second ORC another, the OBR after it part of it.
	if diff := cmp.Diff([]int{-1, -1, 0, 0, 0, 1, 1, 2, 2, 2}, inner); diff != "" {
		t.Errorf("groups (-want +got):\n%s", diff)
	}
	if len(groups) != 3 {
		t.Errorf("%d groups", len(groups))
	}
	// Nested: RXO and RXE each a group inside the ORC's.
	msg = parseMsg(t, "MSH|^~\\&|A|B|C|D|20240101||RDE^O11|1|P|2.5\rPID|1\rORC|1\rTQ1|1\rRXO|1\rRXR|1\rRXE|1\rTQ1|2\rRXR|2\r")
	inner, groups = groupsOf(msg.Segments, map[string]groupLeader{"ORC": {level: 0}, "RXO": {level: 1}, "RXE": {level: 1}})
	if diff := cmp.Diff([]int{-1, -1, 0, 0, 1, 1, 2, 2, 2}, inner); diff != "" {
		t.Errorf("nested groups (-want +got):\n%s", diff)
	}
	if groups[1].parent != 0 || groups[2].parent != 0 {
		t.Errorf("parents %d %d, want 0 0", groups[1].parent, groups[2].parent)
	}
}

const rdeDosage = `MSH|^~\&|APP|FAC|RCV|RFAC|20240301101500||RDE^O11^RDE_O11|CTL3|P|2.5.1
PID|1||12345^^^MRN^MR||Doe^John
ORC|NW|RX1
TQ1|1||TID|||3^D&day&ISO+|||R
RXO|00047040230^Ampicillin^NDC|2|||||||||||||||||||||2^&cap
RXR|PO^Oral
RXE||0143963401^Nicardipine^NDC|5||43^mg/hr|||||3|BG^Bag|12|||||||||||23|mL/hr^mL/hr
TQ1|1||P&Post (after)&HL70335^^^^180^min||||||S
RXR|IV^Intravenous|HAND^HAND
RXD|1|0143963401^Nicardipine^NDC|20240302|10|BG^Bag^L|||After food
RXR|IV^Intravenous
`

func TestRDEDosageFromItsGroup(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	out := mapValid(t, e, rdeDosage)
	var mr, orig map[string]any
	for _, r := range byType(out, "MedicationRequest") {
		switch r["intent"] {
		case "order":
			mr = r
		case "original-order":
			orig = r
		}
	}
	if mr == nil || orig == nil || len(byType(out, "MedicationRequest")) != 2 {
		t.Fatalf("want the RXE's order and the RXO's original order: %v", byType(out, "MedicationRequest"))
	}
	// The RXO's own request: its drug, the ORC-level TQ1 and its RXR, and
	// the total daily dose (RXO-23) per day.
	if got := jsonOf(t, orig["medicationCodeableConcept"]); got != `{"coding":[{"code":"00047040230","display":"Ampicillin","system":"http://hl7.org/fhir/sid/ndc"}]}` {
		t.Errorf("RXO medication = %s", got)
	}
	od := orig["dosageInstruction"].([]any)[0].(map[string]any)
	if got := jsonOf(t, od["maxDosePerPeriod"]); got != `{"denominator":{"code":"d","system":"http://unitsofmeasure.org","unit":"d","value":1},"numerator":{"unit":"cap","value":2}}` {
		t.Errorf("RXO maxDosePerPeriod = %s", got)
	}
	if got := jsonOf(t, od["route"]); got != `{"coding":[{"code":"PO","display":"Oral","system":"http://terminology.hl7.org/CodeSystem/v2-0162"}]}` {
		t.Errorf("RXO route = %s", got)
	}
	dis, _ := mr["dosageInstruction"].([]any)
	if len(dis) != 1 {
		t.Fatalf("dosageInstruction = %v", mr["dosageInstruction"])
	}
	d := dis[0].(map[string]any)
	// No RXE-19: the per-day denominator (a sibling rule) must not stand alone.
	if _, ok := d["maxDosePerPeriod"]; ok {
		t.Errorf("RXE maxDosePerPeriod without RXE-19: %v", d["maxDosePerPeriod"])
	}
	// The RXE's own TQ1 and RXR (after it), not the RXO's or the ORC's.
	if got := jsonOf(t, d["timing"]); got != `{"code":{"coding":[{"code":"P","display":"Post (after)","system":"http://terminology.hl7.org/CodeSystem/v2-0335"}]},"repeat":{"period":180,"periodUnit":"min"}}` {
		t.Errorf("timing = %s", got)
	}
	if got := jsonOf(t, d["route"]); got != `{"coding":[{"code":"IV","display":"Intravenous","system":"http://terminology.hl7.org/CodeSystem/v2-0162"}]}` {
		t.Errorf("route = %s", got)
	}
	if got := jsonOf(t, d["doseAndRate"]); got != `[{"doseQuantity":{"unit":"mg/hr","value":5}},{"rateQuantity":{"unit":"mL/hr","value":23}}]` {
		t.Errorf("doseAndRate = %s", got)
	}
	if got := jsonOf(t, mr["dispenseRequest"]); got != `{"numberOfRepeatsAllowed":12,"quantity":{"unit":"Bag","value":3}}` {
		t.Errorf("dispenseRequest = %s", got)
	}
	if mr["priority"] != "stat" || mr["status"] != "active" {
		t.Errorf("priority %v status %v", mr["priority"], mr["status"])
	}
	md := only(t, out, "MedicationDispense")
	if md["whenHandedOver"] != "2024-03-02" || jsonOf(t, md["quantity"]) != `{"unit":"Bag","value":10}` {
		t.Errorf("dispense = %v", md)
	}
	if ap, _ := md["authorizingPrescription"].([]any); len(ap) != 1 {
		t.Errorf("authorizingPrescription = %v", md["authorizingPrescription"])
	}
}

const oruComponents = `MSH|^~\&|APP|FAC^2.16.840.1.113883.19.4^ISO|RCV|RFAC|20240301101500||ORU^R01^ORU_R01|CTL4|P|2.5.1|||||USA
PID|1||12345^^^MRN^MR||Doe^John
OBR|1|ORD1|FIL1|HR^Heart rate^L
OBX|1|NM|8867-4^Heart rate^LN||60~120|/min^^UCUM|70-80||||F||||||||||||Lab One^^^^^^XX^^^L1|1 Lab Rd^^Town^ST^12345
OBX|2|NM|8310-5^Body temperature^LN||37|Cel^^UCUM|||||F||||||||||||Lab One^^^^^^XX^^^L1|1 Lab Rd^^Town^ST^12345
`

func TestOBXComponentsAndMergedOrganizations(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	out := mapValid(t, e, oruComponents)
	var hr map[string]any
	for _, o := range byType(out, "Observation") {
		if jsonOf(t, o["code"]) == `{"coding":[{"code":"8867-4","display":"Heart rate","system":"http://loinc.org"}]}` {
			hr = o
		}
	}
	if hr == nil {
		t.Fatal("heart rate observation missing")
	}
	if _, ok := hr["valueQuantity"]; ok {
		t.Errorf("a repeated OBX-5 took value[x]: %v", hr["valueQuantity"])
	}
	comps, _ := hr["component"].([]any)
	if len(comps) != 2 {
		t.Fatalf("components = %v", hr["component"])
	}
	want := `{"code":{"coding":[{"code":"8867-4","display":"Heart rate","system":"http://loinc.org"}]},"referenceRange":[{"text":"70-80"}],"valueQuantity":{"code":"/min","system":"http://unitsofmeasure.org","unit":"/min","value":120}}`
	if diff := cmp.Diff(want, jsonOf(t, comps[1])); diff != "" {
		t.Errorf("second component (-want +got):\n%s", diff)
	}
	// Both OBX name one performing organization: one resource, with its
	// address (OBX-24); the sending facility carries the country (MSH-17).
	var lab, sender []map[string]any
	for _, o := range byType(out, "Organization") {
		switch {
		case o["name"] == "Lab One":
			lab = append(lab, o)
		case jsonOf(t, o["identifier"]) == `[{"system":"urn:ietf:rfc:3986","value":"urn:oid:2.16.840.1.113883.19.4"}]` ||
			len(o["identifier"].([]any)) == 2:
			sender = append(sender, o)
		}
	}
	if len(lab) != 1 || jsonOf(t, lab[0]["address"]) != `[{"city":"Town","line":["1 Lab Rd"],"postalCode":"12345","state":"ST"}]` {
		t.Errorf("performing organizations = %v", lab)
	}
	if len(lab) == 1 && lab[0]["identifier"] == nil {
		t.Errorf("performing organization lost its identifier: %v", lab[0])
	}
	if len(sender) != 1 || jsonOf(t, sender[0]["address"]) != `[{"country":"USA"}]` {
		t.Errorf("sending facility = %v", sender)
	}
}

const siuParticipants = `MSH|^~\&|APP|FAC|RCV|RFAC|20240301101500||SIU^S12^SIU_S12|CTL5|P|2.5.1
SCH|A1|B1|||||||60|s
PID|1||12345^^^MRN^MR||Doe^John
RGS|1
AIL|1||ROOM1^^^CLINIC|||20240305090000+0000
AIP|1||1210^GE^Robert|010^Gastroenterologist^L||20240305091500+0000
`

func TestSIUResourcesJoinTheAppointment(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	out := mapValid(t, e, siuParticipants)
	a := only(t, out, "Appointment")
	if jsonOf(t, a["minutesDuration"]) != "1" { // 60 s
		t.Errorf("minutesDuration = %v, want 1", a["minutesDuration"])
	}
	parts, _ := a["participant"].([]any)
	if len(parts) != 3 {
		t.Fatalf("participants = %v", a["participant"])
	}
	periods := 0
	for _, p := range parts {
		if pp, ok := p.(map[string]any)["period"].(map[string]any); ok && pp["start"] != nil {
			periods++
		}
	}
	if periods != 2 {
		t.Errorf("%d participants with a period, want 2 (AIL, AIP): %v", periods, parts)
	}
}

func parseMsg(t *testing.T, s string) *hl7v2.Message {
	t.Helper()
	m, err := hl7v2.Parse([]byte(s))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return m
}

const adtTwoInsurances = `MSH|^~\&|APP|FAC|RCV|RFAC|20240301101500||ADT^A01^ADT_A01|CTL6|P|2.5.1
PID|1||12345^^^MRN^MR||Doe^John
PV1|1|I|||||||||||||||||V100^^^MAIN^VN
DG1|1||I21^Acute myocardial infarction^I10||20240301|A|||||||||2
IN1|1|PLAN1^Plan One|INS1^^^^NIIP|First Insurer||||GRP1|Group One|||||||Doe^Jane|SPO||||||||||||||||||||150&USD^DC
IN1|2|PLAN2|INS2^^^^NIIP|Second Insurer||||GRP2
`

func TestRefsFromTheSameSegmentAndJoinedDiagnosis(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	out := mapValid(t, e, adtTwoInsurances)
	covs := byType(out, "Coverage")
	if len(covs) != 2 {
		t.Fatalf("%d coverages", len(covs))
	}
	withSubscriber := 0
	for _, c := range covs {
		if _, ok := c["subscriber"]; ok {
			withSubscriber++
		}
	}
	// Only the first IN1 names an insured (IN1-16): the second coverage
	// must not take the first's.
	if withSubscriber != 1 {
		t.Errorf("%d coverages with a subscriber, want 1", withSubscriber)
	}
	// Class names sit beside their values (sibling rules); a value without
	// a name stays alone, and a cost needs its amount.
	classes := map[string]string{}
	costs := 0
	for _, c := range covs {
		for _, x := range c["class"].([]any) {
			cl := x.(map[string]any)
			name, _ := cl["name"].(string)
			classes[cl["value"].(string)] = name
		}
		if cb, ok := c["costToBeneficiary"]; ok {
			costs++
			if got := jsonOf(t, cb); got != `[{"type":{"coding":[{"code":"DC","display":"direct unit cost","system":"http://terminology.hl7.org/CodeSystem/v2-0205"}]},"valueMoney":{"currency":"USD","value":150}}]` {
				t.Errorf("costToBeneficiary = %s", got)
			}
		}
	}
	if diff := cmp.Diff(map[string]string{"PLAN1": "Plan One", "GRP1": "Group One", "PLAN2": "", "GRP2": ""}, classes); diff != "" {
		t.Errorf("Coverage.class value → name (-want +got):\n%s", diff)
	}
	if costs != 1 {
		t.Errorf("%d coverages with a cost, want 1", costs)
	}
	encs := byType(out, "Encounter")
	conds := byType(out, "Condition")
	if len(encs) != 1 || len(conds) != 1 {
		t.Fatalf("%d encounters, %d conditions", len(encs), len(conds))
	}
	var condID string
	for _, r := range out.Resources {
		if r.Type == "Condition" {
			condID = r.ID
		}
	}
	want := `[{"condition":{"reference":"Condition/` + condID + `"},"rank":2,"use":{"coding":[{"code":"AD","display":"Admission diagnosis","system":"http://terminology.hl7.org/CodeSystem/diagnosis-role"}]}}]`
	if diff := cmp.Diff(want, jsonOf(t, encs[0]["diagnosis"])); diff != "" {
		t.Errorf("Encounter.diagnosis (-want +got):\n%s", diff)
	}
}
