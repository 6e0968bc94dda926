package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// keySource yields the verification keys a token with key id kid may be
// signed with. errUnknownKey: none; ErrKeysUnavailable: cannot tell.
type keySource interface {
	candidates(ctx context.Context, kid string) ([]jose.JSONWebKey, error)
}

var errUnknownKey = errors.New("no key with the token's key id")

// matchKeys returns the keys with id kid, plus keys without an id (PEM keys);
// every key when the token names none.
func matchKeys(all []jose.JSONWebKey, kid string) []jose.JSONWebKey {
	if kid == "" {
		return all
	}
	var out []jose.JSONWebKey
	for _, k := range all {
		if k.KeyID == kid || k.KeyID == "" {
			out = append(out, k)
		}
	}
	return out
}

func hasKeyID(all []jose.JSONWebKey, kid string) bool {
	for _, k := range all {
		if k.KeyID == kid {
			return true
		}
	}
	return false
}

// staticKeys are keys loaded once (a keys file, a DevKey).
type staticKeys []jose.JSONWebKey

func (s staticKeys) candidates(_ context.Context, kid string) ([]jose.JSONWebKey, error) {
	if m := matchKeys(s, kid); len(m) > 0 {
		return m, nil
	}
	return nil, errUnknownKey
}

// maxKeySetSize bounds a keys file or JWKS response.
const maxKeySetSize = 1 << 20

// ParseKeys parses verification keys: a JWKS ({"keys": [...]}), a single
// JWK, or PEM blocks (PUBLIC KEY, RSA PUBLIC KEY, CERTIFICATE). Private
// JWKs are reduced to their public part; symmetric keys, keys whose "use"
// is not "sig", RSA keys under 2048 bits and unsupported key types are
// skipped. It fails when no usable key remains.
func ParseKeys(data []byte) ([]jose.JSONWebKey, error) {
	if len(data) > maxKeySetSize {
		return nil, fmt.Errorf("key set larger than %d bytes", maxKeySetSize)
	}
	trimmed := bytes.TrimSpace(data)
	var keys []jose.JSONWebKey
	var err error
	if bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		keys, err = parsePEMKeys(trimmed)
	} else {
		keys, err = parseJWKS(trimmed)
	}
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("no usable signature verification key (RSA >= 2048 bits, EC P-256/384/521 or Ed25519)")
	}
	return keys, nil
}

func parseJWKS(data []byte) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
		Kty  string            `json:"kty"`
	}
	// JSON errors may quote the input: keep them out of the message.
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, errors.New("not a JWKS, JWK or PEM public key")
	}
	raws := set.Keys
	if set.Keys == nil && set.Kty != "" {
		raws = []json.RawMessage{data}
	}
	var out []jose.JSONWebKey
	for _, raw := range raws {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			continue // unknown key types are skipped, not fatal
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if pub, ok := publicVerificationKey(k.Key); ok {
			k.Key = pub
			k.Certificates = nil
			out = append(out, k)
		}
	}
	return out, nil
}

func parsePEMKeys(data []byte) ([]jose.JSONWebKey, error) {
	var out []jose.JSONWebKey
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		var key any
		var err error
		switch b.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(b.Bytes); err == nil {
				key = c.PublicKey
			}
		default:
			if strings.Contains(b.Type, "PRIVATE") {
				return nil, fmt.Errorf("PEM block %q is a private key: give the public key only", b.Type)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %q: %w", b.Type, err)
		}
		if pub, ok := publicVerificationKey(key); ok {
			out = append(out, jose.JSONWebKey{Key: pub})
		}
	}
	return out, nil
}

// publicVerificationKey returns the public key of a supported asymmetric
// key, refusing symmetric keys, weak RSA keys and other types.
func publicVerificationKey(k any) (any, bool) {
	switch key := k.(type) {
	case *rsa.PrivateKey:
		return publicVerificationKey(&key.PublicKey)
	case *ecdsa.PrivateKey:
		return publicVerificationKey(&key.PublicKey)
	case ed25519.PrivateKey:
		return publicVerificationKey(key.Public())
	case *rsa.PublicKey:
		if key.N == nil || key.N.BitLen() < 2048 {
			return nil, false
		}
		return key, true
	case *ecdsa.PublicKey:
		if key.Curve != elliptic.P256() && key.Curve != elliptic.P384() && key.Curve != elliptic.P521() {
			return nil, false
		}
		return key, true
	case ed25519.PublicKey:
		if len(key) != ed25519.PublicKeySize {
			return nil, false
		}
		return key, true
	}
	return nil, false
}

