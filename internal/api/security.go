package api

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/fhirgate/fhirgate/internal/access"
	"github.com/fhirgate/fhirgate/internal/audit"
	"github.com/fhirgate/fhirgate/internal/auth"
	"github.com/fhirgate/fhirgate/internal/authz"
	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/ingest"
)

// Authenticator establishes who makes a request (internal/auth).
type Authenticator interface {
	Authenticate(r *http.Request) (*auth.Subject, error)
}

// AuditLog appends audit records durably (internal/audit).
type AuditLog interface {
	Append(ctx context.Context, rec audit.Record) error
}

// Security is what the API needs to authenticate, authorize and audit.
// With it, every request but the health checks, the CapabilityStatement
// and the SMART configuration needs credentials, every read and write is
// decided by the policy, and every request — allowed, denied or failed —
// is audited before its response is sent: if the audit record cannot be
// committed the response is replaced by a 503.
type Security struct {
	Authn  Authenticator
	Policy access.Policy
	Orgs   access.Organizations
	Audit  AuditLog
	// Reader serves the auditor API (nil: no auditor API).
	Reader AuditReader
}

// WithSecurity turns authentication, authorization and auditing on.
func (s *Server) WithSecurity(sec Security) *Server {
	s.sec = &sec
	return s
}

// public reports whether a path is served without credentials.
func public(method, path string) bool {
	switch path {
	case "/healthz", "/readyz", "/fhir/metadata", "/fhir/.well-known/smart-configuration", "/.well-known/smart-configuration":
		return method == http.MethodGet || method == http.MethodHead
	}
	return false
}

// secure authenticates, prepares the access state, buffers the response
// and audits the request before releasing the response.
func (s *Server) secure(c *gin.Context) {
	if s.sec == nil || public(c.Request.Method, c.Request.URL.Path) {
		c.Next()
		return
	}
	start := time.Now().UTC()
	ctx := c.Request.Context()
	env := authz.Env{Time: start, ClientIP: clientIP(c.Request)}
	subj, err := s.sec.Authn.Authenticate(c.Request)
	if err == nil {
		err = auth.ApplyPurposeHeader(subj, c.Request)
	}
	interaction, typ := classify(c.Request.Method, c.Request.URL.Path)
	req := access.NewRequest(subj, env, s.cfg.Tenant, s.sec.Policy, s.sec.Orgs)
	req.SetAction(interaction, typ)
	if c.Request.Method == http.MethodGet && c.Request.URL.RawQuery != "" {
		req.SetQuery(c.Request.URL.RawQuery)
	}
	c.Request = c.Request.WithContext(access.With(ctx, req))

	buf := &bufferedWriter{ResponseWriter: c.Writer, status: http.StatusOK}
	c.Writer = buf
	if err != nil {
		rec := req.Record(RequestID(ctx), 0)
		rec.Interaction = audit.InteractionLoginFailed
		rec.Reason = auth.Reason(err)
		status := http.StatusUnauthorized
		e := fhir.Errorf(fhir.KindUnauthorized, "", "authentication failed: %s", auth.Reason(err)).WithCode("login")
		switch {
		case errors.Is(err, auth.ErrKeysUnavailable):
			status = http.StatusServiceUnavailable
			e = fhir.Errorf(fhir.KindUnavailable, "", "the token signing keys are unavailable; try again later")
		case errors.Is(err, auth.ErrPurposeNotAllowed):
			status = http.StatusForbidden
			e = fhir.Errorf(fhir.KindForbidden, "", "%s is not allowed for this token", auth.PurposeHeader).WithCode("forbidden")
			rec.Interaction = audit.InteractionBreakGlass
		}
		if status == http.StatusUnauthorized {
			buf.Header().Set("WWW-Authenticate", `Bearer realm="fhirgate"`)
		}
		rec.Outcome = audit.HTTPOutcome(status)
		c.Data(status, contentTypeFHIR, fhir.OperationOutcome(e.Issues...))
		c.Abort()
		s.release(c, buf, rec)
		return
	}
	c.Next()
	if buf.passthrough {
		return // committed early (a streamed report)
	}
	rec := req.Record(RequestID(ctx), buf.status)
	s.release(c, buf, rec)
}

