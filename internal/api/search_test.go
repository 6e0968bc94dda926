package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// searchFixture stores a small set of Patients and Observations, each
// written in the order listed (so _lastUpdated sorts in that order).
var searchFixture = []string{
	`{"resourceType":"Patient","id":"pa","identifier":[{"system":"http://a","value":"111"}],"name":[{"family":"Müller","given":["Anna"]}],"gender":"female","birthDate":"1980-05-15"}`,
	`{"resourceType":"Patient","id":"pb","identifier":[{"system":"http://b","value":"111"}],"name":[{"family":"Mueller","given":["Bob"]}],"gender":"male","birthDate":"1980-06-01"}`,
	`{"resourceType":"Patient","id":"pc","identifier":[{"value":"111"}],"name":[{"family":"Smith","given":["Émile","Anne"]}],"gender":"male","birthDate":"1990"}`,
	`{"resourceType":"Patient","id":"pd","identifier":[{"system":"http://a","value":"222"}],"name":[{"family":"Smithson","given":["Zoë"]}],"gender":"female","birthDate":"1975-12-31"}`,
	`{"resourceType":"Observation","id":"o1","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/pa"},"encounter":{"reference":"Encounter/e1"},"effectiveDateTime":"2020-01-10T10:00:00Z"}`,
	`{"resourceType":"Observation","id":"o2","status":"preliminary","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"718-7"}]},"subject":{"reference":"Patient/pb"},"encounter":{"reference":"Encounter/e2"},"effectiveDateTime":"2021-03-05"}`,
	`{"resourceType":"Observation","id":"o3","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],"code":{"coding":[{"system":"http://snomed.info/sct","code":"8867-4"}]},"subject":{"reference":"Patient/pa"},"effectivePeriod":{"start":"2022-01-01","end":"2022-02-01"}}`,
}

