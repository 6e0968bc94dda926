package api

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/spec"
	"github.com/fhirgate/fhirgate/internal/store"
)

// route dispatches /fhir/... by path shape and method. One handler does
// it so that unknown types, ids and methods all get OperationOutcomes.
func (s *Server) route(c *gin.Context) {
	path := strings.Trim(c.Param("path"), "/")
	var seg []string
	if path != "" {
		seg = strings.Split(path, "/")
	}
	m := c.Request.Method
	if m == http.MethodHead {
		m = http.MethodGet
	}
	notAllowed := func(allowed string) {
		c.Header("Allow", allowed)
		s.fail(c, fhir.Errorf(fhir.KindMethodNotAllowed, "", "%s is not supported here; allowed: %s", c.Request.Method, allowed))
	}
	if len(seg) == 0 {
		if m == http.MethodPost {
			s.bundle(c)
			return
		}
		notAllowed("POST")
		return
	}
	switch seg[0] {
	case ".well-known":
		if len(seg) == 2 && seg[1] == "smart-configuration" && m == http.MethodGet {
			s.smartConfiguration(c)
			return
		}
	case "metadata":
		if len(seg) != 1 {
			break
		}
		if m != http.MethodGet {
			notAllowed("GET")
			return
		}
		write(c, http.StatusOK, s.caps)
		return
	case "_history":
		if len(seg) != 1 {
			break
		}
		if m != http.MethodGet {
			notAllowed("GET")
			return
		}
		s.history(c, "", "")
		return
	}
	typ := seg[0]
	if typ == "AuditEvent" && s.sec != nil && s.sec.Reader != nil {
		// The access log, for auditors: never stored AuditEvents.
		switch {
		case m != http.MethodGet:
			notAllowed("GET")
		case len(seg) == 1 || (len(seg) == 2 && seg[1] == "_search"):
			s.auditEvents(c, "")
		case len(seg) == 2:
			s.auditEvents(c, seg[1])
		default:
			s.fail(c, fhir.Errorf(fhir.KindNotFound, "", "no such AuditEvent endpoint"))
		}
		return
	}
	if strings.HasPrefix(typ, "$") || (len(seg) > 1 && strings.HasPrefix(seg[len(seg)-1], "$")) {
		s.fail(c, fhir.Errorf(fhir.KindNotFound, "", "operations are not supported").WithCode("not-supported"))
		return
	}
	if !spec.IsResourceType(typ) {
		s.fail(c, fhir.Errorf(fhir.KindNotFound, "", "unknown resource type").WithCode("not-supported"))
		return
	}
	if len(seg) >= 2 && !strings.HasPrefix(seg[1], "_") && !fhir.ValidID(seg[1]) {
		s.fail(c, fhir.Errorf(fhir.KindInvalid, "", "the URL's id is not a valid FHIR id").WithCode("value"))
		return
	}
	switch {
	case len(seg) == 1:
		switch m {
		case http.MethodGet:
			s.search(c, typ, c.Request.URL.Query())
		case http.MethodPost:
			s.create(c, typ)
		case http.MethodPut:
			s.conditionalUpdate(c, typ)
		case http.MethodDelete:
			s.conditionalDelete(c, typ)
		default:
			notAllowed("GET, POST, PUT, DELETE")
		}
	case len(seg) == 2 && seg[1] == "_search":
		switch m {
		case http.MethodPost:
			s.postSearch(c, typ)
		case http.MethodGet:
			s.search(c, typ, c.Request.URL.Query())
		default:
			notAllowed("GET, POST")
		}
	case len(seg) == 2 && seg[1] == "_history":
		if m != http.MethodGet {
			notAllowed("GET")
			return
		}
		s.history(c, typ, "")
	case len(seg) == 2 && !strings.HasPrefix(seg[1], "_"):
		switch m {
		case http.MethodGet:
			s.read(c, typ, seg[1])
		case http.MethodPut:
			s.update(c, typ, seg[1])
		case http.MethodDelete:
			s.delete(c, typ, seg[1])
		default:
			notAllowed("GET, PUT, DELETE")
		}
	case len(seg) == 3 && seg[2] == "_history":
		if m != http.MethodGet {
			notAllowed("GET")
			return
		}
		s.history(c, typ, seg[1])
	case len(seg) == 4 && seg[2] == "_history":
		if m != http.MethodGet {
			notAllowed("GET")
			return
		}
		s.vread(c, typ, seg[1], seg[3])
	default:
		s.fail(c, fhir.Errorf(fhir.KindNotFound, "", "no such FHIR endpoint"))
	}
}

