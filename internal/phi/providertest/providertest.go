// Package providertest is the conformance suite that every phi.KeyProvider
// (Vault Transit, local keyring) must pass: data-key generation, batch
// unwrap, versioned wrapped form, rotation, rewrap, minimum decryption
// version, rejection of tampered or foreign wrapped keys, and concurrent
// use. It is imported only by tests and must never print key material.
package providertest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/fhirgate/fhirgate/internal/phi"
)

// BatchSize is the number of keys used by the batch tests: more than one
// Vault batch chunk (250), so chunking is exercised.
const BatchSize = 300

// Run runs the conformance suite. newProvider must return a provider with
// its own, fresh key-encryption key on every call (a fresh transit key, a
// fresh keyring file), and arrange for its cleanup via t.Cleanup.
func Run(t *testing.T, newProvider func(t *testing.T) phi.KeyProvider) {
	t.Run("DataKey", func(t *testing.T) { testDataKey(t, newProvider(t)) })
	t.Run("UnwrapBatch", func(t *testing.T) { testUnwrapBatch(t, newProvider(t)) })
	t.Run("UnwrapEmpty", func(t *testing.T) { testUnwrapEmpty(t, newProvider(t)) })
	t.Run("VersionPrefix", func(t *testing.T) { testVersionPrefix(t, newProvider(t)) })
	t.Run("Rotate", func(t *testing.T) { testRotate(t, newProvider(t)) })
	t.Run("Rewrap", func(t *testing.T) { testRewrap(t, newProvider(t)) })
	t.Run("MinDecryptionVersion", func(t *testing.T) { testMinDecryptionVersion(t, newProvider(t)) })
	t.Run("MinDecryptionVersionOutOfRange", func(t *testing.T) { testMinOutOfRange(t, newProvider(t)) })
	t.Run("BadWrappedKeys", func(t *testing.T) { testBadWrappedKeys(t, newProvider(t), newProvider(t)) })
	t.Run("Concurrency", func(t *testing.T) { testConcurrency(t, newProvider(t)) })
}

// newKeys makes n data keys, failing the test on any error.
func newKeys(t *testing.T, p phi.KeyProvider, n int) (plain [][]byte, wrapped []string) {
	t.Helper()
	for i := range n {
		pt, w, err := p.NewDataKey(t.Context())
		if err != nil {
			t.Fatalf("NewDataKey #%d: %v", i, err)
		}
		plain = append(plain, pt)
		wrapped = append(wrapped, w)
	}
	return plain, wrapped
}

// mustUnwrap unwraps and checks the result against want, item by item.
func mustUnwrap(t *testing.T, p phi.KeyProvider, wrapped []string, want [][]byte) {
	t.Helper()
	got, err := p.Unwrap(t.Context(), wrapped)
	if err != nil {
		t.Fatalf("Unwrap(%d keys): %v", len(wrapped), err)
	}
	if len(got) != len(want) {
		t.Fatalf("Unwrap(%d keys) returned %d plaintexts", len(wrapped), len(got))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("Unwrap: item %d does not match its original data key", i)
		}
	}
}

// info returns p.Info, failing the test on error.
func info(t *testing.T, p phi.KeyProvider) phi.KeyInfo {
	t.Helper()
	ki, err := p.Info(t.Context())
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	return ki
}

// wantUnwrapErr checks that err wraps phi.ErrUnwrap and names item index i.
func wantUnwrapErr(t *testing.T, what string, err error, i int) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want one wrapping phi.ErrUnwrap", what)
	}
	if !errors.Is(err, phi.ErrUnwrap) {
		t.Fatalf("%s: error %q does not wrap phi.ErrUnwrap", what, err)
	}
	if name := fmt.Sprintf("item %d", i); !strings.Contains(err.Error(), name) {
		t.Fatalf("%s: error %q does not name %q", what, err, name)
	}
}

