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
	"strconv"
	"time"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/search"
	"github.com/fhirgate/fhirgate/internal/store"
)

// Store is what the read path needs of the resource store.
type Store interface {
	Read(ctx context.Context, tenant, typ, id string) (store.Version, error)
	VRead(ctx context.Context, tenant, typ, id string, version int64) (store.Version, error)
	Search(ctx context.Context, tenant string, o store.SearchOptions) (store.Page, error)
	History(ctx context.Context, tenant string, o store.HistoryOptions) (store.HistoryPage, error)
	Included(ctx context.Context, tenant, typ string, ids []string, param, targetType string) ([]store.Version, error)
	RevIncluded(ctx context.Context, tenant, typ string, ids []string, sourceType, param string) ([]store.Version, error)
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
	now     func() time.Time
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
func (s *Service) release(ctx context.Context, tenant string, vs []store.Version) ([]store.Version, error) {
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

func (s *Service) releaseOne(ctx context.Context, tenant string, v store.Version) (store.Version, error) {
	vs, err := s.release(ctx, tenant, []store.Version{v})
	if err != nil {
		return store.Version{}, err
	}
	return vs[0], nil
}

// Read returns the current version. A deleted resource is KindGone (the
// tombstone's version is returned with the error for the ETag).
func (s *Service) Read(ctx context.Context, tenant, typ, id string) (store.Version, error) {
	v, err := s.store.Read(ctx, tenant, typ, id)
	if err != nil {
		return v, err
	}
	if v.Deleted {
		return v, fhir.Errorf(fhir.KindGone, "", "%s/%s was deleted", typ, id).WithCode("deleted")
	}
	return s.releaseOne(ctx, tenant, v)
}

// VRead returns one version; a tombstone version is KindGone.
func (s *Service) VRead(ctx context.Context, tenant, typ, id, vid string) (store.Version, error) {
	n, err := strconv.ParseInt(vid, 10, 64)
	if err != nil || n < 1 {
		return store.Version{}, fhir.Errorf(fhir.KindNotFound, "", "%s/%s has no version of that name", typ, id)
	}
	v, err := s.store.VRead(ctx, tenant, typ, id, n)
	if err != nil {
		return v, err
	}
	if v.Deleted {
		return v, fhir.Errorf(fhir.KindGone, "", "%s/%s version %d is a deletion", typ, id, n).WithCode("deleted")
	}
	return s.releaseOne(ctx, tenant, v)
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
	page, err := s.store.Search(ctx, tenant, store.SearchOptions{
		Type: typ, Where: q.Condition, Sort: q.SortSQL, Count: q.Count, After: after, Total: total,
	})
	if err != nil {
		return nil, err
	}
	matches, err := s.release(ctx, tenant, page.Versions)
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
		if res.Included, err = s.release(ctx, tenant, inc); err != nil {
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
			vs, err := s.store.Included(ctx, tenant, q.Type, ids, p, inc.TargetType)
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
		for _, p := range referenceParams(inc.SourceType, inc.Param) {
			vs, err := s.store.RevIncluded(ctx, tenant, q.Type, ids, inc.SourceType, p)
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
	if id != "" {
		// A resource never written has no history: 404, not an empty page.
		if _, err := s.store.Read(ctx, tenant, typ, id); err != nil {
			return nil, err
		}
	}
	page, err := s.store.History(ctx, tenant, o)
	if err != nil {
		return nil, err
	}
	versions, err := s.release(ctx, tenant, page.Versions)
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
