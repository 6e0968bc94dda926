package api_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestErrorClasses checks that every error is an OperationOutcome with the
// status of its class, and that nothing was written.
func TestErrorClasses(t *testing.T) {
	t.Parallel()
	ts, pool := newTestServer(t)
	base := ts.URL + "/fhir"
	put(t, ts.URL, `{"resourceType":"Patient","id":"p1","active":true}`)
	put(t, ts.URL, `{"resourceType":"Patient","id":"gone"}`)
	if r := do(t, http.MethodDelete, base+"/Patient/gone", nil); r.Status/100 != 2 {
		t.Fatalf("delete: %d", r.Status)
	}
	tooBig := `{"resourceType":"Patient","id":"big","name":[{"text":"` + strings.Repeat("x", testMaxBody) + `"}]}`

	tests := []struct {
		name         string
		method, path string
		body         string
		hdr          []string
		status       int
		expr         string // an issue expression must contain this
	}{
		{"malformed JSON", "POST", "/Patient", `{"resourceType":"Patient",`, nil, 400, ""},
		{"invalid resource", "POST", "/Patient", `{"resourceType":"Patient","gender":5}`, nil, 400, "gender"},
		{"unknown element", "POST", "/Patient", `{"resourceType":"Patient","colour":"blue"}`, nil, 400, "colour"},
		{"invalid element", "PUT", "/Patient/p1", `{"resourceType":"Patient","id":"p1","birthDate":"1980-13-45"}`, nil, 400, "birthDate"},
		{"bad search value", "GET", "/Patient?birthdate=notadate", "", nil, 400, ""},
		{"unknown type", "GET", "/Foo", "", nil, 404, ""},
		{"unknown type with id", "GET", "/Foo/1", "", nil, 404, ""},
		{"unknown id", "GET", "/Patient/nope", "", nil, 404, ""},
		{"PATCH", "PATCH", "/Patient/p1", `[{"op":"remove","path":"/active"}]`, []string{"Content-Type", "application/json-patch+json"}, 405, ""},
		{"POST to an instance", "POST", "/Patient/123", `{"resourceType":"Patient"}`, nil, 405, ""},
		{"XML wanted", "GET", "/Patient/p1", "", []string{"Accept", "application/fhir+xml"}, 406, ""},
		{"_format xml", "GET", "/Patient/p1?_format=xml", "", nil, 406, ""},
		{"same resource twice in a transaction", "POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[
			{"resource":{"resourceType":"Patient","id":"t2","active":true},"request":{"method":"PUT","url":"Patient/t2"}},
			{"resource":{"resourceType":"Patient","id":"t2","active":false},"request":{"method":"PUT","url":"Patient/t2"}}]}`, nil, 409, ""},
		{"read deleted", "GET", "/Patient/gone", "", nil, 410, ""},
		{"If-Match mismatch", "PUT", "/Patient/p1", `{"resourceType":"Patient","id":"p1"}`, []string{"If-Match", `W/"9"`}, 412, ""},
		{"body too large", "PUT", "/Patient/big", tooBig, nil, 413, ""},
		{"text/plain", "POST", "/Patient", `{"resourceType":"Patient"}`, []string{"Content-Type", "text/plain"}, 415, ""},
		{"no Content-Type", "POST", "/Patient", `{"resourceType":"Patient"}`, []string{"Content-Type", ""}, 415, ""},
		{"dangling urn:uuid", "POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[
			{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:5ad4a3a4-0000-4000-8000-000000000009"}},"request":{"method":"POST","url":"Observation"}}]}`, nil, 422, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not parallel: each case checks that the row count is unchanged.
			before, hBefore := rowCount(t, pool), historyRowCount(t, pool)
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			issues := outcome(t, do(t, tt.method, base+tt.path, body, tt.hdr...), tt.status)
			if tt.expr != "" {
				exprs := expressions(issues)
				if !slices.ContainsFunc(exprs, func(e string) bool { return strings.Contains(e, tt.expr) }) {
					t.Errorf("issue expressions %q, want one naming %s", exprs, tt.expr)
				}
			}
			if after, hAfter := rowCount(t, pool), historyRowCount(t, pool); after != before || hAfter != hBefore {
				t.Errorf("rows changed: resources %d -> %d, history %d -> %d", before, after, hBefore, hAfter)
			}
		})
	}
}

