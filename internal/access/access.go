// Package access holds the access state of one request: who is asking
// (the authenticated subject), the policy decisions taken for it, and what
// it was shown or wrote, which becomes its audit record. It implements the
// read path's Guard over the OPA policy engine (internal/authz): what a
// request may see of a type is the policy's Filter, compiled into SQL by
// the read path, and each returned version is checked exactly once more
// before it leaves.
//
// It never records PHI: resource ids, patient ids, decision ids and rule
// names only.
package access

import (
	"context"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fhirgate/fhirgate/internal/audit"
	"github.com/fhirgate/fhirgate/internal/auth"
	"github.com/fhirgate/fhirgate/internal/authz"
	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/retrieve"
	"github.com/fhirgate/fhirgate/internal/store"
)

// Policy decides (authz.Engine).
type Policy interface {
	Filter(ctx context.Context, subj *auth.Subject, act authz.Action, env authz.Env) (authz.Filter, error)
	Decide(ctx context.Context, subj *auth.Subject, act authz.Action, res *authz.Resource, env authz.Env) (authz.Decision, error)
}

// Organizations looks up the managing organizations of Patients (for
// policies that admit a clinician's organization's patients).
type Organizations interface {
	PatientOrganizations(ctx context.Context, tenant string, patientIDs []string) (map[string]string, error)
}

// Request is the access state of one request. It is safe for concurrent
// use (a transaction's entries may be decided in parallel).
type Request struct {
	Subject *auth.Subject
	Env     authz.Env
	Tenant  string

	policy Policy
	orgs   Organizations

	mu sync.Mutex
	// Interaction, ResourceType and ID describe the request for the audit
	// record; the API sets them when it routes.
	Interaction  string
	ResourceType string
	Query        string
	filters      map[[2]string]*authz.Filter
	decisions    []string
	reasons      []string
	breakGlass   bool
	resources    []string
	patients     map[string]bool
	patientOrgs  map[string]string
}

// NewRequest starts the access state of a request.
func NewRequest(subj *auth.Subject, env authz.Env, tenant string, p Policy, orgs Organizations) *Request {
	return &Request{Subject: subj, Env: env, Tenant: tenant, policy: p, orgs: orgs,
		filters: map[[2]string]*authz.Filter{}, patients: map[string]bool{}}
}

type ctxKey struct{}

// With returns ctx carrying r.
func With(ctx context.Context, r *Request) context.Context {
	return context.WithValue(ctx, ctxKey{}, r)
}

// From returns the request state in ctx, nil when there is none.
func From(ctx context.Context) *Request {
	r, _ := ctx.Value(ctxKey{}).(*Request)
	return r
}

// SetAction names what the request does, for its audit record.
func (r *Request) SetAction(interaction, typ string) {
	r.mu.Lock()
	r.Interaction, r.ResourceType = interaction, typ
	r.mu.Unlock()
}

// SetQuery keeps the search parameters for the audit record (sealed at
// rest: they may hold PHI).
func (r *Request) SetQuery(q string) {
	r.mu.Lock()
	r.Query = q
	r.mu.Unlock()
}

func (r *Request) note(d authz.Decision) {
	if d.ID != "" && !slices.Contains(r.decisions, d.ID) {
		r.decisions = append(r.decisions, d.ID)
	}
	for _, x := range d.Reasons {
		if !slices.Contains(r.reasons, x) {
			r.reasons = append(r.reasons, x)
		}
	}
	r.breakGlass = r.breakGlass || d.BreakGlass
}

// filter returns (and remembers) the policy's filter for an interaction
// on a type.
func (r *Request) filter(ctx context.Context, interaction, typ string) (*authz.Filter, error) {
	k := [2]string{interaction, typ}
	r.mu.Lock()
	f, ok := r.filters[k]
	r.mu.Unlock()
	if ok {
		return f, nil
	}
	start := time.Now()
	got, err := r.policy.Filter(ctx, r.Subject, authz.Action{Interaction: interaction, Type: typ}, r.Env)
	observe(time.Since(start))
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.note(got.Decision)
		return nil, fhir.Errorf(fhir.KindUnavailable, "", "the access policy could not be evaluated").Wrap(err)
	}
	r.filters[k] = &got
	return &got, nil
}

func forbidden(interaction, typ string, d authz.Decision) error {
	what := typ
	if what == "" {
		what = "this server"
	}
	return fhir.Errorf(fhir.KindForbidden, "", "%s of %s is not permitted (%s)", interaction, what, strings.Join(d.Reasons, ", ")).WithCode("forbidden")
}

// See implements retrieve.Guard.
func (r *Request) See(ctx context.Context, interaction, typ string) (*retrieve.Visibility, error) {
	return r.see(ctx, interaction, typ, true)
}

