package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/fhirgate/fhirgate/internal/fhir"
)

const contentTypeFHIR = "application/fhir+json; charset=utf-8"

// negotiate refuses what the API cannot produce (406) before any work.
func (s *Server) negotiate(c *gin.Context) {
	if f := c.Query("_format"); f != "" {
		switch f {
		case "json", "application/json", "application/fhir+json":
		default:
			s.fail(c, fhir.Errorf(fhir.KindNotAcceptable, "", "_format: only JSON is supported"))
			return
		}
	} else if !acceptsJSON(c.GetHeader("Accept")) {
		s.fail(c, fhir.Errorf(fhir.KindNotAcceptable, "", "only application/fhir+json is supported"))
		return
	}
	c.Next()
}

func acceptsJSON(accept string) bool {
	if strings.TrimSpace(accept) == "" {
		return true
	}
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if q, ok := params["q"]; ok && (q == "0" || q == "0.0" || q == "0.00" || q == "0.000") {
			continue
		}
		switch mt {
		case "application/fhir+json", "application/json", "application/json+fhir", "*/*", "application/*":
			return true
		}
	}
	return false
}

// readBody reads a FHIR JSON request body, enforcing content type (415)
// and size (413).
func (s *Server) readBody(c *gin.Context) ([]byte, error) {
	ct := c.GetHeader("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil {
		return nil, fhir.Errorf(fhir.KindUnsupportedMediaType, "", "Content-Type must be application/fhir+json")
	}
	switch mt {
	case "application/fhir+json", "application/json", "application/json+fhir":
	default:
		return nil, fhir.Errorf(fhir.KindUnsupportedMediaType, "", "Content-Type %s is not supported; use application/fhir+json", mt)
	}
	return s.limitedBody(c)
}

func (s *Server) limitedBody(c *gin.Context) ([]byte, error) {
	b, err := s.readLimited(c)
	if err == nil && len(bytes.TrimSpace(b)) == 0 {
		return nil, fhir.Errorf(fhir.KindInvalid, "", "the request body is empty").WithCode("required")
	}
	return b, err
}

// readLimited reads the body up to FHIRGATE_MAX_BODY_BYTES (413 beyond).
func (s *Server) readLimited(c *gin.Context) ([]byte, error) {
	r := http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxBodyBytes)
	b, err := io.ReadAll(r)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, fhir.Errorf(fhir.KindTooLarge, "", "the request body exceeds %d bytes", s.cfg.MaxBodyBytes)
	}
	if err != nil {
		return nil, fhir.Errorf(fhir.KindInvalid, "", "the request body could not be read").Wrap(err)
	}
	return b, nil
}

// prefer is the parsed Prefer header.
type prefer struct {
	Return string // minimal, representation, OperationOutcome; "" when not asked (each interaction has its default)
	Strict bool   // handling=strict
}

func parsePrefer(h []string) prefer {
	var p prefer
	for _, line := range h {
		for _, part := range strings.Split(line, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			v = strings.Trim(strings.TrimSpace(v), `"`)
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "return":
				switch v {
				case "minimal", "representation", "OperationOutcome":
					p.Return = v
				}
			case "handling":
				p.Strict = v == "strict"
			}
		}
	}
	return p
}

// write sends a FHIR JSON body, indented when _pretty=true.
func write(c *gin.Context, status int, body []byte) {
	if c.Query("_pretty") == "true" {
		var buf bytes.Buffer
		if json.Indent(&buf, body, "", "  ") == nil {
			body = buf.Bytes()
		}
	}
	c.Data(status, contentTypeFHIR, body)
}
