package auth

import (
	"fmt"
	"net/http"
	"strings"
)

// PurposeHeader lets a break-glass user declare emergency access.
const PurposeHeader = "X-Purpose-Of-Use"

// ApplyPurposeHeader applies r's X-Purpose-Of-Use header to s. Without the
// header it does nothing. The header may only be used by a subject with
// RoleBreakGlass, and only to declare ETREAT or BTG (or return to TREAT);
// otherwise s is left unchanged and the error matches
// ErrPurposeNotAllowed (answer 403 and audit the attempt).
func ApplyPurposeHeader(s *Subject, r *http.Request) error {
	vs := r.Header.Values(PurposeHeader)
	if len(vs) == 0 {
		return nil
	}
	if len(vs) > 1 {
		return fmt.Errorf("%w: more than one %s header", ErrPurposeNotAllowed, PurposeHeader)
	}
	v := strings.ToUpper(strings.TrimSpace(vs[0]))
	switch v {
	case PurposeEmergencyTreatment, PurposeBreakTheGlass, PurposeTreatment:
	default:
		return fmt.Errorf("%w: %s accepts ETREAT, BTG or TREAT", ErrPurposeNotAllowed, PurposeHeader)
	}
	if s == nil || !s.HasRole(RoleBreakGlass) {
		return fmt.Errorf("%w: %s needs the %s role", ErrPurposeNotAllowed, PurposeHeader, RoleBreakGlass)
	}
	s.PurposeOfUse = v
	return nil
}
