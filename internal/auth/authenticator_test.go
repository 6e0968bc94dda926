package auth

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func TestValidTokenSubject(t *testing.T) {
	for _, alg := range []string{"EdDSA", "RS256", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			k := mustKey(t, alg)
			a := mustAuth(t, Config{StaticKeys: k.JWKS(), Issuer: "https://idp.example"})
			tok := mustMint(t, k, Claims{
				Issuer: "https://idp.example", Subject: "dr-7", TokenID: "jti-1", AZP: "app-1",
				Scope:   "openid fhirUser user/*.rs user/Observation.cruds patient/Observation.rs?category=laboratory bogus",
				Patient: "", FHIRUser: "Practitioner/7", Roles: []string{"clinician", "break-glass", "clinician"},
				Organization: "org-1", CareTeam: []string{"p1", "p2"}, PurposeOfUse: "HOPERAT",
				Consents: []string{"42CFRPart2"}, Sources: []string{"emr-a"},
			})
			s, err := a.Authenticate(bearer(tok))
			if err != nil {
				t.Fatal(err)
			}
			var raws []string
			for _, sc := range s.Scopes {
				raws = append(raws, sc.Raw)
			}
			want := &Subject{ID: "dr-7", Kind: KindUser, ClientID: "app-1", TokenID: "jti-1", Issuer: "https://idp.example",
				Roles: []string{"clinician", "break-glass"}, FHIRUser: "Practitioner/7", Organization: "org-1",
				CareTeam: []string{"p1", "p2"}, PurposeOfUse: "HOPERAT", Consents: []string{"42CFRPart2"}, Sources: []string{"emr-a"}}
			got := s.Clone()
			got.Scopes = nil
			if !reflect.DeepEqual(got, want) {
				t.Errorf("subject = %+v\nwant      %+v", got, want)
			}
			if strings.Join(raws, " ") != "user/*.rs user/Observation.cruds patient/Observation.rs?category=laboratory" {
				t.Errorf("scopes = %q", raws)
			}
			if !s.ScopeAllows("search", "Condition") || s.ScopeAllows("create", "Condition") || !s.ScopeAllows("delete", "Observation") {
				t.Error("ScopeAllows does not follow the scopes")
			}
		})
	}
}

func TestClaimsDefaults(t *testing.T) {
	k := mustKey(t, "EdDSA")
	a := mustAuth(t, Config{DevKey: k})
	// client_id wins over azp; purpose defaults to TREAT; roles as a string.
	tok := mustMint(t, k, Claims{Subject: "u", ClientID: "c1", AZP: "c2", Extra: map[string]any{"fhirgate_roles": "x"}})
	s, err := a.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if s.ClientID != "c1" || s.PurposeOfUse != PurposeTreatment || s.Issuer != DevIssuer || s.TokenID == "" || !slices.Equal(s.Roles, []string{"x"}) {
		t.Errorf("subject = %+v", s)
	}
	if s.Scopes != nil {
		t.Errorf("no roles, no scope: scopes = %v", s.Scopes)
	}
	// Roles given as Claims win over Extra.
	tok = mustMint(t, k, Claims{Subject: "u", Roles: []string{"auditor"}, Extra: map[string]any{"fhirgate_roles": []string{"admin"}, "sub": "evil"}})
	s, err = a.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Roles, []string{"auditor"}) || s.ID != "u" || len(s.Scopes) != 1 || s.Scopes[0].Raw != "user/AuditEvent.rs" {
		t.Errorf("subject = %+v", s)
	}
}

