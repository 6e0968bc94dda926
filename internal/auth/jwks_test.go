package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const testIssuer = "https://idp.example"

// jwksServer is an identity provider's JWKS endpoint whose keys can rotate
// and which can go down.
type jwksServer struct {
	mu           sync.Mutex
	keys         []*DevKey
	cacheControl string
	down         bool
	fetches      atomic.Int64
	srv          *httptest.Server
}

func newJWKSServer(t *testing.T, keys ...*DevKey) *jwksServer {
	j := &jwksServer{keys: keys}
	j.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j.fetches.Add(1)
		j.mu.Lock()
		defer j.mu.Unlock()
		if j.down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var set jose.JSONWebKeySet
		for _, k := range j.keys {
			set.Keys = append(set.Keys, k.PublicJWK())
		}
		if j.cacheControl != "" {
			w.Header().Set("Cache-Control", j.cacheControl)
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(j.srv.Close)
	return j
}

func (j *jwksServer) set(f func(j *jwksServer)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	f(j)
}

func jwksAuth(t *testing.T, j *jwksServer, clk *fakeClock) *Authenticator {
	return mustAuth(t, Config{JWKSURL: j.srv.URL + "/jwks", Issuer: testIssuer, Now: clk.Now})
}

func tokenFor(t *testing.T, k *DevKey, clk *fakeClock) string {
	return mustMint(t, k, Claims{Issuer: testIssuer, Subject: "u", IssuedAt: clk.Now()})
}

func TestJWKSRotation(t *testing.T) {
	k1, k2, k3 := mustKey(t, "RS256"), mustKey(t, "ES256"), mustKey(t, "EdDSA")
	j := newJWKSServer(t, k1)
	clk := newClock()
	a := jwksAuth(t, j, clk)
	check := func(tok string, wantErr string, wantFetches int64) {
		t.Helper()
		_, err := a.Authenticate(bearer(tok))
		if wantErr == "" && err != nil {
			t.Fatalf("refused: %v", err)
		}
		if wantErr != "" {
			wantReason(t, err, wantErr)
		}
		if got := j.fetches.Load(); got != wantFetches {
			t.Fatalf("JWKS fetches = %d, want %d", got, wantFetches)
		}
	}
	check(tokenFor(t, k1, clk), "", 1)
	check(tokenFor(t, k1, clk), "", 1) // cached keys

	// The IdP rotates to k2: a k2 token has an unknown kid, which triggers
	// a refetch.
	j.set(func(j *jwksServer) { j.keys = []*DevKey{k2} })
	clk.Advance(31 * time.Second)
	check(tokenFor(t, k2, clk), "", 2)
	// k1 was removed from the set: its tokens no longer verify, and the
	// refetch is rate limited.
	check(tokenFor(t, k1, clk), "unknown key", 2)
	// An unknown kid does not make fhirgate hammer the IdP.
	for range 5 {
		check(tokenFor(t, k3, clk), "unknown key", 2)
	}
	clk.Advance(31 * time.Second)
	check(tokenFor(t, k3, clk), "unknown key", 3)
	check(tokenFor(t, k3, clk), "unknown key", 3)
	// Once k3 is published (and the rate limit passed) it works.
	j.set(func(j *jwksServer) { j.keys = []*DevKey{k2, k3} })
	clk.Advance(31 * time.Second)
	check(tokenFor(t, k3, clk), "", 4)
	check(tokenFor(t, k2, clk), "", 4)
}

func TestJWKSConcurrentUnknownKidFetchesOnce(t *testing.T) {
	k1, k2 := mustKey(t, "EdDSA"), mustKey(t, "EdDSA")
	j := newJWKSServer(t, k1)
	clk := newClock()
	a := jwksAuth(t, j, clk)
	if _, err := a.Authenticate(bearer(tokenFor(t, k1, clk))); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	tok := tokenFor(t, k2, clk)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = a.Authenticate(bearer(tok))
		}()
	}
	wg.Wait()
	if got := j.fetches.Load(); got != 2 {
		t.Errorf("20 concurrent unknown-kid requests made %d fetches in all, want 2", got)
	}
}

