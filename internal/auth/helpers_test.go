package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Now().Truncate(time.Second)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func mustKey(t testing.TB, alg string) *DevKey {
	t.Helper()
	k, err := NewSigningKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustMint(t testing.TB, k *DevKey, c Claims) string {
	t.Helper()
	tok, err := k.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func mustAuth(t testing.TB, cfg Config) *Authenticator {
	t.Helper()
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func bearer(tok string) *http.Request {
	r := httptest.NewRequest("GET", "/Patient/1", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return r
}

// wantReason asserts err is a TokenError with reason.
func wantReason(t *testing.T, err error, reason string) {
	t.Helper()
	var te *TokenError
	if !errors.As(err, &te) || !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("error = %v, want invalid token (%s)", err, reason)
	}
	if te.Reason != reason {
		t.Fatalf("reason = %q, want %q", te.Reason, reason)
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func b64json(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64(b)
}

// hs256 hand-signs a token with HMAC-SHA256 and secret.
func hs256(t testing.TB, header, claims map[string]any, secret []byte) string {
	t.Helper()
	in := b64json(t, header) + "." + b64json(t, claims)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return in + "." + b64(m.Sum(nil))
}

// validClaims are registered claims a default Authenticator accepts at now.
func validClaims(iss string, now time.Time) map[string]any {
	return map[string]any{
		"iss": iss, "aud": DefaultAudience, "sub": "u1",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"scope": "system/*.cruds", "fhirgate_roles": []string{"admin"},
	}
}

// pemPublic is k's public key as a PEM "PUBLIC KEY" block.
func pemPublic(t testing.TB, k *DevKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.public().Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