// Probe implements retrieve.Guard: See without recording a refusal.
func (r *Request) Probe(ctx context.Context, interaction, typ string) (*retrieve.Visibility, error) {
	return r.see(ctx, interaction, typ, false)
}

// see is the type's visibility for the interaction; a refusal is recorded
// on the request (its audit reasons) only when noteRefusal.
func (r *Request) see(ctx context.Context, interaction, typ string, noteRefusal bool) (*retrieve.Visibility, error) {
	f, err := r.filter(ctx, interaction, typ)
	if err != nil {
		return nil, err
	}
	if f.Decision.Allow || noteRefusal {
		r.mu.Lock()
		r.note(f.Decision)
		r.mu.Unlock()
	}
	if !f.Decision.Allow {
		return nil, forbidden(interaction, typ, f.Decision)
	}
	return visibility(f), nil
}

func visibility(f *authz.Filter) *retrieve.Visibility {
	v := f.Visibility
	return &v
}

// Check implements retrieve.Guard: the filter evaluated on the version
// itself. A version that passes is recorded as shown.
func (r *Request) Check(ctx context.Context, interaction string, v *store.Version) bool {
	f, err := r.filter(ctx, interaction, v.Type)
	if err != nil || !f.Decision.Allow {
		return false
	}
	var res authz.Resource
	if f.Params != nil {
		res = authz.Attributes(v.Type, v.ID, v.Body) // granular scopes read token rows
	} else {
		res = authz.CompartmentAttributes(v.Type, v.ID, v.Body)
	}
	if len(f.Organizations) > 0 && !f.AnyPatient {
		res.PatientOrganizations = r.organizations(ctx, res.Patients)
	}
	if !f.Allows(&res) {
		// Denials are rare (the SQL already applies the filter): ask the
		// policy why, so the audit record names the rule (compartment,
		// label-restricted, ...) and the decision, not only the grants of
		// the type. The resource stays hidden whatever the answer.
		d, err := r.policy.Decide(ctx, r.Subject, authz.Action{Interaction: interaction, Type: v.Type, ID: v.ID}, &res, r.Env)
		r.mu.Lock()
		if err == nil && !d.Allow {
			r.note(d)
		}
		r.mu.Unlock()
		return false
	}
	r.touch(v.Type, v.ID, res.Patients)
	return true
}

// Warm looks up, in one query, the managing organizations of the patients
// of a page of versions whose type's filter admits by organization, so
// that Check (one version at a time) finds them cached.
func (r *Request) Warm(ctx context.Context, interaction string, vs []store.Version) {
	var patients []string
	for i := range vs {
		f, err := r.filter(ctx, interaction, vs[i].Type)
		if err != nil || !f.Decision.Allow || f.AnyPatient || len(f.Organizations) == 0 {
			continue
		}
		patients = append(patients, authz.CompartmentAttributes(vs[i].Type, vs[i].ID, vs[i].Body).Patients...)
	}
	if len(patients) > 0 {
		r.organizations(ctx, patients)
	}
}

func (r *Request) organizations(ctx context.Context, patients []string) []string {
	var missing []string
	r.mu.Lock()
	if r.patientOrgs == nil {
		r.patientOrgs = map[string]string{}
	}
	asked := map[string]bool{}
	for _, p := range patients {
		if _, ok := r.patientOrgs[p]; !ok && p != "" && !asked[p] {
			asked[p] = true
			missing = append(missing, p)
		}
	}
	r.mu.Unlock()
	if len(missing) > 0 && r.orgs != nil {
		got, err := r.orgs.PatientOrganizations(ctx, r.Tenant, missing)
		if err != nil {
			return nil // fail closed: no organization admits
		}
		r.mu.Lock()
		for _, p := range missing {
			r.patientOrgs[p] = got[p]
		}
		r.mu.Unlock()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, p := range patients {
		if o := r.patientOrgs[p]; o != "" {
			out = append(out, o)
		}
	}
	return out
}

// touch records a resource shown or written, with its patient
// compartments, for the audit record.
func (r *Request) touch(typ, id string, patients []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.resources) < 10000 {
		r.resources = append(r.resources, typ+"/"+id)
	}
	for _, p := range patients {
		if p != "" {
			r.patients[p] = true
		}
	}
}

// Touched records a resource the request wrote.
func (r *Request) Touched(typ, id string, body []byte) {
	res := authz.Attributes(typ, id, body)
	r.touch(typ, id, res.Patients)
}

// Authorize decides one write (or any action on one resource): the
// resource's attributes from its body. A denial is a KindForbidden error.
func (r *Request) Authorize(ctx context.Context, interaction, typ, id string, body []byte) error {
	res := authz.Attributes(typ, id, body)
	if len(body) == 0 {
		res = authz.Resource{Type: typ, ID: id}
	}
	if typ != "Patient" && len(res.Patients) > 0 {
		res.PatientOrganizations = r.organizations(ctx, res.Patients)
	}
	return r.decide(ctx, authz.Action{Interaction: interaction, Type: typ, ID: id}, &res, typ)
}