func TestJWKSDownServesStaleKeys(t *testing.T) {
	k := mustKey(t, "ES256")
	j := newJWKSServer(t, k)
	clk := newClock()
	a := jwksAuth(t, j, clk)
	if _, err := a.Authenticate(bearer(tokenFor(t, k, clk))); err != nil {
		t.Fatal(err)
	}
	j.set(func(j *jwksServer) { j.down = true })

	// Past the 10 min freshness: a fetch is attempted, fails, and the
	// cached keys are used.
	clk.Advance(11 * time.Minute)
	if _, err := a.Authenticate(bearer(tokenFor(t, k, clk))); err != nil {
		t.Fatalf("stale keys not used while the JWKS is down: %v", err)
	}
	if got := j.fetches.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2", got)
	}
	clk.Advance(58 * time.Minute) // 69 min: within 10 min + 1 h
	if _, err := a.Authenticate(bearer(tokenFor(t, k, clk))); err != nil {
		t.Fatalf("stale keys within the bound: %v", err)
	}
	// Past the bound the keys are no longer used: 503-worthy, not 401.
	clk.Advance(2 * time.Minute)
	_, err := a.Authenticate(bearer(tokenFor(t, k, clk)))
	if !errors.Is(err, ErrKeysUnavailable) || errors.Is(err, ErrInvalidToken) {
		t.Fatalf("past the stale bound: %v", err)
	}
	if strings.Contains(Reason(err), j.srv.URL) {
		t.Errorf("client-facing reason names the JWKS URL: %s", Reason(err))
	}
	// The endpoint comes back: after the retry interval keys are fetched.
	j.set(func(j *jwksServer) { j.down = false })
	clk.Advance(31 * time.Second)
	if _, err := a.Authenticate(bearer(tokenFor(t, k, clk))); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestJWKSInitiallyDown(t *testing.T) {
	k := mustKey(t, "EdDSA")
	j := newJWKSServer(t, k)
	j.set(func(j *jwksServer) { j.down = true })
	clk := newClock()
	a := jwksAuth(t, j, clk)
	if err := a.Warm(context.Background()); !errors.Is(err, ErrKeysUnavailable) {
		t.Errorf("Warm with the endpoint down: %v", err)
	}
	_, err := a.Authenticate(bearer(tokenFor(t, k, clk)))
	if !errors.Is(err, ErrKeysUnavailable) {
		t.Fatalf("no keys yet: %v", err)
	}
	if got := j.fetches.Load(); got != 1 {
		t.Errorf("fetches = %d, want 1 (the failed Warm; retries are rate limited)", got)
	}
}

func TestJWKSCacheControl(t *testing.T) {
	tests := []struct {
		cc           string
		noFetchAfter time.Duration
		fetchAfter   time.Duration
	}{
		{"public, max-age=120", 100 * time.Second, 121 * time.Second},
		{"max-age=5", 50 * time.Second, 61 * time.Second},              // clamped to 1 min
		{"no-store", 50 * time.Second, 61 * time.Second},               // 1 min
		{"", 9 * time.Minute, 10*time.Minute + time.Second},            // default 10 min
		{"max-age=999999", 23 * time.Hour, 24*time.Hour + time.Second}, // clamped to 24 h
	}
	for _, tt := range tests {
		t.Run(tt.cc, func(t *testing.T) {
			k := mustKey(t, "EdDSA")
			j := newJWKSServer(t, k)
			j.set(func(j *jwksServer) { j.cacheControl = tt.cc })
			clk := newClock()
			a := jwksAuth(t, j, clk)
			start := clk.Now()
			if _, err := a.Authenticate(bearer(tokenFor(t, k, clk))); err != nil {
				t.Fatal(err)
			}
			clk.Advance(tt.noFetchAfter)
			if _, err := a.Authenticate(bearer(tokenFor(t, k, clk))); err != nil {
				t.Fatal(err)
			}
			if got := j.fetches.Load(); got != 1 {
				t.Fatalf("fetches after %s = %d, want 1", tt.noFetchAfter, got)
			}
			clk.Advance(start.Add(tt.fetchAfter).Sub(clk.Now()))
			if _, err := a.Authenticate(bearer(tokenFor(t, k, clk))); err != nil {
				t.Fatal(err)
			}
			if got := j.fetches.Load(); got != 2 {
				t.Fatalf("fetches after %s = %d, want 2", tt.fetchAfter, got)
			}
		})
	}
}

func TestJWKSConfig(t *testing.T) {
	for _, u := range []string{"http://idp.example/jwks", "ftp://x/y", "/relative", "https://"} {
		if _, err := NewAuthenticator(Config{JWKSURL: u, Issuer: testIssuer}); err == nil || !strings.Contains(err.Error(), "FHIRGATE_JWKS_URL") {
			t.Errorf("JWKS URL %q: %v", u, err)
		}
	}
	for _, u := range []string{"https://idp.example/jwks", "http://127.0.0.1:9/jwks", "http://localhost/jwks", "http://[::1]/jwks"} {
		if _, err := NewAuthenticator(Config{JWKSURL: u, Issuer: testIssuer}); err != nil {
			t.Errorf("JWKS URL %q: %v", u, err)
		}
	}
	if _, err := NewAuthenticator(Config{JWKSURL: "https://idp.example/jwks"}); err == nil || !strings.Contains(err.Error(), "FHIRGATE_JWT_ISSUER") {
		t.Errorf("JWKS without issuer: %v", err)
	}
}
