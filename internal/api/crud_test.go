package api_test

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// checkVersionHeaders asserts ETag and Last-Modified of a version response.
func checkVersionHeaders(t *testing.T, r response, version int) {
	t.Helper()
	if got, want := r.Header.Get("ETag"), fmt.Sprintf(`W/"%d"`, version); got != want {
		t.Errorf("ETag = %q, want %q", got, want)
	}
	lm, err := http.ParseTime(r.Header.Get("Last-Modified"))
	if err != nil {
		t.Errorf("Last-Modified %q: %v", r.Header.Get("Last-Modified"), err)
	} else if d := time.Since(lm); d < -time.Minute || d > time.Hour {
		t.Errorf("Last-Modified %v is not about now", lm)
	}
}

func versionID(t *testing.T, body []byte) string {
	t.Helper()
	meta, _ := decode(t, body)["meta"].(map[string]any)
	s, _ := meta["versionId"].(string)
	return s
}

func TestCRUD(t *testing.T) {
	t.Parallel()
	ts, pool := newTestServer(t)
	base := ts.URL + "/fhir"

	// create
	cr := do(t, http.MethodPost, base+"/Patient", []byte(`{"resourceType":"Patient","name":[{"family":"Chalmers","given":["Peter"]}],"gender":"male"}`))
	if cr.Status != http.StatusCreated {
		t.Fatalf("create: status %d: %s", cr.Status, cr.Body)
	}
	created := decode(t, cr.Body)
	id, _ := created["id"].(string)
	loc := regexp.MustCompile(`^` + regexp.QuoteMeta(base) + `/Patient/([A-Za-z0-9\-.]{1,64})/_history/1$`).FindStringSubmatch(cr.Header.Get("Location"))
	if loc == nil || loc[1] != id {
		t.Fatalf("Location = %q, want %s/Patient/%s/_history/1", cr.Header.Get("Location"), base, id)
	}
	checkVersionHeaders(t, cr, 1)
	if v := versionID(t, cr.Body); v != "1" {
		t.Errorf("created meta.versionId = %q, want 1", v)
	}

	// read
	rr := do(t, http.MethodGet, base+"/Patient/"+id, nil)
	if rr.Status != http.StatusOK {
		t.Fatalf("read: status %d", rr.Status)
	}
	checkVersionHeaders(t, rr, 1)
	if d := cmp.Diff(created, decode(t, rr.Body)); d != "" {
		t.Errorf("read differs from the create response (-want +got):\n%s", d)
	}
	if ct := rr.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
		t.Errorf("read Content-Type = %q", ct)
	}
	if r := do(t, http.MethodGet, base+"/Patient/"+id, nil, "If-None-Match", `W/"1"`); r.Status != http.StatusNotModified {
		t.Errorf("read with If-None-Match of the current version: status %d, want 304", r.Status)
	}

	// update
	ur := do(t, http.MethodPut, base+"/Patient/"+id, []byte(`{"resourceType":"Patient","id":"`+id+`","name":[{"family":"Chalmers","given":["Pete"]}],"gender":"male"}`))
	if ur.Status != http.StatusOK {
		t.Fatalf("update: status %d: %s", ur.Status, ur.Body)
	}
	checkVersionHeaders(t, ur, 2)
	if got, want := ur.Header.Get("Location"), base+"/Patient/"+id+"/_history/2"; got != want {
		t.Errorf("update Location = %q, want %q", got, want)
	}
	if v := versionID(t, ur.Body); v != "2" {
		t.Errorf("updated meta.versionId = %q, want 2", v)
	}

	// vread both versions
	for v, given := range map[string]string{"1": "Peter", "2": "Pete"} {
		r := do(t, http.MethodGet, base+"/Patient/"+id+"/_history/"+v, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("vread %s: status %d", v, r.Status)
		}
		if !strings.Contains(string(r.Body), `"given":["`+given+`"]`) || versionID(t, r.Body) != v {
			t.Errorf("vread %s = %s", v, r.Body)
		}
	}
	if r := do(t, http.MethodGet, base+"/Patient/"+id+"/_history/9", nil); r.Status != http.StatusNotFound {
		t.Errorf("vread of a version never written: status %d, want 404", r.Status)
	}

	// update as create, with the client's id
	uc := do(t, http.MethodPut, base+"/Patient/client-id-1", []byte(`{"resourceType":"Patient","id":"client-id-1","gender":"female"}`))
	if uc.Status != http.StatusCreated {
		t.Fatalf("update as create: status %d: %s", uc.Status, uc.Body)
	}
	if got, want := uc.Header.Get("Location"), base+"/Patient/client-id-1/_history/1"; got != want {
		t.Errorf("update-as-create Location = %q, want %q", got, want)
	}
	checkVersionHeaders(t, uc, 1)

	// delete
	dr := do(t, http.MethodDelete, base+"/Patient/"+id, nil)
	if dr.Status != http.StatusOK && dr.Status != http.StatusNoContent {
		t.Fatalf("delete: status %d: %s", dr.Status, dr.Body)
	}
	outcome(t, do(t, http.MethodGet, base+"/Patient/"+id, nil), http.StatusGone)
	if r := do(t, http.MethodGet, base+"/Patient/"+id+"/_history/1", nil); r.Status != http.StatusOK {
		t.Errorf("vread of v1 after delete: status %d, want 200", r.Status)
	}
	outcome(t, do(t, http.MethodGet, base+"/Patient/"+id+"/_history/3", nil), http.StatusGone)
	before := historyRowCount(t, pool)
	dr2 := do(t, http.MethodDelete, base+"/Patient/"+id, nil)
	if dr2.Status != http.StatusOK && dr2.Status != http.StatusNoContent {
		t.Errorf("second delete: status %d, want 200 or 204", dr2.Status)
	}
	if after := historyRowCount(t, pool); after != before {
		t.Errorf("second delete wrote a version: history rows %d -> %d", before, after)
	}
	if dn := do(t, http.MethodDelete, base+"/Patient/never-was", nil); dn.Status != http.StatusOK && dn.Status != http.StatusNoContent {
		t.Errorf("delete of an unknown id: status %d, want 200 or 204", dn.Status)
	}
	outcome(t, do(t, http.MethodGet, base+"/Patient/never-was", nil), http.StatusNotFound)

	// recreate after delete continues the version line
	rc := do(t, http.MethodPut, base+"/Patient/"+id, []byte(`{"resourceType":"Patient","id":"`+id+`","gender":"male"}`))
	if rc.Status != http.StatusOK && rc.Status != http.StatusCreated {
		t.Fatalf("update after delete: status %d: %s", rc.Status, rc.Body)
	}
	if v := versionID(t, rc.Body); v != "4" {
		t.Errorf("update after delete: versionId %q, want 4", v)
	}
}

