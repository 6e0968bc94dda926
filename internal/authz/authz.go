package authz

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/fhirgate/fhirgate/internal/auth"
	"github.com/fhirgate/fhirgate/internal/search"
)

// Interactions an Action may name.
const (
	Read        = "read"
	VRead       = "vread"
	Search      = "search"
	History     = "history"
	Create      = "create"
	Update      = "update"
	Delete      = "delete"
	Transaction = "transaction"
	HL7         = "hl7"   // an HL7 v2 message from an EMR sender
	Push        = "push"  // a bundle pushed by an EMR sender
	Audit       = "audit" // the auditor API
	Admin       = "admin" // key and admin operations
)

// ReasonPolicyError is the reason of every decision made because the
// policy could not be evaluated (error, undefined result, deadline).
const ReasonPolicyError = "policy-error"

// Action is what the subject asks to do.
type Action struct {
	Interaction string // one of the interaction constants
	// Type is the resource type ("" for the whole-system history, the
	// audit and admin interactions, and a transaction as a whole).
	Type   string
	ID     string     // the resource id, when there is one
	Params url.Values // the search parameters, for search and history
}

// Resource holds the attributes of one resource that policies see.
type Resource struct {
	Type, ID string
	// Patients are the ids of the Patients in whose compartments the
	// resource is (its "patient" search parameter). A Patient is always in
	// its own compartment, whether or not its id is listed.
	Patients []string
	// Organization is, for a Patient, its managingOrganization id.
	Organization string
	// PatientOrganizations are the managingOrganization ids of the Patients
	// in Patients. The body of a resource does not hold them: the caller
	// fills them from the store for resources other than Patient.
	PatientOrganizations []string
	// Security are the meta.security codes ("R", "V", "HIV", "PSY", "SUD",
	// "ETH", ...), without their systems.
	Security []string
	// Source is meta.source, or the EMR source profile of ingested data.
	Source string
	// Tokens are the resource's token index rows (search.Extract), for
	// granular scopes' parameters. Only parameters that some scope names
	// reach the policy.
	Tokens []search.Token
}

// Env is the request's environment.
type Env struct {
	Time     time.Time
	ClientIP string
}

// Decision is the outcome of one evaluation.
type Decision struct {
	Allow bool
	// ID is unique per decision (a UUID v4); the audit record carries it.
	ID string
	// Reasons are the names of the rules that allowed the action (for a
	// resource: the grants that admit it, e.g. "clinician-care-team") or
	// that denied it (e.g. "scope-missing", "label-sensitive",
	// "policy-error"). Never ids or values.
	Reasons []string
	// BreakGlass reports that the decision was made under break-glass
	// (purpose of use ETREAT or BTG by a subject allowed to declare it),
	// allowed or not: the gateway flags and audits such requests.
	BreakGlass bool
	// Policy identifies the policy files that decided ("sha256:..." over
	// their names and contents).
	Policy string
}

// Filter is what a subject may reach of one resource type with one
// interaction, whatever the resource: the API compiles it into SQL
// conditions for searches, history, includes and counts.
//
// A resource r is admitted (Allows, and the SQL must be equivalent) when
// all of these hold:
//
//  1. Decision.Allow, and r.Type == Type.
//  2. Compartment. r is a compartment resource when r.Type is "Patient" or
//     r.Patients is not empty. Its patients are r.Patients plus, for a
//     Patient, r.ID; its organizations are r.PatientOrganizations plus, for
//     a Patient, r.Organization (empty strings are ignored everywhere).
//     A compartment resource needs AnyPatient, or one of its patients in
//     Patients, or one of its organizations in Organizations. Any other
//     resource needs NonCompartment.
//  3. Labels: no code of r.Security is in ExcludeLabels.
//  4. Sources: AnySource, or r.Source is in Sources.
//  5. Params (granular scopes), when not nil: for every key k and every
//     value v of Params[k] (repetitions are ANDed), some comma-separated
//     alternative of v matches some token row of r for parameter k. A token
//     alternative is "code" (any system), "system|code", "|code" (no
//     system) or "system|" (any code of system); only token parameters of
//     the type occur (see the policy's scopes.rego), and FHIR search
//     semantics for them are exactly these.
type Filter struct {
	// Decision is the type-level decision: !Allow refuses the action on
	// this type outright.
	Decision Decision
	// Type is the resource type the filter is for; only resources of this
	// type are admitted (a system-wide search or history needs one filter
	// per type).
	Type string
	// Visibility is what the type's resources may be seen by: patient
	// compartments, organizations, non-compartment resources, excluded
	// labels, sources and granular-scope parameters.
	search.Visibility

	value ast.Value // the policy's filter object, for Decide
}