func (s *Server) base(c *gin.Context) string {
	if s.cfg.BaseURL != "" {
		return s.cfg.BaseURL
	}
	scheme := "http"
	if c.Request.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + c.Request.Host + "/fhir"
}

func setVersionHeaders(c *gin.Context, v store.Version) {
	c.Header("ETag", `W/"`+strconv.FormatInt(v.Version, 10)+`"`)
	c.Header("Last-Modified", v.LastUpdated.UTC().Format(http.TimeFormat))
}

func (s *Server) read(c *gin.Context, typ, id string) {
	v, err := s.reader.Read(c.Request.Context(), s.cfg.Tenant, typ, id)
	if err != nil {
		if fhir.KindOf(err) == fhir.KindGone {
			setVersionHeaders(c, v)
		}
		s.fail(c, err)
		return
	}
	setVersionHeaders(c, v)
	if notModified(c, v) {
		c.Status(http.StatusNotModified)
		return
	}
	write(c, http.StatusOK, v.Body)
}

// notModified honours If-None-Match and If-Modified-Since on reads.
func notModified(c *gin.Context, v store.Version) bool {
	if inm := c.GetHeader("If-None-Match"); inm != "" {
		etag := `"` + strconv.FormatInt(v.Version, 10) + `"`
		for _, t := range strings.Split(inm, ",") {
			t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
			if t == etag || t == "*" {
				return true
			}
		}
		return false
	}
	if ims := c.GetHeader("If-Modified-Since"); ims != "" {
		if t, err := http.ParseTime(ims); err == nil && !v.LastUpdated.Truncate(1e9).After(t) {
			return true
		}
	}
	return false
}

func (s *Server) vread(c *gin.Context, typ, id, vid string) {
	v, err := s.reader.VRead(c.Request.Context(), s.cfg.Tenant, typ, id, vid)
	if err != nil {
		s.fail(c, err)
		return
	}
	setVersionHeaders(c, v)
	write(c, http.StatusOK, v.Body)
}

// respondWrite answers a create or update per the Prefer header.
func (s *Server) respondWrite(c *gin.Context, res ingest.Result) {
	v := res.Version
	touched(c, v.Type, v.ID, v.Body)
	setVersionHeaders(c, v)
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
	}
	c.Header("Location", s.base(c)+"/"+v.Type+"/"+v.ID+"/_history/"+strconv.FormatInt(v.Version, 10))
	switch parsePrefer(c.Request.Header.Values("Prefer")).Return {
	case "minimal":
		c.Status(status)
	case "OperationOutcome":
		msg := "updated"
		if res.Created {
			msg = "created"
		} else if res.Existing {
			msg = "a matching resource exists; nothing was created"
		}
		write(c, status, fhir.OperationOutcome(fhir.Information("informational", msg)))
	default:
		write(c, status, v.Body)
	}
}

func (s *Server) parseResource(c *gin.Context, typ string) (*fhir.Resource, bool) {
	body, err := s.readBody(c)
	if err != nil {
		s.fail(c, err)
		return nil, false
	}
	r, err := fhir.Parse(body)
	if err != nil {
		s.fail(c, err)
		return nil, false
	}
	if r.Type != typ {
		s.fail(c, fhir.Errorf(fhir.KindInvalid, "resourceType", "resourceType does not match the URL's type %s", typ).WithCode("value"))
		return nil, false
	}
	return r, true
}

