// Package retrieve is the read path: read, vread, search (with _include and
// _revinclude) and history. Every resource the gateway returns leaves
// through Service.release, the one place where access control, PHI
// decryption and the access log apply to what a request is about to see.
//
// It must never log resource content or search values (either may be PHI).
package retrieve

import (
	"context"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/search"
	"github.com/fhirgate/fhirgate/internal/spec"
	"github.com/fhirgate/fhirgate/internal/store"
)

// Store is what the read path needs of the resource store.
type Store interface {
	Read(ctx context.Context, tenant, typ, id string) (store.Version, error)
	VRead(ctx context.Context, tenant, typ, id string, version int64) (store.Version, error)
	Search(ctx context.Context, tenant string, o store.SearchOptions) (store.Page, error)
	History(ctx context.Context, tenant string, o store.HistoryOptions) (store.HistoryPage, error)
	Included(ctx context.Context, tenant, typ string, ids []string, param, targetType string, visible store.Visible) ([]store.Version, error)
	RevIncluded(ctx context.Context, tenant, typ string, ids []string, sourceType, param string, visible store.Visible) ([]store.Version, error)
}

// Guard is the access decision of the request in ctx (the API builds one
// per request from its subject and the OPA policy).
type Guard interface {
	// See returns what the request may see of resource type typ for an
	// interaction (read, vread, search, history; includes are "search"),
	// or an error: KindForbidden when the interaction on that type is
	// refused outright, KindUnavailable when the policy cannot be
	// evaluated (fail closed).
	See(ctx context.Context, interaction, typ string) (*Visibility, error)
	// Probe is See for queries over several types (includes, whole-system
	// history) that leave out the types refused: a refusal there is not
	// the request's denial and is not recorded as one.
	Probe(ctx context.Context, interaction, typ string) (*Visibility, error)
	// Check decides one stored version exactly (the SQL visibility is
	// judged on current index rows; Check sees the version itself).
	// Denied versions are dropped; Check records the decision for the
	// audit log.
	Check(ctx context.Context, interaction string, v *store.Version) bool
}

// pageWarmer is a Guard that can ready itself for checking a page of
// versions at once (one lookup of the organizations managing all their
// patients, instead of one per patient as Check meets them).
type pageWarmer interface {
	Warm(ctx context.Context, interaction string, vs []store.Version)
}

// Protector decrypts PHI and blinds search values (internal/phi).
type Protector interface {
	Open(ctx context.Context, tenant, typ, id string, body []byte) ([]byte, error)
	Blinder(ctx context.Context, tenant string) search.Blinder
}

// Service is the read path.
type Service struct {
	store   Store
	protect Protector
	guard   Guard
	now     func() time.Time
}

// WithGuard puts every read behind an access decision. Without one, the
// read path shows everything (authorization off).
func (s *Service) WithGuard(g Guard) *Service {
	s.guard = g
	return s
}

// New returns the read path over a store.
func New(s Store) *Service { return &Service{store: s, now: time.Now} }

// WithProtector turns on PHI decryption (and blind-index search): needed
// when the store seals PHI.
func (s *Service) WithProtector(p Protector) *Service {
	s.protect = p
	return s
}

// release is where every returned version passes: the decrypted bodies
// of what the request may see. Decryption fails closed: a body that
// cannot be opened (key provider down beyond the key cache, a tampered
// value) fails the request rather than returning ciphertext or partial
// data.
func (s *Service) release(ctx context.Context, tenant, interaction string, vs []store.Version) ([]store.Version, error) {
	if s.guard != nil {
		if w, ok := s.guard.(pageWarmer); ok && len(vs) > 1 {
			w.Warm(ctx, interaction, vs)
		}
		kept := vs[:0]
		for i := range vs {
			if s.guard.Check(ctx, interaction, &vs[i]) {
				kept = append(kept, vs[i])
			}
		}
		vs = kept
	}
	if s.protect == nil {
		return vs, nil
	}
	for i := range vs {
		if vs[i].Body == nil {
			continue
		}
		b, err := s.protect.Open(ctx, tenant, vs[i].Type, vs[i].ID, vs[i].Body)
		if err != nil {
			return nil, err
		}
		vs[i].Body = b
	}
	return vs, nil
}

// releaseOne releases a single version; a denied one is reported as not
// found, so a request cannot tell a hidden resource from a missing one.
func (s *Service) releaseOne(ctx context.Context, tenant, interaction string, v store.Version) (store.Version, error) {
	vs, err := s.release(ctx, tenant, interaction, []store.Version{v})
	if err != nil {
		return store.Version{}, err
	}
	if len(vs) == 0 {
		return store.Version{}, notFound(interaction, v)
	}
	return vs[0], nil
}