type histEntry struct {
	FullURL, Method, URL, Status, ETag string
	HasResource                        bool
	ResourceVersion                    string
}

func historyEntries(t *testing.T, b map[string]any) []histEntry {
	t.Helper()
	if b["type"] != "history" {
		t.Errorf("Bundle.type = %v, want history", b["type"])
	}
	var out []histEntry
	for _, e := range bundleEntries(t, b) {
		req, _ := e["request"].(map[string]any)
		resp, _ := e["response"].(map[string]any)
		h := histEntry{FullURL: fmt.Sprint(e["fullUrl"]), Method: fmt.Sprint(req["method"]), URL: fmt.Sprint(req["url"]),
			Status: fmt.Sprint(resp["status"]), ETag: fmt.Sprint(resp["etag"])}
		if res, ok := e["resource"].(map[string]any); ok {
			h.HasResource = true
			meta, _ := res["meta"].(map[string]any)
			h.ResourceVersion = fmt.Sprint(meta["versionId"])
		}
		out = append(out, h)
	}
	return out
}

func TestHistory(t *testing.T) {
	t.Parallel()
	ts, _ := newTestServer(t)
	base := ts.URL + "/fhir"
	id := create(t, ts.URL, `{"resourceType":"Patient","gender":"male"}`)
	put(t, ts.URL, `{"resourceType":"Patient","id":"`+id+`","gender":"female"}`)
	if r := do(t, http.MethodDelete, base+"/Patient/"+id, nil); r.Status/100 != 2 {
		t.Fatalf("delete: %d", r.Status)
	}
	obs := create(t, ts.URL, `{"resourceType":"Observation","status":"final","code":{"text":"x"}}`)
	other := create(t, ts.URL, `{"resourceType":"Patient","gender":"other"}`)

	r := do(t, http.MethodGet, base+"/Patient/"+id+"/_history", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("instance history: %d %s", r.Status, r.Body)
	}
	want := []histEntry{
		{FullURL: base + "/Patient/" + id, Method: "DELETE", URL: "Patient/" + id, Status: "204", ETag: `W/"3"`},
		{FullURL: base + "/Patient/" + id, Method: "PUT", URL: "Patient/" + id, Status: "200", ETag: `W/"2"`, HasResource: true, ResourceVersion: "2"},
		{FullURL: base + "/Patient/" + id, Method: "POST", URL: "Patient", Status: "201", ETag: `W/"1"`, HasResource: true, ResourceVersion: "1"},
	}
	if d := cmp.Diff(want, historyEntries(t, decode(t, r.Body))); d != "" {
		t.Errorf("instance history (-want +got):\n%s", d)
	}
	outcome(t, do(t, http.MethodGet, base+"/Patient/nobody/_history", nil), http.StatusNotFound)

	keys := func(u string) []string {
		r := do(t, http.MethodGet, u, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", u, r.Status, r.Body)
		}
		var ks []string
		for _, h := range historyEntries(t, decode(t, r.Body)) {
			ks = append(ks, strings.TrimPrefix(h.FullURL, base+"/")+"@"+strings.Trim(strings.TrimPrefix(h.ETag, "W/"), `"`))
		}
		return ks
	}
	if d := cmp.Diff([]string{"Patient/" + other + "@1", "Patient/" + id + "@3", "Patient/" + id + "@2", "Patient/" + id + "@1"}, keys(base+"/Patient/_history")); d != "" {
		t.Errorf("type history (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"Patient/" + other + "@1", "Observation/" + obs + "@1", "Patient/" + id + "@3", "Patient/" + id + "@2", "Patient/" + id + "@1"}, keys(base+"/_history")); d != "" {
		t.Errorf("system history (-want +got):\n%s", d)
	}
}

func TestHistoryPaging(t *testing.T) {
	t.Parallel()
	ts, _ := newTestServer(t)
	id := create(t, ts.URL, `{"resourceType":"Patient","active":true}`)
	for range 6 {
		put(t, ts.URL, `{"resourceType":"Patient","id":"`+id+`","active":true}`)
	}
	var got []string
	pages := 0
	next := ts.URL + "/fhir/Patient/" + id + "/_history?_count=3"
	for next != "" && pages < 10 {
		pages++
		r := do(t, http.MethodGet, next, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", next, r.Status, r.Body)
		}
		b := decode(t, r.Body)
		es := historyEntries(t, b)
		if len(es) > 3 {
			t.Errorf("page %d has %d entries, want at most 3", pages, len(es))
		}
		for _, e := range es {
			got = append(got, e.ResourceVersion)
		}
		next = link(b, "next")
	}
	if d := cmp.Diff([]string{"7", "6", "5", "4", "3", "2", "1"}, got); d != "" {
		t.Errorf("versions over all pages (-want +got):\n%s", d)
	}
	if pages != 3 {
		t.Errorf("%d pages, want 3", pages)
	}
}

func TestPrefer(t *testing.T) {
	t.Parallel()
	ts, _ := newTestServer(t)
	base := ts.URL + "/fhir"
	tests := []struct {
		prefer string
		check  func(t *testing.T, r response)
	}{
		{"return=minimal", func(t *testing.T, r response) {
			if len(r.Body) != 0 {
				t.Errorf("body = %q, want empty", r.Body)
			}
		}},
		{"return=representation", func(t *testing.T, r response) {
			if m := decode(t, r.Body); m["resourceType"] != "Patient" || m["id"] == nil {
				t.Errorf("body = %s, want the Patient", r.Body)
			}
		}},
		{"return=OperationOutcome", func(t *testing.T, r response) {
			if m := decode(t, r.Body); m["resourceType"] != "OperationOutcome" {
				t.Errorf("body = %s, want an OperationOutcome", r.Body)
			}
		}},
		{"", func(t *testing.T, r response) {
			if m := decode(t, r.Body); m["resourceType"] != "Patient" {
				t.Errorf("body = %s, want the Patient by default", r.Body)
			}
		}},
	}
	for i, tt := range tests {
		t.Run(tt.prefer, func(t *testing.T) {
			t.Parallel()
			hdr := []string{}
			if tt.prefer != "" {
				hdr = []string{"Prefer", tt.prefer}
			}
			cr := do(t, http.MethodPost, base+"/Patient", []byte(`{"resourceType":"Patient","active":true}`), hdr...)
			if cr.Status != http.StatusCreated {
				t.Fatalf("create: status %d", cr.Status)
			}
			if cr.Header.Get("Location") == "" || cr.Header.Get("ETag") != `W/"1"` {
				t.Errorf("create headers: Location %q ETag %q", cr.Header.Get("Location"), cr.Header.Get("ETag"))
			}
			tt.check(t, cr)
			id := fmt.Sprintf("prefer-%d", i)
			do(t, http.MethodPut, base+"/Patient/"+id, []byte(`{"resourceType":"Patient","id":"`+id+`"}`))
			ur := do(t, http.MethodPut, base+"/Patient/"+id, []byte(`{"resourceType":"Patient","id":"`+id+`","active":false}`), hdr...)
			if ur.Status != http.StatusOK {
				t.Fatalf("update: status %d", ur.Status)
			}
			if ur.Header.Get("ETag") != `W/"2"` {
				t.Errorf("update ETag %q", ur.Header.Get("ETag"))
			}
			tt.check(t, ur)
		})
	}
}

func TestConditionalCreate(t *testing.T) {
	t.Parallel()
	ts, pool := newTestServer(t)
	base := ts.URL + "/fhir"
	existing := create(t, ts.URL, `{"resourceType":"Patient","identifier":[{"system":"http://x","value":"1"}]}`)
	create(t, ts.URL, `{"resourceType":"Patient","identifier":[{"system":"http://x","value":"dup"}]}`)
	create(t, ts.URL, `{"resourceType":"Patient","identifier":[{"system":"http://x","value":"dup"}]}`)
	body := []byte(`{"resourceType":"Patient","identifier":[{"system":"http://x","value":"1"}]}`)

	n := rowCount(t, pool)
	r := do(t, http.MethodPost, base+"/Patient", body, "If-None-Exist", "identifier=http://x|1")
	if r.Status != http.StatusOK {
		t.Fatalf("match: status %d, want 200: %s", r.Status, r.Body)
	}
	if got := decode(t, r.Body)["id"]; got != existing {
		t.Errorf("match returned id %v, want the existing %s", got, existing)
	}
	if got := rowCount(t, pool); got != n {
		t.Errorf("a matching conditional create stored a resource: %d rows, want %d", got, n)
	}

	r = do(t, http.MethodPost, base+"/Patient", body, "If-None-Exist", "identifier=http://x|2")
	if r.Status != http.StatusCreated {
		t.Errorf("no match: status %d, want 201: %s", r.Status, r.Body)
	}
	if got := rowCount(t, pool); got != n+1 {
		t.Errorf("after a non-matching conditional create: %d rows, want %d", got, n+1)
	}

	outcome(t, do(t, http.MethodPost, base+"/Patient", body, "If-None-Exist", "identifier=http://x|dup"), http.StatusPreconditionFailed)
	if got := rowCount(t, pool); got != n+1 {
		t.Errorf("after a 412: %d rows, want %d", got, n+1)
	}
}

func TestConditionalUpdate(t *testing.T) {
	t.Parallel()
	ts, pool := newTestServer(t)
	u := ts.URL + "/fhir/Patient?identifier=" + q("http://x|cu")
	body := []byte(`{"resourceType":"Patient","identifier":[{"system":"http://x","value":"cu"}],"active":true}`)

	r := do(t, http.MethodPut, u, body)
	if r.Status != http.StatusCreated {
		t.Fatalf("no match: status %d, want 201: %s", r.Status, r.Body)
	}
	id := decode(t, r.Body)["id"]
	r = do(t, http.MethodPut, u, body)
	if r.Status != http.StatusOK {
		t.Fatalf("one match: status %d, want 200: %s", r.Status, r.Body)
	}
	if m := decode(t, r.Body); m["id"] != id || versionID(t, r.Body) != "2" {
		t.Errorf("one match updated %v version %s, want %v version 2", m["id"], versionID(t, r.Body), id)
	}
	create(t, ts.URL, string(body))
	n := rowCount(t, pool)
	outcome(t, do(t, http.MethodPut, u, body), http.StatusPreconditionFailed)
	if got := rowCount(t, pool); got != n {
		t.Errorf("after a 412: %d rows, want %d", got, n)
	}
}

func TestConditionalDelete(t *testing.T) {
	t.Parallel()
	ts, _ := newTestServer(t)
	base := ts.URL + "/fhir"
	id := create(t, ts.URL, `{"resourceType":"Patient","identifier":[{"system":"http://x","value":"cd"}]}`)
	create(t, ts.URL, `{"resourceType":"Patient","identifier":[{"system":"http://x","value":"two"}]}`)
	create(t, ts.URL, `{"resourceType":"Patient","identifier":[{"system":"http://x","value":"two"}]}`)

	r := do(t, http.MethodDelete, base+"/Patient?identifier="+q("http://x|cd"), nil)
	if r.Status != http.StatusOK && r.Status != http.StatusNoContent {
		t.Fatalf("one match: status %d: %s", r.Status, r.Body)
	}
	outcome(t, do(t, http.MethodGet, base+"/Patient/"+id, nil), http.StatusGone)
	if r := do(t, http.MethodDelete, base+"/Patient?identifier="+q("http://x|none"), nil); r.Status != http.StatusOK && r.Status != http.StatusNoContent {
		t.Errorf("no match: status %d, want 200 or 204", r.Status)
	}
	outcome(t, do(t, http.MethodDelete, base+"/Patient?identifier="+q("http://x|two"), nil), http.StatusPreconditionFailed)
	if ids, _ := searchIDs(t, base+"/Patient?identifier="+q("http://x|two")); len(ids) != 2 {
		t.Errorf("a refused conditional delete left %d matches, want 2", len(ids))
	}
}

// statusCounts runs fn n times concurrently and counts the statuses.
func statusCounts(n int, fn func(i int) response) (map[int]int, []response) {
	var wg sync.WaitGroup
	rs := make([]response, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			rs[i] = fn(i)
		}()
	}
	close(start)
	wg.Wait()
	counts := map[int]int{}
	for _, r := range rs {
		counts[r.Status]++
	}
	return counts, rs
}