// Engine evaluates the policies of one directory. It is safe for
// concurrent use; Reload swaps policies atomically.
type Engine struct {
	cur       atomic.Pointer[policy]
	timeout   time.Duration
	cacheTTL  time.Duration
	cacheSize int
	now       func() time.Time
}

// Option configures an Engine.
type Option func(*Engine)

// WithTimeout bounds each evaluation (default 250 ms); past it the request
// is denied with reason "policy-error".
func WithTimeout(d time.Duration) Option { return func(e *Engine) { e.timeout = d } }

// WithFilterCache sets how long a Filter is reused for the same subject,
// interaction and type (default 30 s) and how many are kept (default
// 4096). A ttl of 0 disables the cache.
func WithFilterCache(ttl time.Duration, size int) Option {
	return func(e *Engine) { e.cacheTTL, e.cacheSize = ttl, size }
}

// Entry points every policy directory must define.
const (
	filterQuery   = "data.fhirgate.authz.filter"
	decisionQuery = "data.fhirgate.authz.decision"
)

type policy struct {
	digest   string
	filter   rego.PreparedEvalQuery
	decision rego.PreparedEvalQuery
	uses     inputUses
	cache    *filterCache
}

// Load compiles every *.rego file of dir except *_test.rego. A file that
// does not parse or compile is refused with an error naming file:line.
func Load(dir string, opts ...Option) (*Engine, error) {
	e := &Engine{timeout: 250 * time.Millisecond, cacheTTL: 30 * time.Second, cacheSize: 4096, now: time.Now}
	for _, o := range opts {
		o(e)
	}
	p, err := e.compile(dir)
	if err != nil {
		return nil, err
	}
	e.cur.Store(p)
	return e, nil
}

// Reload compiles dir again and swaps the new policy in; on any error the
// previous policy keeps serving and the error says why.
func (e *Engine) Reload(dir string) error {
	p, err := e.compile(dir)
	if err != nil {
		return err
	}
	e.cur.Store(p)
	return nil
}

// Digest identifies the policy in force (Decision.Policy).
func (e *Engine) Digest() string { return e.cur.Load().digest }

// PolicyFiles lists the policy files Load compiles from dir: *.rego except
// *_test.rego, sorted.
func PolicyFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("authz: policy directory: %w", err)
	}
	var files []string
	for _, de := range ents {
		n := de.Name()
		if de.IsDir() || !strings.HasSuffix(n, ".rego") || strings.HasSuffix(n, "_test.rego") {
			continue
		}
		files = append(files, filepath.Join(dir, n))
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("authz: no .rego policy files in %s", dir)
	}
	return files, nil
}

// unsafeBuiltins may not appear in policies: a decision must not wait on
// the network.
var unsafeBuiltins = map[string]struct{}{
	"http.send": {}, "net.lookup_ip_addr": {}, "opa.runtime": {},
}

