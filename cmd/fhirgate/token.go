package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/fhirgate/fhirgate/internal/auth"
)

// fhirgate token: mint a signed dev token with the dev key
// (<FHIRGATE_DATA_DIR>/keys/dev-jwt.json, created on first use), which a
// gateway trusts when no JWKS URL or keys file is configured and
// FHIRGATE_ENV is not production. It prints the token only, so that
// TOKEN=$(fhirgate token -role clinician) works; warnings go to stderr.

const tokenUsage = `usage: fhirgate token [flags]

Mint a signed development token (issuer fhirgate-dev) and print it.

  TOKEN=$(fhirgate token -role clinician -organization org-1)
  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/Patient

Default scopes by role: clinician, admin: user/*.cruds; auditor:
user/AuditEvent.rs; patient: patient/*.rs (needs -patient); emr:
system/*.cruds.

flags:
`

// tokenRoles are the roles -role accepts.
var tokenRoles = []string{auth.RoleClinician, auth.RoleAuditor, auth.RoleAdmin, auth.RoleEMR,
	auth.RoleRestricted, auth.RoleBreakGlass, auth.RolePatient}

// listFlag is a repeatable flag that also splits comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" && !slices.Contains(*l, p) {
			*l = append(*l, p)
		}
	}
	return nil
}

func tokenCmd(args []string) error {
	return runToken(args, os.Stdout, os.Stderr)
}

func runToken(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), tokenUsage)
		fs.PrintDefaults()
	}
	var roles, careTeam, consents, sources listFlag
	sub := fs.String("sub", "", `subject ("sub"); default dev-<first role>`)
	fs.Var(&roles, "role", "fhirgate role, repeatable or comma-separated: "+strings.Join(tokenRoles, ", "))
	scope := fs.String("scope", "", "space-separated SMART scopes (default: by role)")
	patient := fs.String("patient", "", `SMART launch context "patient" (a Patient id)`)
	fhirUser := fs.String("fhir-user", "", `SMART "fhirUser", e.g. Practitioner/123`)
	org := fs.String("organization", "", "Organization id the user acts for")
	fs.Var(&careTeam, "care-team", "Patient id whose care team the user is on, repeatable or comma-separated")
	purpose := fs.String("purpose", "", "purpose of use (HL7 PurposeOfUse code, e.g. TREAT, ETREAT, BTG); default TREAT")
	fs.Var(&consents, "consent", "consent code on record, e.g. 42CFRPart2; repeatable or comma-separated")
	fs.Var(&sources, "source", "EMR source profile the sender may write as; repeatable or comma-separated")
	clientID := fs.String("client", "fhirgate-cli", `OAuth client ("client_id")`)
	ttl := fs.Duration("ttl", time.Hour, "lifetime, at most 24h")
	aud := fs.String("aud", "", `audience ("aud"); default FHIRGATE_JWT_AUDIENCE or fhirgate`)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("token: unexpected argument %q", fs.Arg(0)))
	}
	for _, r := range roles {
		if !slices.Contains(tokenRoles, r) {
			return usageError(fmt.Sprintf("token: -role %q: want %s", r, strings.Join(tokenRoles, ", ")))
		}
	}
	if *ttl <= 0 || *ttl > 24*time.Hour {
		return usageError(fmt.Sprintf("token: -ttl %s: want a positive duration up to 24h", *ttl))
	}
	if roles.has(auth.RolePatient) && *patient == "" {
		return usageError("token: -role patient needs -patient <Patient id>")
	}
	p := strings.ToUpper(strings.TrimSpace(*purpose))
	if p != "" && !validPurposeFlag(p) {
		return usageError(fmt.Sprintf("token: -purpose %q: want a PurposeOfUse code such as TREAT, ETREAT or BTG", *purpose))
	}
	if *scope != "" {
		for _, s := range strings.Fields(*scope) {
			if _, ok := auth.ParseScope(s); !ok && !strings.Contains(s, "/") {
				continue // openid, fhirUser, offline_access...
			} else if !ok {
				fmt.Fprintf(stderr, "fhirgate token: warning: scope %q is not a valid SMART scope and grants nothing\n", s)
			}
		}
	}
	switch os.Getenv("FHIRGATE_ENV") {
	case "production":
		return errors.New("token: FHIRGATE_ENV=production: a production gateway never trusts the dev key; get tokens from the identity provider")
	}
	if os.Getenv("FHIRGATE_JWKS_URL") != "" || os.Getenv("FHIRGATE_JWT_KEYS_FILE") != "" {
		fmt.Fprintln(stderr, "fhirgate token: warning: FHIRGATE_JWKS_URL or FHIRGATE_JWT_KEYS_FILE is set: a gateway with this configuration does not trust dev tokens")
	}
	if os.Getenv("FHIRGATE_AUTH") == "off" {
		fmt.Fprintln(stderr, "fhirgate token: warning: FHIRGATE_AUTH=off: the gateway ignores tokens")
	}
	if *aud == "" {
		*aud = os.Getenv("FHIRGATE_JWT_AUDIENCE")
	}
	if *sub == "" {
		*sub = "dev-user"
		if len(roles) > 0 {
			*sub = "dev-" + roles[0]
		}
	}
	key, err := auth.LoadOrCreateDevKey(dataDirFromEnv())
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	tok, err := key.Mint(auth.Claims{
		Subject: *sub, Audience: *aud, ClientID: *clientID, Scope: *scope,
		Patient: *patient, FHIRUser: *fhirUser, Organization: *org, Roles: []string(roles),
		CareTeam: []string(careTeam), PurposeOfUse: p, Consents: []string(consents), Sources: []string(sources), TTL: *ttl,
	})
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

func (l listFlag) has(v string) bool { return slices.Contains(l, v) }

// validPurposeFlag: letters, digits, '-' and '_', at most 64.
func validPurposeFlag(p string) bool {
	if len(p) > 64 {
		return false
	}
	for _, c := range p {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}
