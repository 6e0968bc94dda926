package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/search"
	"github.com/fhirgate/fhirgate/internal/spec"
	"github.com/fhirgate/fhirgate/internal/store"
)

// Entry is one Bundle.entry of a transaction or batch.
type Entry struct {
	Index                int
	FullURL              string
	Raw                  json.RawMessage // the resource as sent
	Method               string
	URL                  string
	IfNoneExist, IfMatch string

	res *fhir.Resource
	typ string // from request.url
	id  string // from request.url, or assigned
	q   string // query of a conditional PUT/DELETE, or of a GET
}

// Target returns the resource type, id and conditional query the entry's
// request addresses (known once the Bundle is parsed).
func (e *Entry) Target() (typ, id, query string) { return e.typ, e.id, e.q }

// ConditionalReferenceTypes lists the resource types of the conditional
// references ("Patient?identifier=...") in the entry's resource.
func (e *Entry) ConditionalReferenceTypes() []string {
	var out []string
	for _, m := range condRefPattern.FindAllSubmatch(e.Raw, -1) {
		t := string(m[1])
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

var condRefPattern = regexp.MustCompile(`"reference"\s*:\s*"([A-Z][A-Za-z]+)\?`)

// EntryResult is the response to one entry.
type EntryResult struct {
	Status       string // "201 Created"
	Location     string // Type/id/_history/vid
	ETag         string
	LastModified time.Time
	Version      *store.Version // the version written or found, for return=representation
	// Deferred is true for GET entries: the caller runs them through the
	// read path (which authorizes and audits) and fills the result.
	Deferred bool
	// Outcome is set on a failed batch entry.
	Outcome *fhir.Error
	// Body is a response resource other than the version (a searchset
	// Bundle for a GET search entry).
	Body []byte
}

// Bundle is a parsed transaction or batch.
type Bundle struct {
	Type    string // transaction or batch
	Entries []*Entry
}

// bundleHead is what a Bundle's top level says.
type bundleHead struct {
	typ, id string
	entries []byte // the entry array, compact JSON; nil when absent
}

// parseBundleHead checks the JSON of a Bundle once (syntax, duplicate
// members, depth) and reads its type, id and entry array.
func parseBundleHead(body []byte, notBundle string) (bundleHead, error) {
	var h bundleHead
	doc, err := fhir.Compact(body)
	if err != nil {
		return h, err
	}
	if len(doc) == 0 || doc[0] != '{' {
		return h, fhir.Errorf(fhir.KindInvalid, "", "a Bundle must be a JSON object").WithCode("structure")
	}
	var rt string
	for _, m := range fhir.Members(doc) {
		switch m.Key {
		case "resourceType":
			_ = json.Unmarshal(m.Value, &rt)
		case "type":
			_ = json.Unmarshal(m.Value, &h.typ)
		case "id":
			_ = json.Unmarshal(m.Value, &h.id)
		case "entry":
			h.entries = m.Value
		}
	}
	if rt != "Bundle" {
		return h, fhir.Errorf(fhir.KindInvalid, "resourceType", "%s", notBundle).WithCode("structure")
	}
	return h, nil
}

// ParseBundle reads a transaction or batch Bundle. Entries are checked for
// a request with a method and URL; resources are parsed but not validated.
// The Bundle's JSON is checked once and its entries' resources are sliced
// out of it, not re-parsed from scratch.
func ParseBundle(body []byte) (*Bundle, error) {
	h, err := parseBundleHead(body, "POST to the service base takes a Bundle")
	if err != nil {
		return nil, err
	}
	typ, entries := h.typ, h.entries
	if typ != "transaction" && typ != "batch" {
		return nil, fhir.Errorf(fhir.KindInvalid, "Bundle.type", "Bundle.type must be transaction or batch").WithCode("value")
	}
	if entries != nil && entries[0] != '[' {
		return nil, fhir.Errorf(fhir.KindInvalid, "Bundle.entry", "Bundle.entry must be an array").WithCode("structure")
	}
	b := &Bundle{Type: typ}
	fullURLs := map[string]int{}
	for i, raw := range fhir.Elements(entries) {
		path := fmt.Sprintf("Bundle.entry[%d]", i)
		var e struct {
			FullURL string `json:"fullUrl"`
			Request *struct {
				Method      string `json:"method"`
				URL         string `json:"url"`
				IfNoneExist string `json:"ifNoneExist"`
				IfMatch     string `json:"ifMatch"`
			} `json:"request"`
		}
		var resource []byte
		if raw[0] != '{' {
			return nil, fhir.Errorf(fhir.KindInvalid, path, "entry must be an object").WithCode("structure")
		}
		var head []byte = []byte{'{'}
		for _, m := range fhir.Members(raw) {
			switch m.Key {
			case "resource":
				resource = m.Value
			case "fullUrl", "request":
				if len(head) > 1 {
					head = append(head, ',')
				}
				q, _ := json.Marshal(m.Key)
				head = append(append(append(head, q...), ':'), m.Value...)
			}
		}
		if err := json.Unmarshal(append(head, '}'), &e); err != nil {
			return nil, fhir.Errorf(fhir.KindInvalid, path, "entry.fullUrl or entry.request has the wrong JSON type: %s", jsonErr(err)).WithCode("structure")
		}
		if e.Request == nil {
			return nil, fhir.Errorf(fhir.KindInvalid, path+".request", "entry has no request").WithCode("required")
		}
		en := &Entry{Index: i, FullURL: e.FullURL, Raw: resource, Method: strings.ToUpper(e.Request.Method),
			URL: e.Request.URL, IfNoneExist: e.Request.IfNoneExist, IfMatch: e.Request.IfMatch}
		if err := en.parseRequest(path); err != nil {
			return nil, err
		}
		if e.FullURL != "" {
			if j, dup := fullURLs[e.FullURL]; dup && typ == "transaction" {
				return nil, fhir.Errorf(fhir.KindInvalid, path+".fullUrl", "fullUrl repeats entry %d", j).WithCode("duplicate")
			}
			fullURLs[e.FullURL] = i
		}
		b.Entries = append(b.Entries, en)
	}
	return b, nil
}

func (e *Entry) parseRequest(path string) error {
	switch e.Method {
	case "GET", "HEAD", "POST", "PUT", "DELETE":
	case "PATCH":
		return fhir.Errorf(fhir.KindInvalid, path+".request.method", "PATCH is not supported").WithCode("not-supported")
	default:
		return fhir.Errorf(fhir.KindInvalid, path+".request.method", "request.method must be GET, HEAD, POST, PUT or DELETE").WithCode("value")
	}
	u := strings.TrimPrefix(e.URL, "/")
	if u == "" {
		return fhir.Errorf(fhir.KindInvalid, path+".request.url", "request.url is missing").WithCode("required")
	}
	p, q, _ := strings.Cut(u, "?")
	e.q = q
	parts := strings.Split(p, "/")
	e.typ = parts[0]
	if !spec.IsResourceType(e.typ) {
		return fhir.Errorf(fhir.KindInvalid, path+".request.url", "request.url does not name a known resource type").WithCode("value")
	}
	if len(parts) > 1 {
		e.id = parts[1]
		if !fhir.ValidID(e.id) {
			return fhir.Errorf(fhir.KindInvalid, path+".request.url", "request.url has an invalid id").WithCode("value")
		}
	}
	switch e.Method {
	case "POST":
		if len(parts) != 1 {
			return fhir.Errorf(fhir.KindInvalid, path+".request.url", "POST request.url must be a resource type").WithCode("value")
		}
	case "PUT", "DELETE":
		if len(parts) > 2 || (len(parts) == 1 && q == "") || (len(parts) == 2 && q != "") {
			return fhir.Errorf(fhir.KindInvalid, path+".request.url", "%s request.url must be [type]/[id] or [type]?[search]", e.Method).WithCode("value")
		}
	}
	if e.Method == "POST" || e.Method == "PUT" {
		if len(e.Raw) == 0 || string(e.Raw) == "null" {
			return fhir.Errorf(fhir.KindInvalid, path+".resource", "%s entry has no resource", e.Method).WithCode("required")
		}
		r, err := fhir.ParseCompacted(e.Raw)
		if err != nil {
			return prefixExpr(err, path+".resource")
		}
		if r.Type != e.typ {
			return fhir.Errorf(fhir.KindInvalid, path+".resource.resourceType", "resourceType does not match request.url").WithCode("value")
		}
		e.res = r
	}
	return nil
}

// processing order per the FHIR transaction rules.
func methodRank(m string) int {
	switch m {
	case "DELETE":
		return 0
	case "POST":
		return 1
	case "PUT", "PATCH":
		return 2
	}
	return 3
}

// Process runs a transaction (all entries in one database transaction,
// all or nothing) or a batch (each entry on its own). Results are in entry
// order. For a transaction any failing entry fails the whole Bundle with
// an error naming the entry.
func (s *Service) Process(ctx context.Context, tenant string, b *Bundle) ([]EntryResult, error) {
	if b.Type == "batch" {
		return s.batch(ctx, tenant, b), nil
	}
	// Validate everything before touching the database.
	for _, e := range b.Entries {
		if e.res != nil && s.validate != nil {
			if err := s.validate(e.res); err != nil {
				return nil, prefixExpr(err, fmt.Sprintf("Bundle.entry[%d].resource", e.Index))
			}
		}
	}
	order := make([]*Entry, len(b.Entries))
	copy(order, b.Entries)
	stableSortBy(order, func(e *Entry) int { return methodRank(e.Method) })

	// A retry must start again from the client's resources, before ids
	// and references were rewritten.
	originals := make([][]byte, len(b.Entries))
	for i, e := range b.Entries {
		if e.res != nil {
			originals[i] = e.Raw
		}
	}
	var results []EntryResult
	attempt := 0
	err := s.inTx(ctx, tenant, func(tx *store.Tx) error {
		attempt++
		for i, e := range b.Entries {
			if attempt > 1 && originals[i] != nil {
				r, err := fhir.ParseCompacted(originals[i])
				if err != nil {
					return err
				}
				e.res = r
			}
		}
		var err error
		results, err = s.transaction(ctx, tx, b, order)
		return err
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

func (s *Service) transaction(ctx context.Context, tx *store.Tx, b *Bundle, order []*Entry) ([]EntryResult, error) {
	results := make([]EntryResult, len(b.Entries))
	done := make([]bool, len(b.Entries))
	ids := map[string]string{} // fullUrl -> Type/id

	// 1. Deletes, and identities: resolve conditional creates and updates
	// before any resource is written, so references can be rewritten.
	for _, e := range order {
		path := fmt.Sprintf("Bundle.entry[%d]", e.Index)
		switch e.Method {
		case "DELETE":
			r, err := s.deleteEntry(ctx, tx, e, path)
			if err != nil {
				return nil, err
			}
			results[e.Index], done[e.Index] = r, true
		case "POST":
			if e.IfNoneExist != "" {
				q, err := conditionQuery(e.typ, e.IfNoneExist, path+".request.ifNoneExist")
				if err != nil {
					return nil, prefixExpr(err, path+".request.ifNoneExist")
				}
				found, err := findLocked(ctx, tx, e.typ, q, path+".request.ifNoneExist")
				if err != nil {
					return nil, err
				}
				if found != nil {
					e.id = found.ID
					results[e.Index], done[e.Index] = resultFor(*found, "200 OK"), true
					break
				}
			}
			e.id = NewID()
		case "PUT":
			if e.q != "" {
				q, err := conditionQuery(e.typ, e.q, path+".request.url")
				if err != nil {
					return nil, prefixExpr(err, path+".request.url")
				}
				found, err := findLocked(ctx, tx, e.typ, q, path+".request.url")
				if err != nil {
					return nil, err
				}
				switch {
				case found != nil:
					e.id = found.ID
				case e.res.ID != "" && fhir.ValidID(e.res.ID):
					e.id = e.res.ID
				default:
					e.id = NewID()
				}
			} else if e.res.ID != e.id {
				return nil, fhir.Errorf(fhir.KindInvalid, path+".resource.id", "resource id does not match request.url").WithCode("value")
			}
		}
		if e.FullURL != "" && (e.Method == "POST" || e.Method == "PUT") {
			ids[e.FullURL] = e.typ + "/" + e.id
		}
	}

	// 2. Conditional references (Patient?identifier=...) resolve to the one
	// resource they match.
	condRefs := map[string]string{}
	for _, e := range order {
		if e.res == nil || done[e.Index] {
			continue
		}
		for _, ref := range conditionalReferences(e.res.Content) {
			if _, seen := condRefs[ref]; seen {
				continue
			}
			typ, query, _ := strings.Cut(ref, "?")
			path := fmt.Sprintf("Bundle.entry[%d].resource", e.Index)
			if !spec.IsResourceType(typ) {
				return nil, fhir.Errorf(fhir.KindInvalid, path, "conditional reference names an unknown resource type").WithCode("value")
			}
			q, err := conditionQuery(typ, query, "conditional reference")
			if err != nil {
				return nil, prefixExpr(err, path)
			}
			found, err := tx.Find(ctx, q, 2)
			if err != nil {
				return nil, err
			}
			if len(found) != 1 {
				return nil, fhir.Errorf(fhir.KindUnprocessable, path,
					"conditional reference to %s matches %d resources; it must match exactly one", typ, len(found)).WithCode("processing")
			}
			condRefs[ref] = typ + "/" + found[0].ID
		}
	}

	// Lock the current versions of everything PUT in one round trip.
	var keys []store.Key
	for _, e := range order {
		if !done[e.Index] && e.Method == "PUT" {
			keys = append(keys, store.Key{Type: e.typ, ID: e.id})
		}
	}
	if len(keys) > 1 {
		if err := tx.Prefetch(ctx, keys, true); err != nil {
			return nil, err
		}
	}

	// 3. Write, with references rewritten.
	rewrite := ids
	for k, v := range condRefs {
		rewrite[k] = v
	}
	for _, e := range order {
		if done[e.Index] || (e.Method != "POST" && e.Method != "PUT") {
			continue
		}
		path := fmt.Sprintf("Bundle.entry[%d]", e.Index)
		if len(rewrite) > 0 {
			e.res.RewriteStrings(rewrite)
		}
		if err := unresolvedURN(e.res.Content, path+".resource"); err != nil {
			return nil, err
		}
		e.res.SetID(e.id)
		ifMatch, err := parseIfMatch(e.IfMatch, path+".request.ifMatch")
		if err != nil {
			return nil, err
		}
		w := store.Write{Resource: e.res, Entries: search.Extract(e.res.Type, e.res.Content), Method: e.Method,
			New: e.Method == "POST", IfMatch: ifMatch}
		v, err := tx.Put(ctx, w)
		if err != nil {
			return nil, prefixExpr(err, path)
		}
		status := "200 OK"
		if v.Version == 1 {
			status = "201 Created"
		}
		results[e.Index] = resultFor(v, status)
	}
	for _, e := range b.Entries {
		if e.Method == "GET" || e.Method == "HEAD" {
			results[e.Index] = EntryResult{Deferred: true}
		}
	}
	return results, nil
}

func (s *Service) deleteEntry(ctx context.Context, tx *store.Tx, e *Entry, path string) (EntryResult, error) {
	ifMatch, err := parseIfMatch(e.IfMatch, path+".request.ifMatch")
	if err != nil {
		return EntryResult{}, err
	}
	if e.q == "" {
		if _, _, err := tx.Delete(ctx, e.typ, e.id, ifMatch); err != nil {
			return EntryResult{}, prefixExpr(err, path)
		}
		return EntryResult{Status: "204 No Content"}, nil
	}
	q, err := conditionQuery(e.typ, e.q, path+".request.url")
	if err != nil {
		return EntryResult{}, prefixExpr(err, path+".request.url")
	}
	found, err := findLocked(ctx, tx, e.typ, q, path+".request.url")
	if err != nil {
		return EntryResult{}, err
	}
	if found != nil {
		if _, _, err := tx.Delete(ctx, e.typ, found.ID, ifMatch); err != nil {
			return EntryResult{}, prefixExpr(err, path)
		}
	}
	return EntryResult{Status: "204 No Content"}, nil
}

// batch runs each entry on its own; a failure is reported in that entry's
// result and does not affect the others.
func (s *Service) batch(ctx context.Context, tenant string, b *Bundle) []EntryResult {
	results := make([]EntryResult, len(b.Entries))
	for _, e := range b.Entries {
		var (
			res Result
			err error
		)
		path := fmt.Sprintf("Bundle.entry[%d]", e.Index)
		switch e.Method {
		case "GET", "HEAD":
			results[e.Index] = EntryResult{Deferred: true}
			continue
		case "POST":
			res, err = s.Create(ctx, tenant, e.res, e.IfNoneExist)
		case "PUT":
			var ifMatch int64
			if ifMatch, err = parseIfMatch(e.IfMatch, path+".request.ifMatch"); err != nil {
				break
			}
			if e.q != "" {
				res, err = s.ConditionalUpdate(ctx, tenant, e.typ, e.q, e.res, ifMatch)
			} else {
				res, err = s.Update(ctx, tenant, e.typ, e.id, e.res, ifMatch)
			}
		case "DELETE":
			var ifMatch int64
			if ifMatch, err = parseIfMatch(e.IfMatch, path+".request.ifMatch"); err != nil {
				break
			}
			if e.q != "" {
				_, err = s.ConditionalDelete(ctx, tenant, e.typ, e.q, false, 0)
			} else {
				res, err = s.Delete(ctx, tenant, e.typ, e.id, ifMatch)
			}
			if err == nil {
				results[e.Index] = EntryResult{Status: "204 No Content"}
				continue
			}
		}
		if err != nil {
			fe := fhir.AsError(prefixExpr(err, path))
			results[e.Index] = EntryResult{Status: fmt.Sprintf("%d %s", fe.Kind.Status(), http.StatusText(fe.Kind.Status())), Outcome: fe}
			continue
		}
		status := "200 OK"
		if res.Created {
			status = "201 Created"
		}
		results[e.Index] = resultFor(res.Version, status)
	}
	return results
}

func resultFor(v store.Version, status string) EntryResult {
	vv := v
	return EntryResult{
		Status:       status,
		Location:     fmt.Sprintf("%s/%s/_history/%d", v.Type, v.ID, v.Version),
		ETag:         fmt.Sprintf(`W/"%d"`, v.Version),
		LastModified: v.LastUpdated,
		Version:      &vv,
	}
}

// ParseIfMatch reads an If-Match value: W/"3", "3" or 3. "" is 0 (none).
func ParseIfMatch(h string) (int64, error) { return parseIfMatch(h, "If-Match") }

func parseIfMatch(h, expr string) (int64, error) {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0, nil
	}
	s := strings.TrimPrefix(h, "W/")
	s = strings.Trim(s, `"`)
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 1 {
		return 0, fhir.Errorf(fhir.KindInvalid, expr, `If-Match must be a version ETag such as W/"3"`).WithCode("value")
	}
	return v, nil
}

// conditionalReferences lists Reference.reference values of the form
// Type?query.
func conditionalReferences(v any) []string {
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, c := range t {
				if s, ok := c.(string); ok && k == "reference" && isConditionalRef(s) {
					out = append(out, s)
					continue
				}
				walk(c)
			}
		case []any:
			for _, c := range t {
				walk(c)
			}
		}
	}
	walk(v)
	return out
}

func isConditionalRef(s string) bool {
	i := strings.IndexByte(s, '?')
	return i > 0 && !strings.Contains(s[:i], "/") && s[0] >= 'A' && s[0] <= 'Z'
}

// unresolvedURN refuses a reference to a urn:uuid: that no entry defines:
// it would be stored dangling.
func unresolvedURN(v any, path string) error {
	var bad bool
	var walk func(any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			if s, ok := t["reference"].(string); ok && strings.HasPrefix(s, "urn:uuid:") {
				bad = true
			}
			for _, c := range t {
				walk(c)
			}
		case []any:
			for _, c := range t {
				walk(c)
			}
		}
	}
	walk(v)
	if bad {
		return fhir.Errorf(fhir.KindUnprocessable, path, "a reference to a urn:uuid: matches no entry's fullUrl").WithCode("not-found")
	}
	return nil
}

func stableSortBy(es []*Entry, rank func(*Entry) int) {
	sort.SliceStable(es, func(i, j int) bool { return rank(es[i]) < rank(es[j]) })
}

func jsonErr(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s has the wrong JSON type", te.Field)
	}
	return "invalid JSON"
}