func (e *Engine) compile(dir string) (*policy, error) {
	files, err := PolicyFiles(dir)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	modules := make(map[string]*ast.Module, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("authz: read policy: %w", err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(f), len(b))
		h.Write(b)
		m, err := ast.ParseModuleWithOpts(f, string(b), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return nil, fmt.Errorf("authz: policy refused: %w", err)
		}
		modules[f] = m
	}
	c := ast.NewCompiler().
		WithDefaultRegoVersion(ast.RegoV1).
		WithUnsafeBuiltins(unsafeBuiltins)
	if c.Compile(modules); c.Failed() {
		return nil, fmt.Errorf("authz: policy refused: %w", c.Errors)
	}
	for _, q := range []string{filterQuery, decisionQuery} {
		if len(c.GetRulesExact(ast.MustParseRef(q))) == 0 {
			return nil, fmt.Errorf("authz: policy refused: %s defines no rule %s", dir, q)
		}
	}
	ctx := context.Background()
	prep := func(q string) (rego.PreparedEvalQuery, error) {
		return rego.New(rego.Query(q), rego.Compiler(c), rego.StrictBuiltinErrors(true)).PrepareForEval(ctx)
	}
	p := &policy{digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), uses: scanUses(c.Modules)}
	if p.filter, err = prep(filterQuery); err != nil {
		return nil, fmt.Errorf("authz: policy refused: %w", err)
	}
	if p.decision, err = prep(decisionQuery); err != nil {
		return nil, fmt.Errorf("authz: policy refused: %w", err)
	}
	if e.cacheTTL > 0 && e.cacheSize > 0 && !p.uses.env && !p.uses.whole {
		p.cache = newFilterCache(e.cacheSize, e.cacheTTL)
	}
	return p, nil
}

// Decide decides one action on one resource (reads of one resource,
// writes). With res nil it returns the type-level decision only (the
// Filter's), for actions that have no resource: a write must pass the
// resource it writes.
//
// When filters are cached, Decide evaluates the policy's decision with the
// cached filter as input.filter: the shipped decision rules then read the
// filter, the action and the resource only, so a decision costs the
// resource-level rules, not the subject's grants again.
func (e *Engine) Decide(ctx context.Context, subj *auth.Subject, act Action, res *Resource, env Env) (Decision, error) {
	p := e.cur.Load()
	if res == nil {
		f, err := e.filter(ctx, p, subj, act, env)
		return f.Decision, err
	}
	var input ast.Value
	if p.cache != nil {
		f, err := e.cachedFilter(ctx, p, subj, act, env)
		if err != nil {
			return f.Decision, err
		}
		if !f.Decision.Allow {
			d := f.Decision
			d.ID, d.Reasons = newID(), slices.Clone(d.Reasons)
			return d, nil
		}
		input = decisionInput(subj, act, res, env, f)
	} else {
		input = buildInput(subj, act, res, env)
	}
	d := Decision{ID: newID(), Policy: p.digest}
	v, err := e.eval(ctx, p.decision, input)
	if err == nil {
		err = d.parse(v)
	}
	if err != nil {
		return denyError(d), fmt.Errorf("authz: decide %s %s: %w", act.Interaction, act.Type, err)
	}
	return d, nil
}

// Filter returns what subj may reach of act.Type with act.Interaction.
// Filters do not depend on the resource, so they are cached per (subject,
// interaction, type) for a short time (WithFilterCache; 30 s by default):
// a subject is identified by all its fields (a hash), so a changed claim,
// purpose of use or scope is a different subject. Parts of the action and
// environment the policy reads (the id, the search parameters, anything in
// env) join the key, and a policy that reads env or the input as a whole is
// not cached. Each call returns a fresh Decision.ID and copies of the lists.
func (e *Engine) Filter(ctx context.Context, subj *auth.Subject, act Action, env Env) (Filter, error) {
	return e.filter(ctx, e.cur.Load(), subj, act, env)
}

func (e *Engine) filter(ctx context.Context, p *policy, subj *auth.Subject, act Action, env Env) (Filter, error) {
	f, err := e.cachedFilter(ctx, p, subj, act, env)
	if err != nil {
		return f, err
	}
	return f.clone(), nil
}

