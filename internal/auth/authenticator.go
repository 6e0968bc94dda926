// Package auth establishes who makes a request: it verifies OAuth 2.0
// bearer JWTs (with go-jose, against keys from a JWKS URL, a static keys
// file or the local dev key), maps their claims (SMART on FHIR v1/v2
// scopes, launch context, fhirgate roles, purpose of use) to a Subject,
// and maps verified mutual-TLS client certificates of EMR senders to a
// Subject. It also mints dev tokens.
//
// It never decides what a subject may do (that is the OPA policy's job),
// never trusts a claim before the signature, issuer, audience and times are
// checked, never accepts "none" or an HMAC algorithm without an explicitly
// configured static secret, and never logs or echoes a token, a key or a
// claim value in an error meant for the client.
package auth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Defaults.
const (
	DefaultAudience = "fhirgate"
	DefaultLeeway   = 60 * time.Second
	// maxTokenLen bounds a bearer token.
	maxTokenLen = 16 << 10
)

// DefaultAlgorithms are the signature algorithms accepted unless configured.
var DefaultAlgorithms = []string{"RS256", "ES256", "EdDSA"}

// asymmetricAlgs and hmacAlgs are every algorithm that may be configured.
var (
	asymmetricAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
	hmacAlgs       = []string{"HS256", "HS384", "HS512"}
)

// minHMACSecret is the shortest static HMAC secret accepted.
const minHMACSecret = 32

// Config configures an Authenticator. ConfigFromEnv reads it from the
// FHIRGATE_* environment.
type Config struct {
	// Disabled (FHIRGATE_AUTH=off): every request is the DevSubject.
	// Refused with Production.
	Disabled bool
	// Production (FHIRGATE_ENV=production): the dev key is never trusted
	// and Disabled is refused.
	Production bool
	// Issuer (FHIRGATE_JWT_ISSUER) is the required "iss"; required with
	// JWKSURL, KeysFile or StaticKeys. The dev key's issuer is DevIssuer.
	Issuer string
	// Audience (FHIRGATE_JWT_AUDIENCE) must be in "aud"; DefaultAudience
	// when empty.
	Audience string
	// JWKSURL (FHIRGATE_JWKS_URL): https (or http on a loopback address).
	JWKSURL string
	JWKS    JWKSOptions
	// KeysFile (FHIRGATE_JWT_KEYS_FILE): static keys, JWKS JSON or PEM.
	KeysFile string
	// StaticKeys: static keys given inline (JWKS JSON or PEM), e.g.
	// DevKey.JWKS() in tests.
	StaticKeys []byte
	// DevKey: trust this key with issuer DevIssuer (tests, and the
	// no-configuration dev default). Refused with Production.
	DevKey *DevKey
	// DataDir (FHIRGATE_DATA_DIR, ".data"): where the dev key lives when
	// no keys are configured.
	DataDir string
	// Algorithms (FHIRGATE_JWT_ALGS): DefaultAlgorithms when empty. HS256,
	// HS384 and HS512 need HMACSecret.
	Algorithms []string
	// HMACSecret (read from FHIRGATE_JWT_HMAC_SECRET_FILE): the static
	// secret for HS* algorithms, at least 32 bytes.
	HMACSecret []byte
	// Leeway (FHIRGATE_JWT_LEEWAY) for exp, nbf and iat: DefaultLeeway when
	// zero; negative means none.
	Leeway time.Duration
	// CertSources maps a client certificate's CN to the EMR sources it may
	// write as (FHIRGATE_MTLS_SOURCES_FILE); nil: the CN itself.
	CertSources CertSources
	// HTTPClient fetches the JWKS (default: a plain client).
	HTTPClient *http.Client
	// Now is the clock (tests).
	Now func() time.Time
	// Logger gets the warning about Disabled; slog.Default() when nil.
	Logger *slog.Logger
}

// Authenticator authenticates requests. It is safe for concurrent use.
type Authenticator struct {
	disabled bool
	issuer   string
	audience string
	algs     []jose.SignatureAlgorithm
	hmac     []byte
	leeway   time.Duration
	keys     keySource
	remote   *remoteKeys // nil unless JWKSURL
	certs    CertSources
	now      func() time.Time
	cache    tokenCache
}

