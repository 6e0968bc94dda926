package api

import (
	"context"
	"fmt"
	"github.com/fhirgate/fhirgate/internal/access"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/ingest"
)

// PushIntake stores resources an EMR pushed, through the same
// normalization, identity and provenance as HL7 v2.
type PushIntake interface {
	Store(ctx context.Context, tenant, source, origin, prefix string, in []ingest.Pushed) (*ingest.PushResult, error)
}

// WithPush enables POST /ingest/fhir and the X-Fhirgate-Source header on
// POST /fhir.
func (s *Server) WithPush(p PushIntake) *Server {
	s.push = p
	return s
}

// SourceHeader names the EMR source profile of a push on POST /fhir.
const SourceHeader = "X-Fhirgate-Source"

// ingestFHIR takes a Bundle (application/fhir+json) or an NDJSON bulk load
// (application/fhir+ndjson) from an EMR: ?source= names its source profile.
func (s *Server) ingestFHIR(c *gin.Context) {
	if s.push == nil {
		s.fail(c, fhir.Errorf(fhir.KindNotFound, "", "FHIR push intake is not enabled"))
		return
	}
	mt, _, _ := mime.ParseMediaType(c.GetHeader("Content-Type"))
	source := c.Query("source")
	switch mt {
	case "application/fhir+ndjson", "application/x-ndjson", "application/ndjson":
		if !s.authorizePush(c, source) {
			return
		}
		body, err := s.limitedBody(c)
		if err != nil {
			s.fail(c, err)
			return
		}
		in, err := ingest.ParseNDJSON(body)
		if err != nil {
			s.fail(c, err)
			return
		}
		res, err := s.push.Store(c.Request.Context(), s.cfg.Tenant, source, "ndjson", "line", in)
		pushTouched(c, res)
		if err != nil {
			s.fail(c, err)
			return
		}
		created := 0
		for _, ok := range res.Created {
			if ok {
				created++
			}
		}
		msg := fmt.Sprintf("stored %d resources (%d created, %d updated or unchanged); Provenance: %s",
			len(in), created, len(in)-created, strings.Join(res.Provenance, ", "))
		write(c, http.StatusOK, fhir.OperationOutcome(fhir.Information("informational", msg)))
	default:
		body, err := s.readBody(c)
		if err != nil {
			s.fail(c, err)
			return
		}
		s.pushBundle(c, body, source)
	}
}

// authorizePush decides, once per push, whether the subject may write for
// the source profile; a refusal has been answered when it returns false.
func (s *Server) authorizePush(c *gin.Context, source string) bool {
	if req := access.From(c.Request.Context()); req != nil {
		if err := req.AuthorizeSource(c.Request.Context(), "push", source); err != nil {
			s.fail(c, err)
			return false
		}
	}
	return true
}

// pushBundle stores a pushed Bundle and answers with a batch-response.
func (s *Server) pushBundle(c *gin.Context, body []byte, source string) {
	if !s.authorizePush(c, source) {
		return
	}
	in, origin, err := ingest.ParsePushBundle(body)
	if err != nil {
		s.fail(c, err)
		return
	}
	res, err := s.push.Store(c.Request.Context(), s.cfg.Tenant, source, origin, "Bundle.entry", in)
	pushTouched(c, res)
	if err != nil {
		s.fail(c, err)
		return
	}
	base := s.base(c)
	w := newBundle("batch-response")
	for i, v := range res.Versions {
		status := "200 OK"
		if res.Created[i] {
			status = "201 Created"
		}
		resp := map[string]string{"status": status,
			"location": v.Type + "/" + v.ID + "/_history/" + strconv.FormatInt(v.Version, 10),
			"etag":     `W/"` + strconv.FormatInt(v.Version, 10) + `"`, "lastModified": fhir.FormatInstant(v.LastUpdated)}
		w.entry(memberString("fullUrl", fullURL(base, v)), memberObject("response", resp))
	}
	write(c, http.StatusOK, w.bytes())
}

// pushTouched records what a push stored (all of it, or the chunks
// committed before a failure) for the request's audit record.
func pushTouched(c *gin.Context, res *ingest.PushResult) {
	if res == nil {
		return
	}
	for _, v := range res.Versions {
		touched(c, v.Type, v.ID, v.Body)
	}
}
