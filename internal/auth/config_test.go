package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// authEnv lists every variable ConfigFromEnv reads.
var authEnv = []string{"FHIRGATE_AUTH", "FHIRGATE_ENV", "FHIRGATE_JWT_ISSUER", "FHIRGATE_JWT_AUDIENCE", "FHIRGATE_JWKS_URL",
	"FHIRGATE_JWT_KEYS_FILE", "FHIRGATE_JWT_ALGS", "FHIRGATE_JWT_HMAC_SECRET_FILE", "FHIRGATE_JWT_LEEWAY",
	"FHIRGATE_MTLS_SOURCES_FILE", "FHIRGATE_DATA_DIR"}

func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, k := range authEnv {
		t.Setenv(k, env[k])
	}
}

func TestConfigFromEnvErrorsNameTheVariable(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("tooshort"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte(strings.Repeat("s", 40)), 0o644); err != nil {
		t.Fatal(err)
	}
	badJSON := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(badJSON, []byte("[1,2]"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"FHIRGATE_AUTH": "maybe"}, "FHIRGATE_AUTH"},
		{map[string]string{"FHIRGATE_ENV": "staging"}, "FHIRGATE_ENV"},
		{map[string]string{"FHIRGATE_AUTH": "off", "FHIRGATE_ENV": "production"}, "FHIRGATE_AUTH=off is refused with FHIRGATE_ENV=production"},
		{map[string]string{"FHIRGATE_ENV": "production"}, "FHIRGATE_JWKS_URL"},
		{map[string]string{"FHIRGATE_JWKS_URL": "http://idp.example/jwks", "FHIRGATE_JWT_ISSUER": "x"}, "FHIRGATE_JWKS_URL"},
		{map[string]string{"FHIRGATE_JWKS_URL": "https://idp.example/jwks"}, "FHIRGATE_JWT_ISSUER"},
		{map[string]string{"FHIRGATE_JWT_KEYS_FILE": "/k.pem"}, "FHIRGATE_JWT_ISSUER"},
		{map[string]string{"FHIRGATE_JWKS_URL": "https://idp.example/jwks", "FHIRGATE_JWT_KEYS_FILE": "/k.pem", "FHIRGATE_JWT_ISSUER": "x"}, "FHIRGATE_JWT_KEYS_FILE"},
		{map[string]string{"FHIRGATE_JWT_ALGS": "RS256,none"}, "FHIRGATE_JWT_ALGS"},
		{map[string]string{"FHIRGATE_JWT_ALGS": " , "}, "FHIRGATE_JWT_ALGS"},
		{map[string]string{"FHIRGATE_JWT_LEEWAY": "forever"}, "FHIRGATE_JWT_LEEWAY"},
		{map[string]string{"FHIRGATE_JWT_LEEWAY": "1h"}, "FHIRGATE_JWT_LEEWAY"},
		{map[string]string{"FHIRGATE_JWT_LEEWAY": "-5s"}, "FHIRGATE_JWT_LEEWAY"},
		{map[string]string{"FHIRGATE_JWT_HMAC_SECRET_FILE": short}, "FHIRGATE_JWT_HMAC_SECRET_FILE"},
		{map[string]string{"FHIRGATE_JWT_HMAC_SECRET_FILE": open}, "FHIRGATE_JWT_HMAC_SECRET_FILE"},
		{map[string]string{"FHIRGATE_JWT_HMAC_SECRET_FILE": filepath.Join(dir, "missing")}, "FHIRGATE_JWT_HMAC_SECRET_FILE"},
		{map[string]string{"FHIRGATE_MTLS_SOURCES_FILE": badJSON}, "FHIRGATE_MTLS_SOURCES_FILE"},
	}
	for _, tt := range tests {
		setEnv(t, tt.env)
		_, err := ConfigFromEnv()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("env %v: error %v, want one naming %s", tt.env, err, tt.want)
		}
	}
}