func testDataKey(t *testing.T, p phi.KeyProvider) {
	if p.Name() == "" {
		t.Error("Name() is empty")
	}
	plain, wrapped := newKeys(t, p, 4)
	for i, pt := range plain {
		if len(pt) != 32 {
			t.Fatalf("data key #%d has %d bytes, want 32", i, len(pt))
		}
		if bytes.Equal(pt, make([]byte, 32)) {
			t.Fatalf("data key #%d is all zero", i)
		}
		if wrapped[i] == "" {
			t.Fatalf("wrapped key #%d is empty", i)
		}
		for _, enc := range []string{base64.StdEncoding.EncodeToString(pt), fmt.Sprintf("%x", pt)} {
			if strings.Contains(wrapped[i], enc) {
				t.Fatalf("wrapped key #%d contains its plaintext", i)
			}
		}
		for j := range i {
			if bytes.Equal(pt, plain[j]) {
				t.Fatalf("data keys #%d and #%d are equal", j, i)
			}
			if wrapped[i] == wrapped[j] {
				t.Fatalf("wrapped keys #%d and #%d are equal", j, i)
			}
		}
	}
	mustUnwrap(t, p, wrapped, plain)
}

func testUnwrapBatch(t *testing.T, p phi.KeyProvider) {
	plain, wrapped := newKeys(t, p, BatchSize)
	mustUnwrap(t, p, wrapped, plain)
	// Reversed order, with a repeated key: results follow the input order.
	rw := make([]string, 0, len(wrapped)+1)
	rp := make([][]byte, 0, len(plain)+1)
	for i := len(wrapped) - 1; i >= 0; i-- {
		rw, rp = append(rw, wrapped[i]), append(rp, plain[i])
	}
	rw, rp = append(rw, wrapped[0]), append(rp, plain[0])
	mustUnwrap(t, p, rw, rp)
}

func testUnwrapEmpty(t *testing.T, p phi.KeyProvider) {
	got, err := p.Unwrap(t.Context(), nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("Unwrap(nil) = %d items, %v; want 0 items, no error", len(got), err)
	}
	rw, err := p.Rewrap(t.Context(), nil)
	if err != nil || len(rw) != 0 {
		t.Fatalf("Rewrap(nil) = %d items, %v; want 0 items, no error", len(rw), err)
	}
}

func testVersionPrefix(t *testing.T, p phi.KeyProvider) {
	ki := info(t, p)
	if ki.Name == "" {
		t.Error("Info().Name is empty")
	}
	if ki.LatestVersion < 1 {
		t.Fatalf("Info().LatestVersion = %d, want >= 1", ki.LatestVersion)
	}
	if ki.MinDecryptionVersion < 1 || ki.MinDecryptionVersion > ki.LatestVersion {
		t.Fatalf("Info().MinDecryptionVersion = %d, want 1..%d", ki.MinDecryptionVersion, ki.LatestVersion)
	}
	_, wrapped := newKeys(t, p, 2)
	for i, w := range wrapped {
		if v := phi.KeyVersion(w); v != ki.LatestVersion {
			t.Fatalf("wrapped key #%d names version %d (KeyVersion), want latest %d", i, v, ki.LatestVersion)
		}
	}
}

func testRotate(t *testing.T, p phi.KeyProvider) {
	before := info(t, p)
	oldPlain, oldWrapped := newKeys(t, p, 3)
	if err := p.Rotate(t.Context()); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	after := info(t, p)
	if after.LatestVersion != before.LatestVersion+1 {
		t.Fatalf("after Rotate, LatestVersion = %d, want %d", after.LatestVersion, before.LatestVersion+1)
	}
	if after.MinDecryptionVersion != before.MinDecryptionVersion {
		t.Fatalf("Rotate changed MinDecryptionVersion from %d to %d", before.MinDecryptionVersion, after.MinDecryptionVersion)
	}
	newPlain, newWrapped := newKeys(t, p, 3)
	for i, w := range newWrapped {
		if v := phi.KeyVersion(w); v != after.LatestVersion {
			t.Fatalf("new wrapped key #%d names version %d, want %d", i, v, after.LatestVersion)
		}
	}
	for i, w := range oldWrapped {
		if v := phi.KeyVersion(w); v != before.LatestVersion {
			t.Fatalf("old wrapped key #%d names version %d, want %d", i, v, before.LatestVersion)
		}
	}
	// Old and new keys unwrap together, in one call.
	mustUnwrap(t, p, append(oldWrapped, newWrapped...), append(oldPlain, newPlain...))
}