// cachedFilter returns the filter shared with the cache: not to be
// modified, and with the decision id of its evaluation.
func (e *Engine) cachedFilter(ctx context.Context, p *policy, subj *auth.Subject, act Action, env Env) (Filter, error) {
	var key cacheKey
	if p.cache != nil {
		key = p.uses.key(subj, act)
		if f, ok := p.cache.get(key, e.now()); ok {
			return f, nil
		}
	}
	f := Filter{Type: act.Type, Decision: Decision{ID: newID(), Policy: p.digest}}
	v, err := e.eval(ctx, p.filter, buildInput(subj, act, nil, env))
	if err == nil {
		err = f.parse(v)
	}
	if err != nil {
		f = Filter{Type: act.Type, Decision: denyError(Decision{ID: newID(), Policy: p.digest})}
		return f, fmt.Errorf("authz: filter %s %s: %w", act.Interaction, act.Type, err)
	}
	if p.cache != nil {
		p.cache.put(key, f, e.now())
	}
	return f, nil
}

func (e *Engine) eval(ctx context.Context, q rego.PreparedEvalQuery, input ast.Value) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	rs, err := q.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return nil, err
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return nil, errors.New("policy result undefined")
	}
	return rs[0].Expressions[0].Value, nil
}

func denyError(d Decision) Decision {
	d.Allow, d.BreakGlass, d.Reasons = false, false, []string{ReasonPolicyError}
	return d
}

func (d *Decision) parse(v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("policy result is %T, not an object", v)
	}
	var err error
	if d.Allow, err = getBool(m, "allow"); err != nil {
		return err
	}
	if d.BreakGlass, err = getBool(m, "break_glass"); err != nil {
		return err
	}
	if d.Reasons, err = getStrings(m, "reasons"); err != nil {
		return err
	}
	return nil
}

func (f *Filter) parse(v any) error {
	if err := f.Decision.parse(v); err != nil {
		return err
	}
	m := v.(map[string]any)
	var err error
	if f.value, err = ast.InterfaceToValue(m); err != nil {
		return err
	}
	for _, b := range []struct {
		k string
		p *bool
	}{{"any_patient", &f.AnyPatient}, {"non_compartment", &f.NonCompartment}, {"any_source", &f.AnySource}} {
		if *b.p, err = getBool(m, b.k); err != nil {
			return err
		}
	}
	for _, s := range []struct {
		k string
		p *[]string
	}{{"patients", &f.Patients}, {"organizations", &f.Organizations}, {"exclude_labels", &f.ExcludeLabels}, {"sources", &f.Sources}} {
		if *s.p, err = getStrings(m, s.k); err != nil {
			return err
		}
	}
	switch ps := m["params"].(type) {
	case nil:
	case map[string]any:
		f.Params = make(url.Values, len(ps))
		for k := range ps {
			vs, err := getStrings(ps, k)
			if err != nil {
				return fmt.Errorf("params: %w", err)
			}
			f.Params[k] = vs
		}
	default:
		return fmt.Errorf("policy result: params is %T", ps)
	}
	return nil
}

func getBool(m map[string]any, k string) (bool, error) {
	b, ok := m[k].(bool)
	if !ok {
		return false, fmt.Errorf("policy result: %s is %T, not a boolean", k, m[k])
	}
	return b, nil
}

func getStrings(m map[string]any, k string) ([]string, error) {
	a, ok := m[k].([]any)
	if !ok {
		return nil, fmt.Errorf("policy result: %s is %T, not an array", k, m[k])
	}
	out := make([]string, len(a))
	for i, x := range a {
		if out[i], ok = x.(string); !ok {
			return nil, fmt.Errorf("policy result: %s holds %T", k, x)
		}
	}
	return out, nil
}

// clone copies f's lists and gives it a new decision id.
func (f Filter) clone() Filter {
	f.Decision.ID = newID()
	f.Decision.Reasons = slices.Clone(f.Decision.Reasons)
	f.Patients = slices.Clone(f.Patients)
	f.Organizations = slices.Clone(f.Organizations)
	f.ExcludeLabels = slices.Clone(f.ExcludeLabels)
	f.Sources = slices.Clone(f.Sources)
	if f.Params != nil {
		p := make(url.Values, len(f.Params))
		for k, v := range f.Params {
			p[k] = slices.Clone(v)
		}
		f.Params = p
	}
	return f
}

// newID returns a random UUID v4.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
