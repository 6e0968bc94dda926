package api_test

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// postBundle posts a Bundle to the service base.
func postBundle(t *testing.T, base string, body string, hdr ...string) response {
	t.Helper()
	return do(t, http.MethodPost, base+"/fhir", []byte(body), hdr...)
}

// entryResponses returns each entry's response.status and response.location.
func entryResponses(t *testing.T, r response, bundleType string) (statuses, locations []string, entries []map[string]any) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("bundle: status %d: %s", r.Status, truncate(r.Body, 600))
	}
	b := decode(t, r.Body)
	if b["type"] != bundleType {
		t.Errorf("Bundle.type = %v, want %s", b["type"], bundleType)
	}
	entries = bundleEntries(t, b)
	for _, e := range entries {
		resp, _ := e["response"].(map[string]any)
		s, _ := resp["status"].(string)
		l, _ := resp["location"].(string)
		statuses = append(statuses, s)
		locations = append(locations, l)
	}
	return statuses, locations, entries
}

// typeID cuts "Type/id/_history/n" to "Type/id".
func typeID(location string) string {
	parts := strings.Split(location, "/")
	if len(parts) < 2 {
		return location
	}
	return parts[0] + "/" + parts[1]
}

func readResource(t *testing.T, base, ref string) map[string]any {
	t.Helper()
	r := do(t, http.MethodGet, base+"/fhir/"+ref, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("read %s: status %d: %s", ref, r.Status, truncate(r.Body, 300))
	}
	return decode(t, r.Body)
}

func subjectRef(m map[string]any) string {
	s, _ := m["subject"].(map[string]any)
	ref, _ := s["reference"].(string)
	return ref
}

