package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeFHIR is an in-memory stand-in for the gateway: enough of FHIR R4
// transactions, reads, counts and the two searches the bench makes.
type fakeFHIR struct {
	mu          sync.Mutex
	next        int
	res         map[string]map[string]any // "Type/id" -> resource
	identifiers map[string]int            // Patient identifier values seen
	bundles     int

	dropType string // acknowledge but do not store resources of this type
	status   int    // when non-zero, answer every transaction with it
}

func newFake() *fakeFHIR {
	return &fakeFHIR{res: map[string]map[string]any{}, identifiers: map[string]int{}}
}

func (f *fakeFHIR) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/fhir")
	w.Header().Set("Content-Type", "application/fhir+json")
	switch {
	case r.Method == http.MethodGet && path == "/metadata":
		fmt.Fprint(w, `{"resourceType":"CapabilityStatement"}`)
	case r.Method == http.MethodPost && (path == "" || path == "/"):
		f.transaction(w, r)
	case r.Method == http.MethodGet && strings.Count(path, "/") == 2:
		f.mu.Lock()
		res, ok := f.res[path[1:]]
		f.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"resourceType":"OperationOutcome"}`)
			return
		}
		json.NewEncoder(w).Encode(res)
	case r.Method == http.MethodGet && strings.Count(path, "/") == 1:
		f.search(w, path[1:], r)
	default:
		w.WriteHeader(http.StatusBadRequest)
	}
}

func (f *fakeFHIR) transaction(w http.ResponseWriter, r *http.Request) {
	var tx struct {
		Entry []struct {
			FullURL  string         `json:"fullUrl"`
			Resource map[string]any `json:"resource"`
		} `json:"entry"`
	}
	if err := json.NewDecoder(r.Body).Decode(&tx); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bundles++
	if f.status != 0 {
		w.WriteHeader(f.status)
		fmt.Fprint(w, `{"resourceType":"OperationOutcome"}`)
		return
	}
	refs := map[string]string{}
	for _, e := range tx.Entry {
		f.next++
		refs[e.FullURL] = fmt.Sprintf("%s/%d", e.Resource["resourceType"], f.next)
	}
	type response struct {
		Status   string `json:"status"`
		Location string `json:"location"`
	}
	var out struct {
		ResourceType string `json:"resourceType"`
		Type         string `json:"type"`
		Entry        []struct {
			Response response `json:"response"`
		} `json:"entry"`
	}
	out.ResourceType, out.Type = "Bundle", "transaction-response"
	for _, e := range tx.Entry {
		key := refs[e.FullURL]
		if subj, ok := e.Resource["subject"].(map[string]any); ok {
			subj["reference"] = refs[subj["reference"].(string)]
		}
		if e.Resource["resourceType"] == "Patient" {
			for _, id := range e.Resource["identifier"].([]any) {
				f.identifiers[id.(map[string]any)["value"].(string)]++
			}
		}
		if e.Resource["resourceType"] != f.dropType {
			f.res[key] = e.Resource
		}
		out.Entry = append(out.Entry, struct {
			Response response `json:"response"`
		}{response{Status: "201 Created", Location: key + "/_history/1"}})
	}
	json.NewEncoder(w).Encode(out)
}

func (f *fakeFHIR) search(w http.ResponseWriter, typ string, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	defer f.mu.Unlock()
	var matches []map[string]any
	for key, res := range f.res {
		if !strings.HasPrefix(key, typ+"/") {
			continue
		}
		if fam := q.Get("family"); fam != "" && res["name"].([]any)[0].(map[string]any)["family"] != fam {
			continue
		}
		if p := q.Get("patient"); p != "" && res["subject"].(map[string]any)["reference"] != p {
			continue
		}
		if c := q.Get("code"); c != "" {
			coding := res["code"].(map[string]any)["coding"].([]any)[0].(map[string]any)
			if coding["system"].(string)+"|"+coding["code"].(string) != c {
				continue
			}
		}
		matches = append(matches, res)
	}
	b := map[string]any{"resourceType": "Bundle", "type": "searchset", "total": len(matches)}
	if q.Get("_count") != "0" {
		var entries []any
		for _, m := range matches {
			entries = append(entries, map[string]any{"resource": m})
		}
		b["entry"] = entries
	}
	json.NewEncoder(w).Encode(b)
}

// testCorpus writes two copies of testBundle into a directory.
func testCorpus(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"a.json", "b.json"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(testBundle), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func testConfig(t *testing.T, url string) Config {
	cfg := DefaultConfig()
	cfg.URL = url + "/fhir"
	cfg.Corpus = testCorpus(t)
	cfg.Rounds = 3
	cfg.Concurrency = 2
	cfg.Duration = 200 * time.Millisecond
	cfg.Sample = 5
	cfg.RequestTimeout = 10 * time.Second
	return cfg
}

func TestRunAgainstFake(t *testing.T) {
	t.Parallel()
	fake := newFake()
	// One resource the bench did not send: verify compares deltas.
	fake.res["Patient/0"] = map[string]any{"resourceType": "Patient", "name": []any{map[string]any{"family": "Other"}}}
	srv := httptest.NewServer(fake)
	defer srv.Close()

	var out, progress strings.Builder
	rep, err := Run(t.Context(), testConfig(t, srv.URL), &out, &progress)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	ing := rep.Phase(PhaseIngest)
	// 3 rounds x 2 bundles x 3 resources.
	if ing.Resources != 18 || ing.Acknowledged != 18 || ing.Requests != 6 || len(ing.Errors) != 0 {
		t.Errorf("ingest: resources %d, acknowledged %d, bundles %d, errors %v; want 18, 18, 6, none", ing.Resources, ing.Acknowledged, ing.Requests, ing.Errors)
	}
	if ing.Latency.Count() != 6 {
		t.Errorf("ingest latency samples = %d, want 6", ing.Latency.Count())
	}
	if fake.bundles != 6 || len(fake.res) != 19 {
		t.Errorf("fake got %d bundles and holds %d resources; want 6, 19", fake.bundles, len(fake.res))
	}
	// Patient identifiers are unique per round: 6 patients x 2 identifiers,
	// except that the two bundles of one round share their source, and so
	// their values: 3 rounds x 2 distinct values, each seen twice.
	if len(fake.identifiers) != 6 {
		t.Errorf("distinct Patient identifier values = %d, want 6", len(fake.identifiers))
	}

	rd := rep.Phase(PhaseRead)
	if rd.Requests == 0 || len(rd.Errors) != 0 || rd.Latency.Count() != rd.Requests {
		t.Errorf("read: %d requests, errors %v, %d latency samples; want > 0, none, one per request", rd.Requests, rd.Errors, rd.Latency.Count())
	}
	se := rep.Phase(PhaseSearch)
	if se.Requests == 0 || len(se.Errors) != 0 || se.Empty != 0 {
		t.Errorf("search: %d requests, errors %v, %d empty; want > 0, none, 0", se.Requests, se.Errors, se.Empty)
	}
	for _, k := range []string{"Patient?family", "Observation?patient&code"} {
		if se.ByKind[k] == nil || se.ByKind[k].Count() == 0 {
			t.Errorf("search made no %s request", k)
		}
	}
	ve := rep.Phase(PhaseVerify)
	if ve.Requests != 5 || len(ve.Mismatches) != 0 || ve.TypesChecked != 3 || ve.TypesMatched != 3 {
		t.Errorf("verify: %d reads, mismatches %v, %d of %d types matched; want 5, none, 3 of 3", ve.Requests, ve.Mismatches, ve.TypesMatched, ve.TypesChecked)
	}
	for _, want := range []string{
		"ingest: 18 resources sent in 6 bundles, 18 acknowledged (201)",
		"verify: Patient                before        1 after        7 delta        6 sent        6",
		"verify: Observation            before        0 after        6 delta        6 sent        6",
		"searches that matched nothing: 0",
		"verify: 3 of 3 types grew by exactly what was sent; read back 5 created resources",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunVerifyFindsLostResources(t *testing.T) {
	t.Parallel()
	fake := newFake()
	fake.dropType = "Observation"
	srv := httptest.NewServer(fake)
	defer srv.Close()
	cfg := testConfig(t, srv.URL)
	cfg.Phases = []string{PhaseIngest, PhaseVerify}
	cfg.Sample = 18

	rep, err := Run(t.Context(), cfg, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "verify") {
		t.Fatalf("Run error = %v, want one naming verify", err)
	}
	ve := rep.Phase(PhaseVerify)
	if !cmp.Equal(ve.Errors, map[int]uint64{404: 6}) {
		t.Errorf("verify errors = %v, want 6 x 404 (the dropped Observations)", ve.Errors)
	}
	if ve.TypesChecked != 3 || ve.TypesMatched != 2 {
		t.Errorf("verify: %d of %d types matched, want 2 of 3", ve.TypesMatched, ve.TypesChecked)
	}
	if len(ve.Mismatches) == 0 || ve.Mismatches[0] != "Observation: stored count grew by 0, sent 6" {
		t.Errorf("verify mismatches = %q, want the Observation count first", ve.Mismatches)
	}
}

func TestRunCountsRejectedBundles(t *testing.T) {
	t.Parallel()
	fake := newFake()
	fake.status = http.StatusRequestEntityTooLarge
	srv := httptest.NewServer(fake)
	defer srv.Close()
	cfg := testConfig(t, srv.URL)
	cfg.Phases = []string{PhaseIngest}

	rep, err := Run(t.Context(), cfg, io.Discard, io.Discard)
	if err == nil {
		t.Fatal("Run succeeded although every bundle was rejected")
	}
	ing := rep.Phase(PhaseIngest)
	if ing.Resources != 18 || ing.Acknowledged != 0 || !cmp.Equal(ing.Errors, map[int]uint64{413: 6}) {
		t.Errorf("ingest: sent %d, acknowledged %d, errors %v; want 18, 0, 6 x 413", ing.Resources, ing.Acknowledged, ing.Errors)
	}
}

func TestRunStopsAtResourceTarget(t *testing.T) {
	t.Parallel()
	fake := newFake()
	srv := httptest.NewServer(fake)
	defer srv.Close()
	cfg := testConfig(t, srv.URL)
	cfg.Phases = []string{PhaseIngest}
	cfg.Rounds = 0
	cfg.Resources = 7 // three bundles of 3 reach it

	rep, err := Run(t.Context(), cfg, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Phase(PhaseIngest).Resources; got != 9 {
		t.Errorf("resources sent = %d, want 9 (whole bundles until 7 is reached)", got)
	}
}

func TestRunRefusesUnreachableGateway(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, err := Run(t.Context(), testConfig(t, url), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Errorf("Run error = %v, want the gateway does not answer", err)
	}
}
