package api_test

import (
	"strings"
	"testing"
)

// TestIntakeEndpoints drives the EMR routes over HTTP: an HL7 v2 message
// at /hl7v2, an NDJSON bulk load at /ingest/fhir, and a Bundle on POST /fhir
// marked as a push by X-Fhirgate-Source.
func TestIntakeEndpoints(t *testing.T) {
	t.Parallel()
	ts, pool := newTestServer(t)
	adt := "MSH|^~\\&|LAB|HOSP|FHIRGATE|FG|20240101120000+0000||ADT^A01^ADT_A01|HTTP1|P|2.5.1\rPID|1||M1^^^HOSP^MR||Doe^Jane||19800101|F\rPV1|1|I\r"
	r := do(t, "POST", ts.URL+"/hl7v2", []byte(adt), "Content-Type", "x-application/hl7-v2+er7")
	if r.Status != 200 || !strings.Contains(string(r.Body), "MSA|AA|HTTP1") {
		t.Errorf("POST /hl7v2: %d %q", r.Status, r.Body)
	}
	if got := r.Header.Get("Content-Type"); !strings.HasPrefix(got, "x-application/hl7-v2+er7") {
		t.Errorf("ACK Content-Type = %q", got)
	}
	if r := do(t, "POST", ts.URL+"/hl7v2", []byte(adt), "Content-Type", "application/json"); r.Status != 415 {
		t.Errorf("POST /hl7v2 as JSON: %d, want 415", r.Status)
	}

	nd := "{\"resourceType\":\"Patient\",\"id\":\"a\",\"name\":[{\"family\":\"Nd\"}]}\n{\"resourceType\":\"Observation\",\"id\":\"o\",\"status\":\"final\",\"code\":{\"text\":\"x\"},\"subject\":{\"reference\":\"Patient/a\"}}\n"
	r = do(t, "POST", ts.URL+"/ingest/fhir", []byte(nd), "Content-Type", "application/fhir+ndjson")
	if r.Status != 200 || !strings.Contains(string(r.Body), "stored 2 resources") {
		t.Errorf("POST /ingest/fhir NDJSON: %d %s", r.Status, r.Body)
	}
	var subject string
	pool.QueryRow(t.Context(), `SELECT body->>0 FROM (SELECT convert_from(body, 'UTF8')::jsonb->'subject'->'reference' AS body FROM resources WHERE type = 'Observation') s`).Scan(&subject)
	if !strings.HasPrefix(subject, "Patient/") || subject == "Patient/a" {
		t.Errorf("the Observation's reference was not rewritten to the pushed Patient's stable id: %q", subject)
	}

	bundle := `{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:0b0e0000-0000-4000-8000-000000000001","resource":{"resourceType":"Patient","name":[{"family":"Tx"}]},"request":{"method":"POST","url":"Patient"}}]}`
	r = do(t, "POST", ts.URL+"/fhir", []byte(bundle), "X-Fhirgate-Source", "")
	if r.Status != 200 || !strings.Contains(string(r.Body), `"batch-response"`) {
		t.Errorf("POST /fhir with X-Fhirgate-Source: %d %s", r.Status, r.Body)
	}
	r = do(t, "POST", ts.URL+"/fhir", []byte(bundle), "X-Fhirgate-Source", "no-such-emr")
	if r.Status != 400 {
		t.Errorf("unknown source: %d, want 400", r.Status)
	}
	var provenances int
	pool.QueryRow(t.Context(), `SELECT count(*) FROM resources WHERE type = 'Provenance'`).Scan(&provenances)
	if provenances != 3 {
		t.Errorf("%d Provenance resources, want one per accepted message or push (3)", provenances)
	}
}
