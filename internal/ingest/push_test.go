package ingest_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/mapping"
	"github.com/fhirgate/fhirgate/internal/validate"
)

func newPush(t *testing.T, e *env) *ingest.Push {
	t.Helper()
	engine, err := mapping.Load("../../mappings")
	if err != nil {
		t.Fatal(err)
	}
	return ingest.NewPush(ingest.New(e.st, validate.Resource), func() ingest.Normalizer { return engine })
}

func TestPushBundleIdentityReferencesProvenance(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := newPush(t, e)
	ctx := context.Background()

	// A patient first arrives over HL7 v2 ...
	if ack := e.send(t, msg("H1", "", "MRN77^^^HOSP^MR", "Doe", "ADT^A01^ADT_A01")); !strings.Contains(ack, "MSA|AA") {
		t.Fatalf("ADT not accepted: %q", ack)
	}
	var hl7ID string
	var body []byte
	e.pool.QueryRow(ctx, `SELECT id, body FROM resources WHERE type = 'Patient'`).Scan(&hl7ID, &body)
	var pat struct {
		Identifier []struct{ System, Value string }
	}
	json.Unmarshal(body, &pat)
	var system string
	for _, id := range pat.Identifier {
		if id.Value == "MRN77" {
			system = id.System
		}
	}
	if system == "" {
		t.Fatalf("the HL7 Patient has no MRN77 identifier: %s", body)
	}

	// ... then the EMR pushes the same patient as FHIR, with an
	// Observation that refers to it by urn:uuid.
	bundle := `{"resourceType":"Bundle","id":"up1","type":"collection","entry":[
	  {"fullUrl":"urn:uuid:6c1f0000-0000-4000-8000-000000000001","resource":{"resourceType":"Patient","id":"emr-17",
	    "identifier":[{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR"}]},"system":"` + system + `","value":"MRN77"}],
	    "name":[{"family":"Doe","given":["Jane"]}]}},
	  {"fullUrl":"urn:uuid:6c1f0000-0000-4000-8000-000000000002","resource":{"resourceType":"Observation","id":"obs-9","status":"final",
	    "code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},
	    "subject":{"reference":"urn:uuid:6c1f0000-0000-4000-8000-000000000001"},"valueQuantity":{"value":170.50,"unit":"cm"}}}]}`
	in, origin, err := ingest.ParsePushBundle([]byte(bundle))
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Store(ctx, tenant, "", origin, "Bundle.entry", in)
	if err != nil {
		t.Fatal(err)
	}
	if res.Versions[0].ID != hl7ID {
		t.Errorf("pushed Patient got id %s; the HL7 v2 path gave the same patient %s", res.Versions[0].ID, hl7ID)
	}
	var obs []byte
	e.pool.QueryRow(ctx, `SELECT body FROM resources WHERE type = 'Observation' AND id = $1`, res.Versions[1].ID).Scan(&obs)
	if !strings.Contains(string(obs), `"reference":"Patient/`+hl7ID+`"`) || !strings.Contains(string(obs), `170.50`) {
		t.Errorf("Observation not rewritten to the resolved Patient, or lost its decimal: %s", obs)
	}
	var prov []byte
	e.pool.QueryRow(ctx, `SELECT body FROM resources WHERE type = 'Provenance' AND id = $1`, res.Provenance[0]).Scan(&prov)
	if !strings.Contains(string(prov), "Bundle/up1") || !strings.Contains(string(prov), "Observation/"+res.Versions[1].ID) {
		t.Errorf("Provenance does not name the upload and its targets: %s", prov)
	}

	// The same push again: same resources, nothing new but a Provenance.
	before := e.count(t, `SELECT count(*) FROM resource_history`)
	in, _, _ = ingest.ParsePushBundle([]byte(bundle))
	res2, err := p.Store(ctx, tenant, "", origin, "Bundle.entry", in)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Versions[1].ID != res.Versions[1].ID || res2.Versions[1].Version != res.Versions[1].Version {
		t.Errorf("re-push changed the Observation: %+v then %+v", res.Versions[1], res2.Versions[1])
	}
	if after := e.count(t, `SELECT count(*) FROM resource_history`); after != before {
		t.Errorf("re-push wrote %d new versions", after-before)
	}
}

func TestPushRefusesWholeUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := newPush(t, e)
	ctx := context.Background()
	good, _ := fhir.Parse([]byte(`{"resourceType":"Patient","name":[{"family":"A"}]}`))
	bad, _ := fhir.Parse([]byte(`{"resourceType":"Patient","gender":5}`))
	_, err := p.Store(ctx, tenant, "", "ndjson", "line", []ingest.Pushed{{Resource: good}, {Resource: bad}})
	fe, ok := err.(*fhir.Error)
	if !ok || fe.Kind != fhir.KindInvalid || !strings.HasPrefix(fe.Issues[0].Expression[0], "line[1]") {
		t.Fatalf("Store with an invalid resource = %v, want KindInvalid at line[1]", err)
	}
	if n := e.count(t, `SELECT count(*) FROM resources`); n != 0 {
		t.Errorf("a refused push wrote %d resources", n)
	}
	if _, err := p.Store(ctx, tenant, "no-such-emr", "ndjson", "line", []ingest.Pushed{{Resource: good}}); fhir.KindOf(err) != fhir.KindInvalid {
		t.Errorf("unknown source profile: %v, want KindInvalid", err)
	}
}

func TestParseNDJSON(t *testing.T) {
	t.Parallel()
	in, err := ingest.ParseNDJSON([]byte("{\"resourceType\":\"Patient\"}\n\n{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"}}\n"))
	if err != nil || len(in) != 2 || in[1].Resource.Type != "Observation" {
		t.Fatalf("ParseNDJSON = %d resources, %v", len(in), err)
	}
	_, err = ingest.ParseNDJSON([]byte("{\"resourceType\":\"Patient\"}\n{broken\n"))
	if fe, ok := err.(*fhir.Error); !ok || !strings.HasPrefix(fe.Issues[0].Expression[0], "line 2") {
		t.Errorf("a broken line: %v, want an error naming line 2", err)
	}
}
