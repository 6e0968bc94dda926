package retrieve_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/fhirgate/fhirgate/internal/database/databasetest"
	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/retrieve"
	"github.com/fhirgate/fhirgate/internal/store"
	"github.com/fhirgate/fhirgate/internal/validate"
)

const tenant = "t"

// fixedGuard gives every type the same visibility and checks single
// versions against an explicit allow-list (standing in for the policy
// engine, whose own tests cover the decisions).
type fixedGuard struct {
	vis    *retrieve.Visibility
	forbid map[string]bool // types refused outright
	allow  func(v *store.Version) bool
}

func (g fixedGuard) See(_ context.Context, interaction, typ string) (*retrieve.Visibility, error) {
	if g.forbid[typ] {
		return nil, fhir.Errorf(fhir.KindForbidden, "", "%s of %s refused", interaction, typ)
	}
	return g.vis, nil
}

func (g fixedGuard) Probe(ctx context.Context, interaction, typ string) (*retrieve.Visibility, error) {
	return g.See(ctx, interaction, typ)
}

func (g fixedGuard) Check(_ context.Context, _ string, v *store.Version) bool { return g.allow(v) }

// world: 3 Patients (p1, p2 of org1; p3 of org2), 25 Observations each,
// a Practitioner, and one Observation of p1 labelled restricted (R).
func world(t *testing.T) *store.Store {
	t.Helper()
	st := store.New(databasetest.NewPool(t))
	w := ingest.New(st, validate.Resource)
	ctx := context.Background()
	put := func(body string) {
		r, err := fhir.Parse([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Update(ctx, tenant, r.Type, r.ID, r, 0); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
	}
	put(`{"resourceType":"Practitioner","id":"dr"}`)
	for i, org := range []string{"org1", "org1", "org2"} {
		put(fmt.Sprintf(`{"resourceType":"Patient","id":"p%d","managingOrganization":{"reference":"Organization/%s"},"generalPractitioner":[{"reference":"Practitioner/dr"}]}`, i+1, org))
		for j := range 25 {
			put(fmt.Sprintf(`{"resourceType":"Observation","id":"o%d-%02d","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p%d"},"performer":[{"reference":"Practitioner/dr"}]}`, i+1, j, i+1))
		}
	}
	put(`{"resourceType":"Observation","id":"secret","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]},"status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}`)
	// A second version of o1-00, so history has more than creations.
	put(`{"resourceType":"Observation","id":"o1-00","status":"amended","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}`)
	return st
}

func patientOf(v *store.Version) string {
	if v.Type == "Patient" {
		return v.ID
	}
	if i := strings.Index(string(v.Body), `"Patient/`); i >= 0 {
		rest := string(v.Body[i+9:])
		return rest[:strings.IndexByte(rest, '"')]
	}
	return ""
}

func ids(vs []store.Version) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Type+"/"+v.ID)
	}
	sort.Strings(out)
	return out
}