func TestSubjectKind(t *testing.T) {
	k := mustKey(t, "EdDSA")
	a := mustAuth(t, Config{DevKey: k})
	tests := []struct {
		scope, patient string
		roles          []string
		want           string
	}{
		{"patient/*.rs", "p1", nil, KindPatient},
		{"launch/patient patient/Observation.read", "p1", nil, KindPatient},
		{"patient/*.rs", "", nil, KindUser}, // no launch context
		{"user/*.rs", "p1", nil, KindUser},
		{"user/*.rs patient/*.rs", "p1", nil, KindPatient},
		{"system/*.rs", "", nil, KindSystem},
		{"system/*.cruds", "", []string{"emr"}, KindEMR},
		{"system/*.cruds user/*.rs", "", []string{"emr"}, KindEMR},
		{"system/*.rs user/*.rs", "", nil, KindUser},
		{"openid bogus/*.rs", "", nil, KindUser},
		{"user/*.rs", "", []string{"emr"}, KindUser},
	}
	for _, tt := range tests {
		tok := mustMint(t, k, Claims{Subject: "s", Scope: tt.scope, Patient: tt.patient, Roles: tt.roles})
		s, err := a.Verify(context.Background(), tok)
		if err != nil {
			t.Fatal(err)
		}
		if s.Kind != tt.want {
			t.Errorf("scope %q patient %q roles %v: kind %s, want %s", tt.scope, tt.patient, tt.roles, s.Kind, tt.want)
		}
	}
}

func TestRefusedTokens(t *testing.T) {
	clk := newClock()
	k := mustKey(t, "EdDSA")
	other := mustKey(t, "EdDSA")
	a := mustAuth(t, Config{DevKey: k, Now: clk.Now})
	now := clk.Now()

	// Another key claiming k's key id: the signature does not verify.
	forger := *other
	forger.jwk.KeyID = k.KeyID()
	forged := mustMint(t, &forger, Claims{Subject: "u", IssuedAt: now})

	// A valid token with its payload changed.
	good := mustMint(t, k, Claims{Subject: "u", IssuedAt: now})
	parts := strings.Split(good, ".")
	var payload map[string]any
	raw, _ := base64URLDecode(parts[1])
	_ = json.Unmarshal(raw, &payload)
	payload["fhirgate_roles"] = []string{"admin"}
	tampered := parts[0] + "." + b64json(t, payload) + "." + parts[2]

	tests := []struct {
		name, tok, reason string
	}{
		{"forged signature", forged, "signature"},
		{"tampered payload", tampered, "signature"},
		{"signature stripped", parts[0] + "." + parts[1] + ".", "signature"},
		{"unknown key id", mustMint(t, other, Claims{Subject: "u", IssuedAt: now}), "unknown key"},
		{"expired", mustMint(t, k, Claims{Subject: "u", IssuedAt: now.Add(-2 * time.Hour), Expiry: now.Add(-61 * time.Second)}), "expired"},
		{"not yet valid", mustMint(t, k, Claims{Subject: "u", IssuedAt: now, NotBefore: now.Add(2 * time.Minute)}), "not yet valid"},
		{"issued in the future", mustMint(t, k, Claims{Subject: "u", IssuedAt: now.Add(5 * time.Minute), NotBefore: now}), "issued in the future"},
		{"wrong audience", mustMint(t, k, Claims{Subject: "u", IssuedAt: now, Audience: "other-api"}), "wrong audience"},
		{"wrong issuer", mustMint(t, k, Claims{Subject: "u", IssuedAt: now, Issuer: "https://evil.example"}), "wrong issuer"},
		{"missing subject", mustMint(t, k, Claims{IssuedAt: now}), "missing subject"},
		{"roles not strings", mustMint(t, k, Claims{Subject: "u", IssuedAt: now, Extra: map[string]any{"fhirgate_roles": 5}}), "malformed claims"},
		{"control characters", mustMint(t, k, Claims{Subject: "u\n2", IssuedAt: now}), "invalid claims"},
		{"bad purpose", mustMint(t, k, Claims{Subject: "u", IssuedAt: now, PurposeOfUse: "TREAT; DROP"}), "invalid claims"},
		{"empty", "", "malformed"},
		{"garbage", "not-a-token", "malformed"},
		{"three dots", "a.b.c", "malformed"},
		{"too large", strings.Repeat("a", maxTokenLen+1), "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := a.Authenticate(bearer(tt.tok))
			if s != nil {
				t.Fatalf("subject %+v for a refused token", s)
			}
			wantReason(t, err, tt.reason)
			if tt.tok != "" && len(tt.tok) > 8 && (strings.Contains(err.Error(), tt.tok[:8]) || strings.Contains(Reason(err), tt.tok[:8])) {
				t.Errorf("error %q echoes the token", err)
			}
		})
	}

	// Within the leeway an expired token still passes.
	if _, err := a.Authenticate(bearer(mustMint(t, k, Claims{Subject: "u", IssuedAt: now.Add(-time.Hour), Expiry: now.Add(-30 * time.Second)}))); err != nil {
		t.Errorf("token expired 30s ago (leeway 60s): %v", err)
	}
	// A valid token passes, then expires as the clock moves on (past the cache).
	if _, err := a.Authenticate(bearer(good)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour + 2*time.Minute)
	_, err := a.Authenticate(bearer(good))
	wantReason(t, err, "expired")
}