func TestSearch(t *testing.T) {
	t.Parallel()
	ts, _ := newPlainServer(t)
	start := time.Now().UTC().Add(-time.Minute)
	for _, r := range searchFixture {
		put(t, ts.URL, r)
	}
	tests := []struct {
		query  string // [type]?[params]
		want   []string
		sorted bool // the order is part of the answer
	}{
		// token
		{"Patient?identifier=http://a|111", []string{"pa"}, false},
		{"Patient?identifier=111", []string{"pa", "pb", "pc"}, false},
		{"Patient?identifier=|111", []string{"pc"}, false},
		{"Patient?identifier=http://a|", []string{"pa", "pd"}, false},
		{"Patient?identifier=http://a|111,http://b|111", []string{"pa", "pb"}, false},
		{"Patient?gender=male", []string{"pb", "pc"}, false},
		{"Observation?code=http://loinc.org|8867-4", []string{"o1"}, false},
		{"Observation?code=8867-4", []string{"o1", "o3"}, false},
		{"Observation?code=|8867-4", nil, false},
		{"Observation?status=final", []string{"o1", "o3"}, false},
		{"Observation?category=laboratory", []string{"o2", "o3"}, false},
		{"Observation?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs", []string{"o1"}, false},
		{"Patient?_id=pa,pc", []string{"pa", "pc"}, false},
		// reference
		{"Observation?subject=Patient/pa", []string{"o1", "o3"}, false},
		{"Observation?subject:Patient=pa", []string{"o1", "o3"}, false},
		{"Observation?patient=pa", []string{"o1", "o3"}, false},
		{"Observation?patient=Patient/pb", []string{"o2"}, false},
		{"Observation?encounter=Encounter/e1", []string{"o1"}, false},
		// the patient compartment with token and date conditions
		{"Observation?patient=pa&code=8867-4", []string{"o1", "o3"}, false},
		{"Observation?patient=Patient/pa&code=http://loinc.org|8867-4", []string{"o1"}, false},
		{"Observation?patient=pb&code=8867-4", nil, false},
		{"Observation?patient:Patient=pa&category=laboratory&status=final", []string{"o3"}, false},
		{"Observation?patient=pa&date=ge2021", []string{"o3"}, false},
		{"Observation?patient=pa,pb&code=8867-4", []string{"o1", "o3"}, false},
		{"Observation?patient=pa&code:not=8867-4", nil, false},
		{"Observation?subject=Patient/pb&status=preliminary", []string{"o2"}, false},
		// string
		{"Patient?family=smi", []string{"pc", "pd"}, false},
		{"Patient?family=SMITH", []string{"pc", "pd"}, false},
		{"Patient?family=muller", []string{"pa"}, false},
		{"Patient?family=MÜLLER", []string{"pa"}, false},
		{"Patient?family=mu", []string{"pa", "pb"}, false},
		{"Patient?family:exact=Müller", []string{"pa"}, false},
		{"Patient?family:exact=müller", nil, false},
		{"Patient?family:exact=Smith", []string{"pc"}, false},
		{"Patient?family:contains=ith", []string{"pc", "pd"}, false},
		{"Patient?family:contains=LLE", []string{"pa", "pb"}, false},
		{"Patient?given=emile", []string{"pc"}, false},
		{"Patient?given=zoe", []string{"pd"}, false},
		{"Patient?name=ann", []string{"pa", "pc"}, false},
		{"Patient?name=smithson", []string{"pd"}, false},
		{"Patient?family=smith,mueller", []string{"pb", "pc", "pd"}, false},
		{"Patient?family=smi&gender=female", []string{"pd"}, false},
		// date, on birthdate (day and year precision values)
		{"Patient?birthdate=1980", []string{"pa", "pb"}, false},
		{"Patient?birthdate=1980-05", []string{"pa"}, false},
		{"Patient?birthdate=1980-05-15", []string{"pa"}, false},
		{"Patient?birthdate=eq1980-05-15", []string{"pa"}, false},
		{"Patient?birthdate=ne1980-05-15", []string{"pb", "pc", "pd"}, false},
		{"Patient?birthdate=lt1980", []string{"pd"}, false},
		{"Patient?birthdate=gt1980", []string{"pc"}, false},
		{"Patient?birthdate=gt1980-05", []string{"pb", "pc"}, false},
		{"Patient?birthdate=ge1980-06-01", []string{"pb", "pc"}, false},
		{"Patient?birthdate=le1980-05-15", []string{"pa", "pd"}, false},
		{"Patient?birthdate=sa1980-12-31", []string{"pc"}, false},
		{"Patient?birthdate=eb1980-01-01", []string{"pd"}, false},
		{"Patient?birthdate=1990-07-01", nil, false},
		{"Patient?birthdate=ge1979&birthdate=lt1981", []string{"pa", "pb"}, false},
		// date, on Observation.effective[x] (dateTime and Period)
		{"Observation?date=2021", []string{"o2"}, false},
		{"Observation?date=2020-01-10", []string{"o1"}, false},
		{"Observation?date=ge2021-01-01", []string{"o2", "o3"}, false},
		{"Observation?date=lt2020-06", []string{"o1"}, false},
		{"Observation?date=2022", []string{"o3"}, false},
		{"Observation?date=2022-01-15", nil, false},
		// _lastUpdated
		{"Patient?_lastUpdated=gt" + start.Format("2006-01-02T15:04:05Z"), []string{"pa", "pb", "pc", "pd"}, false},
		{"Patient?_lastUpdated=lt2000-01-01", nil, false},
		// sort
		{"Patient?_sort=_lastUpdated", []string{"pa", "pb", "pc", "pd"}, true},
		{"Patient?_sort=-_lastUpdated", []string{"pd", "pc", "pb", "pa"}, true},
		{"Observation?_sort=date", []string{"o1", "o2", "o3"}, true},
		{"Observation?_sort=-date", []string{"o3", "o2", "o1"}, true},
		{"Patient?_sort=birthdate", []string{"pd", "pa", "pb", "pc"}, true},
		// unknown parameters are ignored by default
		{"Patient?foo=bar", []string{"pa", "pb", "pc", "pd"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			t.Parallel()
			typ, rawq, _ := strings.Cut(tt.query, "?")
			vals, err := url.ParseQuery(rawq)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := searchIDs(t, ts.URL+"/fhir/"+typ+"?"+vals.Encode())
			if !tt.sorted {
				sort.Strings(got)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("GET %s (-want +got):\n%s", tt.query, d)
			}
			// POST [type]/_search with a form body answers the same.
			r := do(t, http.MethodPost, ts.URL+"/fhir/"+typ+"/_search", []byte(vals.Encode()), "Content-Type", "application/x-www-form-urlencoded")
			if r.Status != http.StatusOK {
				t.Fatalf("POST _search: status %d: %s", r.Status, r.Body)
			}
			pgot := matchIDs(t, decode(t, r.Body))
			if !tt.sorted {
				sort.Strings(pgot)
			}
			if d := cmp.Diff(tt.want, pgot); d != "" {
				t.Errorf("POST _search %s (-want +got):\n%s", tt.query, d)
			}
		})
	}

	t.Run("ap", func(t *testing.T) {
		t.Parallel()
		got, _ := searchIDs(t, ts.URL+"/fhir/Patient?birthdate=ap1980-05-15")
		if !slices.Contains(got, "pa") || slices.Contains(got, "pc") {
			t.Errorf("birthdate=ap1980-05-15 = %v, want pa and not pc (1990)", got)
		}
	})

	t.Run("count and total", func(t *testing.T) {
		t.Parallel()
		ids, b := searchIDs(t, ts.URL+"/fhir/Patient?_count=2&_total=accurate")
		if len(ids) != 2 || fmt.Sprint(b["total"]) != "4" || link(b, "next") == "" {
			t.Errorf("_count=2: %d matches, total %v, next %q; want 2, 4 and a next link", len(ids), b["total"], link(b, "next"))
		}
		if b["type"] != "searchset" {
			t.Errorf("Bundle.type = %v, want searchset", b["type"])
		}
		more, b2 := searchIDs(t, link(b, "next"))
		if len(more) != 2 || link(b2, "next") != "" {
			t.Errorf("second page: %v, next %q; want 2 matches and no next link", more, link(b2, "next"))
		}
		all := append(ids, more...)
		sort.Strings(all)
		if d := cmp.Diff([]string{"pa", "pb", "pc", "pd"}, all); d != "" {
			t.Errorf("both pages (-want +got):\n%s", d)
		}
		_, b = searchIDs(t, ts.URL+"/fhir/Patient?_total=none")
		if _, ok := b["total"]; ok {
			t.Errorf("_total=none: total = %v, want absent", b["total"])
		}
		ids, b = searchIDs(t, ts.URL+"/fhir/Patient?_count=0&_total=accurate")
		if len(ids) != 0 || fmt.Sprint(b["total"]) != "4" {
			t.Errorf("_count=0: %d matches, total %v; want 0 and 4", len(ids), b["total"])
		}
	})

	t.Run("strict", func(t *testing.T) {
		t.Parallel()
		outcome(t, do(t, http.MethodGet, ts.URL+"/fhir/Patient?foo=bar", nil, "Prefer", "handling=strict"), http.StatusBadRequest)
		r := do(t, http.MethodGet, ts.URL+"/fhir/Patient?foo=bar", nil, "Prefer", "handling=lenient")
		if r.Status != http.StatusOK {
			t.Errorf("lenient: status %d, want 200", r.Status)
		}
		if ids, _ := searchIDs(t, ts.URL+"/fhir/Patient?family=smith", "Prefer", "handling=strict"); len(ids) != 2 {
			t.Errorf("strict with known parameters: %v, want 2 matches", ids)
		}
	})
}

