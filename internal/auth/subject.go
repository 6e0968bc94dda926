package auth

import "net/url"

// Subject is who makes a request, as authentication established it. It
// carries no PHI: ids, roles and claims only. The zero Subject is
// anonymous (unauthenticated).
type Subject struct {
	// ID is the token's "sub", or for a client certificate its subject
	// common name (EMR senders over mutual TLS).
	ID string `json:"id"`
	// Kind is one of KindUser, KindPatient, KindSystem, KindEMR.
	Kind string `json:"kind"`
	// ClientID is the OAuth client ("client_id", else "azp").
	ClientID string `json:"client_id,omitempty"`
	// TokenID is the token's "jti" (audited with every request).
	TokenID string `json:"token_id,omitempty"`
	// Issuer is the token's "iss".
	Issuer string `json:"issuer,omitempty"`
	// Roles are fhirgate roles from the "fhirgate_roles" claim:
	// RoleClinician, RoleAuditor, RoleAdmin, RoleEMR, RoleRestricted
	// (may see confidentiality R and V), RoleBreakGlass (may declare
	// emergency access).
	Roles []string `json:"roles,omitempty"`
	// Scopes are the SMART scopes granted ("scope" claim, space separated).
	Scopes []Scope `json:"scopes,omitempty"`
	// Patient is the SMART launch context "patient" (a Patient id).
	Patient string `json:"patient,omitempty"`
	// FHIRUser is the SMART "fhirUser" claim, e.g. "Practitioner/123".
	FHIRUser string `json:"fhir_user,omitempty"`
	// Organization is the Organization id the user acts for
	// ("organization" claim).
	Organization string `json:"organization,omitempty"`
	// CareTeam lists the Patient ids whose care team the user is on
	// ("care_team" claim).
	CareTeam []string `json:"care_team,omitempty"`
	// PurposeOfUse is the HL7 PurposeOfUse code of the request
	// ("purpose_of_use" claim, or the X-Purpose-Of-Use header when the
	// token allows it): TREAT when absent; ETREAT and BTG are break-glass.
	PurposeOfUse string `json:"purpose_of_use"`
	// Consents are consent codes on record for this access ("consents"
	// claim), e.g. "42CFRPart2" for substance-use records.
	Consents []string `json:"consents,omitempty"`
	// Sources are the EMR source profiles a sender may write as.
	Sources []string `json:"sources,omitempty"`
}

// Subject kinds.
const (
	KindUser    = "user"    // a clinician or staff member through an app
	KindPatient = "patient" // a patient-facing app
	KindSystem  = "system"  // a backend service (client credentials)
	KindEMR     = "emr"     // an EMR sender (mutual TLS or a system token with RoleEMR)
)

// Roles.
const (
	RoleClinician  = "clinician"
	RoleAuditor    = "auditor"
	RoleAdmin      = "admin"
	RoleEMR        = "emr"
	RoleRestricted = "restricted" // may see confidentiality R (restricted) and V (very restricted)
	RoleBreakGlass = "break-glass"
)

// Scope is one SMART on FHIR scope, v1 ("patient/Observation.read") or v2
// ("patient/Observation.rs?category=laboratory").
type Scope struct {
	Raw     string `json:"raw"`
	Context string `json:"context"` // "patient", "user" or "system"
	Type    string `json:"type"`    // a resource type, or "*"
	Create  bool   `json:"c"`
	Read    bool   `json:"r"`
	Update  bool   `json:"u"`
	Delete  bool   `json:"d"`
	Search  bool   `json:"s"`
	// Params restricts a v2 granular scope to resources matching a search
	// ("category=laboratory"); nil when unrestricted.
	Params url.Values `json:"params,omitempty"`
}

// HasRole reports whether the subject has role r.
func (s *Subject) HasRole(r string) bool {
	if s == nil {
		return false
	}
	for _, x := range s.Roles {
		if x == r {
			return true
		}
	}
	return false
}