func TestMissingExpiry(t *testing.T) {
	k := mustKey(t, "EdDSA")
	a := mustAuth(t, Config{DevKey: k})
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: k.jwk}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := validClaims(DevIssuer, time.Now())
	delete(c, "exp")
	b, _ := json.Marshal(c)
	jws, err := signer.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := jws.CompactSerialize()
	_, err = a.Verify(context.Background(), tok)
	wantReason(t, err, "missing expiry")
}

func TestAlgNone(t *testing.T) {
	k := mustKey(t, "EdDSA")
	a := mustAuth(t, Config{DevKey: k})
	claims := b64json(t, validClaims(DevIssuer, time.Now()))
	for _, tok := range []string{
		"eyJhbGciOiJub25lIn0." + claims + ".", // {"alg":"none"}
		b64json(t, map[string]any{"alg": "none", "typ": "JWT"}) + "." + claims + ".",
		b64json(t, map[string]any{"alg": "None"}) + "." + claims + ".",
		b64json(t, map[string]any{"alg": "NONE", "kid": k.KeyID()}) + "." + claims + ".",
		b64json(t, map[string]any{"alg": "none"}) + "." + claims + "." + b64([]byte("sig")),
	} {
		s, err := a.Authenticate(bearer(tok))
		if s != nil {
			t.Fatalf("alg none accepted: %+v", s)
		}
		wantReason(t, err, "algorithm not allowed")
	}
	if _, err := NewAuthenticator(Config{DevKey: k, Algorithms: []string{"none"}}); err == nil || !strings.Contains(err.Error(), "FHIRGATE_JWT_ALGS") {
		t.Errorf("alg none configurable: %v", err)
	}
}

func TestHMACAlgorithmConfusion(t *testing.T) {
	rsaKey := mustKey(t, "RS256")
	pub := rsaKey.public()
	der, err := x509.MarshalPKIXPublicKey(pub.Key)
	if err != nil {
		t.Fatal(err)
	}
	pemPub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	const iss = "https://idp.example"
	claims := validClaims(iss, time.Now())
	header := map[string]any{"alg": "HS256", "typ": "JWT", "kid": rsaKey.KeyID()}

	// The public key, in each form an attacker can get it, as an HMAC secret.
	secrets := [][]byte{pemPub, der, rsaKey.JWKS()}
	for _, keys := range [][]byte{pemPub, rsaKey.JWKS()} {
		a := mustAuth(t, Config{StaticKeys: keys, Issuer: iss})
		if _, err := a.Authenticate(bearer(mustMint(t, rsaKey, Claims{Issuer: iss, Subject: "u"}))); err != nil {
			t.Fatalf("genuine RS256 token refused: %v", err)
		}
		for _, secret := range secrets {
			_, err := a.Authenticate(bearer(hs256(t, header, claims, secret)))
			wantReason(t, err, "algorithm not allowed")
		}
	}

	// HS256 without a static secret cannot be configured.
	if _, err := NewAuthenticator(Config{StaticKeys: pemPub, Issuer: iss, Algorithms: []string{"RS256", "HS256"}}); err == nil ||
		!strings.Contains(err.Error(), "FHIRGATE_JWT_ALGS") {
		t.Fatalf("HS256 without a secret: %v", err)
	}
	if _, err := NewAuthenticator(Config{StaticKeys: pemPub, Issuer: iss, Algorithms: []string{"HS256"}, HMACSecret: []byte("short")}); err == nil {
		t.Fatal("short HMAC secret accepted")
	}
	// With HS256 and a static secret configured, only that secret verifies:
	// never the public key.
	secret := []byte("0123456789abcdef0123456789abcdef-static")
	a := mustAuth(t, Config{StaticKeys: pemPub, Issuer: iss, Algorithms: []string{"RS256", "HS256"}, HMACSecret: secret})
	for _, s := range secrets {
		_, err := a.Authenticate(bearer(hs256(t, header, claims, s)))
		wantReason(t, err, "signature")
	}
	s, err := a.Authenticate(bearer(hs256(t, header, claims, secret)))
	if err != nil || s.ID != "u1" {
		t.Fatalf("HS256 with the configured secret: %v %+v", err, s)
	}
}

