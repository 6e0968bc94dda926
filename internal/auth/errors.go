package auth

import (
	"errors"
	"fmt"
)

// ErrNoCredentials: the request carries no credentials fhirgate accepts (no
// bearer token, no verified client certificate). A token in the query
// string is not a credential.
var ErrNoCredentials = errors.New("no credentials")

// ErrInvalidToken: a bearer token was presented and refused. Errors that
// match it with errors.Is are *TokenError values carrying a reason that is
// safe to show to the client.
var ErrInvalidToken = errors.New("invalid token")

// ErrInvalidCertificate: a client certificate was presented but cannot be
// mapped to a subject.
var ErrInvalidCertificate = errors.New("invalid client certificate")

// ErrKeysUnavailable: the token might be valid but its signing keys cannot
// be fetched (JWKS endpoint down and no usable cached keys). Not the
// client's fault: answer 503, not 401.
var ErrKeysUnavailable = errors.New("token signing keys unavailable")

// ErrPurposeNotAllowed: an X-Purpose-Of-Use header the subject may not use.
var ErrPurposeNotAllowed = errors.New("purpose of use not allowed")

// TokenError is a refused bearer token. Reason is one of a fixed set of
// short phrases ("expired", "wrong audience", "signature", "algorithm not
// allowed", "unknown key", "malformed", ...) and never contains any part
// of the token.
type TokenError struct {
	Reason string
	cause  error // for logs only; never shown to clients
}

func (e *TokenError) Error() string { return "invalid token: " + e.Reason }

// Is makes errors.Is(err, ErrInvalidToken) true.
func (e *TokenError) Is(target error) bool { return target == ErrInvalidToken }

// Unwrap returns the underlying cause (a JOSE library error), if any.
func (e *TokenError) Unwrap() error { return e.cause }

func tokenErr(reason string, cause error) error { return &TokenError{Reason: reason, cause: cause} }

// Reason returns a message about err that is safe to show to the client in
// an OperationOutcome: the TokenError reason, or a generic text.
func Reason(err error) string {
	var te *TokenError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &te):
		return te.Error()
	case errors.Is(err, ErrNoCredentials):
		return err.Error() + ": send Authorization: Bearer <token>"
	case errors.Is(err, ErrInvalidCertificate):
		return ErrInvalidCertificate.Error()
	case errors.Is(err, ErrKeysUnavailable):
		return ErrKeysUnavailable.Error()
	case errors.Is(err, ErrPurposeNotAllowed):
		return err.Error() // fixed texts only
	}
	return "authentication failed"
}

func certErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidCertificate}, a...)...)
}