// TestSearchUnderVisibility pages through a search under a restricted
// visibility: every page is full, next links continue until exactly the
// visible resources were returned once each, and _total counts only
// those; includes and revincludes never bring in a hidden resource.
func TestSearchUnderVisibility(t *testing.T) {
	t.Parallel()
	st := world(t)
	ctx := context.Background()
	// Patients of org1 (p1, p2), without restricted resources.
	g := fixedGuard{
		vis: &retrieve.Visibility{Organizations: []string{"org1"}, NonCompartment: true, ExcludeLabels: []string{"R"}, AnySource: true},
		allow: func(v *store.Version) bool {
			p := patientOf(v)
			return (p == "p1" || p == "p2" || v.Type == "Practitioner") && !strings.Contains(string(v.Body), `"code":"R"`)
		},
	}
	r := retrieve.New(st).WithGuard(g)

	var got []string
	params := url.Values{"_count": {"7"}, "_total": {"accurate"}}
	pages := 0
	for {
		res, err := r.Search(ctx, tenant, "Observation", params, true)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if res.Total != 50 {
			t.Errorf("page %d: _total = %d, want 50 (25 Observations each of p1 and p2, the restricted one hidden)", pages, res.Total)
		}
		if res.Next != nil && len(res.Matches) != 7 {
			t.Errorf("page %d has %d entries and a next link: pages must be full", pages, len(res.Matches))
		}
		for _, v := range res.Matches {
			got = append(got, v.ID)
			if p := patientOf(&v); p != "p1" && p != "p2" {
				t.Errorf("page %d holds %s of %s", pages, v.ID, p)
			}
		}
		if res.Next == nil {
			break
		}
		params = res.Next
	}
	if len(got) != 50 || pages != 8 {
		t.Errorf("paged %d Observations in %d pages, want 50 in 8", len(got), pages)
	}
	if slices.Contains(got, "secret") {
		t.Error("the restricted Observation was returned")
	}
	sorted := slices.Clone(got)
	slices.Sort(sorted)
	if len(slices.Compact(sorted)) != len(got) {
		t.Error("a resource appeared on two pages")
	}

	// _revinclude from Patients and _include back to them.
	res, err := r.Search(ctx, tenant, "Patient", url.Values{"_revinclude": {"Observation:subject"}, "_count": {"10"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if m := ids(res.Matches); !slices.Equal(m, []string{"Patient/p1", "Patient/p2"}) {
		t.Errorf("Patient search under org1 = %v", m)
	}
	for _, v := range res.Included {
		if p := patientOf(&v); (p != "p1" && p != "p2") || v.ID == "secret" {
			t.Errorf("_revinclude brought in %s/%s (patient %s)", v.Type, v.ID, p)
		}
	}
	if len(res.Included) != 50 {
		t.Errorf("_revinclude returned %d Observations, want 50", len(res.Included))
	}
	res, err = r.Search(ctx, tenant, "Observation", url.Values{"_id": {"o1-01,o3-01"}, "_include": {"Observation:subject"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if m, inc := ids(res.Matches), ids(res.Included); !slices.Equal(m, []string{"Observation/o1-01"}) || !slices.Equal(inc, []string{"Patient/p1"}) {
		t.Errorf("_id=o1-01,o3-01&_include=subject: matches %v included %v, want o1-01 and p1 only", m, inc)
	}

	// A type refused outright is a 403, also for _include targets and
	// history.
	g.forbid = map[string]bool{"Practitioner": true}
	r = retrieve.New(st).WithGuard(g)
	if _, err := r.Search(ctx, tenant, "Practitioner", nil, true); fhir.KindOf(err) != fhir.KindForbidden {
		t.Errorf("search of a refused type: %v, want forbidden", err)
	}
	res, err = r.Search(ctx, tenant, "Observation", url.Values{"_id": {"o1-01"}, "_include": {"Observation:performer"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Included) != 0 {
		t.Errorf("_include of a refused type brought in %v", ids(res.Included))
	}
}

// TestGranularAndSourceVisibility: a granular scope's token conditions and
// a source restriction are part of the SQL too.
func TestGranularAndSourceVisibility(t *testing.T) {
	t.Parallel()
	st := world(t)
	ctx := context.Background()
	all := func(*store.Version) bool { return true }
	r := retrieve.New(st).WithGuard(fixedGuard{allow: all, vis: &retrieve.Visibility{AnyPatient: true, NonCompartment: true, AnySource: true,
		Params: url.Values{"status": {"amended,cancelled"}}}})
	res, err := r.Search(ctx, tenant, "Observation", url.Values{"_total": {"accurate"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if m := ids(res.Matches); !slices.Equal(m, []string{"Observation/o1-00"}) || res.Total != 1 {
		t.Errorf("Observations under status=amended,cancelled: %v (total %d), want o1-00 only", m, res.Total)
	}
	r = retrieve.New(st).WithGuard(fixedGuard{allow: all, vis: &retrieve.Visibility{AnyPatient: true, NonCompartment: true, Sources: []string{"urn:emr:a"}}})
	res, err = r.Search(ctx, tenant, "Observation", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Matches) != 0 {
		t.Errorf("Observations of source urn:emr:a: %v, want none (none has that meta.source)", ids(res.Matches))
	}
}

// TestReadAndHistoryUnderVisibility: a hidden resource reads as not found
// (indistinguishable from a missing one), its history too, and type and
// system history leave hidden versions out.
func TestReadAndHistoryUnderVisibility(t *testing.T) {
	t.Parallel()
	st := world(t)
	ctx := context.Background()
	g := fixedGuard{
		vis:   &retrieve.Visibility{Patients: []string{"p1"}, AnySource: true},
		allow: func(v *store.Version) bool { return patientOf(v) == "p1" },
	}
	r := retrieve.New(st).WithGuard(g)
	if _, err := r.Read(ctx, tenant, "Observation", "o1-01"); err != nil {
		t.Errorf("read of a visible resource: %v", err)
	}
	for _, id := range []string{"o3-01", "never-written"} {
		if _, err := r.Read(ctx, tenant, "Observation", id); fhir.KindOf(err) != fhir.KindNotFound {
			t.Errorf("read Observation/%s: %v, want not found", id, err)
		}
		if _, err := r.VRead(ctx, tenant, "Observation", id, "1"); fhir.KindOf(err) != fhir.KindNotFound {
			t.Errorf("vread Observation/%s: %v, want not found", id, err)
		}
		if _, err := r.History(ctx, tenant, "Observation", id, nil); fhir.KindOf(err) != fhir.KindNotFound {
			t.Errorf("history of Observation/%s: %v, want not found", id, err)
		}
	}
	h, err := r.History(ctx, tenant, "Observation", "", url.Values{"_count": {"1000"}})
	if err != nil {
		t.Fatal(err)
	}
	// p1's 25 Observations, o1-00 twice, and the restricted one (this
	// visibility does not exclude labels).
	if len(h.Versions) != 27 {
		t.Errorf("type history: %d versions, want 27", len(h.Versions))
	}
	for _, v := range h.Versions {
		if patientOf(&v) != "p1" {
			t.Errorf("type history holds %s of %s", v.ID, patientOf(&v))
		}
	}
	sys, err := r.History(ctx, tenant, "", "", url.Values{"_count": {"10"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(sys.Versions) != 10 || sys.Next == nil {
		t.Errorf("system history page: %d versions (next %v), want a full page of 10", len(sys.Versions), sys.Next)
	}
	for _, v := range sys.Versions {
		if patientOf(&v) != "p1" {
			t.Errorf("system history holds %s/%s", v.Type, v.ID)
		}
	}
}