func (s *Server) create(c *gin.Context, typ string) {
	r, ok := s.parseResource(c, typ)
	if !ok {
		return
	}
	if !s.authorizeWrite(c, "create", typ, "", r.Bytes()) {
		return
	}
	if c.GetHeader("If-None-Exist") != "" && !s.authorizeConditional(c, "create", typ) {
		return
	}
	res, err := s.writer.Create(c.Request.Context(), s.cfg.Tenant, r, c.GetHeader("If-None-Exist"))
	if err != nil {
		s.fail(c, err)
		return
	}
	s.respondWrite(c, res)
}

func (s *Server) update(c *gin.Context, typ, id string) {
	r, ok := s.parseResource(c, typ)
	if !ok {
		return
	}
	ifMatch, err := ingest.ParseIfMatch(c.GetHeader("If-Match"))
	if err != nil {
		s.fail(c, err)
		return
	}
	if !s.authorizeWrite(c, "update", typ, id, r.Bytes()) {
		return
	}
	res, err := s.writer.Update(c.Request.Context(), s.cfg.Tenant, typ, id, r, ifMatch)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.respondWrite(c, res)
}

func (s *Server) conditionalUpdate(c *gin.Context, typ string) {
	if c.Request.URL.RawQuery == "" {
		s.fail(c, fhir.Errorf(fhir.KindMethodNotAllowed, "", "PUT needs an id or a search (conditional update)"))
		return
	}
	r, ok := s.parseResource(c, typ)
	if !ok {
		return
	}
	ifMatch, err := ingest.ParseIfMatch(c.GetHeader("If-Match"))
	if err != nil {
		s.fail(c, err)
		return
	}
	if !s.authorizeWrite(c, "update", typ, "", r.Bytes()) || !s.authorizeConditional(c, "update", typ) {
		return
	}
	res, err := s.writer.ConditionalUpdate(c.Request.Context(), s.cfg.Tenant, typ, stripControl(c.Request.URL.Query()).Encode(), r, ifMatch)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.respondWrite(c, res)
}

// stripControl drops _format and _pretty, which are not conditions.
func stripControl(v url.Values) url.Values {
	v.Del("_format")
	v.Del("_pretty")
	return v
}

func (s *Server) delete(c *gin.Context, typ, id string) {
	ifMatch, err := ingest.ParseIfMatch(c.GetHeader("If-Match"))
	if err != nil {
		s.fail(c, err)
		return
	}
	if !s.authorizeWrite(c, "delete", typ, id, nil) {
		return
	}
	res, err := s.writer.Delete(c.Request.Context(), s.cfg.Tenant, typ, id, ifMatch)
	if err != nil {
		s.fail(c, err)
		return
	}
	if res.Version.Version > 0 {
		setVersionHeaders(c, res.Version)
	}
	s.respondDelete(c, 1, res.Unchanged)
}

func (s *Server) respondDelete(c *gin.Context, n int, unchanged bool) {
	if parsePrefer(c.Request.Header.Values("Prefer")).Return == "minimal" {
		c.Status(http.StatusNoContent)
		return
	}
	msg := "deleted"
	switch {
	case unchanged:
		msg = "nothing to delete: the resource does not exist or is already deleted"
	case n != 1:
		msg = "deleted " + strconv.Itoa(n) + " resources"
	}
	write(c, http.StatusOK, fhir.OperationOutcome(fhir.Information("informational", msg)))
}

func (s *Server) conditionalDelete(c *gin.Context, typ string) {
	q := stripControl(c.Request.URL.Query())
	if len(q) == 0 {
		s.fail(c, fhir.Errorf(fhir.KindMethodNotAllowed, "", "DELETE needs an id or a search (conditional delete)"))
		return
	}
	if !s.authorizeWrite(c, "delete", typ, "", nil) || !s.authorizeConditional(c, "delete", typ) {
		return
	}
	n, err := s.writer.ConditionalDelete(c.Request.Context(), s.cfg.Tenant, typ, q.Encode(), false, 0)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.respondDelete(c, n, n == 0)
}
