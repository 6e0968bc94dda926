package api

import (
	"encoding/json"
	"github.com/fhirgate/fhirgate/internal/access"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/retrieve"
	"github.com/fhirgate/fhirgate/internal/store"
)

// bundleWriter assembles a Bundle as bytes: resource bodies are spliced in
// as stored, never decoded and re-encoded.
type bundleWriter struct {
	b      []byte
	nEntry int
}

func newBundle(typ string) *bundleWriter {
	w := &bundleWriter{b: make([]byte, 0, 4096)}
	w.b = append(w.b, `{"resourceType":"Bundle","type":`...)
	w.b = strconv.AppendQuote(w.b, typ)
	w.b = append(w.b, `,"timestamp":`...)
	w.b = strconv.AppendQuote(w.b, fhir.FormatInstant(time.Now()))
	return w
}

func (w *bundleWriter) total(n int64) {
	w.b = append(w.b, `,"total":`...)
	w.b = strconv.AppendInt(w.b, n, 10)
}

func (w *bundleWriter) links(rel ...string) {
	w.b = append(w.b, `,"link":[`...)
	for i := 0; i+1 < len(rel); i += 2 {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.b = append(w.b, `{"relation":`...)
		w.b = strconv.AppendQuote(w.b, rel[i])
		w.b = append(w.b, `,"url":`...)
		w.b = fhir.AppendString(w.b, rel[i+1])
		w.b = append(w.b, '}')
	}
	w.b = append(w.b, ']')
}

// entry appends one entry; members are pre-rendered JSON members
// ("fullUrl":..., "resource":... and so on) without braces.
func (w *bundleWriter) entry(members ...[]byte) {
	if w.nEntry == 0 {
		w.b = append(w.b, `,"entry":[`...)
	} else {
		w.b = append(w.b, ',')
	}
	w.nEntry++
	w.b = append(w.b, '{')
	first := true
	for _, m := range members {
		if m == nil {
			continue
		}
		if !first {
			w.b = append(w.b, ',')
		}
		first = false
		w.b = append(w.b, m...)
	}
	w.b = append(w.b, '}')
}

func (w *bundleWriter) bytes() []byte {
	if w.nEntry > 0 {
		w.b = append(w.b, ']')
	}
	return append(w.b, '}')
}

func member(name string, rawJSON []byte) []byte {
	b := strconv.AppendQuote(nil, name)
	b = append(b, ':')
	return append(b, rawJSON...)
}

func memberString(name, value string) []byte {
	b := strconv.AppendQuote(nil, name)
	b = append(b, ':')
	return fhir.AppendString(b, value)
}

func memberObject(name string, v any) []byte {
	raw, _ := json.Marshal(v) // only strings and maps of strings
	return member(name, raw)
}

func fullURL(base string, v store.Version) string { return base + "/" + v.Type + "/" + v.ID }

