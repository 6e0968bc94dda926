package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// invalidExamples are the official examples that break the base
// specification (a reference to a type the element does not allow, a
// missing required element); the gateway must refuse them with a 400.
var invalidExamples = map[string]bool{
	"DeviceMetric-example.json":        true,
	"Observation-clinical-gender.json": true,
	"Questionnaire-qs1.json":           true,
	"ImplementationGuide-fhir.json":    true,
	"ig-r4.json":                       true,
}

// stripVersionMeta removes meta.versionId and meta.lastUpdated (the server
// sets them), and meta itself when nothing else was in it.
func stripVersionMeta(m map[string]any) {
	meta, ok := m["meta"].(map[string]any)
	if !ok {
		return
	}
	delete(meta, "versionId")
	delete(meta, "lastUpdated")
	if len(meta) == 0 {
		delete(m, "meta")
	}
}

// numberLiterals lists every JSON number in v as "path=literal", so that a
// change of decimal precision (1.50 to 1.5) is reported by name.
func numberLiterals(v any, path string, out *[]string) {
	switch t := v.(type) {
	case json.Number:
		*out = append(*out, path+"="+t.String())
	case map[string]any:
		for k, c := range t {
			numberLiterals(c, path+"."+k, out)
		}
	case []any:
		for i, c := range t {
			numberLiterals(c, fmt.Sprintf("%s[%d]", path, i), out)
		}
	}
}

// roundTrip PUTs body to its own URL, reads it back and compares. It
// returns "" on success, else why it failed.
func roundTrip(t *testing.T, base, name string, raw []byte) string {
	want, err := decodeJSON(raw)
	if err != nil {
		return "the example is not JSON: " + err.Error()
	}
	typ, _ := want["resourceType"].(string)
	id, hasID := want["id"].(string)
	body := raw
	if !hasID {
		id = "rt-" + strings.TrimSuffix(strings.ToLower(filepath.Base(name)), ".json")
		want["id"] = id
		body = mustJSON(t, want)
	}
	pr := do(t, http.MethodPut, base+"/fhir/"+typ+"/"+id, body)
	if invalidExamples[name] {
		if pr.Status != http.StatusBadRequest {
			return fmt.Sprintf("PUT status %d, want 400 (a known-invalid example): %s", pr.Status, truncate(pr.Body, 300))
		}
		om, err := decodeJSON(pr.Body)
		if err != nil || om["resourceType"] != "OperationOutcome" {
			return "400 without an OperationOutcome: " + truncate(pr.Body, 300)
		}
		is, _ := om["issue"].([]any)
		exprs := 0
		for _, i := range is {
			im, _ := i.(map[string]any)
			es, _ := im["expression"].([]any)
			exprs += len(es)
		}
		if exprs == 0 {
			return "400 OperationOutcome names no expression: " + diagnostics(pr.Body)
		}
		return ""
	}
	if pr.Status != http.StatusCreated {
		return fmt.Sprintf("PUT status %d: %s", pr.Status, diagnostics(pr.Body))
	}
	gr := do(t, http.MethodGet, base+"/fhir/"+typ+"/"+id, nil)
	if gr.Status != http.StatusOK {
		return fmt.Sprintf("GET status %d: %s", gr.Status, diagnostics(gr.Body))
	}
	got, err := decodeJSON(gr.Body)
	if err != nil {
		return "GET body is not JSON: " + err.Error()
	}
	meta, _ := got["meta"].(map[string]any)
	if meta["versionId"] != "1" || meta["lastUpdated"] == nil {
		return fmt.Sprintf("meta = %v, want versionId 1 and a lastUpdated", meta)
	}
	stripVersionMeta(want)
	stripVersionMeta(got)
	if !hasID {
		delete(want, "id")
		delete(got, "id")
	}
	var wantNums, gotNums []string
	numberLiterals(want, typ, &wantNums)
	numberLiterals(got, typ, &gotNums)
	sort.Strings(wantNums)
	sort.Strings(gotNums)
	if d := cmp.Diff(wantNums, gotNums); d != "" {
		return "number literals differ (-want +got):\n" + d
	}
	if d := cmp.Diff(want, got); d != "" {
		return "content differs (-want +got):\n" + truncate([]byte(d), 2000)
	}
	return ""
}

