package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Kind classifies an error; the API turns it into an HTTP status.
type Kind int

// Error kinds. KindInternal is the zero value: any error without a kind.
const (
	KindInternal             Kind = iota // 500
	KindInvalid                          // 400: malformed or invalid input
	KindUnauthorized                     // 401
	KindForbidden                        // 403
	KindNotFound                         // 404
	KindMethodNotAllowed                 // 405
	KindNotAcceptable                    // 406
	KindConflict                         // 409: version conflict, duplicate
	KindGone                             // 410: deleted
	KindPreconditionFailed               // 412: If-Match / conditional mismatch
	KindTooLarge                         // 413
	KindUnsupportedMediaType             // 415
	KindUnprocessable                    // 422: business rule
	KindUnavailable                      // 503
)

// Status is the HTTP status for the kind.
func (k Kind) Status() int {
	switch k {
	case KindInvalid:
		return http.StatusBadRequest
	case KindUnauthorized:
		return http.StatusUnauthorized
	case KindForbidden:
		return http.StatusForbidden
	case KindNotFound:
		return http.StatusNotFound
	case KindMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case KindNotAcceptable:
		return http.StatusNotAcceptable
	case KindConflict:
		return http.StatusConflict
	case KindGone:
		return http.StatusGone
	case KindPreconditionFailed:
		return http.StatusPreconditionFailed
	case KindTooLarge:
		return http.StatusRequestEntityTooLarge
	case KindUnsupportedMediaType:
		return http.StatusUnsupportedMediaType
	case KindUnprocessable:
		return http.StatusUnprocessableEntity
	case KindUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// issueCode is the OperationOutcome.issue.code used when an Issue has none.
func (k Kind) issueCode() string {
	switch k {
	case KindInvalid:
		return "invalid"
	case KindUnauthorized:
		return "login"
	case KindForbidden:
		return "forbidden"
	case KindNotFound, KindGone:
		return "not-found"
	case KindMethodNotAllowed, KindNotAcceptable, KindUnsupportedMediaType:
		return "not-supported"
	case KindConflict, KindPreconditionFailed:
		return "conflict"
	case KindTooLarge:
		return "too-costly"
	case KindUnprocessable:
		return "business-rule"
	case KindUnavailable:
		return "transient"
	}
	return "exception"
}

// Issue is one OperationOutcome.issue.
type Issue struct {
	Severity    string   `json:"severity"`
	Code        string   `json:"code"`
	Diagnostics string   `json:"diagnostics,omitempty"`
	Expression  []string `json:"expression,omitempty"`
}

// Error is an error with a kind and the issues to report. Diagnostics must
// never quote PHI: name the element path, not its value.
type Error struct {
	Kind   Kind
	Issues []Issue
	Err    error // underlying cause, never shown to clients
}

// Errorf builds an Error with one issue. expr is the FHIRPath of the element
// at fault ("" when none). The issue code is derived from the kind.
func Errorf(kind Kind, expr, format string, args ...any) *Error {
	is := Issue{Severity: "error", Code: kind.issueCode(), Diagnostics: fmt.Sprintf(format, args...)}
	if expr != "" {
		is.Expression = []string{expr}
	}
	return &Error{Kind: kind, Issues: []Issue{is}}
}

// WithCode sets the issue code of every issue (e.g. "required", "value",
// "structure", "code-invalid", "duplicate", "processing").
func (e *Error) WithCode(code string) *Error {
	for i := range e.Issues {
		e.Issues[i].Code = code
	}
	return e
}

// Wrap records an underlying cause.
func (e *Error) Wrap(err error) *Error {
	e.Err = err
	return e
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, is := range e.Issues {
		if i > 0 {
			b.WriteString("; ")
		}
		if len(is.Expression) > 0 {
			b.WriteString(strings.Join(is.Expression, ","))
			b.WriteString(": ")
		}
		b.WriteString(is.Diagnostics)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf reports the kind of err: the Kind of the first *Error in its chain,
// KindInternal otherwise.
func KindOf(err error) Kind {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Kind
	}
	return KindInternal
}

// AsError returns the *Error in err's chain, or an internal error whose
// diagnostics do not expose err's text (it may carry SQL or PHI).
func AsError(err error) *Error {
	var fe *Error
	if errors.As(err, &fe) {
		return fe
	}
	return &Error{Kind: KindInternal, Err: err, Issues: []Issue{{
		Severity: "error", Code: "exception", Diagnostics: "internal error"}}}
}

// Outcome is an OperationOutcome resource.
type Outcome struct {
	ResourceType string  `json:"resourceType"`
	Issue        []Issue `json:"issue"`
}

// OperationOutcome renders issues as an OperationOutcome resource.
func OperationOutcome(issues ...Issue) []byte {
	b, err := json.Marshal(Outcome{ResourceType: "OperationOutcome", Issue: issues})
	if err != nil { // cannot happen: the struct holds only strings
		panic(err)
	}
	return b
}

// Information is a single informational issue, for successful responses.
func Information(code, diagnostics string) Issue {
	return Issue{Severity: "information", Code: code, Diagnostics: diagnostics}
}