// TestPagingStability pages through 60 Patients while 40 more are created
// concurrently: every original Patient appears exactly once.
func TestPagingStability(t *testing.T) {
	t.Parallel()
	ts, _ := newTestServer(t)
	var entries []string
	for i := range 60 {
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Patient","id":"orig-%02d","active":true},"request":{"method":"PUT","url":"Patient/orig-%02d"}}`, i, i))
	}
	r := postBundle(t, ts.URL, `{"resourceType":"Bundle","type":"transaction","entry":[`+strings.Join(entries, ",")+`]}`)
	if r.Status != http.StatusOK {
		t.Fatalf("load: status %d: %s", r.Status, truncate(r.Body, 300))
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 40 {
			r := do(t, http.MethodPost, ts.URL+"/fhir/Patient", []byte(`{"resourceType":"Patient","active":false}`))
			if r.Status != http.StatusCreated {
				t.Errorf("concurrent create: status %d", r.Status)
				return
			}
		}
	}()
	seen := map[string]int{}
	var pageSizes []int
	next := ts.URL + "/fhir/Patient?_count=7"
	for next != "" && len(pageSizes) < 50 {
		ids, b := searchIDs(t, next)
		pageSizes = append(pageSizes, len(ids))
		for _, id := range ids {
			seen[id]++
		}
		next = link(b, "next")
	}
	wg.Wait()
	for i := range 60 {
		if id := fmt.Sprintf("orig-%02d", i); seen[id] != 1 {
			t.Errorf("%s seen %d times, want 1", id, seen[id])
		}
	}
	total := 0
	for id, n := range seen {
		total += n
		if n > 1 {
			t.Errorf("%s seen %d times", id, n)
		}
	}
	for i, n := range pageSizes {
		if (i < len(pageSizes)-1 && n != 7) || n > 7 {
			t.Errorf("page %d has %d matches, want 7 (all but the last page are full): %v", i+1, n, pageSizes)
			break
		}
	}
	if want := (total + 6) / 7; len(pageSizes) != want && !(len(pageSizes) == want+1 && pageSizes[len(pageSizes)-1] == 0) {
		t.Errorf("%d pages for %d matches of 7 per page: %v", len(pageSizes), total, pageSizes)
	}
	if total < 60 || total > 100 {
		t.Errorf("%d matches, want between 60 and 100", total)
	}
}
