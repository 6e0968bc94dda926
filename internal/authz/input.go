package authz

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/fhirgate/fhirgate/internal/auth"
	"github.com/fhirgate/fhirgate/internal/search"
)

// buildInput builds the policy input (see policies/authz.rego) directly as
// an AST value: no JSON round trip. Every list is present, possibly empty,
// and empty strings are dropped from the subject's id lists. res nil (a
// Filter) leaves input.resource undefined.
func buildInput(s *auth.Subject, act Action, res *Resource, env Env) ast.Value {
	if s == nil {
		s = &auth.Subject{}
	}
	scopes := usableScopes(s.Scopes, act.Type)
	scopeTerms := make([]*ast.Term, len(scopes))
	for i, sc := range scopes {
		params := ast.NullTerm()
		if len(sc.Params) > 0 {
			params = valuesTerm(sc.Params)
		}
		scopeTerms[i] = ast.ObjectTerm(
			item("context", ast.StringTerm(sc.Context)),
			item("type", ast.StringTerm(sc.Type)),
			item("c", ast.BooleanTerm(sc.Create)),
			item("r", ast.BooleanTerm(sc.Read)),
			item("u", ast.BooleanTerm(sc.Update)),
			item("d", ast.BooleanTerm(sc.Delete)),
			item("s", ast.BooleanTerm(sc.Search)),
			item("params", params),
		)
	}
	subject := ast.ObjectTerm(
		item("id", ast.StringTerm(s.ID)),
		item("kind", ast.StringTerm(s.Kind)),
		item("roles", idsTerm(s.Roles)),
		item("scopes", ast.ArrayTerm(scopeTerms...)),
		item("patient", ast.StringTerm(s.Patient)),
		item("organization", ast.StringTerm(s.Organization)),
		item("care_team", idsTerm(s.CareTeam)),
		item("purpose_of_use", ast.StringTerm(s.PurposeOfUse)),
		item("consents", idsTerm(s.Consents)),
		item("sources", idsTerm(s.Sources)),
	)
	in := ast.NewObject(item("subject", subject), item("action", actionTerm(act)), item("env", envTerm(env)))
	if res != nil {
		in.Insert(ast.StringTerm("resource"), resourceTerm(res, func(param string) bool {
			for _, s := range scopes {
				if _, ok := s.Params[param]; ok {
					return true
				}
			}
			return false
		}))
	}
	return in
}

// decisionInput is the input of the decision with the filter computed
// before for the same subject and action as input.filter. The subject is
// still there: a policy whose resource rules read it (the shipped one does
// not) decides the same either way, only slower.
func decisionInput(s *auth.Subject, act Action, res *Resource, env Env, f Filter) ast.Value {
	in := buildInput(s, act, res, env).(ast.Object)
	in.Insert(ast.StringTerm("filter"), ast.NewTerm(f.value))
	return in
}

func actionTerm(act Action) *ast.Term {
	return ast.ObjectTerm(
		item("interaction", ast.StringTerm(act.Interaction)),
		item("type", ast.StringTerm(act.Type)),
		item("id", ast.StringTerm(act.ID)),
		item("params", valuesTerm(act.Params)),
	)
}

func envTerm(env Env) *ast.Term {
	return ast.ObjectTerm(
		item("time", ast.StringTerm(env.Time.UTC().Format(time.RFC3339Nano))),
		item("client_ip", ast.StringTerm(env.ClientIP)),
	)
}

// resourceTerm: only the token rows of parameters that matter
// (those some granular scope restricts on) reach the policy.
func resourceTerm(r *Resource, need func(param string) bool) *ast.Term {
	var tokens []*ast.Term
	for _, t := range r.Tokens {
		if !need(t.Param) {
			continue
		}
		tokens = append(tokens, ast.ObjectTerm(
			item("param", ast.StringTerm(t.Param)),
			item("system", ast.StringTerm(t.System)),
			item("code", ast.StringTerm(t.Code)),
		))
	}
	return ast.ObjectTerm(
		item("type", ast.StringTerm(r.Type)),
		item("id", ast.StringTerm(r.ID)),
		item("patients", stringsTerm(r.Patients)),
		item("organization", ast.StringTerm(r.Organization)),
		item("patient_organizations", stringsTerm(r.PatientOrganizations)),
		item("security", stringsTerm(r.Security)),
		item("source", ast.StringTerm(r.Source)),
		item("tokens", ast.ArrayTerm(tokens...)),
	)
}

func item(k string, v *ast.Term) [2]*ast.Term { return [2]*ast.Term{ast.StringTerm(k), v} }

func stringsTerm(ss []string) *ast.Term {
	ts := make([]*ast.Term, 0, len(ss))
	for _, s := range ss {
		ts = append(ts, ast.StringTerm(s))
	}
	return ast.ArrayTerm(ts...)
}

// idsTerm is stringsTerm without empty strings.
func idsTerm(ss []string) *ast.Term {
	ts := make([]*ast.Term, 0, len(ss))
	for _, s := range ss {
		if s != "" {
			ts = append(ts, ast.StringTerm(s))
		}
	}
	return ast.ArrayTerm(ts...)
}