// keyFits reports whether key k may verify a signature made with alg: the
// key type must match the algorithm family (no RSA key for ES256, no
// asymmetric key as an HMAC secret) and a JWK's "alg", when set, must be
// alg.
func keyFits(k jose.JSONWebKey, alg string) bool {
	if k.Algorithm != "" && k.Algorithm != alg {
		return false
	}
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return key.Curve == elliptic.P256()
		case "ES384":
			return key.Curve == elliptic.P384()
		case "ES512":
			return key.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// JWKSOptions tune the JWKS cache. Zero fields take the defaults.
type JWKSOptions struct {
	// DefaultTTL: how long keys stay fresh when the response has no
	// Cache-Control max-age (10 min).
	DefaultTTL time.Duration
	// MinTTL and MaxTTL bound a max-age (1 min and 24 h).
	MinTTL, MaxTTL time.Duration
	// RefetchInterval: at most one fetch per interval, whether triggered by
	// an unknown key id, expiry or a failed fetch (30 s).
	RefetchInterval time.Duration
	// MaxStale: how long past their freshness expired keys are still used
	// while the endpoint cannot be reached (1 h).
	MaxStale time.Duration
	// Timeout of one fetch (5 s).
	Timeout time.Duration
}

func (o JWKSOptions) withDefaults() JWKSOptions {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.DefaultTTL, 10*time.Minute)
	def(&o.MinTTL, time.Minute)
	def(&o.MaxTTL, 24*time.Hour)
	def(&o.RefetchInterval, 30*time.Second)
	def(&o.MaxStale, time.Hour)
	def(&o.Timeout, 5*time.Second)
	if o.MaxTTL < o.MinTTL {
		o.MaxTTL = o.MinTTL
	}
	return o
}

// remoteKeys is a JWKS endpoint with a cache: keys are fresh for the
// response's max-age (bounded), refetched on an unknown key id (rate
// limited) so that key rotation works, and used stale for a bounded time
// when the endpoint is down.
type remoteKeys struct {
	url    string
	client *http.Client
	opt    JWKSOptions
	now    func() time.Time

	mu      sync.RWMutex
	keys    []jose.JSONWebKey
	fetched time.Time // last successful fetch
	fresh   time.Time // fresh until

	fetchMu     sync.Mutex // one fetch at a time
	lastAttempt time.Time  // guarded by fetchMu
	lastErr     error      // guarded by fetchMu

	fetches atomic.Int64
}

func newRemoteKeys(url string, client *http.Client, opt JWKSOptions, now func() time.Time) *remoteKeys {
	if client == nil {
		client = &http.Client{}
	}
	return &remoteKeys{url: url, client: client, opt: opt.withDefaults(), now: now}
}

func (r *remoteKeys) snapshot() (keys []jose.JSONWebKey, fetched, fresh time.Time) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.keys, r.fetched, r.fresh
}

func (r *remoteKeys) candidates(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	now := r.now()
	keys, fetched, fresh := r.snapshot()
	needFetch := fetched.IsZero() || !now.Before(fresh) || (kid != "" && !hasKeyID(keys, kid))
	if needFetch {
		r.refresh(ctx) // rate limited; on failure the cached keys stay
		keys, fetched, fresh = r.snapshot()
	}
	if fetched.IsZero() || !now.Before(fresh.Add(r.opt.MaxStale)) {
		r.fetchMu.Lock()
		cause := r.lastErr
		r.fetchMu.Unlock()
		return nil, fmt.Errorf("%w: %s: %v", ErrKeysUnavailable, r.url, cause)
	}
	if m := matchKeys(keys, kid); len(m) > 0 {
		return m, nil
	}
	return nil, errUnknownKey
}

// refresh fetches the key set unless a fetch was attempted less than
// RefetchInterval ago (by this or a concurrent request).
func (r *remoteKeys) refresh(ctx context.Context) {
	r.fetchMu.Lock()
	defer r.fetchMu.Unlock()
	now := r.now()
	if !r.lastAttempt.IsZero() && now.Sub(r.lastAttempt) < r.opt.RefetchInterval {
		return
	}
	r.lastAttempt = now
	// A client that goes away must not fail the fetch for everyone else.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opt.Timeout)
	defer cancel()
	keys, ttl, err := r.fetch(ctx)
	r.lastErr = err
	if err != nil {
		return
	}
	r.mu.Lock()
	r.keys, r.fetched, r.fresh = keys, now, now.Add(ttl)
	r.mu.Unlock()
}

func (r *remoteKeys) fetch(ctx context.Context) ([]jose.JSONWebKey, time.Duration, error) {
	r.fetches.Add(1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("fetch JWKS: HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeySetSize+1))
	if err != nil {
		return nil, 0, fmt.Errorf("read JWKS: %w", err)
	}
	keys, err := ParseKeys(body)
	if err != nil {
		return nil, 0, fmt.Errorf("JWKS: %w", err)
	}
	return keys, r.ttl(resp.Header.Get("Cache-Control")), nil
}

// ttl is the response's Cache-Control max-age bounded to [MinTTL, MaxTTL]
// (MinTTL for no-cache/no-store), DefaultTTL without one.
func (r *remoteKeys) ttl(cacheControl string) time.Duration {
	ttl := r.opt.DefaultTTL
	for _, d := range strings.Split(cacheControl, ",") {
		d = strings.ToLower(strings.TrimSpace(d))
		switch {
		case d == "no-store" || d == "no-cache":
			return r.opt.MinTTL
		case strings.HasPrefix(d, "max-age="):
			n, err := strconv.ParseInt(strings.Trim(d[len("max-age="):], `"`), 10, 64)
			if err != nil || n < 0 {
				continue
			}
			if n > int64(r.opt.MaxTTL/time.Second) {
				n = int64(r.opt.MaxTTL / time.Second)
			}
			ttl = time.Duration(n) * time.Second
		}
	}
	return min(max(ttl, r.opt.MinTTL), r.opt.MaxTTL)
}