func TestTransactionSynthea(t *testing.T) {
	t.Parallel()
	ts, pool := newTestServer(t)
	raw, err := os.ReadFile("testdata/synthea/Gustavo_Mejia_59a8543c-e24f-4a01-b28b-47ccde6bc11d.json")
	if err != nil {
		t.Fatal(err)
	}
	in := decode(t, raw)
	inEntries := bundleEntries(t, in)
	r := postBundle(t, ts.URL, string(raw))
	statuses, locations, _ := entryResponses(t, r, "transaction-response")
	if len(statuses) != len(inEntries) {
		t.Fatalf("%d response entries, want %d", len(statuses), len(inEntries))
	}
	for i, s := range statuses {
		if !strings.HasPrefix(s, "201") {
			t.Errorf("entry %d: status %q, want 201", i, s)
		}
	}
	if n := rowCount(t, pool); n != len(inEntries) {
		t.Errorf("%d resources stored, want %d", n, len(inEntries))
	}
	// Every urn:uuid: reference now names the created resource.
	created := map[string]string{} // fullUrl -> Type/id
	patient := ""
	for i, e := range inEntries {
		created[e["fullUrl"].(string)] = typeID(locations[i])
		if e["resource"].(map[string]any)["resourceType"] == "Patient" {
			patient = typeID(locations[i])
		}
	}
	checked := 0
	for i, e := range inEntries {
		res := e["resource"].(map[string]any)
		if res["resourceType"] != "Observation" {
			continue
		}
		got := readResource(t, ts.URL, typeID(locations[i]))
		if ref := subjectRef(got); ref != patient {
			t.Errorf("Observation %s subject = %q, want %q", locations[i], ref, patient)
		}
		enc, _ := got["encounter"].(map[string]any)
		wantEnc := created[fmt.Sprint(res["encounter"].(map[string]any)["reference"])]
		if enc["reference"] != wantEnc || wantEnc == "" {
			t.Errorf("Observation %s encounter = %v, want %q", locations[i], enc["reference"], wantEnc)
		}
		if strings.Contains(fmt.Sprint(got), "urn:uuid:") {
			t.Errorf("Observation %s still holds a urn:uuid: reference", locations[i])
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("the bundle has no Observation to check")
	}
	if ids, _ := searchIDs(t, ts.URL+"/fhir/Observation?subject="+patient+"&_count=100"); len(ids) != checked {
		t.Errorf("search by subject finds %d Observations, want %d", len(ids), checked)
	}
}

func TestTransactionReferences(t *testing.T) {
	t.Parallel()
	ts, pool := newTestServer(t)
	pid := create(t, ts.URL, `{"resourceType":"Patient","identifier":[{"system":"http://sys","value":"val"}]}`)

	t.Run("conditional reference", func(t *testing.T) {
		r := postBundle(t, ts.URL, `{"resourceType":"Bundle","type":"transaction","entry":[
			{"resource":{"resourceType":"Observation","status":"final","code":{"text":"cr"},"subject":{"reference":"Patient?identifier=http://sys|val"}},
			 "request":{"method":"POST","url":"Observation"}}]}`)
		statuses, locations, _ := entryResponses(t, r, "transaction-response")
		if d := cmp.Diff([]string{"201 Created"}, statuses); d != "" {
			t.Fatalf("statuses (-want +got):\n%s", d)
		}
		if ref := subjectRef(readResource(t, ts.URL, typeID(locations[0]))); ref != "Patient/"+pid {
			t.Errorf("subject = %q, want Patient/%s", ref, pid)
		}
	})

	t.Run("ifNoneExist", func(t *testing.T) {
		n := rowCount(t, pool)
		r := postBundle(t, ts.URL, `{"resourceType":"Bundle","type":"transaction","entry":[
			{"fullUrl":"urn:uuid:0d3b5e4a-0000-4000-8000-000000000001","resource":{"resourceType":"Patient","identifier":[{"system":"http://sys","value":"val"}]},
			 "request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=http://sys|val"}},
			{"resource":{"resourceType":"Observation","status":"final","code":{"text":"ine"},"subject":{"reference":"urn:uuid:0d3b5e4a-0000-4000-8000-000000000001"}},
			 "request":{"method":"POST","url":"Observation"}}]}`)
		statuses, locations, _ := entryResponses(t, r, "transaction-response")
		if d := cmp.Diff([]string{"200 OK", "201 Created"}, statuses); d != "" {
			t.Errorf("statuses (-want +got):\n%s", d)
		}
		if got := typeID(locations[0]); got != "Patient/"+pid {
			t.Errorf("the conditional create's location = %q, want Patient/%s", got, pid)
		}
		if ref := subjectRef(readResource(t, ts.URL, typeID(locations[1]))); ref != "Patient/"+pid {
			t.Errorf("subject = %q, want the existing Patient/%s", ref, pid)
		}
		if got := rowCount(t, pool); got != n+1 {
			t.Errorf("%d resources after, want %d (only the Observation)", got, n+1)
		}
	})
}

func TestTransactionOrder(t *testing.T) {
	t.Parallel()
	ts, _ := newTestServer(t)
	old := create(t, ts.URL, `{"resourceType":"Patient","identifier":[{"system":"http://x","value":"order"}]}`)
	keep := create(t, ts.URL, `{"resourceType":"Patient","active":true}`)
	// The POST comes first in the Bundle, but DELETEs run first: had the
	// POST run first, the conditional DELETE would match two and fail.
	r := postBundle(t, ts.URL, `{"resourceType":"Bundle","type":"transaction","entry":[
		{"resource":{"resourceType":"Patient","identifier":[{"system":"http://x","value":"order"}]},"request":{"method":"POST","url":"Patient"}},
		{"request":{"method":"DELETE","url":"Patient?identifier=http://x|order"}},
		{"request":{"method":"GET","url":"Patient/`+keep+`"}},
		{"request":{"method":"GET","url":"Patient?identifier=http://x|order"}}]}`)
	statuses, locations, entries := entryResponses(t, r, "transaction-response")
	if len(statuses) != 4 || !strings.HasPrefix(statuses[0], "201") || !strings.HasPrefix(statuses[2], "200") || !strings.HasPrefix(statuses[3], "200") ||
		(!strings.HasPrefix(statuses[1], "204") && !strings.HasPrefix(statuses[1], "200")) {
		t.Fatalf("statuses = %q, want 201, 204, 200, 200", statuses)
	}
	outcome(t, do(t, http.MethodGet, ts.URL+"/fhir/Patient/"+old, nil), http.StatusGone)
	ids, _ := searchIDs(t, ts.URL+"/fhir/Patient?identifier="+q("http://x|order"))
	if d := cmp.Diff([]string{strings.TrimPrefix(typeID(locations[0]), "Patient/")}, ids); d != "" {
		t.Errorf("after the bundle, the identifier matches (-want +got):\n%s", d)
	}
	if res, _ := entries[2]["resource"].(map[string]any); res["id"] != keep {
		t.Errorf("GET entry resource = %v, want Patient/%s", entries[2]["resource"], keep)
	}
	// The GET search runs after the writes (GETs are processed last).
	sb, _ := entries[3]["resource"].(map[string]any)
	if sb["resourceType"] != "Bundle" {
		t.Fatalf("GET search entry resource = %v, want a searchset Bundle", sb)
	}
	if d := cmp.Diff(ids, matchIDs(t, sb)); d != "" {
		t.Errorf("GET search entry inside the transaction (-want +got):\n%s", d)
	}
}

func TestBatch(t *testing.T) {
	t.Parallel()
	ts, pool := newTestServer(t)
	put(t, ts.URL, `{"resourceType":"Patient","id":"b1","active":true}`)
	n := rowCount(t, pool)
	r := postBundle(t, ts.URL, `{"resourceType":"Bundle","type":"batch","entry":[
		{"resource":{"resourceType":"Patient","active":true},"request":{"method":"POST","url":"Patient"}},
		{"resource":{"resourceType":"Patient","id":"b1","active":false},"request":{"method":"PUT","url":"Patient/b1","ifMatch":"W/\"7\""}},
		{"resource":{"resourceType":"Patient","gender":"female"},"request":{"method":"POST","url":"Patient"}},
		{"request":{"method":"GET","url":"Patient/b1"}},
		{"request":{"method":"GET","url":"Patient/missing"}}]}`)
	statuses, _, entries := entryResponses(t, r, "batch-response")
	want := []string{"201", "412", "201", "200", "404"}
	var got []string
	for _, s := range statuses {
		got = append(got, strings.SplitN(s, " ", 2)[0])
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("batch statuses (-want +got):\n%s", d)
	}
	for _, i := range []int{1, 4} {
		resp, _ := entries[i]["response"].(map[string]any)
		oo, _ := resp["outcome"].(map[string]any)
		if oo["resourceType"] != "OperationOutcome" {
			t.Errorf("entry %d: response.outcome = %v, want an OperationOutcome", i, resp["outcome"])
		}
	}
	if res, _ := entries[3]["resource"].(map[string]any); res["id"] != "b1" || res["active"] != true {
		t.Errorf("GET entry resource = %v, want Patient/b1 unchanged", entries[3]["resource"])
	}
	if got := rowCount(t, pool); got != n+2 {
		t.Errorf("%d resources after the batch, want %d", got, n+2)
	}
}

func TestTransactionAtomicity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		bundle string
		status int
		expr   string // prefix of an issue expression, "" for any
	}{
		{"stale ifMatch in the last entry", `{"resourceType":"Bundle","type":"transaction","entry":[
			{"fullUrl":"urn:uuid:0d3b5e4a-0000-4000-8000-000000000002","resource":{"resourceType":"Patient","active":true},"request":{"method":"POST","url":"Patient"}},
			{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:0d3b5e4a-0000-4000-8000-000000000002"}},"request":{"method":"POST","url":"Observation"}},
			{"resource":{"resourceType":"Patient","id":"existing","active":false},"request":{"method":"PUT","url":"Patient/existing","ifMatch":"W/\"5\""}}]}`,
			http.StatusPreconditionFailed, ""},
		{"conditional reference matching nothing", `{"resourceType":"Bundle","type":"transaction","entry":[
			{"resource":{"resourceType":"Patient","active":true},"request":{"method":"POST","url":"Patient"}},
			{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient?identifier=http://x|nobody"}},"request":{"method":"POST","url":"Observation"}}]}`,
			http.StatusUnprocessableEntity, "Bundle.entry[1]"},
		{"urn:uuid reference no entry defines", `{"resourceType":"Bundle","type":"transaction","entry":[
			{"resource":{"resourceType":"Patient","active":true},"request":{"method":"POST","url":"Patient"}},
			{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:0d3b5e4a-0000-4000-8000-0000000000ff"}},"request":{"method":"POST","url":"Observation"}}]}`,
			http.StatusUnprocessableEntity, "Bundle.entry[1]"},
		{"invalid resource", `{"resourceType":"Bundle","type":"transaction","entry":[
			{"resource":{"resourceType":"Patient","active":true},"request":{"method":"POST","url":"Patient"}},
			{"resource":{"resourceType":"Observation","code":{"text":"no status"}},"request":{"method":"POST","url":"Observation"}}]}`,
			http.StatusBadRequest, "Bundle.entry[1].resource"},
		{"same resource written twice", `{"resourceType":"Bundle","type":"transaction","entry":[
			{"resource":{"resourceType":"Patient","id":"twice","active":true},"request":{"method":"PUT","url":"Patient/twice"}},
			{"resource":{"resourceType":"Patient","id":"twice","active":false},"request":{"method":"PUT","url":"Patient/twice"}}]}`,
			http.StatusConflict, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts, pool := newTestServer(t)
			put(t, ts.URL, `{"resourceType":"Patient","id":"existing","active":true}`)
			issues := outcome(t, postBundle(t, ts.URL, tt.bundle), tt.status)
			if tt.expr != "" {
				exprs := expressions(issues)
				ok := false
				for _, e := range exprs {
					ok = ok || strings.HasPrefix(e, tt.expr)
				}
				if !ok {
					t.Errorf("issue expressions %q, want one under %s", exprs, tt.expr)
				}
			}
			if n := rowCount(t, pool); n != 1 {
				t.Errorf("%d rows in resources after a failed transaction, want 1 (the existing Patient)", n)
			}
			if n := historyRowCount(t, pool); n != 0 {
				t.Errorf("%d rows in resource_history after a failed transaction, want 0", n)
			}
			_, b := searchIDs(t, ts.URL+"/fhir/Patient?_total=accurate")
			if fmt.Sprint(b["total"]) != "1" {
				t.Errorf("Patient total = %v, want 1", b["total"])
			}
			_, b = searchIDs(t, ts.URL+"/fhir/Observation?_total=accurate")
			if fmt.Sprint(b["total"]) != "0" {
				t.Errorf("Observation total = %v, want 0", b["total"])
			}
		})
	}
}
