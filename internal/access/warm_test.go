package access

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/fhirgate/fhirgate/internal/auth"
	"github.com/fhirgate/fhirgate/internal/authz"
	"github.com/fhirgate/fhirgate/internal/search"
	"github.com/fhirgate/fhirgate/internal/store"
)

// orgPolicy admits the patients managed by org1 (a stand-in for the
// shipped clinician-by-organization rule: this test is about how access
// looks organizations up, not about the policy).
type orgPolicy struct{}

func (orgPolicy) Filter(_ context.Context, _ *auth.Subject, act authz.Action, _ authz.Env) (authz.Filter, error) {
	return authz.Filter{Decision: authz.Decision{Allow: true}, Type: act.Type,
		Visibility: search.Visibility{Organizations: []string{"org1"}, AnySource: true}}, nil
}

func (orgPolicy) Decide(context.Context, *auth.Subject, authz.Action, *authz.Resource, authz.Env) (authz.Decision, error) {
	return authz.Decision{}, nil
}

// countingOrgs is the organization lookup, counting its calls.
type countingOrgs struct{ calls [][]string }

func (c *countingOrgs) PatientOrganizations(_ context.Context, _ string, ids []string) (map[string]string, error) {
	c.calls = append(c.calls, slices.Clone(ids))
	out := map[string]string{}
	for _, id := range ids {
		if id != "p-other" {
			out[id] = "org1"
		}
	}
	return out, nil
}

// TestWarmLooksUpAPageOnce: a page of versions about several patients
// costs one organization lookup, and each version is still judged by its
// own patient's organization.
func TestWarmLooksUpAPageOnce(t *testing.T) {
	t.Parallel()
	orgs := &countingOrgs{}
	r := NewRequest(&auth.Subject{ID: "dr1"}, authz.Env{}, "t1", orgPolicy{}, orgs)
	var vs []store.Version
	for i, p := range []string{"p1", "p2", "p1", "p-other", "p3"} {
		id := fmt.Sprintf("o%d", i)
		vs = append(vs, store.Version{Type: "Observation", ID: id,
			Body: []byte(`{"resourceType":"Observation","id":"` + id + `","subject":{"reference":"Patient/` + p + `"}}`)})
	}
	ctx := context.Background()
	r.Warm(ctx, "search", vs)
	var shown []string
	for i := range vs {
		if r.Check(ctx, "search", &vs[i]) {
			shown = append(shown, vs[i].ID)
		}
	}
	if len(orgs.calls) != 1 || len(orgs.calls[0]) != 4 {
		t.Errorf("organization lookups %v, want one for the page's 4 patients", orgs.calls)
	}
	if want := []string{"o0", "o1", "o2", "o4"}; !slices.Equal(shown, want) {
		t.Errorf("shown %v, want %v (the other organization's patient hidden)", shown, want)
	}
}

// The read path finds Warm on the Guard it is given.
var _ interface {
	Warm(context.Context, string, []store.Version)
} = Guard{}