// NewAuthenticator checks cfg and returns an Authenticator. Errors name the
// environment variable at fault. Without JWKSURL, KeysFile, StaticKeys or
// DevKey (and not Production) it loads or creates the dev key in DataDir.
// It does no network I/O.
func NewAuthenticator(cfg Config) (*Authenticator, error) {
	a := &Authenticator{now: cfg.Now, certs: cfg.CertSources}
	if a.now == nil {
		a.now = time.Now
	}
	if err := cfg.productionRefusal(); err != nil {
		return nil, err
	}
	if cfg.Disabled {
		a.disabled = true
		logger := cfg.Logger
		if logger == nil {
			logger = slog.Default()
		}
		logger.Warn("AUTHENTICATION IS OFF (FHIRGATE_AUTH=off): every request acts as " + DevSubjectID +
			" with roles admin, clinician and auditor and scope system/*.cruds; never expose this gateway")
		return a, nil
	}
	a.audience = cfg.Audience
	if a.audience == "" {
		a.audience = DefaultAudience
	}
	switch {
	case cfg.Leeway == 0:
		a.leeway = DefaultLeeway
	case cfg.Leeway < 0:
		a.leeway = 0
	case cfg.Leeway > 10*time.Minute:
		return nil, fmt.Errorf("FHIRGATE_JWT_LEEWAY=%s: at most 10m", cfg.Leeway)
	default:
		a.leeway = cfg.Leeway
	}
	algs := cfg.Algorithms
	if len(algs) == 0 {
		algs = DefaultAlgorithms
	}
	for _, alg := range algs {
		switch {
		case slices.Contains(asymmetricAlgs, alg):
		case slices.Contains(hmacAlgs, alg):
			if len(cfg.HMACSecret) == 0 {
				return nil, fmt.Errorf("FHIRGATE_JWT_ALGS: %s needs a static secret (FHIRGATE_JWT_HMAC_SECRET_FILE)", alg)
			}
		default:
			return nil, fmt.Errorf("FHIRGATE_JWT_ALGS: algorithm %q not allowed: want some of %s", alg,
				strings.Join(append(slices.Clone(asymmetricAlgs), hmacAlgs...), ", "))
		}
		if !slices.Contains(a.algs, jose.SignatureAlgorithm(alg)) {
			a.algs = append(a.algs, jose.SignatureAlgorithm(alg))
		}
	}
	if len(cfg.HMACSecret) > 0 {
		if len(cfg.HMACSecret) < minHMACSecret {
			return nil, fmt.Errorf("FHIRGATE_JWT_HMAC_SECRET_FILE: the secret must be at least %d bytes", minHMACSecret)
		}
		a.hmac = slices.Clone(cfg.HMACSecret)
	}

	sources := 0
	for _, set := range []bool{cfg.JWKSURL != "", cfg.KeysFile != "", cfg.StaticKeys != nil, cfg.DevKey != nil} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		return nil, errors.New("FHIRGATE_JWKS_URL and FHIRGATE_JWT_KEYS_FILE: configure one source of token keys")
	}
	needIssuer := func() error {
		if cfg.Issuer == "" {
			return errors.New("FHIRGATE_JWT_ISSUER: required with FHIRGATE_JWKS_URL or FHIRGATE_JWT_KEYS_FILE")
		}
		a.issuer = cfg.Issuer
		return nil
	}
	switch {
	case cfg.JWKSURL != "":
		if err := needIssuer(); err != nil {
			return nil, err
		}
		if err := checkJWKSURL(cfg.JWKSURL); err != nil {
			return nil, err
		}
		a.remote = newRemoteKeys(cfg.JWKSURL, cfg.HTTPClient, cfg.JWKS, a.now)
		a.keys = a.remote
	case cfg.KeysFile != "" || cfg.StaticKeys != nil:
		if err := needIssuer(); err != nil {
			return nil, err
		}
		data, name := cfg.StaticKeys, "static keys"
		if cfg.KeysFile != "" {
			var err error
			if data, err = readSmallFile(cfg.KeysFile, maxKeySetSize); err != nil {
				return nil, fmt.Errorf("FHIRGATE_JWT_KEYS_FILE=%s: %w", cfg.KeysFile, err)
			}
			name = "FHIRGATE_JWT_KEYS_FILE=" + cfg.KeysFile
		}
		keys, err := ParseKeys(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		a.keys = staticKeys(keys)
	default: // no keys configured: the dev key (productionRefusal refused this in production)
		if cfg.Issuer != "" && cfg.Issuer != DevIssuer {
			return nil, fmt.Errorf("FHIRGATE_JWT_ISSUER=%s: set FHIRGATE_JWKS_URL or FHIRGATE_JWT_KEYS_FILE for its keys", cfg.Issuer)
		}
		k := cfg.DevKey
		if k == nil {
			var err error
			if k, err = LoadOrCreateDevKey(cfg.DataDir); err != nil {
				return nil, err
			}
		}
		if !slices.Contains(a.algs, jose.SignatureAlgorithm(k.Algorithm())) {
			return nil, fmt.Errorf("FHIRGATE_JWT_ALGS: the dev key signs with %s, which is not allowed", k.Algorithm())
		}
		a.issuer = DevIssuer
		a.keys = staticKeys{k.public()}
	}
	return a, nil
}