func TestKeyTypeMustFitAlgorithm(t *testing.T) {
	rsaKey := mustKey(t, "RS256")
	ecKey := mustKey(t, "ES256")
	a := mustAuth(t, Config{StaticKeys: rsaKey.JWKS(), Issuer: DevIssuer})
	// An ES256 token naming the RSA key's id: no key of the right type.
	impostor := *ecKey
	impostor.jwk.KeyID = rsaKey.KeyID()
	_, err := a.Authenticate(bearer(mustMint(t, &impostor, Claims{Subject: "u"})))
	wantReason(t, err, "unknown key")

	// A JWKS whose symmetric ("oct") key could double as an HMAC secret is
	// not a usable key set.
	if _, err := ParseKeys([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","kid":"s"}]}`)); err == nil {
		t.Error("oct-only JWKS accepted")
	}
	// RSA keys under 2048 bits are skipped, private JWKs reduced to public.
	keys, err := ParseKeys(mustJWKSWithPrivate(t, ecKey))
	if err != nil || len(keys) != 1 || !keys[0].IsPublic() {
		t.Errorf("private JWK: %v %v", keys, err)
	}
}

func mustJWKSWithPrivate(t *testing.T, k *DevKey) []byte {
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.jwk, {Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "oct"}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAuthenticateRequest(t *testing.T) {
	k := mustKey(t, "EdDSA")
	a := mustAuth(t, Config{DevKey: k})
	tok := mustMint(t, k, Claims{Subject: "u", Roles: []string{RoleClinician}})

	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "BeArEr"} {
		r := httptest.NewRequest("GET", "/Patient", nil)
		r.Header.Set("Authorization", scheme+" "+tok)
		if s, err := a.Authenticate(r); err != nil || s.ID != "u" {
			t.Errorf("scheme %q: %v", scheme, err)
		}
	}
	// A token in the query string is not a credential.
	r := httptest.NewRequest("GET", "/Patient?access_token="+tok, nil)
	if s, err := a.Authenticate(r); !errors.Is(err, ErrNoCredentials) || s != nil {
		t.Errorf("query token: %v %+v", err, s)
	} else if strings.Contains(err.Error(), tok[:10]) {
		t.Errorf("error echoes the token: %v", err)
	}
	// No credentials at all.
	if _, err := a.Authenticate(httptest.NewRequest("GET", "/Patient", nil)); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("no credentials: %v", err)
	}
	// Other schemes, two headers, an empty bearer.
	r = httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Basic dTpw")
	if _, err := a.Authenticate(r); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Basic: %v", err)
	}
	r = httptest.NewRequest("GET", "/", nil)
	r.Header.Add("Authorization", "Bearer "+tok)
	r.Header.Add("Authorization", "Bearer "+tok)
	if _, err := a.Authenticate(r); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("two Authorization headers: %v", err)
	}
	r = httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer ")
	_, err := a.Authenticate(r)
	wantReason(t, err, "malformed")
}

