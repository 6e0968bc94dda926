package api

import (
	"context"
	"github.com/fhirgate/fhirgate/internal/access"
	"mime"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/fhirgate/fhirgate/internal/fhir"
)

// HL7Intake handles one HL7 v2 message and returns the ACK to send (nil
// when the sender asked for none).
type HL7Intake interface {
	Handle(ctx context.Context, tenant string, raw []byte) []byte
	// Source names the source profile a message maps under; ok is false
	// when its MSH cannot be read.
	Source(raw []byte) (source string, ok bool)
}

// WithHL7 enables POST /hl7v2.
func (s *Server) WithHL7(h HL7Intake) *Server {
	s.hl7 = h
	return s
}

var hl7MediaTypes = map[string]bool{
	"x-application/hl7-v2+er7": true,
	"application/hl7-v2":       true,
	"application/hl7-v2+er7":   true,
	"text/plain":               true,
}

// postHL7 takes one HL7 v2 message (or a batch the intake splits) over
// HTTP and answers with its ACK, as MLLP would: 200 with the ACK whether it
// is positive or not, since the ACK itself says what happened.
func (s *Server) postHL7(c *gin.Context) {
	if s.hl7 == nil {
		s.fail(c, fhir.Errorf(fhir.KindNotFound, "", "HL7 v2 intake is not enabled"))
		return
	}
	ct := c.GetHeader("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !hl7MediaTypes[mt] {
		s.fail(c, fhir.Errorf(fhir.KindUnsupportedMediaType, "", "POST /hl7v2 takes x-application/hl7-v2+er7 or text/plain"))
		return
	}
	body, err := s.limitedBody(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	if req := access.From(c.Request.Context()); req != nil {
		// Senders write only their own sources: the message's source
		// profile (by MSH-3/MSH-4) must be one of the subject's. A message
		// whose MSH cannot be read is decided by type and then NAKed.
		var err error
		if src, ok := s.hl7.Source(body); ok {
			err = req.AuthorizeSource(c.Request.Context(), "hl7", src)
		} else {
			err = req.AuthorizeType(c.Request.Context(), "hl7", "")
		}
		if err != nil {
			s.fail(c, err)
			return
		}
	}
	ack := s.hl7.Handle(c.Request.Context(), s.cfg.Tenant, body)
	if ack == nil {
		c.Status(http.StatusNoContent)
		return
	}
	c.Data(http.StatusOK, mt+"; charset=utf-8", ack)
}