// TestHostileInput sends malformed and hostile requests: each must get a
// 4xx OperationOutcome, never a 500.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	ts, pool := newTestServer(t)
	base := ts.URL + "/fhir"
	put(t, ts.URL, `{"resourceType":"Patient","id":"p1","active":true}`)

	deepArray := `{"resourceType":"Patient","extension":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`
	deepObject := `{"resourceType":"Patient","text":` + strings.Repeat(`{"div":`, 150) + `"x"` + strings.Repeat("}", 150) + `}`
	tests := []struct {
		name         string
		method, path string
		body         string
		hdr          []string
	}{
		{"deeply nested arrays", "POST", "/Patient", deepArray, nil},
		{"deeply nested objects", "POST", "/Patient", deepObject, nil},
		{"duplicate keys", "POST", "/Patient", `{"resourceType":"Patient","gender":"male","gender":"female"}`, nil},
		{"duplicate nested keys", "POST", "/Patient", `{"resourceType":"Patient","name":[{"family":"a","family":"b"}]}`, nil},
		{"duplicate resourceType", "POST", "/Patient", `{"resourceType":"Patient","resourceType":"Observation"}`, nil},
		{"resourceType a number", "POST", "/Patient", `{"resourceType":5}`, nil},
		{"resourceType null", "POST", "/Patient", `{"resourceType":null}`, nil},
		{"no resourceType", "POST", "/Patient", `{"gender":"male"}`, nil},
		{"array at root", "POST", "/Patient", `[{"resourceType":"Patient"}]`, nil},
		{"string at root", "POST", "/Patient", `"Patient"`, nil},
		{"number at root", "POST", "/Patient", `5`, nil},
		{"null", "POST", "/Patient", `null`, nil},
		{"whitespace body", "POST", "/Patient", "  \n ", nil},
		{"huge number", "POST", "/Patient", `{"resourceType":"Patient","multipleBirthInteger":1e999999}`, nil},
		{"huge integer", "POST", "/Patient", `{"resourceType":"Patient","multipleBirthInteger":99999999999999999999999999}`, nil},
		{"invalid UTF-8", "POST", "/Patient", "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"\xff\xfe\xc3\"}]}", nil},
		{"raw NUL byte", "POST", "/Patient", "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"a\x00b\"}]}", nil},
		{"escaped NUL", "POST", "/Patient", `{"resourceType":"Patient","name":[{"family":"a\u0000b"}]}`, nil},
		{"control character", "POST", "/Patient", `{"resourceType":"Patient","name":[{"family":"a\u0007b"}]}`, nil},
		{"trailing garbage", "POST", "/Patient", `{"resourceType":"Patient"} xyz`, nil},
		{"two objects", "POST", "/Patient", `{"resourceType":"Patient"}{"resourceType":"Patient"}`, nil},
		{"unterminated string", "POST", "/Patient", `{"resourceType":"Patient","gender":"ma`, nil},
		{"id a number", "PUT", "/Patient/p1", `{"resourceType":"Patient","id":5}`, nil},
		{"type mismatch", "POST", "/Patient", `{"resourceType":"Observation","status":"final","code":{"text":"x"}}`, nil},
		{"unknown type in body", "POST", "/Patient", `{"resourceType":"Foo"}`, nil},
		{"id mismatch", "PUT", "/Patient/p1", `{"resourceType":"Patient","id":"p2"}`, nil},
		{"no id in update", "PUT", "/Patient/p1", `{"resourceType":"Patient"}`, nil},
		{"id with a space", "GET", "/Patient/a%20b", "", nil},
		{"id of 65 characters", "PUT", "/Patient/" + strings.Repeat("a", 65), `{"resourceType":"Patient","id":"` + strings.Repeat("a", 65) + `"}`, nil},
		{"id with a NUL", "GET", "/Patient/a%00b", "", nil},
		{"id with unicode", "GET", "/Patient/%E2%98%83", "", nil},
		{"id with dot-dot", "GET", "/Patient/..%2F..%2Fetc", "", nil},
		{"negative _count", "GET", "/Patient?_count=-1", "", nil},
		{"_count not a number", "GET", "/Patient?_count=abc", "", nil},
		{"_count overflow", "GET", "/Patient?_count=99999999999999999999999", "", nil},
		{"history _count", "GET", "/Patient/p1/_history?_count=x", "", nil},
		{"bad cursor", "GET", "/Patient?_cursor=garbage", "", nil},
		{"cursor with NUL", "GET", "/Patient?_cursor=%00%01", "", nil},
		{"bad history cursor", "GET", "/_history?_cursor=abc", "", nil},
		{"bad date", "GET", "/Patient?birthdate=2020-13-45", "", nil},
		{"February 30", "GET", "/Patient?birthdate=2020-02-30", "", nil},
		{"bad date prefix", "GET", "/Patient?birthdate=xx2020", "", nil},
		{"bad _lastUpdated", "GET", "/Patient?_lastUpdated=yesterday", "", nil},
		{"bad _since", "GET", "/_history?_since=yesterday", "", nil},
		{"unknown modifier", "GET", "/Patient?family:foo=x", "", nil},
		{"chained parameter", "GET", "/Observation?subject.name=x", "", nil},
		{"bad _sort", "GET", "/Patient?_sort=nonsense", "", nil},
		{"bad _total", "GET", "/Patient?_total=maybe", "", nil},
		{"NUL in a search value", "GET", "/Patient?family=a%00b", "", nil},
		{"invalid UTF-8 in a search value", "GET", "/Patient?family=%FF%FE", "", nil},
		{"bad If-Match", "PUT", "/Patient/p1", `{"resourceType":"Patient","id":"p1"}`, []string{"If-Match", "garbage"}},
		{"bad If-None-Exist", "POST", "/Patient", `{"resourceType":"Patient"}`, []string{"If-None-Exist", "foo=bar"}},
		{"entry not an object", "POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[5]}`, nil},
		{"collection Bundle", "POST", "", `{"resourceType":"Bundle","type":"collection","entry":[]}`, nil},
		{"entry without request", "POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient"}}]}`, nil},
		{"entry url escapes", "POST", "", `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"../../etc/passwd"}}]}`, nil},
		{"entry PATCH", "POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"PATCH","url":"Patient/p1"}}]}`, nil},
		{"entry resource a string", "POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":"Patient","request":{"method":"POST","url":"Patient"}}]}`, nil},
		{"entry bad ifMatch", "POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","id":"p1"},"request":{"method":"PUT","url":"Patient/p1","ifMatch":"garbage"}}]}`, nil},
		{"duplicate fullUrl", "POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[
			{"fullUrl":"urn:uuid:5ad4a3a4-0000-4000-8000-000000000001","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},
			{"fullUrl":"urn:uuid:5ad4a3a4-0000-4000-8000-000000000001","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}]}`, nil},
		{"Bundle to a type", "POST", "/Patient", `{"resourceType":"Bundle","type":"transaction"}`, nil},
		{"JSON _search body", "POST", "/Patient/_search", `{"family":"x"}`, nil},
	}
	// Cases where a lenient answer (an empty search) is as right as a 400.
	anyBelow500 := map[string]bool{"invalid UTF-8 in a search value": true}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			r := do(t, tt.method, base+tt.path, body, tt.hdr...)
			if anyBelow500[tt.name] && r.Status < 500 {
				return
			}
			if r.Status < 400 || r.Status > 499 {
				t.Errorf("status %d, want 4xx: %s", r.Status, truncate(r.Body, 300))
			}
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
				t.Errorf("Content-Type = %q, want application/fhir+json", ct)
			}
			if m, err := decodeJSON(r.Body); err != nil || m["resourceType"] != "OperationOutcome" {
				t.Errorf("body is not an OperationOutcome: %s", truncate(r.Body, 300))
			}
		})
	}
	// The parallel cases above finish before the parent's cleanup runs.
	t.Cleanup(func() {
		if n := rowCount(t, pool); n != 1 {
			t.Errorf("%d rows in resources after hostile input, want 1", n)
		}
	})
}