func TestVerifiedSubjectsAreCopies(t *testing.T) {
	k := mustKey(t, "EdDSA")
	a := mustAuth(t, Config{DevKey: k})
	tok := mustMint(t, k, Claims{Subject: "u", Roles: []string{RoleClinician}, Scope: "user/*.rs?category=x"})
	s1, err := a.Authenticate(bearer(tok))
	if err != nil {
		t.Fatal(err)
	}
	s1.Roles[0] = RoleAdmin
	s1.PurposeOfUse = "BTG"
	s1.Scopes[0].Params.Set("category", "y")
	s2, err := a.Authenticate(bearer(tok)) // from the cache
	if err != nil {
		t.Fatal(err)
	}
	if s2.Roles[0] != RoleClinician || s2.PurposeOfUse != PurposeTreatment || s2.Scopes[0].Params.Get("category") != "x" {
		t.Errorf("cached subject was modified through a returned copy: %+v", s2)
	}
}

func TestAuthOff(t *testing.T) {
	var logged bytes.Buffer
	a := mustAuth(t, Config{Disabled: true, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if !strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), "FHIRGATE_AUTH=off") {
		t.Errorf("no loud warning when auth is off: %q", logged.String())
	}
	s, err := a.Authenticate(httptest.NewRequest("GET", "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != DevSubjectID || s.Kind != KindSystem || len(s.Roles) != 0 ||
		len(s.Scopes) != 1 || s.Scopes[0].Raw != "system/*.cruds" || !a.Disabled() {
		t.Errorf("auth off subject = %+v", s)
	}
	if _, err := NewAuthenticator(Config{Disabled: true, Production: true}); err == nil || !strings.Contains(err.Error(), "FHIRGATE_AUTH=off") {
		t.Errorf("production with auth off: %v", err)
	}
}

func TestReason(t *testing.T) {
	if Reason(tokenErr("expired", errors.New("lib detail"))) != "invalid token: expired" {
		t.Error(Reason(tokenErr("expired", nil)))
	}
	if !strings.Contains(Reason(ErrNoCredentials), "Bearer") || Reason(errors.New("secret detail")) != "authentication failed" {
		t.Error("Reason texts")
	}
}

func FuzzVerify(f *testing.F) {
	k, err := NewDevKey()
	if err != nil {
		f.Fatal(err)
	}
	a, err := NewAuthenticator(Config{DevKey: k})
	if err != nil {
		f.Fatal(err)
	}
	good, err := k.Mint(Claims{Subject: "u", Roles: []string{RoleClinician}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("eyJhbGciOiJFZERTQSJ9.e30.AAAA")
	f.Add("...")
	f.Add(good[:len(good)-3])
	f.Fuzz(func(t *testing.T, tok string) {
		s, err := a.Verify(context.Background(), tok)
		if err == nil {
			// Only the genuine token (or an equivalent encoding) may pass.
			if s == nil || s.ID != "u" {
				t.Fatalf("accepted %q as %+v", tok, s)
			}
			return
		}
		if s != nil {
			t.Fatalf("subject with an error: %+v", s)
		}
		var te *TokenError
		if !errors.As(err, &te) || te.Reason == "" {
			t.Fatalf("error %v is not a TokenError", err)
		}
		if len(tok) >= 12 && strings.Contains(err.Error(), tok) {
			t.Fatalf("error echoes the token")
		}
	})
}

// A token carrying its own key (an embedded "jwk" header) under the
// trusted key's id is not verified with the embedded key.
func TestEmbeddedJWKIgnored(t *testing.T) {
	k := mustKey(t, "EdDSA")
	attacker := mustKey(t, "EdDSA")
	a := mustAuth(t, Config{DevKey: k})
	attacker.jwk.KeyID = k.KeyID()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: attacker.jwk.Key},
		&jose.SignerOptions{EmbedJWK: true, ExtraHeaders: map[jose.HeaderKey]any{"kid": k.KeyID(), "jku": "https://evil.example/jwks"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(validClaims(DevIssuer, time.Now()))
	jws, err := signer.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := jws.CompactSerialize()
	s, err := a.Authenticate(bearer(tok))
	if s != nil {
		t.Fatalf("embedded jwk accepted: %+v", s)
	}
	wantReason(t, err, "signature")
}
