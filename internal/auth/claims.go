package auth

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"
	"unicode"
)

// Claims are the token claims fhirgate reads, as minted by DevKey.Mint and
// as parsed from a verified token (the registered claims iss, aud, exp, nbf
// and iat are checked separately).
type Claims struct {
	// Subject ("sub") is required.
	Subject string `json:"sub,omitempty"`
	// Issuer ("iss"); Mint uses DevIssuer when empty.
	Issuer string `json:"iss,omitempty"`
	// Audience ("aud"); Mint uses DefaultAudience when empty.
	Audience string `json:"-"`
	// TokenID ("jti"); Mint makes a random one when empty.
	TokenID  string `json:"jti,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	AZP      string `json:"azp,omitempty"`
	// Scope is the space-separated SMART scopes ("scope"). Mint uses
	// DefaultScope(Roles...) when empty unless NoScope is set.
	Scope        string     `json:"scope,omitempty"`
	Patient      string     `json:"patient,omitempty"`
	FHIRUser     string     `json:"fhirUser,omitempty"`
	Roles        stringList `json:"fhirgate_roles,omitempty"`
	Organization string     `json:"organization,omitempty"`
	CareTeam     stringList `json:"care_team,omitempty"`
	PurposeOfUse string     `json:"purpose_of_use,omitempty"`
	Consents     stringList `json:"consents,omitempty"`
	Sources      stringList `json:"sources,omitempty"`

	// Minting options (not claims).
	NoScope   bool          `json:"-"` // mint without a "scope" claim
	TTL       time.Duration `json:"-"` // lifetime for DevKey.Mint; 1h when zero
	IssuedAt  time.Time     `json:"-"` // "iat" and "nbf"; now when zero
	NotBefore time.Time     `json:"-"` // overrides "nbf"
	Expiry    time.Time     `json:"-"` // overrides "exp" (IssuedAt+TTL)
	// Extra claims to add (tests: wrong types, unknown claims). They never
	// override the claims above.
	Extra map[string]any `json:"-"`
}

// stringList is a claim that is an array of strings; a single string is
// accepted as a one-element list.
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		if one == "" {
			*l = nil
		} else {
			*l = stringList{one}
		}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("want a string or an array of strings")
	}
	*l = many
	return nil
}

// scopeClaim is the "scope" claim: a space-separated string, or (as some
// servers send it) an array of strings.
type scopeClaim string

func (s *scopeClaim) UnmarshalJSON(b []byte) error {
	var l stringList
	if err := l.UnmarshalJSON(b); err != nil {
		return err
	}
	*s = scopeClaim(strings.Join(l, " "))
	return nil
}

// parsedClaims is what verification decodes from the payload.
type parsedClaims struct {
	Subject      string     `json:"sub"`
	TokenID      string     `json:"jti"`
	ClientID     string     `json:"client_id"`
	AZP          string     `json:"azp"`
	Scope        scopeClaim `json:"scope"`
	Patient      string     `json:"patient"`
	FHIRUser     string     `json:"fhirUser"`
	Roles        stringList `json:"fhirgate_roles"`
	Organization string     `json:"organization"`
	CareTeam     stringList `json:"care_team"`
	PurposeOfUse string     `json:"purpose_of_use"`
	Consents     stringList `json:"consents"`
	Sources      stringList `json:"sources"`
}

// Limits on claim values that end up in logs and policy input.
const (
	maxClaimLen  = 256
	maxListItems = 1000
)

// PurposeTreatment is the default purpose of use.
const PurposeTreatment = "TREAT"

// Break-glass purposes of use.
const (
	PurposeEmergencyTreatment = "ETREAT"
	PurposeBreakTheGlass      = "BTG"
)

// subjectFromClaims builds the Subject of a verified token, or returns a
// safe reason why the claims are unacceptable.
func subjectFromClaims(c *parsedClaims, issuer string) (*Subject, string) {
	if c.Subject == "" {
		return nil, "missing subject"
	}
	for _, v := range []string{c.Subject, c.TokenID, c.ClientID, c.AZP, c.Patient, c.FHIRUser, c.Organization, c.PurposeOfUse} {
		if !safeClaim(v) {
			return nil, "invalid claims"
		}
	}
	for _, l := range []stringList{c.Roles, c.CareTeam, c.Consents, c.Sources} {
		if len(l) > maxListItems {
			return nil, "invalid claims"
		}
		for _, v := range l {
			if v == "" || !safeClaim(v) {
				return nil, "invalid claims"
			}
		}
	}
	if c.PurposeOfUse != "" && !validPurpose(c.PurposeOfUse) {
		return nil, "invalid claims"
	}
	s := &Subject{
		ID:           c.Subject,
		ClientID:     c.ClientID,
		TokenID:      c.TokenID,
		Issuer:       issuer,
		Roles:        dedupe(c.Roles),
		Scopes:       ParseScopes(string(c.Scope)),
		Patient:      c.Patient,
		FHIRUser:     c.FHIRUser,
		Organization: c.Organization,
		CareTeam:     dedupe(c.CareTeam),
		PurposeOfUse: c.PurposeOfUse,
		Consents:     dedupe(c.Consents),
		Sources:      dedupe(c.Sources),
	}
	if s.ClientID == "" {
		s.ClientID = c.AZP
	}
	if s.PurposeOfUse == "" {
		s.PurposeOfUse = PurposeTreatment
	}
	s.Kind = kindOf(s)
	return s, ""
}

// kindOf: KindPatient when any patient/ scope and a patient launch context;
// KindEMR for RoleEMR with system/ scopes; KindSystem when only system/
// scopes; else KindUser.
func kindOf(s *Subject) string {
	var patient, user, system bool
	for _, sc := range s.Scopes {
		switch sc.Context {
		case "patient":
			patient = true
		case "user":
			user = true
		case "system":
			system = true
		}
	}
	switch {
	case patient && s.Patient != "":
		return KindPatient
	case system && s.HasRole(RoleEMR):
		return KindEMR
	case system && !user && !patient:
		return KindSystem
	}
	return KindUser
}

// safeClaim refuses over-long values and control characters (claims are
// logged and audited).
func safeClaim(v string) bool {
	if len(v) > maxClaimLen {
		return false
	}
	for _, r := range v {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return false
		}
	}
	return true
}

// validPurpose accepts an HL7 PurposeOfUse-like code: letters, digits, '-'
// and '_', at most 64.
func validPurpose(p string) bool {
	if p == "" || len(p) > 64 {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func dedupe(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	out := make([]string, 0, len(l))
	for _, v := range l {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// DefaultScope is the scope `fhirgate token` (and DevKey.Mint) grants for
// roles when none is given: clinician and admin "user/*.cruds", auditor
// "user/AuditEvent.rs", patient "patient/*.rs", emr "system/*.cruds".
func DefaultScope(roles ...string) string {
	var out []string
	add := func(s string) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, r := range roles {
		switch r {
		case RoleClinician, RoleAdmin:
			add("user/*.cruds")
		case RoleAuditor:
			add("user/AuditEvent.rs")
		case RolePatient:
			add("patient/*.rs")
		case RoleEMR:
			add("system/*.cruds")
		}
	}
	return strings.Join(out, " ")
}

// Clone returns a deep copy of s.
func (s *Subject) Clone() *Subject {
	if s == nil {
		return nil
	}
	c := *s
	c.Roles = slices.Clone(s.Roles)
	c.CareTeam = slices.Clone(s.CareTeam)
	c.Consents = slices.Clone(s.Consents)
	c.Sources = slices.Clone(s.Sources)
	if s.Scopes != nil {
		c.Scopes = make([]Scope, len(s.Scopes))
		for i, sc := range s.Scopes {
			if sc.Params != nil {
				p := make(map[string][]string, len(sc.Params))
				for k, v := range sc.Params {
					p[k] = slices.Clone(v)
				}
				sc.Params = p
			}
			c.Scopes[i] = sc
		}
	}
	return &c
}

// BreakGlass reports whether the request declares emergency access
// (purpose of use ETREAT or BTG).
func (s *Subject) BreakGlass() bool {
	return s != nil && (s.PurposeOfUse == PurposeEmergencyTreatment || s.PurposeOfUse == PurposeBreakTheGlass)
}

// ScopeAllows reports whether any of the subject's scopes allows
// interaction on resourceType (see Scope.Allows for what the caller must
// still check).
func (s *Subject) ScopeAllows(interaction, resourceType string) bool {
	if s == nil {
		return false
	}
	for _, sc := range s.Scopes {
		if sc.Allows(interaction, resourceType) {
			return true
		}
	}
	return false
}

// RolePatient is the role of a patient using a patient-facing app (`fhirgate
// token -role patient`); what such a token may see is decided by its
// patient/ scopes and "patient" launch context.
const RolePatient = "patient"