// Disabled reports whether authentication is off (FHIRGATE_AUTH=off).
func (a *Authenticator) Disabled() bool { return a.disabled }

// Issuer is the issuer tokens must carry ("" when disabled).
func (a *Authenticator) Issuer() string { return a.issuer }

// Warm fetches the JWKS now (a no-op for static keys), so that a serve
// command can report an unreachable endpoint at startup.
func (a *Authenticator) Warm(ctx context.Context) error {
	if a.remote == nil {
		return nil
	}
	_, err := a.remote.candidates(ctx, "")
	if errors.Is(err, errUnknownKey) {
		return nil
	}
	return err
}

// DevSubjectID is the subject of every request when authentication is off.
const DevSubjectID = "anonymous-dev"

// DevSubject is the Subject every request gets with FHIRGATE_AUTH=off.
func DevSubject() *Subject {
	sc, _ := ParseScope("system/*.cruds")
	// A backend service with every scope: the policies' backend-service
	// grant lets it reach every patient (roles would restrict it: auditor
	// and admin never see clinical data).
	return &Subject{
		ID: DevSubjectID, Kind: KindSystem,
		Scopes:       []Scope{sc},
		PurposeOfUse: PurposeTreatment,
	}
}

// Authenticate establishes the subject of r: a bearer token in the
// Authorization header (scheme case-insensitive), else a verified client
// certificate (mutual TLS), else ErrNoCredentials. A token in the query
// string (access_token) is never used. Errors match ErrNoCredentials,
// ErrInvalidToken (a *TokenError with a safe Reason),
// ErrInvalidCertificate or ErrKeysUnavailable. The returned Subject is the
// caller's to modify.
func (a *Authenticator) Authenticate(r *http.Request) (*Subject, error) {
	if a.disabled {
		return DevSubject(), nil
	}
	hs := r.Header.Values("Authorization")
	if len(hs) > 1 {
		return nil, tokenErr("more than one Authorization header", nil)
	}
	if len(hs) == 1 {
		scheme, tok, _ := strings.Cut(strings.TrimSpace(hs[0]), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return nil, tokenErr("unsupported authorization scheme: use Bearer", nil)
		}
		return a.Verify(r.Context(), strings.TrimSpace(tok))
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return FromCertificate(r.TLS, a.certs)
	}
	if r.URL != nil && r.URL.Query().Has("access_token") {
		return nil, fmt.Errorf("%w (a token in the query string is not accepted: send Authorization: Bearer)", ErrNoCredentials)
	}
	return nil, ErrNoCredentials
}

// Verify verifies a compact JWT and returns its subject.
func (a *Authenticator) Verify(ctx context.Context, token string) (*Subject, error) {
	if a.disabled {
		return DevSubject(), nil
	}
	if token == "" {
		return nil, tokenErr("malformed", nil)
	}
	if len(token) > maxTokenLen {
		return nil, tokenErr("too large", nil)
	}
	now := a.now()
	sum := sha256.Sum256([]byte(token))
	if s := a.cache.get(sum, now); s != nil {
		return s, nil
	}
	s, exp, err := a.verify(ctx, token, now)
	if err != nil {
		return nil, err
	}
	// Cache for at most a minute, never past expiry, so that a key removed
	// from the JWKS stops working soon.
	until := now.Add(time.Minute)
	if e := exp.Add(a.leeway); e.Before(until) {
		until = e
	}
	a.cache.put(sum, s, until)
	return s.Clone(), nil
}