func (s *Server) postSearch(c *gin.Context, typ string) {
	mt, _, _ := mime.ParseMediaType(c.GetHeader("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		s.fail(c, fhir.Errorf(fhir.KindUnsupportedMediaType, "", "POST _search takes application/x-www-form-urlencoded parameters"))
		return
	}
	body, err := s.readLimited(c) // an empty form is a search without parameters
	if err != nil {
		s.fail(c, err)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		s.fail(c, fhir.Errorf(fhir.KindInvalid, "", "the form body is not valid application/x-www-form-urlencoded"))
		return
	}
	if req := access.From(c.Request.Context()); req != nil {
		req.SetQuery(form.Encode())
	}
	// Parameters may come in the URL as well as the body.
	for k, vs := range c.Request.URL.Query() {
		form[k] = append(form[k], vs...)
	}
	s.search(c, typ, form)
}

func (s *Server) search(c *gin.Context, typ string, params url.Values) {
	params = stripControl(params)
	pref := parsePrefer(c.Request.Header.Values("Prefer"))
	summaryCount := params.Get("_summary") == "count"
	if summaryCount {
		params.Set("_count", "0")
		params.Set("_total", "accurate")
		params.Del("_summary")
	}
	res, err := s.reader.Search(c.Request.Context(), s.cfg.Tenant, typ, params, pref.Strict)
	if err != nil {
		s.fail(c, err)
		return
	}
	base := s.base(c)
	w := newBundle("searchset")
	if res.Total >= 0 {
		w.total(res.Total)
	}
	self := res.Self
	if summaryCount {
		self = url.Values{"_summary": {"count"}}
	}
	links := []string{"self", base + "/" + typ + "?" + self.Encode()}
	if res.Next != nil {
		links = append(links, "next", base+"/"+typ+"?"+res.Next.Encode())
	}
	w.links(links...)
	match := memberObject("search", map[string]string{"mode": "match"})
	include := memberObject("search", map[string]string{"mode": "include"})
	for _, v := range res.Matches {
		w.entry(memberString("fullUrl", fullURL(base, v)), member("resource", v.Body), match)
	}
	for _, v := range res.Included {
		w.entry(memberString("fullUrl", fullURL(base, v)), member("resource", v.Body), include)
	}
	if len(res.Query.Ignored) > 0 {
		is := fhir.Issue{Severity: "warning", Code: "not-supported",
			Diagnostics: "ignored parameters: " + strings.Join(res.Query.Ignored, ", ")}
		w.entry(member("resource", fhir.OperationOutcome(is)), memberObject("search", map[string]string{"mode": "outcome"}))
	}
	write(c, http.StatusOK, w.bytes())
}

func (s *Server) history(c *gin.Context, typ, id string) {
	params := stripControl(c.Request.URL.Query())
	res, err := s.reader.History(c.Request.Context(), s.cfg.Tenant, typ, id, params)
	if err != nil {
		s.fail(c, err)
		return
	}
	base := s.base(c)
	path := base
	switch {
	case id != "":
		path += "/" + typ + "/" + id + "/_history"
	case typ != "":
		path += "/" + typ + "/_history"
	default:
		path += "/_history"
	}
	w := newBundle("history")
	links := []string{"self", withQuery(path, res.Self)}
	if res.Next != nil {
		links = append(links, "next", withQuery(path, res.Next))
	}
	w.links(links...)
	for _, v := range res.Versions {
		req := map[string]string{"method": v.Method, "url": v.Type}
		if v.Method != "POST" {
			req["url"] = v.Type + "/" + v.ID
		}
		resp := map[string]string{"status": historyStatus(v), "etag": `W/"` + strconv.FormatInt(v.Version, 10) + `"`,
			"lastModified": fhir.FormatInstant(v.LastUpdated)}
		var body []byte
		if !v.Deleted {
			body = member("resource", v.Body)
		}
		w.entry(memberString("fullUrl", fullURL(base, v)), body, memberObject("request", req), memberObject("response", resp))
	}
	write(c, http.StatusOK, w.bytes())
}

func historyStatus(v store.Version) string {
	switch {
	case v.Deleted:
		return "204"
	case v.Version == 1:
		return "201"
	}
	return "200"
}

func withQuery(path string, q url.Values) string {
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

// bundle processes a transaction or batch posted to the service base.
func (s *Server) bundle(c *gin.Context) {
	body, err := s.readBody(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	if source, ok := c.Request.Header[SourceHeader]; ok && s.push != nil {
		// An EMR push: normalization, identity and provenance as HL7 v2.
		s.pushBundle(c, body, strings.Join(source, ""))
		return
	}
	b, err := ingest.ParseBundle(body)
	if err != nil {
		s.fail(c, err)
		return
	}
	if !s.authorizeBundle(c, b) {
		return
	}
	ctx := c.Request.Context()
	results, err := s.writer.Process(ctx, s.cfg.Tenant, b)
	if err != nil {
		s.fail(c, err)
		return
	}
	base := s.base(c)
	representation := parsePrefer(c.Request.Header.Values("Prefer")).Return == "representation" // bundles default to minimal
	w := newBundle(b.Type + "-response")
	for i, r := range results {
		if r.Deferred {
			r = s.bundleRead(c, b.Entries[i])
		}
		resp := map[string]any{"status": r.Status}
		if r.Location != "" {
			resp["location"] = r.Location
			resp["etag"] = r.ETag
			resp["lastModified"] = fhir.FormatInstant(r.LastModified)
		}
		var res, full []byte
		if r.Outcome != nil {
			resp["outcome"] = json.RawMessage(fhir.OperationOutcome(r.Outcome.Issues...))
		}
		if r.Version != nil && !r.Version.Deleted {
			if b.Entries[i].Method != "GET" {
				touched(c, r.Version.Type, r.Version.ID, r.Version.Body)
			}
			full = memberString("fullUrl", fullURL(base, *r.Version))
			if representation || b.Entries[i].Method == "GET" {
				res = member("resource", r.Version.Body)
			}
		}
		if r.Body != nil {
			res = member("resource", r.Body)
		}
		w.entry(full, res, memberObject("response", resp))
	}
	write(c, http.StatusOK, w.bytes())
}

// bundleRead runs a GET entry of a Bundle through the read path.
func (s *Server) bundleRead(c *gin.Context, e *ingest.Entry) ingest.EntryResult {
	ctx := c.Request.Context()
	p, q, _ := strings.Cut(strings.TrimPrefix(e.URL, "/"), "?")
	seg := strings.Split(p, "/")
	var v store.Version
	var err error
	switch {
	case len(seg) == 1:
		vals, perr := url.ParseQuery(q)
		if perr != nil {
			err = fhir.Errorf(fhir.KindInvalid, "", "request.url has an invalid query")
			break
		}
		var res *retrieve.SearchResult
		res, err = s.reader.Search(ctx, s.cfg.Tenant, seg[0], vals, false)
		if err == nil {
			w := newBundle("searchset")
			if res.Total >= 0 {
				w.total(res.Total)
			}
			base := s.base(c)
			for _, m := range res.Matches {
				w.entry(memberString("fullUrl", fullURL(base, m)), member("resource", m.Body))
			}
			return ingest.EntryResult{Status: "200 OK", Body: w.bytes()}
		}
	case len(seg) == 2:
		v, err = s.reader.Read(ctx, s.cfg.Tenant, seg[0], seg[1])
	case len(seg) == 4 && seg[2] == "_history":
		v, err = s.reader.VRead(ctx, s.cfg.Tenant, seg[0], seg[1], seg[3])
	default:
		err = fhir.Errorf(fhir.KindInvalid, "", "request.url of a GET entry must be a read, vread or search")
	}
	if err != nil {
		fe := fhir.AsError(err)
		return ingest.EntryResult{Status: strconv.Itoa(fe.Kind.Status()) + " " + http.StatusText(fe.Kind.Status()), Outcome: fe}
	}
	r := ingest.EntryResult{Status: "200 OK", Location: v.Type + "/" + v.ID + "/_history/" + strconv.FormatInt(v.Version, 10),
		ETag: `W/"` + strconv.FormatInt(v.Version, 10) + `"`, LastModified: v.LastUpdated}
	r.Version = &v
	return r
}
