package phi_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/fhirgate/fhirgate/internal/database/databasetest"
	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/phi/vault"
	"github.com/fhirgate/fhirgate/internal/phi/vaulttest"
	"github.com/fhirgate/fhirgate/internal/store"
)

// TestMain (vaulttest.Main, which stops the Vault dev server these tests
// start) is in phi_test.go, shared by the package's tests.

// adminProvider connects to the shared Vault with a fresh transit key.
func adminProvider(t *testing.T) *vault.Provider {
	t.Helper()
	addr, token := vaulttest.Server(t)
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		t.Fatal(cfg.Error)
	}
	cfg.Address, cfg.MaxRetries, cfg.Timeout = addr, 0, 10*time.Second
	p, err := vault.New(t.Context(), vault.Config{API: cfg, Token: token, Key: vaulttest.NewKey(t)})
	if err != nil {
		t.Fatalf("vault.New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// adminStoreKeys stores data and index keys for a few tenants, all wrapped
// under the provider's current version, and returns their plaintexts by
// tenant/purpose/epoch.
func adminStoreKeys(t *testing.T, prov phi.KeyProvider, ks phi.KeyStore, tenants []string, epochs int) map[string][]byte {
	t.Helper()
	plain := map[string][]byte{}
	add := func(tenant, purpose string, epoch int) {
		raw, wrapped, err := prov.NewDataKey(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		k := phi.StoredKey{Tenant: tenant, Purpose: purpose, Epoch: epoch, Wrapped: wrapped, Created: time.Now().UTC()}
		if got, err := ks.AddKey(t.Context(), k); err != nil || got.Wrapped != wrapped {
			t.Fatalf("AddKey %s/%s/%d: %v", tenant, purpose, epoch, err)
		}
		plain[adminName(k)] = raw
	}
	for _, tn := range tenants {
		for e := 1; e <= epochs; e++ {
			add(tn, phi.PurposeData, e)
		}
		add(tn, phi.PurposeIndex, 1)
	}
	return plain
}

func adminName(k phi.StoredKey) string { return fmt.Sprintf("%s/%s/%d", k.Tenant, k.Purpose, k.Epoch) }

// TestAdminRewrapAllAndRaiseMinDecryption: once every stored key is
// rewrapped, min_decryption_version can be raised, and old wrapped copies
// (a backup's) then fail to unwrap while the stored keys still unwrap to
// the same data keys.
func TestAdminRewrapAllAndRaiseMinDecryption(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	prov := adminProvider(t)
	st := store.New(databasetest.NewPool(t))

	plain := adminStoreKeys(t, prov, st, []string{"t1", "t2", "t3"}, 2) // 9 keys under v1
	before, err := st.AllKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 9 {
		t.Fatalf("%d keys stored, want 9", len(before))
	}
	for _, k := range before {
		if v := phi.KeyVersion(k.Wrapped); v != 1 {
			t.Fatalf("key %s wrapped under v%d before rotation, want v1", adminName(k), v)
		}
	}

	if err := prov.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	// A key made after the rotation is already on the latest version.
	plain2 := adminStoreKeys(t, prov, st, []string{"t4"}, 0)
	for n, p := range plain2 {
		plain[n] = p
	}

	// While keys lag, raising the minimum is refused and changes nothing.
	err = phi.RaiseMinDecryption(ctx, prov, st)
	if !errors.Is(err, phi.ErrKeysBehind) {
		t.Fatalf("RaiseMinDecryption with 9 keys under v1 = %v, want ErrKeysBehind", err)
	}
	if info, err := prov.Info(ctx); err != nil || info.MinDecryptionVersion != 1 || info.LatestVersion != 2 {
		t.Fatalf("after a refused raise: %+v, %v; want latest 2, min 1", info, err)
	}

	rep, err := phi.RewrapAll(ctx, prov, st, 4)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Keys != 10 || rep.Rewrapped != 9 || rep.Current != 1 || rep.From[1] != 9 || rep.Version != 2 || rep.Calls != 3 {
		t.Fatalf("RewrapAll report %+v; want 10 keys, 9 rewrapped from v1 in 3 calls of 4, 1 already current, version 2", rep)
	}
	after, err := st.AllKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 10 {
		t.Fatalf("%d keys stored after rewrap, want 10", len(after))
	}
	wrapped := make([]string, len(after))
	for i, k := range after {
		if v := phi.KeyVersion(k.Wrapped); v != 2 {
			t.Errorf("key %s wrapped under v%d after RewrapAll, want v2", adminName(k), v)
		}
		wrapped[i] = k.Wrapped
	}
	got, err := prov.Unwrap(ctx, wrapped)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range after {
		if !bytes.Equal(got[i], plain[adminName(k)]) {
			t.Errorf("key %s unwraps to another data key after rewrap", adminName(k))
		}
	}
	// Nothing left to do: a second run rewraps nothing.
	if rep, err := phi.RewrapAll(ctx, prov, st, 4); err != nil || rep.Rewrapped != 0 || rep.Calls != 0 || rep.Current != 10 {
		t.Fatalf("second RewrapAll = %+v, %v; want nothing rewrapped", rep, err)
	}

	// Before the raise, an old wrapped copy still unwraps.
	if _, err := prov.Unwrap(ctx, []string{before[0].Wrapped}); err != nil {
		t.Fatalf("a v1 copy fails to unwrap before the minimum is raised: %v", err)
	}
	if err := phi.RaiseMinDecryption(ctx, prov, st); err != nil {
		t.Fatal(err)
	}
	if info, err := prov.Info(ctx); err != nil || info.MinDecryptionVersion != 2 {
		t.Fatalf("after the raise: %+v, %v; want min decryption version 2", info, err)
	}
	for _, k := range before {
		if _, err := prov.Unwrap(ctx, []string{k.Wrapped}); !errors.Is(err, phi.ErrUnwrap) {
			t.Errorf("old copy of %s unwraps after the minimum was raised: %v, want ErrUnwrap", adminName(k), err)
		}
	}
	// The stored (rewrapped) keys still unwrap to the same data keys.
	got, err = prov.Unwrap(ctx, wrapped)
	if err != nil {
		t.Fatalf("stored keys fail to unwrap after the raise: %v", err)
	}
	for i, k := range after {
		if !bytes.Equal(got[i], plain[adminName(k)]) {
			t.Errorf("key %s unwraps to another data key after the raise", adminName(k))
		}
	}
	// Raising again is a no-op.
	if err := phi.RaiseMinDecryption(ctx, prov, st); err != nil {
		t.Fatalf("second RaiseMinDecryption: %v", err)
	}
}

// TestAdminKeysOfKeysManagerSurviveRewrap: keys made by phi.Keys (data
// epochs and the index key) still decrypt what they sealed after a
// rotation, RewrapAll and the raise, through a fresh key manager that
// unwraps them from the database.
func TestAdminKeysOfKeysManagerSurviveRewrap(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	prov := adminProvider(t)
	st := store.New(databasetest.NewPool(t))
	pol, err := phi.LoadPolicy("../../policies/phi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	svc := phi.NewService(pol, phi.NewKeys(prov, st, phi.KeyOptions{}))
	blob, epoch, err := svc.SealBlob(ctx, "t", "hl7", "m1", []byte("MSH|^~\\&|PID|||Doe^Jane"))
	if err != nil || epoch != 1 {
		t.Fatalf("SealBlob = epoch %d, %v", epoch, err)
	}
	tok, err := svc.Blinder(ctx, "t").Tokens("Patient", "family", []string{"doe"})
	if err != nil {
		t.Fatal(err)
	}

	if err := prov.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := phi.RewrapAll(ctx, prov, st, 0); err != nil {
		t.Fatal(err)
	}
	if err := phi.RaiseMinDecryption(ctx, prov, st); err != nil {
		t.Fatal(err)
	}

	fresh := phi.NewService(pol, phi.NewKeys(prov, st, phi.KeyOptions{}))
	pt, err := fresh.OpenBlob(ctx, "t", "hl7", "m1", blob)
	if err != nil || string(pt) != "MSH|^~\\&|PID|||Doe^Jane" {
		t.Fatalf("OpenBlob after rewrap and raise = %q, %v", pt, err)
	}
	tok2, err := fresh.Blinder(ctx, "t").Tokens("Patient", "family", []string{"doe"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tok[0], tok2[0]) {
		t.Error("the blind-index token changed after rewrap: the index key is not the same key")
	}
}