// commitEarly commits the request's audit record now, with outcome 200,
// and lets the response stream straight to the client: for reports too
// large to hold back. The caller has validated everything that could make
// it fail short of a broken connection.
func (s *Server) commitEarly(c *gin.Context) bool {
	buf, ok := c.Writer.(*bufferedWriter)
	req := access.From(c.Request.Context())
	if !ok || req == nil || s.sec == nil {
		return true
	}
	rec := req.Record(RequestID(c.Request.Context()), http.StatusOK)
	if err := s.sec.Audit.Append(context.WithoutCancel(c.Request.Context()), rec); err != nil {
		s.log.Error("audit record not committed: request refused", "request_id", rec.RequestID, "cause", err.Error())
		s.fail(c, fhir.Errorf(fhir.KindUnavailable, "", "the access log is unavailable; try again later"))
		buf.flush()
		buf.passthrough = true
		return false
	}
	if buf.body.Len() > 0 {
		buf.flush()
	}
	buf.passthrough = true
	return true
}

// release commits the audit record, then sends the buffered response, or
// a 503 when the record could not be committed.
func (s *Server) release(c *gin.Context, buf *bufferedWriter, rec audit.Record) {
	err := s.sec.Audit.Append(context.WithoutCancel(c.Request.Context()), rec)
	if err != nil {
		// Audit errors carry no PHI (the record holds ids; a failure to
		// seal its query names the key, not the text), so the whole
		// error is logged: the operator needs it.
		s.log.Error("audit record not committed: request refused", "request_id", rec.RequestID, "cause", err.Error())
		h := buf.ResponseWriter.Header()
		for k := range h {
			delete(h, k)
		}
		h.Set("X-Request-ID", rec.RequestID)
		h.Set("Content-Type", contentTypeFHIR)
		buf.ResponseWriter.WriteHeader(http.StatusServiceUnavailable)
		_, _ = buf.ResponseWriter.Write(fhir.OperationOutcome(fhir.Errorf(fhir.KindUnavailable, "",
			"the access log is unavailable, so no response can be released; try again later").Issues...))
		return
	}
	buf.flush()
}