// notFound is the error of a hidden version: word for word the store's
// error for a missing one.
func notFound(interaction string, v store.Version) error {
	if interaction == "vread" {
		return fhir.Errorf(fhir.KindNotFound, "", "%s/%s has no version %d", v.Type, v.ID, v.Version)
	}
	return fhir.Errorf(fhir.KindNotFound, "", "%s/%s is not known", v.Type, v.ID)
}

// seeDeleted decides a tombstone (which has no body to decide on) by the
// last version before it: a request that could not see the resource must
// not learn that it existed and was deleted (404, not 410).
func (s *Service) seeDeleted(ctx context.Context, tenant, interaction string, v store.Version) error {
	if s.guard == nil {
		return nil
	}
	for n := v.Version - 1; n >= 1; n-- {
		prev, err := s.store.VRead(ctx, tenant, v.Type, v.ID, n)
		if fhir.KindOf(err) == fhir.KindNotFound {
			break
		}
		if err != nil {
			return err
		}
		if prev.Deleted {
			continue
		}
		if s.guard.Check(ctx, interaction, &prev) {
			return nil
		}
		break
	}
	return notFound(interaction, v)
}

// see is the Guard's visibility for typ, or everything without a Guard.
func (s *Service) see(ctx context.Context, interaction, typ string) (*Visibility, error) {
	if s.guard == nil {
		return Unrestricted, nil
	}
	return s.guard.See(ctx, interaction, typ)
}

// visible renders, for store queries over several resource types, the
// union of what the request may see of each: (type = T AND visibility of
// T) OR ... Types whose interaction is refused are left out.
func (s *Service) visible(ctx context.Context, interaction string, types []string) (store.Visible, error) {
	if s.guard == nil {
		return nil, nil
	}
	// Types with the same visibility share one condition: whole-system
	// history asks about every type, and most of them see alike.
	type group struct {
		types []string
		vis   *Visibility
	}
	var groups []group
	for _, t := range types {
		v, err := s.guard.Probe(ctx, interaction, t)
		if err != nil {
			if fhir.KindOf(err) == fhir.KindForbidden {
				continue
			}
			return nil, err
		}
		i := slices.IndexFunc(groups, func(g group) bool { return reflect.DeepEqual(g.vis, v) })
		if i < 0 {
			groups = append(groups, group{vis: v})
			i = len(groups) - 1
		}
		groups[i].types = append(groups[i].types, t)
	}
	return func(alias string, args *[]any) string {
		if len(groups) == 0 {
			return "FALSE"
		}
		var ors []string
		for _, g := range groups {
			*args = append(*args, g.types)
			ors = append(ors, "("+alias+".type = ANY($"+strconv.Itoa(len(*args))+"::text[]) AND "+condition(g.vis, alias, args)+")")
		}
		return "(" + strings.Join(ors, " OR ") + ")"
	}, nil
}

// Read returns the current version. A deleted resource is KindGone (the
// tombstone's version is returned with the error for the ETag).
func (s *Service) Read(ctx context.Context, tenant, typ, id string) (store.Version, error) {
	if _, err := s.see(ctx, "read", typ); err != nil {
		return store.Version{}, err
	}
	v, err := s.store.Read(ctx, tenant, typ, id)
	if err != nil {
		return v, err
	}
	if v.Deleted {
		if err := s.seeDeleted(ctx, tenant, "read", v); err != nil {
			return store.Version{}, err
		}
		return v, fhir.Errorf(fhir.KindGone, "", "%s/%s was deleted", typ, id).WithCode("deleted")
	}
	return s.releaseOne(ctx, tenant, "read", v)
}

// VRead returns one version; a tombstone version is KindGone.
func (s *Service) VRead(ctx context.Context, tenant, typ, id, vid string) (store.Version, error) {
	n, err := strconv.ParseInt(vid, 10, 64)
	if err != nil || n < 1 {
		return store.Version{}, fhir.Errorf(fhir.KindNotFound, "", "%s/%s has no version of that name", typ, id)
	}
	if _, err := s.see(ctx, "vread", typ); err != nil {
		return store.Version{}, err
	}
	v, err := s.store.VRead(ctx, tenant, typ, id, n)
	if err != nil {
		return v, err
	}
	if v.Deleted {
		if err := s.seeDeleted(ctx, tenant, "vread", v); err != nil {
			return store.Version{}, err
		}
		return v, fhir.Errorf(fhir.KindGone, "", "%s/%s version %d is a deletion", typ, id, n).WithCode("deleted")
	}
	return s.releaseOne(ctx, tenant, "vread", v)
}