// decide evaluates one decision, times it, records it on the request and
// turns a denial into a KindForbidden error naming what.
func (r *Request) decide(ctx context.Context, act authz.Action, res *authz.Resource, what string) error {
	start := time.Now()
	d, err := r.policy.Decide(ctx, r.Subject, act, res, r.Env)
	observe(time.Since(start))
	r.mu.Lock()
	r.note(d)
	r.mu.Unlock()
	if err != nil {
		return fhir.Errorf(fhir.KindUnavailable, "", "the access policy could not be evaluated").Wrap(err)
	}
	if !d.Allow {
		return forbidden(act.Interaction, what, d)
	}
	return nil
}

// AuthorizeSource decides an EMR intake (push, hl7) as the given source
// profile: senders write only their own sources.
func (r *Request) AuthorizeSource(ctx context.Context, interaction, source string) error {
	return r.decide(ctx, authz.Action{Interaction: interaction}, &authz.Resource{Source: source}, "source "+source)
}

// AuthorizeType decides an action with no single resource (the audit
// API, admin operations): the type-level decision.
func (r *Request) AuthorizeType(ctx context.Context, interaction, typ string) error {
	f, err := r.filter(ctx, interaction, typ)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.note(f.Decision)
	r.mu.Unlock()
	if !f.Decision.Allow {
		return forbidden(interaction, typ, f.Decision)
	}
	return nil
}

// Unrestricted reports whether the request may see every resource of typ
// for interaction: conditional operations are allowed only then, since
// their match counts would otherwise reveal hidden resources.
func (r *Request) Unrestricted(ctx context.Context, interaction, typ string) (bool, error) {
	f, err := r.filter(ctx, interaction, typ)
	if err != nil {
		return false, err
	}
	return f.Decision.Allow && f.AnyPatient && f.NonCompartment && len(f.ExcludeLabels) == 0 && f.Params == nil, nil
}

// Record builds the audit record of the request.
func (r *Request) Record(requestID string, status int) audit.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := audit.Record{
		RequestID: requestID, Tenant: r.Tenant,
		IP:           r.Env.ClientIP,
		Interaction:  r.Interaction,
		ResourceType: r.ResourceType,
		ResourceIDs:  slices.Clone(r.resources),
		Query:        r.Query,
		DecisionID:   strings.Join(r.decisions, " "),
		Reason:       strings.Join(r.reasons, " "),
		BreakGlass:   r.breakGlass,
		Outcome:      audit.HTTPOutcome(status),
		Action:       actionCode(r.Interaction),
	}
	if !r.Env.Time.IsZero() {
		rec.Time = r.Env.Time
	}
	if s := r.Subject; s != nil {
		rec.SubjectID, rec.SubjectKind, rec.ClientID, rec.TokenID = s.ID, s.Kind, s.ClientID, s.TokenID
		rec.PurposeOfUse = s.PurposeOfUse
	}
	for p := range r.patients {
		rec.PatientIDs = append(rec.PatientIDs, p)
	}
	sort.Strings(rec.PatientIDs)
	return rec
}

func actionCode(interaction string) string {
	switch interaction {
	case audit.InteractionRead, audit.InteractionVRead:
		return audit.ActionRead
	case audit.InteractionCreate, audit.InteractionHL7, audit.InteractionPush:
		return audit.ActionCreate
	case audit.InteractionUpdate:
		return audit.ActionUpdate
	case audit.InteractionDelete:
		return audit.ActionDelete
	default:
		return audit.ActionExecute
	}
}

// Guard is the retrieve.Guard of the request in the context.
type Guard struct{}

// See implements retrieve.Guard.
func (Guard) See(ctx context.Context, interaction, typ string) (*retrieve.Visibility, error) {
	r := From(ctx)
	if r == nil {
		return nil, fhir.Errorf(fhir.KindForbidden, "", "no access decision for this request")
	}
	return r.See(ctx, interaction, typ)
}

// Probe implements retrieve.Guard.
func (Guard) Probe(ctx context.Context, interaction, typ string) (*retrieve.Visibility, error) {
	r := From(ctx)
	if r == nil {
		return nil, fhir.Errorf(fhir.KindForbidden, "", "no access decision for this request")
	}
	return r.Probe(ctx, interaction, typ)
}

// Check implements retrieve.Guard.
func (Guard) Check(ctx context.Context, interaction string, v *store.Version) bool {
	r := From(ctx)
	return r != nil && r.Check(ctx, interaction, v)
}

// Warm readies the request's Check for a page of versions.
func (Guard) Warm(ctx context.Context, interaction string, vs []store.Version) {
	if r := From(ctx); r != nil {
		r.Warm(ctx, interaction, vs)
	}
}