// TestLargeValuesNeverFail stores valid resources with values too long for
// a database index entry: they must not fail with a 500.
func TestLargeValuesNeverFail(t *testing.T) {
	t.Parallel()
	ts, _ := newTestServer(t)
	var words []string
	for i := range 20000 {
		words = append(words, fmt.Sprintf("w%05d", i))
	}
	long := strings.Join(words, " ") // ~140 KB of text that does not compress away
	tests := []struct{ name, body string }{
		{"long family name", `{"resourceType":"Patient","name":[{"family":"` + long + `"}]}`},
		{"long identifier value", `{"resourceType":"Patient","identifier":[{"system":"http://x","value":"` + long + `"}]}`},
		{"long valueString", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueString":"` + long + `"}`},
		{"long reference", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"http://example.org/fhir/Patient/` + strings.Repeat("a", 60000) + `"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := decode(t, []byte(tt.body))
			r := do(t, http.MethodPost, ts.URL+"/fhir/"+m["resourceType"].(string), []byte(tt.body))
			if r.Status != http.StatusCreated && (r.Status < 400 || r.Status > 499) {
				t.Errorf("status %d, want 201 (or a 4xx refusal): %s", r.Status, diagnostics(r.Body))
			}
		})
	}
}

func TestMetadata(t *testing.T) {
	t.Parallel()
	ts, _ := newTestServer(t)
	r := do(t, http.MethodGet, ts.URL+"/fhir/metadata", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("status %d", r.Status)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
		t.Errorf("Content-Type = %q", ct)
	}
	cs := decode(t, r.Body)
	if cs["resourceType"] != "CapabilityStatement" || cs["fhirVersion"] != "4.0.1" || cs["kind"] != "instance" {
		t.Errorf("resourceType %v fhirVersion %v kind %v; want CapabilityStatement, 4.0.1, instance", cs["resourceType"], cs["fhirVersion"], cs["kind"])
	}
	rest, _ := cs["rest"].([]any)
	if len(rest) != 1 {
		t.Fatalf("rest has %d entries, want 1", len(rest))
	}
	var patient map[string]any
	resources, _ := rest[0].(map[string]any)["resource"].([]any)
	for _, res := range resources {
		if m, _ := res.(map[string]any); m["type"] == "Patient" {
			patient = m
		}
	}
	if patient == nil {
		t.Fatal("no Patient in rest.resource")
	}
	var ints, params []string
	for _, i := range patient["interaction"].([]any) {
		ints = append(ints, fmt.Sprint(i.(map[string]any)["code"]))
	}
	for _, p := range patient["searchParam"].([]any) {
		params = append(params, fmt.Sprint(p.(map[string]any)["name"]))
	}
	for _, want := range []string{"read", "vread", "update", "delete", "history-instance", "history-type", "create", "search-type"} {
		if !slices.Contains(ints, want) {
			t.Errorf("Patient interactions %v lack %s", ints, want)
		}
	}
	for _, want := range []string{"family", "given", "name", "birthdate", "gender", "identifier", "_id", "_lastUpdated"} {
		if !slices.Contains(params, want) {
			t.Errorf("Patient search parameters lack %s", want)
		}
	}
	if r := do(t, http.MethodPost, ts.URL+"/fhir/metadata", []byte(`{}`)); r.Status != http.StatusMethodNotAllowed {
		t.Errorf("POST metadata: status %d, want 405", r.Status)
	}
}