func TestNewAuthenticatorErrorsNameTheVariable(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{JWKSURL: "https://idp.example/jwks"}, "FHIRGATE_JWT_ISSUER"},
		{Config{KeysFile: filepath.Join(dir, "missing.pem"), Issuer: "x"}, "FHIRGATE_JWT_KEYS_FILE"},
		{Config{KeysFile: writeFile(t, dir, "empty.json", `{"keys":[]}`), Issuer: "x"}, "FHIRGATE_JWT_KEYS_FILE"},
		{Config{KeysFile: writeFile(t, dir, "priv.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), Issuer: "x"}, "private key"},
		{Config{Algorithms: []string{"RS1"}, DataDir: dir}, "FHIRGATE_JWT_ALGS"},
		{Config{Algorithms: []string{"RS256"}, DataDir: dir}, "FHIRGATE_JWT_ALGS"}, // the dev key is EdDSA
		{Config{Leeway: time.Hour, DataDir: dir}, "FHIRGATE_JWT_LEEWAY"},
		{Config{Production: true}, "FHIRGATE_ENV=production"},
		{Config{Production: true, DevKey: mustKey(t, "EdDSA")}, "FHIRGATE_ENV=production"},
		{Config{Issuer: "https://idp.example", DataDir: dir}, "FHIRGATE_JWT_ISSUER"},
		{Config{JWKSURL: "https://idp.example/jwks", KeysFile: "/x", Issuer: "x"}, "FHIRGATE_JWKS_URL and FHIRGATE_JWT_KEYS_FILE"},
	}
	for _, tt := range tests {
		_, err := NewAuthenticator(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("config %+v: error %v, want one naming %s", tt.cfg, err, tt.want)
		}
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFromEnvValues(t *testing.T) {
	dir := t.TempDir()
	secret := writeFile(t, dir, "secret", strings.Repeat("k", 40)+"\n")
	sources := writeFile(t, dir, "sources.json", `{"emr-north": ["north-adt"]}`)
	setEnv(t, map[string]string{
		"FHIRGATE_JWT_ISSUER": "https://idp.example", "FHIRGATE_JWKS_URL": "https://idp.example/jwks",
		"FHIRGATE_JWT_ALGS": "RS256, HS256", "FHIRGATE_JWT_HMAC_SECRET_FILE": secret, "FHIRGATE_JWT_LEEWAY": "0s",
		"FHIRGATE_MTLS_SOURCES_FILE": sources, "FHIRGATE_ENV": "production",
	})
	c, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if c.Audience != DefaultAudience || c.Issuer != "https://idp.example" || len(c.Algorithms) != 2 || c.Algorithms[1] != "HS256" ||
		len(c.HMACSecret) != 40 || c.Leeway >= 0 || c.CertSources["emr-north"][0] != "north-adt" || !c.Production || c.DataDir != ".data" {
		t.Errorf("config = %+v", c)
	}
	a, err := NewAuthenticator(c)
	if err != nil || a.leeway != 0 {
		t.Fatalf("authenticator: %v", err)
	}

	// Defaults: dev key in the data directory.
	setEnv(t, map[string]string{"FHIRGATE_DATA_DIR": dir})
	c, err = ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	a, err = NewAuthenticator(c)
	if err != nil {
		t.Fatal(err)
	}
	if a.Issuer() != DevIssuer || a.leeway != DefaultLeeway || a.audience != DefaultAudience {
		t.Errorf("dev default: issuer %q leeway %s audience %q", a.Issuer(), a.leeway, a.audience)
	}
	k, err := LoadOrCreateDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(bearer(mustMint(t, k, Claims{Subject: "u"}))); err != nil {
		t.Errorf("token from the dev key file: %v", err)
	}
	// Production: FHIRGATE_AUTH=off refused, and the dev key is not trusted.
	setEnv(t, map[string]string{"FHIRGATE_ENV": "production", "FHIRGATE_AUTH": "off"})
	if _, err := ConfigFromEnv(); err == nil || !strings.Contains(err.Error(), "FHIRGATE_AUTH=off") {
		t.Errorf("production with auth off: %v", err)
	}
	setEnv(t, map[string]string{"FHIRGATE_AUTH": "off"})
	if c, err := ConfigFromEnv(); err != nil || !c.Disabled {
		t.Errorf("auth off in development: %v %+v", err, c)
	}
}

func TestKeysFile(t *testing.T) {
	dir := t.TempDir()
	rsaKey := mustKey(t, "RS256")
	jwks := writeFile(t, dir, "jwks.json", string(rsaKey.JWKS()))
	a := mustAuth(t, Config{KeysFile: jwks, Issuer: testIssuer})
	if _, err := a.Authenticate(bearer(mustMint(t, rsaKey, Claims{Issuer: testIssuer, Subject: "u"}))); err != nil {
		t.Errorf("JWKS keys file: %v", err)
	}
	// A PEM public key has no kid: any token kid may use it.
	pemFile := writeFile(t, dir, "pub.pem", string(pemPublic(t, rsaKey)))
	a = mustAuth(t, Config{KeysFile: pemFile, Issuer: testIssuer})
	if _, err := a.Authenticate(bearer(mustMint(t, rsaKey, Claims{Issuer: testIssuer, Subject: "u"}))); err != nil {
		t.Errorf("PEM keys file: %v", err)
	}
	_, err := a.Authenticate(bearer(mustMint(t, mustKey(t, "RS256"), Claims{Issuer: testIssuer, Subject: "u"})))
	wantReason(t, err, "signature")
}

func TestDevKeyFile(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "keys", "dev-jwt.json")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("dev key mode %04o, want 0600", fi.Mode().Perm())
	}
	di, _ := os.Stat(filepath.Dir(path))
	if di.Mode().Perm() != 0o700 {
		t.Errorf("dev key directory mode %04o, want 0700", di.Mode().Perm())
	}
	k2, err := LoadOrCreateDevKey(dir)
	if err != nil || k2.KeyID() != k1.KeyID() || k1.Algorithm() != "EdDSA" {
		t.Fatalf("reload: %v %s %s", err, k1.KeyID(), k2.KeyID())
	}
	// A token minted with the reloaded key verifies against the first.
	a := mustAuth(t, Config{DevKey: k1})
	if _, err := a.Authenticate(bearer(mustMint(t, k2, Claims{Subject: "u"}))); err != nil {
		t.Error(err)
	}
	// Group- or world-readable key or directory: refused.
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateDevKey(dir); err == nil || !strings.Contains(err.Error(), "0640") {
		t.Errorf("group-readable key: %v", err)
	}
	if _, err := NewAuthenticator(Config{DataDir: dir}); err == nil {
		t.Error("authenticator trusts a group-readable dev key")
	}
	_ = os.Chmod(path, 0o600)
	if err := os.Chmod(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateDevKey(dir); err == nil || !strings.Contains(err.Error(), "0755") {
		t.Errorf("world-readable key directory: %v", err)
	}
	_ = os.Chmod(filepath.Dir(path), 0o700)
	// A corrupt key file is refused without quoting it.
	if err := os.WriteFile(path, []byte(`{"kty":"OKP","d":"SECRETSECRET"`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateDevKey(dir); err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("corrupt key: %v", err)
	}
}