func testRewrap(t *testing.T, p phi.KeyProvider) {
	v1Plain, v1Wrapped := newKeys(t, p, 5)
	if err := p.Rotate(t.Context()); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	v2Plain, v2Wrapped := newKeys(t, p, 2)
	if err := p.Rotate(t.Context()); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	latest := info(t, p).LatestVersion
	plain := append(v1Plain, v2Plain...)
	wrapped := append(v1Wrapped, v2Wrapped...)
	rewrapped, err := p.Rewrap(t.Context(), wrapped)
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	if len(rewrapped) != len(wrapped) {
		t.Fatalf("Rewrap(%d keys) returned %d", len(wrapped), len(rewrapped))
	}
	for i, w := range rewrapped {
		if v := phi.KeyVersion(w); v != latest {
			t.Fatalf("rewrapped key #%d names version %d, want latest %d", i, v, latest)
		}
		if strings.Contains(w, base64.StdEncoding.EncodeToString(plain[i])) {
			t.Fatalf("rewrapped key #%d contains its plaintext", i)
		}
	}
	mustUnwrap(t, p, rewrapped, plain)
	// The originals still unwrap too (no minimum version was set).
	mustUnwrap(t, p, wrapped, plain)

	// One bad item fails the whole call and is named.
	bad := append([]string{rewrapped[0]}, "garbage")
	_, err = p.Rewrap(t.Context(), bad)
	wantUnwrapErr(t, "Rewrap with a garbage item", err, 1)
}

func testMinDecryptionVersion(t *testing.T, p phi.KeyProvider) {
	oldPlain, oldWrapped := newKeys(t, p, 3)
	if err := p.Rotate(t.Context()); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	rewrapped, err := p.Rewrap(t.Context(), oldWrapped)
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	latest := info(t, p).LatestVersion
	if err := p.SetMinDecryptionVersion(t.Context(), latest); err != nil {
		t.Fatalf("SetMinDecryptionVersion(%d): %v", latest, err)
	}
	if ki := info(t, p); ki.MinDecryptionVersion != latest || ki.LatestVersion != latest {
		t.Fatalf("Info after SetMinDecryptionVersion(%d) = latest %d, min %d", latest, ki.LatestVersion, ki.MinDecryptionVersion)
	}
	mustUnwrap(t, p, rewrapped, oldPlain)

	_, err = p.Unwrap(t.Context(), oldWrapped[:1])
	wantUnwrapErr(t, "Unwrap of a key below the minimum decryption version", err, 0)
	_, err = p.Unwrap(t.Context(), []string{rewrapped[0], rewrapped[1], oldWrapped[2]})
	wantUnwrapErr(t, "Unwrap of a batch with a key below the minimum decryption version", err, 2)
	_, err = p.Rewrap(t.Context(), []string{rewrapped[0], oldWrapped[1]})
	wantUnwrapErr(t, "Rewrap of a key below the minimum decryption version", err, 1)

	// New keys keep working.
	plain, wrapped := newKeys(t, p, 2)
	mustUnwrap(t, p, wrapped, plain)
}

func testMinOutOfRange(t *testing.T, p phi.KeyProvider) {
	before := info(t, p)
	for _, v := range []int{before.LatestVersion + 1, before.LatestVersion + 10, 0, -1} {
		if err := p.SetMinDecryptionVersion(t.Context(), v); err == nil {
			t.Fatalf("SetMinDecryptionVersion(%d) with latest %d: no error", v, before.LatestVersion)
		}
	}
	if after := info(t, p); after != before {
		t.Fatalf("failed SetMinDecryptionVersion changed Info from %+v to %+v", before, after)
	}
	plain, wrapped := newKeys(t, p, 1)
	mustUnwrap(t, p, wrapped, plain)
}