func (a *Authenticator) verify(ctx context.Context, token string, now time.Time) (*Subject, time.Time, error) {
	jws, err := jose.ParseSignedCompact(token, a.algs)
	if err != nil {
		if alg, ok := headerAlg(token); ok && !slices.Contains(a.algs, jose.SignatureAlgorithm(alg)) {
			return nil, time.Time{}, tokenErr("algorithm not allowed", err)
		}
		return nil, time.Time{}, tokenErr("malformed", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, time.Time{}, tokenErr("malformed", nil)
	}
	h := jws.Signatures[0].Header
	alg := h.Algorithm
	if !slices.Contains(a.algs, jose.SignatureAlgorithm(alg)) { // ParseSignedCompact checks this too
		return nil, time.Time{}, tokenErr("algorithm not allowed", nil)
	}
	if t, ok := h.ExtraHeaders[jose.HeaderType].(string); ok && !validTyp(t) {
		return nil, time.Time{}, tokenErr("not a JWT (typ)", nil)
	}

	var payload []byte
	if slices.Contains(hmacAlgs, alg) {
		// Only the configured static secret, never a public key.
		if payload, err = jws.Verify(a.hmac); err != nil {
			return nil, time.Time{}, tokenErr("signature", err)
		}
	} else {
		cands, err := a.keys.candidates(ctx, h.KeyID)
		if errors.Is(err, errUnknownKey) {
			return nil, time.Time{}, tokenErr("unknown key", err)
		}
		if err != nil {
			return nil, time.Time{}, err
		}
		fit := 0
		for _, k := range cands {
			if !keyFits(k, alg) {
				continue
			}
			fit++
			if payload, err = jws.Verify(k.Key); err == nil {
				break
			}
		}
		switch {
		case fit == 0:
			return nil, time.Time{}, tokenErr("unknown key", nil)
		case payload == nil:
			return nil, time.Time{}, tokenErr("signature", err)
		}
	}

	var std jwt.Claims
	var pc parsedClaims
	if err := json.Unmarshal(payload, &std); err != nil {
		return nil, time.Time{}, tokenErr("malformed claims", nil)
	}
	if err := json.Unmarshal(payload, &pc); err != nil {
		return nil, time.Time{}, tokenErr("malformed claims", nil)
	}
	err = std.ValidateWithLeeway(jwt.Expected{Issuer: a.issuer, AnyAudience: jwt.Audience{a.audience}, Time: now}, a.leeway)
	switch {
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return nil, time.Time{}, tokenErr("wrong issuer", nil)
	case errors.Is(err, jwt.ErrInvalidAudience):
		return nil, time.Time{}, tokenErr("wrong audience", nil)
	case errors.Is(err, jwt.ErrExpired):
		return nil, time.Time{}, tokenErr("expired", nil)
	case errors.Is(err, jwt.ErrNotValidYet):
		return nil, time.Time{}, tokenErr("not yet valid", nil)
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, time.Time{}, tokenErr("issued in the future", nil)
	case err != nil:
		return nil, time.Time{}, tokenErr("invalid claims", err)
	}
	if std.Expiry == nil {
		return nil, time.Time{}, tokenErr("missing expiry", nil)
	}
	s, reason := subjectFromClaims(&pc, std.Issuer)
	if reason != "" {
		return nil, time.Time{}, tokenErr(reason, nil)
	}
	return s, std.Expiry.Time(), nil
}

// validTyp accepts the media types of a JWT access token.
func validTyp(t string) bool {
	switch strings.ToLower(t) {
	case "jwt", "at+jwt", "application/jwt", "application/at+jwt":
		return true
	}
	return false
}

// headerAlg reads the "alg" of a compact JWS header, only to tell "algorithm
// not allowed" from "malformed" after the JOSE library refused the token.
func headerAlg(token string) (string, bool) {
	h, _, ok := strings.Cut(token, ".")
	if !ok || len(h) > 4096 {
		return "", false
	}
	b, err := base64URLDecode(h)
	if err != nil {
		return "", false
	}
	var hdr struct {
		Alg *string `json:"alg"`
	}
	if json.Unmarshal(b, &hdr) != nil || hdr.Alg == nil {
		return "", false
	}
	return *hdr.Alg, true
}

// tokenCache remembers verified tokens (by SHA-256) for a short time.
type tokenCache struct {
	mu sync.Mutex
	m  map[[32]byte]cachedSubject
}

type cachedSubject struct {
	s     *Subject
	until time.Time
}

const maxCachedTokens = 4096

func (c *tokenCache) get(k [32]byte, now time.Time) *Subject {
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if !ok || !now.Before(e.until) {
		return nil
	}
	return e.s.Clone()
}

func (c *tokenCache) put(k [32]byte, s *Subject, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedTokens {
		c.m = make(map[[32]byte]cachedSubject)
	}
	c.m[k] = cachedSubject{s: s, until: until}
}