func TestOptimisticLocking(t *testing.T) {
	t.Parallel()
	ts, _ := newTestServer(t)
	u := ts.URL + "/fhir/Patient/locked"
	put(t, ts.URL, `{"resourceType":"Patient","id":"locked","active":true}`)

	counts, _ := statusCounts(10, func(i int) response {
		return do(t, http.MethodPut, u, []byte(fmt.Sprintf(`{"resourceType":"Patient","id":"locked","birthDate":"20%02d-01-01"}`, i)), "If-Match", `W/"1"`)
	})
	if d := cmp.Diff(map[int]int{200: 1, 412: 9}, counts); d != "" {
		t.Errorf("10 concurrent updates of version 1, statuses (-want +got):\n%s", d)
	}
	r := do(t, http.MethodGet, u, nil)
	if v := versionID(t, r.Body); v != "2" {
		t.Errorf("after the race: version %s, want 2", v)
	}
	outcome(t, do(t, http.MethodPut, u, []byte(`{"resourceType":"Patient","id":"locked"}`), "If-Match", `W/"1"`), http.StatusPreconditionFailed)
	outcome(t, do(t, http.MethodDelete, u, nil, "If-Match", `W/"1"`), http.StatusPreconditionFailed)
	if r := do(t, http.MethodPut, u, []byte(`{"resourceType":"Patient","id":"locked"}`), "If-Match", `W/"2"`); r.Status != http.StatusOK {
		t.Errorf("If-Match of the current version: status %d, want 200", r.Status)
	}
}

func TestConcurrentConditionalCreate(t *testing.T) {
	t.Parallel()
	ts, _ := newTestServer(t)
	body := []byte(`{"resourceType":"Patient","identifier":[{"system":"http://x","value":"123"}]}`)
	counts, rs := statusCounts(10, func(int) response {
		return do(t, http.MethodPost, ts.URL+"/fhir/Patient", body, "If-None-Exist", "identifier=http://x|123")
	})
	if d := cmp.Diff(map[int]int{201: 1, 200: 9}, counts); d != "" {
		t.Errorf("10 concurrent conditional creates, statuses (-want +got):\n%s", d)
	}
	ids := map[string]bool{}
	for _, r := range rs {
		if r.Status/100 == 2 {
			ids[fmt.Sprint(decode(t, r.Body)["id"])] = true
		}
	}
	if len(ids) != 1 {
		t.Errorf("the responses name %d ids, want 1: %v", len(ids), ids)
	}
	found, _ := searchIDs(t, ts.URL+"/fhir/Patient?identifier="+q("http://x|123"))
	if len(found) != 1 {
		t.Errorf("search finds %d Patients, want 1", len(found))
	}
}
