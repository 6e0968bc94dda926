package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// testBundle is a small Synthea-shaped transaction: a Patient, an
// Observation about it, and an Organization referenced by identifier.
const testBundle = `{
  "resourceType": "Bundle",
  "type": "transaction",
  "entry": [
    {
      "fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
      "resource": {
        "resourceType": "Patient",
        "id": "11111111-1111-4111-8111-111111111111",
        "identifier": [
          {"system": "http://hospital.smarthealthit.org", "value": "MRN-1"},
          {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3"}
        ],
        "name": [{"family": "Doe", "given": ["Jo \"J\"\n"]}],
        "managingOrganization": {"identifier": {"system": "https://example.org", "value": "org-1"}}
      },
      "request": {"method": "POST", "url": "Patient"}
    },
    {
      "fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
      "resource": {
        "resourceType": "Observation",
        "id": "22222222-2222-4222-8222-222222222222",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
        "valueQuantity": {"value": 1.50, "unit": "m"}
      },
      "request": {"method": "POST", "url": "Observation"}
    },
    {
      "fullUrl": "urn:uuid:33333333-3333-4333-8333-333333333333",
      "resource": {
        "resourceType": "Organization",
        "id": "33333333-3333-4333-8333-333333333333",
        "identifier": [{"system": "https://example.org", "value": "org-1"}],
        "name": "Clinic urn:uuid:11111111-1111-4111-8111-111111111111 note"
      },
      "request": {"method": "POST", "url": "Organization"}
    }
  ]
}`

func parseTestBundle(t *testing.T) *Bundle {
	t.Helper()
	b, err := ParseBundle("test.json", strings.NewReader(testBundle))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("rewritten bundle is not JSON: %v\n%s", err, b)
	}
	return m
}

// at walks a decoded JSON value by map keys and slice indexes.
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			v = v.(map[string]any)[k]
		case int:
			v = v.([]any)[k]
		}
	}
	return v
}

func TestParseBundle(t *testing.T) {
	t.Parallel()
	b := parseTestBundle(t)
	if diff := cmp.Diff([]string{"Patient", "Observation", "Organization"}, b.Types); diff != "" {
		t.Errorf("Types (-want +got):\n%s", diff)
	}
	if b.patient != 0 || b.family != "Doe" {
		t.Errorf("patient = %d, family = %q; want 0, Doe", b.patient, b.family)
	}
	if diff := cmp.Diff([]string{"", "http://loinc.org|8302-2", ""}, b.obsCodes); diff != "" {
		t.Errorf("obsCodes (-want +got):\n%s", diff)
	}
}

func TestParseBundleRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, want string
	}{
		{"not a bundle", `{"resourceType":"Patient"}`, "not a transaction Bundle"},
		{"batch", `{"resourceType":"Bundle","type":"batch","entry":[]}`, "not a transaction Bundle"},
		{"no entries", `{"resourceType":"Bundle","type":"transaction"}`, "no entries"},
		{"fullUrl not urn:uuid", `{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"Patient/1","resource":{"resourceType":"Patient"},"request":{"method":"POST"}}]}`, "not a urn:uuid"},
		{"PUT", `{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:11111111-1111-4111-8111-111111111111","resource":{"resourceType":"Patient"},"request":{"method":"PUT"}}]}`, "want POST"},
		{"trailing", `{"resourceType":"Bundle"} {}`, "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseBundle("x.json", strings.NewReader(tt.body))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseBundle error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestRewriteRound(t *testing.T) {
	t.Parallel()
	b := parseTestBundle(t)
	rw := Rewriter{Tag: 42}
	r1, r2 := decode(t, rw.Bundle(b, 1)), decode(t, rw.Bundle(b, 2))

	seen := map[string]bool{}
	for _, r := range []map[string]any{r1, r2} {
		pat := at(r, "entry", 0, "fullUrl").(string)
		obs := at(r, "entry", 1, "fullUrl").(string)
		org := at(r, "entry", 2, "fullUrl").(string)
		for _, fu := range []string{pat, obs, org} {
			id, ok := strings.CutPrefix(fu, "urn:uuid:")
			if !ok || !isUUID(id) {
				t.Fatalf("fullUrl %q is not a urn:uuid", fu)
			}
			if strings.HasPrefix(id, "11111111") || strings.HasPrefix(id, "22222222") || strings.HasPrefix(id, "33333333") {
				t.Errorf("fullUrl %q was not rewritten", fu)
			}
			if seen[fu] {
				t.Errorf("fullUrl %q repeats across entries or rounds", fu)
			}
			seen[fu] = true
		}
		// References and ids follow their entry's new fullUrl.
		if got := at(r, "entry", 1, "resource", "subject", "reference"); got != pat {
			t.Errorf("Observation.subject = %v, want the Patient's new fullUrl %q", got, pat)
		}
		if got := at(r, "entry", 0, "resource", "id"); "urn:uuid:"+got.(string) != pat {
			t.Errorf("Patient.id = %v, want the bare UUID of %q", got, pat)
		}
		if got, want := at(r, "entry", 2, "resource", "name"), "Clinic "+pat+" note"; got != want {
			t.Errorf("urn:uuid inside text = %q, want %q", got, want)
		}
	}

	// Identifiers get a per-round suffix; the same value gets the same
	// suffix wherever it appears, so identifier references stay consistent.
	for round, r := range map[int]map[string]any{1: r1, 2: r2} {
		suffix := map[int]string{1: "-b42r1", 2: "-b42r2"}[round]
		oid := map[int]string{1: "urn:oid:1.2.3.42.1", 2: "urn:oid:1.2.3.42.2"}[round]
		got := []any{
			at(r, "entry", 0, "resource", "identifier", 0, "value"),
			at(r, "entry", 0, "resource", "identifier", 1, "value"),
			at(r, "entry", 0, "resource", "managingOrganization", "identifier", "value"),
			at(r, "entry", 2, "resource", "identifier", 0, "value"),
		}
		want := []any{"MRN-1" + suffix, oid, "org-1" + suffix, "org-1" + suffix}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("round %d identifier values (-want +got):\n%s", round, diff)
		}
	}

	// Everything else is as it was.
	orig := decode(t, []byte(testBundle))
	for _, path := range [][]any{
		{"entry", 0, "resource", "name"},
		{"entry", 0, "resource", "identifier", 0, "system"},
		{"entry", 1, "resource", "code"},
		{"entry", 1, "resource", "valueQuantity"},
		{"entry", 1, "request"},
	} {
		if diff := cmp.Diff(at(orig, path...), at(r1, path...)); diff != "" {
			t.Errorf("%v changed (-want +got):\n%s", path, diff)
		}
	}
}

func TestRewriteKeepsOrderAndNumbers(t *testing.T) {
	t.Parallel()
	b := parseTestBundle(t)
	res := (Rewriter{Tag: 1}).Resources(b, 1)
	if len(res) != 3 {
		t.Fatalf("Resources returned %d, want 3", len(res))
	}
	s := string(res[1])
	if !strings.HasPrefix(s, `{"resourceType":"Observation","id":"`) {
		t.Errorf("member order not kept: %s", s)
	}
	if !strings.Contains(s, `"value":1.50`) {
		t.Errorf("decimal 1.50 not kept verbatim: %s", s)
	}
	if !strings.Contains(string(res[0]), `"given":["Jo \"J\"\n"]`) {
		t.Errorf("string escaping wrong: %s", res[0])
	}
}

var urnUUID = regexp.MustCompile(`urn:uuid:[0-9a-f-]{36}`)

// TestRewriteSyntheaCorpus replays the shared Synthea corpus twice and
// checks that no urn:uuid repeats across rounds and every reference points
// into its own bundle.
func TestRewriteSyntheaCorpus(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "..", "..", "shared", "corpus", "synthea")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("Synthea corpus not found at %s: %v", dir, err)
	}
	if testing.Short() {
		t.Skip("loads 80 MB of bundles")
	}
	corpus, err := LoadCorpus(dir)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, b := range corpus {
		total += b.Len()
	}
	if len(corpus) != 65 || total != 22837 {
		t.Errorf("corpus has %d bundles, %d resources; want 65, 22837", len(corpus), total)
	}
	rw := NewRewriter()
	fullURLs := map[string]bool{}
	for round := 1; round <= 2; round++ {
		for _, b := range corpus[:8] {
			out := rw.Bundle(b, round)
			var tx struct {
				Entry []struct {
					FullURL string `json:"fullUrl"`
				} `json:"entry"`
			}
			if err := json.Unmarshal(out, &tx); err != nil {
				t.Fatalf("%s round %d: %v", b.Name, round, err)
			}
			own := map[string]bool{}
			for _, e := range tx.Entry {
				if fullURLs[e.FullURL] {
					t.Fatalf("%s round %d: fullUrl repeats", b.Name, round)
				}
				fullURLs[e.FullURL], own[e.FullURL] = true, true
			}
			for _, ref := range urnUUID.FindAllString(string(out), -1) {
				if !own[ref] {
					t.Fatalf("%s round %d: %s is not an entry of the same bundle", b.Name, round, ref)
				}
			}
		}
	}
}
