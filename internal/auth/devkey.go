package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// DevIssuer is the "iss" of tokens minted with the dev key.
const DevIssuer = "fhirgate-dev"

// DevKeyFile is where the dev key lives under the data directory.
const DevKeyFile = "keys/dev-jwt.json"

// DevKey is a token signing key for development and tests: Ed25519 by
// default (NewDevKey, LoadOrCreateDevKey), RSA or ECDSA with NewSigningKey.
// It is never trusted in production.
type DevKey struct {
	jwk jose.JSONWebKey // private, with KeyID and Algorithm
}

// NewDevKey generates an Ed25519 dev key.
func NewDevKey() (*DevKey, error) { return NewSigningKey("EdDSA") }

// NewSigningKey generates a key for alg: EdDSA, RS256 (2048-bit), ES256,
// ES384 or ES512. Tests use it to act as an identity provider.
func NewSigningKey(alg string) (*DevKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ES512":
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	default:
		return nil, fmt.Errorf("signing key: unsupported algorithm %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key: generate %s: %w", alg, err)
	}
	k := &DevKey{jwk: jose.JSONWebKey{Key: priv, Algorithm: alg, Use: "sig"}}
	if err := k.setKeyID(); err != nil {
		return nil, err
	}
	return k, nil
}

// setKeyID sets the key id to the first 16 hex digits of the RFC 7638
// thumbprint.
func (k *DevKey) setKeyID() error {
	pub := k.jwk.Public()
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return fmt.Errorf("signing key: thumbprint: %w", err)
	}
	k.jwk.KeyID = hex.EncodeToString(tp[:8])
	return nil
}

// KeyID is the key's "kid".
func (k *DevKey) KeyID() string { return k.jwk.KeyID }

// Algorithm is the key's signature algorithm.
func (k *DevKey) Algorithm() string { return k.jwk.Algorithm }

func (k *DevKey) public() jose.JSONWebKey { return k.jwk.Public() }

// JWKS returns the public key as a JSON Web Key Set, for Config.StaticKeys
// or a test JWKS server.
func (k *DevKey) JWKS() []byte {
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.public()}})
	if err != nil { // cannot happen for the key types NewSigningKey makes
		return []byte(`{"keys":[]}`)
	}
	return b
}

// PublicJWK returns the public key as a JWK (a JWKS server rotating keys
// combines several).
func (k *DevKey) PublicJWK() jose.JSONWebKey { return k.public() }

// Mint signs c with k (see Mint).
func (k *DevKey) Mint(c Claims) (string, error) { return Mint(k, c, c.TTL) }

// DefaultTTL is the lifetime of a minted token when none is given.
const DefaultTTL = time.Hour

// Mint signs a token with key: "iss" c.Issuer or DevIssuer, "aud"
// c.Audience or DefaultAudience, "jti" c.TokenID or random, "iat" and
// "nbf" c.IssuedAt or now, "exp" c.Expiry or iat+ttl (DefaultTTL when ttl
// is zero), "scope" c.Scope or DefaultScope(c.Roles...) unless c.NoScope.
func Mint(key *DevKey, c Claims, ttl time.Duration) (string, error) {
	if key == nil {
		return "", errors.New("mint: no key")
	}
	if c.Issuer == "" {
		c.Issuer = DevIssuer
	}
	if c.Audience == "" {
		c.Audience = DefaultAudience
	}
	if c.TokenID == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("mint: %w", err)
		}
		c.TokenID = hex.EncodeToString(b[:])
	}
	if c.Scope == "" && !c.NoScope {
		c.Scope = DefaultScope(c.Roles...)
	}
	if c.NoScope {
		c.Scope = ""
	}
	iat := c.IssuedAt
	if iat.IsZero() {
		iat = time.Now()
	}
	nbf := c.NotBefore
	if nbf.IsZero() {
		nbf = iat
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	exp := c.Expiry
	if exp.IsZero() {
		exp = iat.Add(ttl)
	}
	std := jwt.Claims{
		Audience:  jwt.Audience{c.Audience},
		IssuedAt:  jwt.NewNumericDate(iat),
		NotBefore: jwt.NewNumericDate(nbf),
		Expiry:    jwt.NewNumericDate(exp),
	}
	// Extra first, so that it never overrides the claims above.
	merged := map[string]any{}
	maps.Copy(merged, c.Extra)
	for _, part := range []any{std, c} {
		b, err := json.Marshal(part)
		if err != nil {
			return "", fmt.Errorf("mint: %w", err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return "", fmt.Errorf("mint: %w", err)
		}
		maps.Copy(merged, m)
	}
	payload, err := json.Marshal(merged)
	if err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.jwk.Algorithm), Key: key.jwk},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	return jws.CompactSerialize()
}

// LoadOrCreateDevKey loads the dev signing key from
// <dataDir>/keys/dev-jwt.json (dataDir ".data" when empty), creating it
// (file 0600, directory 0700) on first use. It refuses a key file or
// directory that group or others may access.
func LoadOrCreateDevKey(dataDir string) (*DevKey, error) {
	if dataDir == "" {
		dataDir = ".data"
	}
	path := filepath.Join(dataDir, filepath.FromSlash(DevKeyFile))
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev token key: create %s: %w", dir, err)
	}
	di, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("dev token key: %w", err)
	}
	if perm := di.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("dev token key: refusing directory %s: mode %04o lets group or others in; it must be 0700 (chmod 700 %s)", dir, perm, dir)
	}
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		if err := createDevKey(path); err != nil {
			return nil, err
		}
	}
	return readDevKey(path)
}

// createDevKey writes a new key to a temporary file and links it into
// place, so that concurrent first uses agree on one key.
func createDevKey(path string) error {
	k, err := NewDevKey()
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(k.jwk, "", "  ")
	if err != nil {
		return fmt.Errorf("dev token key: encode: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".dev-jwt-*.tmp")
	if err != nil {
		return fmt.Errorf("dev token key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("dev token key: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("dev token key: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("dev token key: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("dev token key: %w", err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("dev token key: create %s: %w", path, err)
	}
	return nil
}

func readDevKey(path string) (*DevKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dev token key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("dev token key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("dev token key: refusing %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("dev token key: refusing %s: mode %04o lets group or others read it; it must be 0600 (chmod 600 %s)", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("dev token key: read %s: %w", path, err)
	}
	var jwk jose.JSONWebKey
	// The JSON error could quote key material: keep it out.
	if jwk.UnmarshalJSON(b) != nil {
		return nil, fmt.Errorf("dev token key: %s is not a valid JWK", path)
	}
	if _, ok := jwk.Key.(ed25519.PrivateKey); !ok || jwk.Algorithm != "EdDSA" {
		return nil, fmt.Errorf("dev token key: %s is not an Ed25519 private key (EdDSA)", path)
	}
	k := &DevKey{jwk: jwk}
	if err := k.setKeyID(); err != nil {
		return nil, err
	}
	return k, nil
}

// readSmallFile reads a file of at most limit bytes.
func readSmallFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}

func base64URLDecode(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(s)
}