// SearchResult is one page of a search.
type SearchResult struct {
	Query    *search.Query
	Matches  []store.Version
	Included []store.Version
	Total    int64      // -1 when not counted
	Self     url.Values // the parameters applied, for the self link
	Next     url.Values // nil on the last page
}

// CursorParam carries the keyset cursor in next links.
const CursorParam = "_cursor"

// Search runs one page of a type-level search. strict refuses unknown
// parameters (Prefer: handling=strict); otherwise they are ignored and left
// out of the self link.
func (s *Service) Search(ctx context.Context, tenant, typ string, params url.Values, strict bool) (*SearchResult, error) {
	params = cloneValues(params)
	var after []any
	if c := params.Get(CursorParam); c != "" {
		var err error
		if after, err = search.ParseCursor(c); err != nil {
			return nil, err
		}
	}
	params.Del(CursorParam)
	q, err := search.Parse(typ, params, strict)
	if err != nil {
		return nil, err
	}
	if s.protect != nil {
		if err := q.ApplyBlind(s.protect.Blinder(ctx, tenant), s.now()); err != nil {
			return nil, err
		}
	}
	// Counting costs a second query as expensive as the search itself, so
	// it runs only when asked for (_total=accurate); a search that fits on
	// its first page gets its total for free.
	total := q.Total == "accurate"
	vis, err := s.see(ctx, "search", typ)
	if err != nil {
		return nil, err
	}
	// The access condition is part of the query, so pages are full, next
	// links stable and totals count only what the request may see.
	where := func(args *[]any) string {
		return "(" + q.Condition(args) + ") AND " + condition(vis, "r", args)
	}
	page, err := s.store.Search(ctx, tenant, store.SearchOptions{
		Type: typ, Where: where, Sort: q.SortSQL, Count: q.Count, After: after, Total: total,
	})
	if err != nil {
		return nil, err
	}
	matches, err := s.release(ctx, tenant, "search", page.Versions)
	if err != nil {
		return nil, err
	}
	res := &SearchResult{Query: q, Matches: matches, Total: page.Total, Self: q.Canonical()}
	if res.Total < 0 && q.Total == "" && after == nil && page.Next == nil && q.Count > 0 {
		res.Total = int64(len(res.Matches))
	}
	if page.Next != nil {
		c, err := search.Cursor(page.Next)
		if err != nil {
			return nil, err
		}
		res.Next = q.Canonical()
		res.Next.Set(CursorParam, c)
	}
	if len(res.Matches) > 0 && (len(q.Includes) > 0 || len(q.RevIncludes) > 0) {
		inc, err := s.includes(ctx, tenant, q, res.Matches)
		if err != nil {
			return nil, err
		}
		if res.Included, err = s.release(ctx, tenant, "search", inc); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (s *Service) includes(ctx context.Context, tenant string, q *search.Query, matches []store.Version) ([]store.Version, error) {
	ids := make([]string, len(matches))
	seen := map[string]bool{}
	for i, m := range matches {
		ids[i] = m.ID
		seen[m.Type+"/"+m.ID] = true
	}
	var out []store.Version
	add := func(vs []store.Version) {
		for _, v := range vs {
			k := v.Type + "/" + v.ID
			if !seen[k] && len(out) < store.MaxIncluded {
				seen[k] = true
				out = append(out, v)
			}
		}
	}
	for _, inc := range q.Includes {
		if inc.SourceType != q.Type {
			continue
		}
		for _, p := range referenceParams(inc.SourceType, inc.Param) {
			targets := []string{inc.TargetType}
			if inc.TargetType == "" {
				targets = referenceTargets(inc.SourceType, p)
			}
			visible, err := s.visible(ctx, "search", targets)
			if err != nil {
				return nil, err
			}
			vs, err := s.store.Included(ctx, tenant, q.Type, ids, p, inc.TargetType, visible)
			if err != nil {
				return nil, err
			}
			add(vs)
		}
	}
	for _, inc := range q.RevIncludes {
		if inc.TargetType != "" && inc.TargetType != q.Type {
			continue
		}
		visible, err := s.visible(ctx, "search", []string{inc.SourceType})
		if err != nil {
			return nil, err
		}
		for _, p := range referenceParams(inc.SourceType, inc.Param) {
			vs, err := s.store.RevIncluded(ctx, tenant, q.Type, ids, inc.SourceType, p, visible)
			if err != nil {
				return nil, err
			}
			add(vs)
		}
	}
	return out, nil
}

// referenceParams expands "*" to every reference parameter of typ.
func referenceParams(typ, param string) []string {
	if param != "*" {
		return []string{param}
	}
	var out []string
	for _, p := range search.Parameters(typ) {
		if p.Type == search.TypeReference {
			out = append(out, p.Code)
		}
	}
	return out
}

// referenceTargets lists the resource types reference parameter param of
// typ may point to (every type when it may point to any).
func referenceTargets(typ, param string) []string {
	if p := search.Lookup(typ, param); p != nil && len(p.Targets) > 0 {
		return p.Targets
	}
	return spec.ResourceTypes()
}

// HistoryResult is one page of history, newest first.
type HistoryResult struct {
	Versions []store.Version
	Self     url.Values
	Next     url.Values
}

// History lists versions of one resource (typ and id), one type (id ""),
// or everything (both ""). It supports _count, _since and _at.
func (s *Service) History(ctx context.Context, tenant, typ, id string, params url.Values) (*HistoryResult, error) {
	o := store.HistoryOptions{Type: typ, ID: id, Count: search.DefaultCount}
	self := url.Values{}
	for k, vs := range params {
		if len(vs) != 1 {
			return nil, fhir.Errorf(fhir.KindInvalid, "", "history parameter %q is repeated", k)
		}
		v := vs[0]
		switch k {
		case "_count":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return nil, fhir.Errorf(fhir.KindInvalid, "", "_count must be a non-negative integer")
			}
			o.Count = min(n, search.MaxCount)
			self.Set(k, strconv.Itoa(o.Count))
		case "_since", "_at":
			t, err := parseInstant(v)
			if err != nil {
				return nil, fhir.Errorf(fhir.KindInvalid, "", "%s must be an instant such as 2024-01-31T10:00:00Z", k)
			}
			if k == "_since" {
				o.Since = t
			} else {
				o.At = t
			}
			self.Set(k, v)
		case CursorParam:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 1 {
				return nil, fhir.Errorf(fhir.KindInvalid, "", "invalid page cursor")
			}
			o.Before = n
		case "_format", "_pretty":
		default:
			return nil, fhir.Errorf(fhir.KindInvalid, "", "history does not support parameter %q", k)
		}
	}
	types := []string{typ}
	if typ == "" {
		types = spec.ResourceTypes()
	}
	visible, err := s.visible(ctx, "history", types)
	if err != nil {
		return nil, err
	}
	if typ != "" {
		if _, err := s.see(ctx, "history", typ); err != nil {
			return nil, err
		}
	}
	o.Visible = visible
	if id != "" {
		// A resource never written has no history: 404, not an empty page.
		// Nor has one the request may not see.
		cur, err := s.store.Read(ctx, tenant, typ, id)
		if err != nil {
			return nil, err
		}
		if cur.Deleted {
			if err := s.seeDeleted(ctx, tenant, "history", cur); err != nil {
				return nil, err
			}
		} else if s.guard != nil && !s.guard.Check(ctx, "history", &cur) {
			return nil, fhir.Errorf(fhir.KindNotFound, "", "%s/%s is not known", typ, id)
		}
	}
	page, err := s.store.History(ctx, tenant, o)
	if err != nil {
		return nil, err
	}
	versions, err := s.release(ctx, tenant, "history", page.Versions)
	if err != nil {
		return nil, err
	}
	res := &HistoryResult{Versions: versions, Self: self}
	if page.Next > 0 {
		res.Next = cloneValues(self)
		res.Next.Set(CursorParam, strconv.FormatInt(page.Next, 10))
	}
	return res, nil
}

func parseInstant(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, strconv.ErrSyntax
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// Stored returns the current version of a resource as stored (sealed, not
// released) for the write path's authorization: the attributes a policy
// reads (references, meta) are never sealed. ok is false when the resource
// does not exist or is deleted.
func (s *Service) Stored(ctx context.Context, tenant, typ, id string) (store.Version, bool, error) {
	v, err := s.store.Read(ctx, tenant, typ, id)
	if fhir.KindOf(err) == fhir.KindNotFound {
		return store.Version{}, false, nil
	}
	if err != nil {
		return store.Version{}, false, err
	}
	return v, !v.Deleted, nil
}