// flipCiphertext flips one bit in the middle of the ciphertext part (after
// the last ':') of a wrapped key, keeping the text well-formed.
func flipCiphertext(t *testing.T, w string) string {
	t.Helper()
	i := strings.LastIndexByte(w, ':')
	if i < 0 {
		t.Fatalf("wrapped key has no ':'-separated ciphertext part")
	}
	ct, err := base64.StdEncoding.DecodeString(w[i+1:])
	if err != nil || len(ct) == 0 {
		t.Fatalf("ciphertext part of wrapped key is not standard base64 (%v)", err)
	}
	ct[len(ct)/2] ^= 0x01
	return w[:i+1] + base64.StdEncoding.EncodeToString(ct)
}

// truncateCiphertext drops the last 3 bytes of the ciphertext, keeping the
// text well-formed base64.
func truncateCiphertext(t *testing.T, w string) string {
	t.Helper()
	i := strings.LastIndexByte(w, ':')
	ct, err := base64.StdEncoding.DecodeString(w[i+1:])
	if err != nil || len(ct) < 4 {
		t.Fatalf("ciphertext part of wrapped key is not standard base64 (%v)", err)
	}
	return w[:i+1] + base64.StdEncoding.EncodeToString(ct[:len(ct)-3])
}

func testBadWrappedKeys(t *testing.T, p, other phi.KeyProvider) {
	plain, wrapped := newKeys(t, p, 1)
	_, foreign := newKeys(t, other, 1)
	w := wrapped[0]
	colon := strings.LastIndexByte(w, ':')
	v := phi.KeyVersion(w)
	cases := []struct{ name, wrapped string }{
		{"tampered", flipCiphertext(t, w)},
		{"truncated", truncateCiphertext(t, w)},
		{"cut in the base64", w[:len(w)-5]},
		{"prefix only", w[:colon+1]},
		{"garbage", "garbage"},
		{"garbage after prefix", w[:colon+1] + "!!not base64!!"},
		{"empty", ""},
		{"unknown version", strings.Replace(w, fmt.Sprintf(":v%d:", v), ":v99:", 1)},
		{"other provider instance", foreign[0]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := p.Unwrap(t.Context(), []string{c.wrapped})
			wantUnwrapErr(t, "Unwrap", err, 0)
			_, err = p.Unwrap(t.Context(), []string{w, w, c.wrapped, w})
			wantUnwrapErr(t, "Unwrap in a batch", err, 2)
		})
	}
	// The good key is unaffected.
	mustUnwrap(t, p, wrapped, plain)
}

func testConcurrency(t *testing.T, p phi.KeyProvider) {
	const workers, rounds = 4, 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		all  []string
		want [][]byte
		errs = make(chan error, workers+1)
	)
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				pt, w, err := p.NewDataKey(t.Context())
				if err != nil {
					errs <- fmt.Errorf("worker %d round %d: NewDataKey: %w", g, r, err)
					return
				}
				got, err := p.Unwrap(t.Context(), []string{w})
				if err != nil {
					errs <- fmt.Errorf("worker %d round %d: Unwrap: %w", g, r, err)
					return
				}
				if len(got) != 1 || !bytes.Equal(got[0], pt) {
					errs <- fmt.Errorf("worker %d round %d: Unwrap returned a different data key", g, r)
					return
				}
				mu.Lock()
				all, want = append(all, w), append(want, pt)
				mu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 2 {
			if err := p.Rotate(t.Context()); err != nil {
				errs <- fmt.Errorf("concurrent Rotate: %w", err)
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	mustUnwrap(t, p, all, want)
	if ki := info(t, p); ki.LatestVersion < 3 {
		t.Fatalf("after 2 concurrent rotations LatestVersion = %d, want >= 3", ki.LatestVersion)
	}
}
