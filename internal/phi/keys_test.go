package phi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/phi/vault"
	"github.com/fhirgate/fhirgate/internal/phi/vaulttest"
	"github.com/fhirgate/fhirgate/internal/search"
)

// The key manager: data keys are created once per tenant and epoch, shared
// by concurrent writers, unwrapped in one provider call per tenant, kept
// for the TTL only, zeroed on eviction, and never replaced by plaintext
// when the provider is down.

func patientBody(t testing.TB, id, family string) []byte {
	return compact(t, fmt.Sprintf(`{"resourceType":"Patient","id":%q,"name":[{"family":%q}],"birthDate":"1980-05-17","gender":"female"}`, id, family))
}

// sealPatient seals a Patient with its index entries.
func sealPatient(t testing.TB, ctx context.Context, svc *phi.Service, tenant, id string) ([]byte, search.Entries, error) {
	body := patientBody(t, id, "Concurrent")
	r, err := fhir.ParseCompacted(body)
	if err != nil {
		t.Fatal(err)
	}
	e := search.Extract("Patient", r.Content)
	out, _, err := svc.Seal(ctx, tenant, "Patient", id, body, &e)
	return out, e, err
}

func TestCurrentConcurrentFirstWrite(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	e.prov.newKeyDelay = 20 * time.Millisecond // all writers meet in key creation
	const n = 20
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		sealed  [n][]byte
		entries [n]search.Entries
		errs    [n]error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			sealed[i], entries[i], errs[i] = sealPatient(t, t.Context(), e.svc, "t1", fmt.Sprintf("p%d", i))
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	t.Logf("%d concurrent first writers: %d NewDataKey calls, %d AddKey calls", n, e.prov.newKeys.Load(), e.store.adds.Load())
	// Creation is serialized: one data key and one index key, one provider
	// call each, however many writers arrive at once.
	if e.prov.newKeys.Load() != 2 {
		t.Errorf("%d NewDataKey calls for %d concurrent first writers, want 2 (one data key, one index key)", e.prov.newKeys.Load(), n)
	}
	if d, x := e.store.count("t1", phi.PurposeData), e.store.count("t1", phi.PurposeIndex); d != 1 || x != 1 {
		t.Fatalf("stored keys: %d data, %d index; want 1 and 1", d, x)
	}
	// Every writer used the stored keys: a fresh process (cold cache, keys
	// only from the store) opens every body and computes the same tokens.
	fresh := e.restart(t)
	want, err := fresh.Blinder(t.Context(), "t1").Tokens("Patient", "family", []string{"s:concurrent"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		id := fmt.Sprintf("p%d", i)
		got, err := fresh.Open(t.Context(), "t1", "Patient", id, sealed[i])
		if err != nil {
			t.Fatalf("writer %d's body: %v", i, err)
		}
		if !bytes.Equal(got, patientBody(t, id, "Concurrent")) {
			t.Fatalf("writer %d's body opens to %s", i, got)
		}
		found := false
		for _, b := range entries[i].Blind {
			found = found || (b.Param == "family" && bytes.Equal(b.Token, want[0]))
		}
		if !found {
			t.Errorf("writer %d's family token is not the stored index key's", i)
		}
	}
	if ep, _, err := fresh.Keys().Current(t.Context(), "t1"); err != nil || ep != 1 {
		t.Fatalf("Current: epoch %d, %v", ep, err)
	}
}

func TestUnwrapOncePerTenant(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	tenants := []string{"ta", "tb", "tc"}
	bodies := map[string][]byte{}
	for _, tn := range tenants {
		b, _, err := sealPatient(t, t.Context(), e.svc, tn, "p1")
		if err != nil {
			t.Fatal(err)
		}
		bodies[tn] = b
	}
	if e.prov.unwraps.Load() != 0 {
		t.Fatalf("the writer unwrapped %d times: created keys must be cached", e.prov.unwraps.Load())
	}
	// A new process reads concurrently: one Unwrap per tenant, carrying
	// both of its keys (data and index).
	e.prov.unwrapDelay = 20 * time.Millisecond // widen the window for duplicate loads
	defer func() { e.prov.unwrapDelay = 0 }()
	svc := e.restart(t)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 10 {
		for _, tn := range tenants {
			wg.Add(2)
			go func() {
				defer wg.Done()
				if _, err := svc.Open(t.Context(), tn, "Patient", "p1", bodies[tn]); err != nil {
					errs <- err
				}
			}()
			go func() {
				defer wg.Done()
				if _, err := svc.Blinder(t.Context(), tn).Tokens("Patient", "family", []string{"s:x"}); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := e.prov.unwraps.Load(); got != int64(len(tenants)) {
		t.Fatalf("%d Unwrap calls for %d tenants, want one each", got, len(tenants))
	}
	if got := e.prov.unwrappedKeys.Load(); got != int64(2*len(tenants)) {
		t.Fatalf("%d keys unwrapped, want %d (data and index key per tenant)", got, 2*len(tenants))
	}
	// Writes use the cached keys too.
	if _, _, err := sealPatient(t, t.Context(), svc, "ta", "p2"); err != nil {
		t.Fatal(err)
	}
	if got := e.prov.unwraps.Load(); got != int64(len(tenants)) || e.prov.newKeys.Load() != int64(2*len(tenants)) {
		t.Fatalf("after a write: %d Unwrap, %d NewDataKey calls", got, e.prov.newKeys.Load())
	}
}

// withinTTL runs fn right after warm, retrying when the machine was too
// slow for fn to finish within ttl of warm (so an expiry during fn is never
// mistaken for a failure); it fails the test if it never manages.
func withinTTL(t *testing.T, ttl time.Duration, warm func(), fn func() error) {
	t.Helper()
	for range 5 {
		warm()
		start := time.Now()
		err := fn()
		if time.Since(start) < ttl/2 {
			if err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatal("could not run the check within the TTL five times: machine too slow")
}

func TestTTLExpiry(t *testing.T) {
	const ttl = 200 * time.Millisecond
	e := newEnv(t, phi.KeyOptions{TTL: ttl})
	sealed, _, err := sealPatient(t, t.Context(), e.svc, "t1", "p1")
	if err != nil {
		t.Fatal(err)
	}
	svc := e.restart(t)
	var before int64
	withinTTL(t, ttl, func() {
		svc.Keys().Flush()
		if _, err := svc.Open(t.Context(), "t1", "Patient", "p1", sealed); err != nil {
			t.Fatal(err)
		}
		before = e.prov.unwraps.Load()
	}, func() error {
		for range 20 {
			if _, err := svc.Open(t.Context(), "t1", "Patient", "p1", sealed); err != nil {
				return err
			}
		}
		if got := e.prov.unwraps.Load(); got != before {
			return fmt.Errorf("%d Unwrap calls within the TTL", got-before)
		}
		return nil
	})
	time.Sleep(ttl + 50*time.Millisecond)
	if _, err := svc.Open(t.Context(), "t1", "Patient", "p1", sealed); err != nil {
		t.Fatal(err)
	}
	if got := e.prov.unwraps.Load(); got != before+1 {
		t.Fatalf("%d Unwrap calls after the TTL, want 1", got-before)
	}
}

// wantUnavailable checks that err is the 503 the API answers for a
// provider outage, and that it quotes no PHI.
func wantUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded with the provider down", what)
	}
	if fhir.KindOf(err) != fhir.KindUnavailable || fhir.KindOf(err).Status() != 503 {
		t.Errorf("%s: %v (kind %d), want a 503", what, err, fhir.KindOf(err))
	}
	if !errors.Is(err, phi.ErrUnavailable) {
		t.Errorf("%s: %v does not wrap phi.ErrUnavailable", what, err)
	}
	for _, s := range append(patientSecrets, "Concurrent", "1980-05-17") {
		if strings.Contains(err.Error(), s) {
			t.Errorf("%s: error %q contains %q", what, err, s)
		}
	}
}

func TestProviderDown(t *testing.T) {
	const ttl = 200 * time.Millisecond
	e := newEnv(t, phi.KeyOptions{TTL: ttl})
	ctx := t.Context()
	sealed, _, err := sealPatient(t, ctx, e.svc, "t1", "p1")
	if err != nil {
		t.Fatal(err)
	}
	blob, _, err := e.svc.SealBlob(ctx, "t1", "hl7", "m1", []byte("PID|1||Secretblob"))
	if err != nil {
		t.Fatal(err)
	}
	// Cached keys keep working until the TTL.
	withinTTL(t, ttl, func() {
		e.prov.down.Store(false)
		e.svc.Keys().Flush()
		if _, err := e.svc.Open(ctx, "t1", "Patient", "p1", sealed); err != nil {
			t.Fatal(err)
		}
		e.prov.down.Store(true)
	}, func() error {
		if _, err := e.svc.Open(ctx, "t1", "Patient", "p1", sealed); err != nil {
			return fmt.Errorf("Open from the cache with the provider down: %w", err)
		}
		if _, err := e.svc.OpenBlob(ctx, "t1", "hl7", "m1", blob); err != nil {
			return fmt.Errorf("OpenBlob from the cache with the provider down: %w", err)
		}
		if _, _, err := sealPatient(t, ctx, e.svc, "t1", "p2"); err != nil {
			return fmt.Errorf("Seal from the cache with the provider down: %w", err)
		}
		return nil
	})
	// Then everything fails closed with a 503.
	time.Sleep(ttl + 50*time.Millisecond)
	out, err := e.svc.Open(ctx, "t1", "Patient", "p1", sealed)
	wantUnavailable(t, "Open after the TTL", err)
	if out != nil {
		t.Errorf("Open returned %s with its error", out)
	}
	out, err = e.svc.OpenBlob(ctx, "t1", "hl7", "m1", blob)
	wantUnavailable(t, "OpenBlob after the TTL", err)
	if out != nil {
		t.Errorf("OpenBlob returned %s with its error", out)
	}
	out, _, err = sealPatient(t, ctx, e.svc, "t1", "p3")
	wantUnavailable(t, "Seal after the TTL", err)
	if out != nil {
		t.Errorf("Seal returned %s with its error", out)
	}
	_, err = e.svc.Blinder(ctx, "t1").Tokens("Patient", "family", []string{"s:x"})
	wantUnavailable(t, "blind tokens after the TTL", err)
	// Nothing new was stored while the provider was down.
	if d := e.store.count("t1", phi.PurposeData); d != 1 {
		t.Errorf("%d data keys stored", d)
	}
	// Back up: everything works again.
	e.prov.down.Store(false)
	if _, err := e.svc.Open(ctx, "t1", "Patient", "p1", sealed); err != nil {
		t.Fatal(err)
	}
}

func TestProviderDownNewTenant(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	e.prov.down.Store(true)
	ctx := t.Context()
	out, _, err := sealPatient(t, ctx, e.svc, "new", "p1")
	wantUnavailable(t, "first Seal of a new tenant", err)
	if out != nil {
		t.Errorf("Seal returned %s with its error", out)
	}
	blob, _, err := e.svc.SealBlob(ctx, "new", "hl7", "m1", []byte("PID|1||Secretblob"))
	wantUnavailable(t, "first SealBlob of a new tenant", err)
	if blob != nil {
		t.Errorf("SealBlob returned %q with its error", blob)
	}
	if _, _, err := e.svc.Keys().Current(ctx, "new"); err == nil {
		t.Fatal("Current succeeded with the provider down")
	}
	if ks, _ := e.store.TenantKeys(ctx, "new"); len(ks) != 0 {
		t.Fatalf("keys stored for the new tenant: %d", len(ks))
	}
	e.prov.down.Store(false)
	if _, _, err := sealPatient(t, ctx, e.svc, "new", "p1"); err != nil {
		t.Fatal(err)
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestLRUEviction: the cache holds at most MaxKeys keys; the least
// recently used is evicted first and its bytes are zeroed. (Keys takes
// ownership of the slices the provider returns, so the provider's copies
// show the zeroing.)
func TestLRUEviction(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{MaxKeys: 2})
	ctx := t.Context()
	bodies := map[string][]byte{}
	keyOf := map[string][]byte{}
	for _, tn := range []string{"ta", "tb", "tc"} {
		n := len(e.prov.handedOut)
		bodies[tn] = sealRes(t, e.svc, tn, patientBody(t, "p1", "Lru"))
		if len(e.prov.handedOut) != n+1 {
			t.Fatalf("sealing for %s made %d keys", tn, len(e.prov.handedOut)-n)
		}
		keyOf[tn] = e.prov.handedOut[n]
	}
	if !allZero(keyOf["ta"]) {
		t.Error("the least recently used key (ta) was not zeroed on eviction")
	}
	if allZero(keyOf["tb"]) || allZero(keyOf["tc"]) {
		t.Fatal("a cached key was zeroed")
	}
	// Using tb makes tc the least recently used.
	if _, err := e.svc.Open(ctx, "tb", "Patient", "p1", bodies["tb"]); err != nil {
		t.Fatal(err)
	}
	before := e.prov.unwraps.Load()
	if _, err := e.svc.Open(ctx, "ta", "Patient", "p1", bodies["ta"]); err != nil {
		t.Fatalf("Open of an evicted tenant: %v", err)
	}
	if e.prov.unwraps.Load() != before+1 {
		t.Fatal("the evicted key was not unwrapped again")
	}
	if !allZero(keyOf["tc"]) || allZero(keyOf["tb"]) {
		t.Error("the eviction order is not least recently used")
	}
	// Flush zeroes every cached key.
	live := e.prov.handedOut[len(e.prov.handedOut)-1]
	e.svc.Keys().Flush()
	if !allZero(live) || !allZero(keyOf["tb"]) {
		t.Error("Flush left key bytes in memory")
	}
	for _, tn := range []string{"ta", "tb", "tc"} {
		if _, err := e.svc.Open(ctx, tn, "Patient", "p1", bodies[tn]); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewEpoch(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{Refresh: time.Nanosecond})
	ctx := t.Context()
	old, ep, err := e.svc.Seal(ctx, "t1", "Patient", "p1", patientBody(t, "p1", "Epochone"), nil)
	if err != nil || ep != 1 {
		t.Fatalf("Seal: epoch %d, %v", ep, err)
	}
	other := e.restart(t) // another process, already at epoch 1
	if ep, _, err := other.Keys().Current(ctx, "t1"); err != nil || ep != 1 {
		t.Fatalf("Current: %d, %v", ep, err)
	}
	next, err := e.svc.Keys().NewEpoch(ctx, "t1")
	if err != nil || next != 2 {
		t.Fatalf("NewEpoch: %d, %v", next, err)
	}
	for i, svc := range []*phi.Service{e.svc, other} {
		if ep, _, err := svc.Keys().Current(ctx, "t1"); err != nil || ep != 2 {
			t.Fatalf("service %d: Current after NewEpoch: %d, %v", i, ep, err)
		}
		body := patientBody(t, "p2", "Epochtwo")
		sealed, ep, err := svc.Seal(ctx, "t1", "Patient", "p2", body, nil)
		if err != nil || ep != 2 {
			t.Fatalf("service %d: Seal after NewEpoch: epoch %d, %v", i, ep, err)
		}
		for j, s := range []*phi.Service{e.svc, other, e.restart(t)} {
			if got, err := s.Open(ctx, "t1", "Patient", "p1", old); err != nil || !bytes.Equal(got, patientBody(t, "p1", "Epochone")) {
				t.Fatalf("service %d: old body: %v", j, err)
			}
			if got, err := s.Open(ctx, "t1", "Patient", "p2", sealed); err != nil || !bytes.Equal(got, body) {
				t.Fatalf("service %d: new body: %v", j, err)
			}
		}
	}
	if d := e.store.count("t1", phi.PurposeData); d != 2 {
		t.Fatalf("%d data keys stored, want 2", d)
	}
	// Blind tokens do not change with the data epoch.
	a, _ := e.svc.Blinder(ctx, "t1").Tokens("Patient", "family", []string{"s:x"})
	b, _ := e.restart(t).Blinder(ctx, "t1").Tokens("Patient", "family", []string{"s:x"})
	if !bytes.Equal(a[0], b[0]) {
		t.Fatal("blind tokens changed across processes")
	}
}

func TestCryptoShredding(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	ctx := t.Context()
	sealed := sealRes(t, e.svc, "t1", compact(t, patientJSON))
	blob, _, err := e.svc.SealBlob(ctx, "t1", "hl7", "m1", []byte("PID|1||Chalmersworth"))
	if err != nil {
		t.Fatal(err)
	}
	keep := sealRes(t, e.svc, "t2", compact(t, patientJSON))
	n, err := e.store.DestroyTenantKeys(ctx, "t1")
	if err != nil || n != 1 {
		t.Fatalf("DestroyTenantKeys: %d, %v", n, err)
	}
	e.svc.Keys().Flush()
	for _, svc := range []*phi.Service{e.svc, e.restart(t)} {
		checkOpenFails(t, svc, "t1", "Patient", "p1", sealed, phi.ErrNoKey, "identifier")
		got, err := svc.OpenBlob(ctx, "t1", "hl7", "m1", blob)
		if !errors.Is(err, phi.ErrNoKey) || got != nil {
			t.Fatalf("OpenBlob after shredding: %v", err)
		}
		if strings.Contains(err.Error(), "Chalmersworth") {
			t.Fatalf("error %q quotes the blob", err)
		}
		// Other tenants are untouched.
		if _, err := svc.Open(ctx, "t2", "Patient", "p1", keep); err != nil {
			t.Fatal(err)
		}
	}
	// A later write makes new keys; the shredded data stays unreadable.
	sealRes(t, e.svc, "t1", compact(t, `{"resourceType":"Patient","id":"p9","birthDate":"2001-01-01"}`))
	checkOpenFails(t, e.svc, "t1", "Patient", "p1", sealed, phi.ErrTampered, "identifier")
}

// TestVaultOutage runs the key manager against a real Vault dev server of
// its own and seals the Vault mid-test.
func TestVaultOutage(t *testing.T) {
	t.Parallel()
	addr, token := vaulttest.Dedicated(t)
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.MaxRetries = 0
	cfg.Timeout = 5 * time.Second
	prov, err := vault.New(t.Context(), vault.Config{API: cfg, Token: token, Key: "fhirgate-phi-test", EnsureKey: true})
	if err != nil {
		t.Fatal(err)
	}
	defer prov.Close()
	store := newMemStore()
	svc := phi.NewService(testPolicy(t), phi.NewKeys(prov, store, phi.KeyOptions{}))
	ctx := t.Context()
	body := compact(t, patientJSON)
	sealed := sealRes(t, svc, "t1", body)
	if ks, _ := store.TenantKeys(ctx, "t1"); len(ks) != 1 || !strings.HasPrefix(ks[0].Wrapped, "vault:v1:") {
		t.Fatalf("stored keys: %+v", ks)
	}
	fresh := phi.NewService(testPolicy(t), phi.NewKeys(prov, store, phi.KeyOptions{}))
	if got, err := fresh.Open(ctx, "t1", "Patient", "p1", sealed); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("Open through Vault: %v", err)
	}

	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	if err := c.Sys().Seal(); err != nil {
		t.Fatalf("seal Vault: %v", err)
	}
	// Cached keys still work; the cache is the only thing that does.
	if got, err := svc.Open(ctx, "t1", "Patient", "p1", sealed); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("Open from the cache with Vault sealed: %v", err)
	}
	svc.Keys().Flush()
	_, err = svc.Open(ctx, "t1", "Patient", "p1", sealed)
	wantUnavailable(t, "Open with Vault sealed", err)
	out, _, err := svc.Seal(ctx, "t1", "Patient", "p2", body, nil)
	wantUnavailable(t, "Seal with Vault sealed", err)
	if out != nil {
		t.Error("Seal returned a body with its error")
	}
	out, _, err = svc.Seal(ctx, "new-tenant", "Patient", "p1", body, nil)
	wantUnavailable(t, "first Seal of a new tenant with Vault sealed", err)
	if out != nil {
		t.Error("Seal returned a body with its error")
	}
	if ks, _ := store.TenantKeys(ctx, "new-tenant"); len(ks) != 0 {
		t.Fatalf("keys stored for the new tenant: %+v", ks)
	}
}

// TestIndexKeyUnderEviction: blind tokens stay right while the cache is
// evicting the keys they derive from. The cache (3 keys) is smaller than
// the keys in use (3 tenants with a data and an index key each), so every
// call misses: a call may fail, but only saying that the cache is too
// small, never with a wrong token (derived from a zeroed, evicted key) and
// never claiming that the key was destroyed.
func TestIndexKeyUnderEviction(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{MaxKeys: 3})
	ctx := t.Context()
	tenants := []string{"ta", "tb", "tc"}
	want := map[string][]byte{}
	for _, tn := range tenants {
		if _, _, err := sealPatient(t, ctx, e.svc, tn, "p1"); err != nil {
			t.Fatal(err)
		}
		tok, err := e.restart(t).Blinder(ctx, tn).Tokens("Patient", "family", []string{"s:x"})
		if err != nil {
			t.Fatal(err)
		}
		want[tn] = tok[0]
	}
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		calls, tooSmall int
	)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 150 {
				tn := tenants[(g+j)%len(tenants)] // every call misses the cache
				tok, err := e.svc.Blinder(ctx, tn).Tokens("Patient", "family", []string{"s:x"})
				mu.Lock()
				calls++
				switch {
				case err != nil && !errors.Is(err, phi.ErrNoKey) && strings.Contains(err.Error(), "MaxKeys"):
					tooSmall++
				case err != nil:
					t.Errorf("call %d for %s: %v", j, tn, err)
				case !bytes.Equal(tok[0], want[tn]):
					t.Errorf("call %d for %s: wrong blind token", j, tn)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d calls, %d Unwrap calls, %d refused as the cache is too small", calls, e.prov.unwraps.Load(), tooSmall)
	if tooSmall > calls/10 {
		t.Errorf("%d of %d calls failed", tooSmall, calls)
	}
}