// TestExamplesRoundTrip stores every official R4 example with PUT and reads
// it back unchanged but for meta.versionId and meta.lastUpdated.
func TestExamplesRoundTrip(t *testing.T) {
	t.Parallel()
	// Four examples are over the 1 MiB limit of newTestServer; this uses
	// the production default.
	ts, _ := newTestServerMax(t, 64<<20)
	files, err := filepath.Glob("testdata/fhir-examples/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 649 {
		t.Fatalf("found %d examples, want 649", len(files))
	}
	type failure struct{ name, why string }
	var (
		mu       sync.Mutex
		failures []failure
		passed   int
		refused  int
		wg       sync.WaitGroup
	)
	work := make(chan string)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				raw, err := os.ReadFile(f)
				why := ""
				if err != nil {
					why = err.Error()
				} else {
					why = roundTrip(t, ts.URL, filepath.Base(f), raw)
				}
				mu.Lock()
				if why == "" {
					passed++
					if invalidExamples[filepath.Base(f)] {
						refused++
					}
				} else {
					failures = append(failures, failure{filepath.Base(f), why})
				}
				mu.Unlock()
			}
		}()
	}
	for _, f := range files {
		work <- f
	}
	close(work)
	wg.Wait()
	t.Logf("round-trip: %d/%d passed", passed, len(files))
	t.Logf("round-trip: %d of the passes are the known-invalid examples, refused with 400 as they must be", refused)
	sort.Slice(failures, func(i, j int) bool { return failures[i].name < failures[j].name })
	for _, f := range failures {
		t.Errorf("%s: %s", f.name, f.why)
	}
}

// metaMember matches the meta the server inserts into a resource that
// had none.
var metaMember = regexp.MustCompile(`,"meta":\{"versionId":"\d+","lastUpdated":"[^"]+"\}`)

// TestLosslessDetails checks that content the gateway does not interpret
// comes back byte for byte: member order, primitive extensions, decimal
// precision, unicode and large values.
func TestLosslessDetails(t *testing.T) {
	t.Parallel()
	ts, _ := newTestServer(t)

	var names strings.Builder
	for i := range 2000 {
		if i > 0 {
			names.WriteByte(',')
		}
		fmt.Fprintf(&names, `{"use":"old","given":["Given%04d"],"family":"Family%04d"}`, i, i)
	}
	big := strings.Repeat("Lorem ipsum dolor sit amet, 0123456789 ", 500*1024/39)

	tests := []struct {
		name string
		body string
	}{
		{"member order", `{"resourceType":"Patient","gender":"female","id":"order","birthDate":"1970-01-01","active":true,"name":[{"given":["Ann"],"family":"Zed","use":"official"}]}`},
		{"primitive extension", `{"resourceType":"Patient","id":"primext","birthDate":"1970-03-30","_birthDate":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/patient-birthTime","valueDateTime":"1970-03-30T14:35:45-05:00"}]},"name":[{"given":["Ann","Bo"],"_given":[null,{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier","valueCode":"CL"}]}]}]}`},
		{"decimals", `{"resourceType":"Observation","id":"decimals","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50,"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"},"referenceRange":[{"low":{"value":0.010},"high":{"value":100.000}}]}`},
		{"unicode", `{"resourceType":"Patient","id":"unicode","name":[{"family":"Müller-Łukasiewicz","given":["Zoë","José","Ame\u0301lie"]},{"text":"山田 太郎 😀🏥 Ελληνικά עברית"}]}`},
		{"escapes", `{"resourceType":"Patient","id":"escapes","name":[{"text":"tab\there \"quoted\" back\\slash \u00e9 <b>&amp;</b>"}]}`},
		{"2000 names", `{"resourceType":"Patient","id":"manynames","name":[` + names.String() + `]}`},
		{"500 KB string", `{"resourceType":"Observation","id":"bigstring","status":"final","code":{"text":"note"},"valueString":"` + big + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var in bytes.Buffer
			if err := json.Compact(&in, []byte(tt.body)); err != nil {
				t.Fatalf("test body: %v", err)
			}
			m := decode(t, in.Bytes())
			u := ts.URL + "/fhir/" + m["resourceType"].(string) + "/" + m["id"].(string)
			pr := do(t, http.MethodPut, u, in.Bytes())
			if pr.Status != http.StatusCreated {
				t.Fatalf("PUT status %d: %s", pr.Status, diagnostics(pr.Body))
			}
			for _, r := range []response{pr, do(t, http.MethodGet, u, nil)} {
				if r.Status/100 != 2 {
					t.Fatalf("status %d: %s", r.Status, diagnostics(r.Body))
				}
				if n := len(metaMember.FindAll(r.Body, -1)); n != 1 {
					t.Fatalf("found %d server meta members, want 1: %s", n, truncate(r.Body, 300))
				}
				got := metaMember.ReplaceAll(r.Body, nil)
				if d := cmp.Diff(in.String(), string(got)); d != "" {
					t.Errorf("stored bytes differ from the input (-want +got):\n%s", truncate([]byte(d), 3000))
				}
			}
		})
	}
}
