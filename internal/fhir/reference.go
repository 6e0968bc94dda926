package fhir

import (
	"regexp"
	"strings"
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

// ValidID reports whether s is a valid FHIR resource id.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// Reference is a parsed literal reference.
type Reference struct {
	Base    string // service base for absolute references, "" for relative
	Type    string
	ID      string
	Version string // from .../_history/[vid]
}

// ParseReference parses "Type/id", "Type/id/_history/vid" or an absolute
// URL ending in either. ok is false for anything else (urn:, #contained,
// conditional references).
func ParseReference(ref string) (Reference, bool) {
	if ref == "" || strings.HasPrefix(ref, "#") || strings.HasPrefix(ref, "urn:") || strings.ContainsAny(ref, "?") {
		return Reference{}, false
	}
	parts := strings.Split(ref, "/")
	var r Reference
	n := len(parts)
	if n >= 4 && parts[n-2] == "_history" {
		r.Version = parts[n-1]
		parts = parts[:n-2]
		n -= 2
	}
	if n < 2 {
		return Reference{}, false
	}
	r.Type, r.ID = parts[n-2], parts[n-1]
	if !isTypeName(r.Type) || !ValidID(r.ID) {
		return Reference{}, false
	}
	if n > 2 {
		r.Base = strings.Join(parts[:n-2], "/")
		if !strings.Contains(r.Base, "://") {
			return Reference{}, false
		}
	}
	return r, true
}

func isTypeName(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