func valuesTerm(v url.Values) *ast.Term {
	kv := make([][2]*ast.Term, 0, len(v))
	for k, vs := range v {
		kv = append(kv, item(k, stringsTerm(vs)))
	}
	return ast.ObjectTerm(kv...)
}

// usableScopes drops the granular scopes whose parameters the policy
// cannot evaluate exactly, so that they grant nothing (rather than grant
// without their restriction): a parameter that is not a supported token
// parameter of the type (for "*", of the action's type), a modifier
// ("code:text"), an escape, or an empty value or alternative.
func usableScopes(scopes []auth.Scope, actType string) []auth.Scope {
	ok := true
	for _, s := range scopes {
		if len(s.Params) > 0 && !granularSupported(s, actType) {
			ok = false
			break
		}
	}
	if ok {
		return scopes
	}
	out := make([]auth.Scope, 0, len(scopes))
	for _, s := range scopes {
		if len(s.Params) == 0 || granularSupported(s, actType) {
			out = append(out, s)
		}
	}
	return out
}

func granularSupported(s auth.Scope, actType string) bool {
	typ := s.Type
	if typ == "*" {
		typ = actType
	}
	for k, vs := range s.Params {
		p := search.Lookup(typ, k)
		if p == nil || p.Type != search.TypeToken || p.Unsupported != "" || len(vs) == 0 {
			return false
		}
		for _, v := range vs {
			if v == "" || strings.ContainsRune(v, '\\') {
				return false
			}
			for _, alt := range strings.Split(v, ",") {
				if alt == "" || alt == "|" || strings.Count(alt, "|") > 1 {
					return false
				}
			}
		}
	}
	return true
}

// inputUses records which parts of the input beyond the subject and the
// action's interaction and type the policy reads; they join the Filter
// cache key (and env, or the input as a whole, disable the cache).
type inputUses struct {
	id, params, env, whole bool
}

func scanUses(modules map[string]*ast.Module) inputUses {
	var u inputUses
	for _, m := range modules {
		ast.WalkTerms(m, func(t *ast.Term) bool {
			switch v := t.Value.(type) {
			case ast.Var:
				if v.Equal(ast.InputRootDocument.Value) {
					u.whole = true
				}
			case ast.Ref:
				if len(v) == 0 || !v[0].Equal(ast.InputRootDocument) {
					return false
				}
				u.ref(v)
				// Still walk the ref's operands (input[x] with x from
				// elsewhere) but not its head, already seen.
				for _, op := range v[1:] {
					ast.WalkTerms(op, func(t *ast.Term) bool {
						if r, ok := t.Value.(ast.Ref); ok && len(r) > 0 && r[0].Equal(ast.InputRootDocument) {
							u.ref(r)
						}
						return false
					})
				}
				return true
			}
			return false
		})
	}
	return u
}

func (u *inputUses) ref(r ast.Ref) {
	if len(r) < 2 {
		u.whole = true
		return
	}
	k, ok := r[1].Value.(ast.String)
	if !ok {
		u.whole = true
		return
	}
	switch string(k) {
	case "env":
		u.env = true
	case "action":
		if len(r) < 3 {
			u.id, u.params = true, true
			return
		}
		switch f, ok := r[2].Value.(ast.String); {
		case !ok:
			u.id, u.params = true, true
		case f == "id":
			u.id = true
		case f == "params":
			u.params = true
		}
	}
}

type cacheKey [sha256.Size]byte

// key hashes every field of the subject, the interaction and the type, and
// the action's id and parameters when the policy reads them.
func (u inputUses) key(s *auth.Subject, act Action) cacheKey {
	if s == nil {
		s = &auth.Subject{}
	}
	h := sha256.New()
	w := keyWriter{h: h}
	w.str(act.Interaction, act.Type)
	if u.id {
		w.str("id", act.ID)
	}
	if u.params {
		w.values(act.Params)
	}
	w.str(s.ID, s.Kind, s.ClientID, s.TokenID, s.Issuer, s.Patient, s.FHIRUser, s.Organization, s.PurposeOfUse)
	w.list(s.Roles)
	w.list(s.CareTeam)
	w.list(s.Consents)
	w.list(s.Sources)
	w.n(len(s.Scopes))
	for _, sc := range s.Scopes {
		w.str(sc.Raw, sc.Context, sc.Type)
		for _, b := range []bool{sc.Create, sc.Read, sc.Update, sc.Delete, sc.Search} {
			if b {
				w.n(1)
			} else {
				w.n(0)
			}
		}
		w.values(sc.Params)
	}
	var k cacheKey
	h.Sum(k[:0])
	return k
}

type keyWriter struct {
	h   hash.Hash
	buf [8]byte
}

func (w *keyWriter) n(n int) {
	binary.LittleEndian.PutUint64(w.buf[:], uint64(n))
	w.h.Write(w.buf[:])
}

func (w *keyWriter) str(ss ...string) {
	for _, s := range ss {
		w.n(len(s))
		w.h.Write([]byte(s))
	}
}

func (w *keyWriter) list(ss []string) {
	w.n(len(ss))
	w.str(ss...)
}

func (w *keyWriter) values(v url.Values) {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	w.n(len(keys))
	for _, k := range keys {
		w.str(k)
		w.list(v[k])
	}
}