// classify names the interaction and resource type of a request for its
// audit record (handlers refine it when they know more).
func classify(method, path string) (interaction, typ string) {
	switch {
	case path == "/hl7v2":
		return audit.InteractionHL7, ""
	case path == "/ingest/fhir":
		return audit.InteractionPush, ""
	case strings.HasPrefix(path, "/audit"):
		return audit.InteractionAuditQuery, "AuditEvent"
	}
	p := strings.Trim(strings.TrimPrefix(path, "/fhir"), "/")
	var seg []string
	if p != "" {
		seg = strings.Split(p, "/")
	}
	if len(seg) > 0 {
		typ = seg[0]
	}
	switch {
	case len(seg) == 0:
		return audit.InteractionTransaction, ""
	case seg[0] == "_history":
		return audit.InteractionHistory, ""
	case typ == "AuditEvent":
		return audit.InteractionAuditQuery, typ
	case len(seg) == 1:
		switch method {
		case http.MethodGet, http.MethodHead:
			return audit.InteractionSearch, typ
		case http.MethodPost:
			return audit.InteractionCreate, typ
		case http.MethodPut:
			return audit.InteractionUpdate, typ
		case http.MethodDelete:
			return audit.InteractionDelete, typ
		}
	case len(seg) == 2 && seg[1] == "_search":
		return audit.InteractionSearch, typ
	case len(seg) == 2 && seg[1] == "_history":
		return audit.InteractionHistory, typ
	case len(seg) == 2:
		switch method {
		case http.MethodPut:
			return audit.InteractionUpdate, typ
		case http.MethodDelete:
			return audit.InteractionDelete, typ
		}
		return audit.InteractionRead, typ
	case len(seg) == 3:
		return audit.InteractionHistory, typ
	case len(seg) == 4:
		return audit.InteractionVRead, typ
	}
	return strings.ToLower(method), typ
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// authorizeWrite decides a write of one resource (body nil for a delete),
// and, when the resource exists, the same interaction on what is stored:
// a subject may not overwrite or delete a resource outside its reach.
func (s *Server) authorizeWrite(c *gin.Context, interaction, typ, id string, body []byte) bool {
	req := access.From(c.Request.Context())
	if req == nil {
		return true
	}
	ctx := c.Request.Context()
	if err := req.Authorize(ctx, interaction, typ, id, body); err != nil {
		s.fail(c, err)
		return false
	}
	if id != "" {
		if cur, ok, err := s.reader.Stored(ctx, s.cfg.Tenant, typ, id); err != nil {
			s.fail(c, err)
			return false
		} else if ok && cur.Body != nil {
			if err := req.Authorize(ctx, interaction, typ, id, cur.Body); err != nil {
				s.fail(c, err)
				return false
			}
		}
	}
	return true
}

// authorizeConditional refuses conditional operations to subjects who may
// not see every resource of the type: the number of matches would reveal
// resources hidden from them.
func (s *Server) authorizeConditional(c *gin.Context, interaction, typ string) bool {
	req := access.From(c.Request.Context())
	if req == nil {
		return true
	}
	ok, err := req.Unrestricted(c.Request.Context(), "search", typ)
	if err != nil {
		s.fail(c, err)
		return false
	}
	if !ok {
		s.fail(c, fhir.Errorf(fhir.KindForbidden, "", "conditional %s of %s needs access to every %s: its matches would reveal resources outside your access", interaction, typ, typ).WithCode("forbidden"))
		return false
	}
	return true
}

// touched records resources a request wrote, for its audit record.
func touched(c *gin.Context, typ, id string, body []byte) {
	if req := access.From(c.Request.Context()); req != nil {
		req.Touched(typ, id, body)
	}
}

// bufferedWriter holds a response until its audit record is committed.
type bufferedWriter struct {
	gin.ResponseWriter
	status  int
	written bool
	body    bytes.Buffer
	// passthrough: the audit record is committed; writes go straight out.
	passthrough bool
}

func (w *bufferedWriter) WriteHeader(code int) {
	if w.passthrough {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	if code > 0 && !w.written {
		w.status = code
	}
}

func (w *bufferedWriter) WriteHeaderNow() {
	if w.passthrough {
		w.ResponseWriter.WriteHeaderNow()
		return
	}
	w.written = true
}

func (w *bufferedWriter) Write(b []byte) (int, error) {
	if w.passthrough {
		return w.ResponseWriter.Write(b)
	}
	w.written = true
	return w.body.Write(b)
}

func (w *bufferedWriter) WriteString(s string) (int, error) {
	if w.passthrough {
		return w.ResponseWriter.WriteString(s)
	}
	w.written = true
	return w.body.WriteString(s)
}

func (w *bufferedWriter) Status() int {
	if w.passthrough {
		return w.ResponseWriter.Status()
	}
	return w.status
}

func (w *bufferedWriter) Size() int {
	if w.passthrough {
		return w.ResponseWriter.Size()
	}
	return w.body.Len()
}

func (w *bufferedWriter) Written() bool {
	if w.passthrough {
		return w.ResponseWriter.Written()
	}
	return w.written || w.body.Len() > 0
}

func (w *bufferedWriter) Flush() {
	if w.passthrough {
		w.ResponseWriter.Flush()
	}
}

// flush sends what was buffered.
func (w *bufferedWriter) flush() {
	w.ResponseWriter.WriteHeader(w.status)
	if w.body.Len() > 0 {
		_, _ = w.ResponseWriter.Write(w.body.Bytes())
		w.body.Reset()
	} else {
		w.ResponseWriter.WriteHeaderNow()
	}
}

// smartConfiguration is the SMART App Launch discovery document: which
// scopes and capabilities the gateway understands. Tokens come from the
// deployment's authorization server (FHIRGATE_JWT_ISSUER).
func (s *Server) smartConfiguration(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{
		"issuer":                                s.cfg.Issuer,
		"token_endpoint_auth_methods_supported": []string{"private_key_jwt", "client_secret_basic"},
		"grant_types_supported":                 []string{"authorization_code", "client_credentials"},
		"scopes_supported": []string{"openid", "fhirUser", "launch/patient", "patient/*.rs", "user/*.cruds", "system/*.cruds",
			"patient/*.read", "user/*.read", "user/*.write", "system/*.read"},
		"capabilities": []string{"permission-v1", "permission-v2", "context-standalone-patient", "client-confidential-asymmetric"},
	})
}

// authorizeBundle decides every entry of a transaction or batch before
// any is processed: writes as single writes, GET entries by the read path
// when they run. Conditional entries need access to every resource of
// their type.
func (s *Server) authorizeBundle(c *gin.Context, b *ingest.Bundle) bool {
	req := access.From(c.Request.Context())
	if req == nil {
		return true
	}
	for _, e := range b.Entries {
		typ, id, query := e.Target()
		var interaction string
		switch e.Method {
		case http.MethodGet:
			continue
		case http.MethodPost:
			interaction = "create"
		case http.MethodPut, http.MethodPatch:
			interaction = "update"
		case http.MethodDelete:
			interaction = "delete"
		default:
			continue
		}
		if query != "" || e.IfNoneExist != "" {
			if !s.authorizeConditional(c, interaction, typ) {
				return false
			}
		}
		for _, t := range e.ConditionalReferenceTypes() {
			if !s.authorizeConditional(c, "search", t) {
				return false
			}
		}
		if !s.authorizeWrite(c, interaction, typ, id, e.Raw) {
			return false
		}
	}
	return true
}
