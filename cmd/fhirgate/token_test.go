package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/internal/auth"
)

func tokenEnv(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for k, v := range map[string]string{"FHIRGATE_DATA_DIR": dir, "FHIRGATE_ENV": "", "FHIRGATE_AUTH": "",
		"FHIRGATE_JWKS_URL": "", "FHIRGATE_JWT_KEYS_FILE": "", "FHIRGATE_JWT_AUDIENCE": "", "FHIRGATE_JWT_ISSUER": ""} {
		t.Setenv(k, v)
	}
	return dir
}

// mintCLI runs fhirgate token and verifies the printed token the way a
// gateway with the no-configuration dev default would.
func mintCLI(t *testing.T, dir string, args ...string) (*auth.Subject, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := runToken(args, &stdout, &stderr); err != nil {
		t.Fatalf("fhirgate token %v: %v (stderr %s)", args, err, stderr.String())
	}
	out := stdout.String()
	if strings.Count(out, "\n") != 1 || strings.Count(out, ".") != 2 {
		t.Fatalf("stdout is not one token line: %q", out)
	}
	a, err := auth.NewAuthenticator(auth.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s, err := a.Verify(context.Background(), strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("minted token refused: %v", err)
	}
	return s, stderr.String()
}

func scopeRaws(s *auth.Subject) string {
	var r []string
	for _, sc := range s.Scopes {
		r = append(r, sc.Raw)
	}
	return strings.Join(r, " ")
}

func TestTokenCommand(t *testing.T) {
	dir := tokenEnv(t)
	s, _ := mintCLI(t, dir, "-role", "clinician", "-sub", "dr-1", "-organization", "org-1", "-care-team", "p1,p2", "-care-team", "p3",
		"-fhir-user", "Practitioner/1", "-purpose", "treat")
	if s.ID != "dr-1" || s.Kind != auth.KindUser || !slices.Equal(s.Roles, []string{"clinician"}) || s.Organization != "org-1" ||
		!slices.Equal(s.CareTeam, []string{"p1", "p2", "p3"}) || s.FHIRUser != "Practitioner/1" || s.PurposeOfUse != "TREAT" ||
		s.Issuer != auth.DevIssuer || s.ClientID != "fhirgate-cli" || s.TokenID == "" || scopeRaws(s) != "user/*.cruds" {
		t.Errorf("clinician token subject = %+v", s)
	}
	s, _ = mintCLI(t, dir, "-role", "auditor")
	if s.ID != "dev-auditor" || scopeRaws(s) != "user/AuditEvent.rs" {
		t.Errorf("auditor token subject = %+v", s)
	}
	s, _ = mintCLI(t, dir, "-role", "patient", "-patient", "pat-9")
	if s.Kind != auth.KindPatient || s.Patient != "pat-9" || scopeRaws(s) != "patient/*.rs" {
		t.Errorf("patient token subject = %+v", s)
	}
	s, _ = mintCLI(t, dir, "-role", "clinician,break-glass", "-purpose", "ETREAT", "-consent", "42CFRPart2")
	if !s.HasRole(auth.RoleBreakGlass) || !s.BreakGlass() || !slices.Equal(s.Consents, []string{"42CFRPart2"}) {
		t.Errorf("break-glass token subject = %+v", s)
	}
	s, _ = mintCLI(t, dir, "-role", "emr", "-source", "north-adt")
	if s.Kind != auth.KindEMR || !slices.Equal(s.Sources, []string{"north-adt"}) {
		t.Errorf("emr token subject = %+v", s)
	}
	s, warn := mintCLI(t, dir, "-role", "clinician", "-scope", "openid user/Observation.rs patient/Bad.xx")
	if scopeRaws(s) != "user/Observation.rs" || !strings.Contains(warn, "patient/Bad.xx") {
		t.Errorf("explicit scope: %q, stderr %q", scopeRaws(s), warn)
	}
}

func TestTokenTTLAndAudience(t *testing.T) {
	dir := tokenEnv(t)
	var stdout bytes.Buffer
	if err := runToken([]string{"-role", "clinician", "-ttl", "2m"}, &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(stdout.String())
	later := time.Now().Add(4 * time.Minute) // past 2m + the 60s leeway
	a, err := auth.NewAuthenticator(auth.Config{DataDir: dir, Now: func() time.Time { return later }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(context.Background(), tok); !errors.Is(err, auth.ErrInvalidToken) || auth.Reason(err) != "invalid token: expired" {
		t.Errorf("2m token after 4m: %v", err)
	}
	stdout.Reset()
	if err := runToken([]string{"-role", "clinician", "-aud", "other"}, &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	a, _ = auth.NewAuthenticator(auth.Config{DataDir: dir})
	if _, err := a.Verify(context.Background(), strings.TrimSpace(stdout.String())); auth.Reason(err) != "invalid token: wrong audience" {
		t.Errorf("-aud other: %v", err)
	}
	a, _ = auth.NewAuthenticator(auth.Config{DataDir: dir, Audience: "other"})
	if _, err := a.Verify(context.Background(), strings.TrimSpace(stdout.String())); err != nil {
		t.Errorf("-aud other with a gateway expecting it: %v", err)
	}
}

func TestTokenCommandErrors(t *testing.T) {
	tokenEnv(t)
	for _, args := range [][]string{
		{"-role", "superuser"},
		{"-role", "patient"}, // needs -patient
		{"-ttl", "0s"},
		{"-ttl", "48h"},
		{"-purpose", "TREAT;x"},
		{"extra"},
		{"-nope"},
	} {
		var stdout bytes.Buffer
		err := runToken(args, &stdout, &bytes.Buffer{})
		var ue usageError
		if !errors.As(err, &ue) || stdout.Len() != 0 {
			t.Errorf("token %v: error %v, stdout %q; want a usage error and no token", args, err, stdout.String())
		}
	}
	if err := runToken([]string{"-h"}, &bytes.Buffer{}, &bytes.Buffer{}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	t.Setenv("FHIRGATE_ENV", "production")
	var stdout bytes.Buffer
	if err := runToken([]string{"-role", "clinician"}, &stdout, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "FHIRGATE_ENV=production") || stdout.Len() != 0 {
		t.Errorf("production: %v", err)
	}
}

func TestTokenDispatch(t *testing.T) {
	tokenEnv(t)
	if err := realMain(context.Background(), []string{"token", "-role", "nobody"}, nil); err == nil {
		t.Error("fhirgate token -role nobody succeeded")
	}
}
