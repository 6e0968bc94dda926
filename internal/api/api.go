// Package api is the FHIR R4 REST API over HTTP: routing, content
// negotiation, headers, Bundles and OperationOutcomes. It is the only
// package that imports gin. It turns HTTP into calls on the write path
// (ingest) and the read path (retrieve) and holds no business rules.
//
// It must never log request bodies, query strings or resource content
// (all may carry PHI): the access log records method, route, status,
// duration and request id.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/retrieve"
)

// Config is the API configuration.
type Config struct {
	Tenant       string // FHIRGATE_TENANT: the tenant every request writes and reads
	MaxBodyBytes int64  // FHIRGATE_MAX_BODY_BYTES
	BaseURL      string // FHIRGATE_BASE_URL: absolute base for links; "" derives it from the request
	Issuer       string // the token issuer, for the SMART configuration
}

// ConfigFromEnv reads the configuration, naming the variable at fault.
func ConfigFromEnv() (Config, error) {
	c := Config{Tenant: "default", MaxBodyBytes: 64 << 20, BaseURL: strings.TrimSuffix(os.Getenv("FHIRGATE_BASE_URL"), "/")}
	if v := os.Getenv("FHIRGATE_TENANT"); v != "" {
		if !fhir.ValidID(v) {
			return c, fmt.Errorf("FHIRGATE_TENANT=%q: want letters, digits, '-' or '.', at most 64", v)
		}
		c.Tenant = v
	}
	if v := os.Getenv("FHIRGATE_MAX_BODY_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1024 {
			return c, fmt.Errorf("FHIRGATE_MAX_BODY_BYTES=%q: want an integer of at least 1024", v)
		}
		c.MaxBodyBytes = n
	}
	if c.BaseURL != "" && !strings.HasPrefix(c.BaseURL, "http://") && !strings.HasPrefix(c.BaseURL, "https://") {
		return c, fmt.Errorf("FHIRGATE_BASE_URL=%q: want an absolute http(s) URL", c.BaseURL)
	}
	return c, nil
}

// Readiness reports whether the gateway can serve (the database answers).
type Readiness func(ctx context.Context) error

// Server is the HTTP API.
type Server struct {
	cfg    Config
	writer *ingest.Service
	reader *retrieve.Service
	ready  Readiness
	log    *slog.Logger
	caps   []byte // the CapabilityStatement, rendered once
	hl7    HL7Intake
	push   PushIntake
	sec    *Security
}

// New builds the API.
func New(cfg Config, w *ingest.Service, r *retrieve.Service, ready Readiness, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, writer: w, reader: r, ready: ready, log: log}
	s.caps = capabilityStatement()
	return s
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.HandleMethodNotAllowed = false
	e.Use(s.requestID, s.accessLog, s.recover, s.secure)
	e.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok\n") })
	e.GET("/readyz", func(c *gin.Context) {
		ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
		defer cancel()
		if err := s.ready(ctx); err != nil {
			c.String(http.StatusServiceUnavailable, "database unavailable\n")
			return
		}
		c.String(http.StatusOK, "ready\n")
	})
	e.GET("/.well-known/smart-configuration", s.smartConfiguration)
	e.GET("/audit/reports/:kind", s.auditReport)
	e.POST("/hl7v2", s.postHL7)
	e.POST("/ingest/fhir", s.negotiate, s.ingestFHIR)
	fhirGroup := e.Group("/fhir", s.negotiate)
	fhirGroup.Any("", s.route)
	fhirGroup.Any("/*path", s.route)
	e.NoRoute(func(c *gin.Context) {
		s.fail(c, fhir.Errorf(fhir.KindNotFound, "", "no such endpoint; the FHIR API is under /fhir"))
	})
	return e
}

type ctxKey int

const requestIDKey ctxKey = iota

// RequestID returns the request id carried by ctx.
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(requestIDKey).(string)
	return s
}

func (s *Server) requestID(c *gin.Context) {
	id := c.GetHeader("X-Request-ID")
	if id == "" || len(id) > 64 || !fhir.ValidID(id) {
		var b [12]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	c.Header("X-Request-ID", id)
	c.Request = c.Request.WithContext(context.WithValue(c.Request.Context(), requestIDKey, id))
	c.Next()
}

// accessLog logs one line per request without the query string or body.
func (s *Server) accessLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	status := c.Writer.Status()
	level := slog.LevelDebug
	if status >= 500 {
		level = slog.LevelError
	} else if status >= 400 {
		level = slog.LevelInfo
	}
	if !s.log.Enabled(c.Request.Context(), level) {
		return // skip building the record: this runs on every request
	}
	s.log.Log(c.Request.Context(), level, "request",
		"request_id", RequestID(c.Request.Context()),
		"method", c.Request.Method,
		"path", c.Request.URL.Path,
		"status", status,
		"duration_ms", float64(time.Since(start).Microseconds())/1000,
		"tenant", s.cfg.Tenant)
}

// recover turns a panic into a 500 OperationOutcome; the panic value is
// logged by type only, since it may hold request content.
func (s *Server) recover(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("panic in handler", "request_id", RequestID(c.Request.Context()), "panic_type", fmt.Sprintf("%T", v))
			if !c.Writer.Written() {
				s.fail(c, fhir.Errorf(fhir.KindInternal, "", "internal error"))
			}
			c.Abort()
		}
	}()
	c.Next()
}

// fail renders err as an OperationOutcome with the status of its kind.
func (s *Server) fail(c *gin.Context, err error) {
	fe := fhir.AsError(err)
	status := fe.Kind.Status()
	if fe.Kind == fhir.KindInternal || fe.Kind == fhir.KindUnavailable {
		s.log.Error("request failed", "request_id", RequestID(c.Request.Context()),
			"kind", status, "cause", safeCause(fe.Err))
	}
	if errors.Is(err, context.Canceled) {
		status = 499 // client went away; nobody reads the body
	}
	c.Data(status, contentTypeFHIR, fhir.OperationOutcome(fe.Issues...))
	c.Abort()
}

// safeCause describes an internal error without values that could be PHI:
// database errors by SQLSTATE and object names, others by type.
func safeCause(err error) string {
	if err == nil {
		return ""
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return fmt.Sprintf("postgres %s table=%s constraint=%s", pe.Code, pe.TableName, pe.ConstraintName)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "deadline exceeded"
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return "database connection failed"
	}
	return fmt.Sprintf("%T", errors.Unwrap(err))
}
