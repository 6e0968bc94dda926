package keyring_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/phi/keyring"
	"github.com/fhirgate/fhirgate/internal/phi/providertest"
)

func open(t *testing.T, path string) *keyring.Keyring {
	t.Helper()
	k, err := keyring.Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return k
}

func TestConformance(t *testing.T) {
	providertest.Run(t, func(t *testing.T) phi.KeyProvider {
		return open(t, filepath.Join(t.TempDir(), "keyring.json"))
	})
}

func TestCreatesPrivateFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "phi")
	path := filepath.Join(dir, "keyring.json")
	k := open(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("keyring file mode = %04o, want 0600", got)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := di.Mode().Perm(); got != 0o700 {
		t.Errorf("keyring directory mode = %04o, want 0700", got)
	}
	// Rotation replaces the file; the replacement is private too, and no
	// temporary files are left behind.
	if err := k.Rotate(t.Context()); err != nil {
		t.Fatal(err)
	}
	fi, err = os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("keyring file mode after Rotate = %04o, want 0600", got)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if n := e.Name(); n != "keyring.json" && n != "keyring.json.lock" {
			t.Errorf("unexpected file %s left in the keyring directory", n)
		}
	}
}

func TestRefusesGroupReadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	k := open(t, path)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := keyring.Open(path)
	if err == nil {
		t.Fatal("Open of a 0644 keyring file: no error")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("error %q does not name the file and its mode", err)
	}
	// An already open keyring refuses it too, as unavailable.
	_, _, err = k.NewDataKey(t.Context())
	if !errors.Is(err, phi.ErrUnavailable) || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("NewDataKey on a 0644 keyring file: error %v, want phi.ErrUnavailable naming the mode", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := k.NewDataKey(t.Context()); err != nil {
		t.Fatalf("NewDataKey after chmod 600: %v", err)
	}
}

func TestSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	k := open(t, path)
	var plain [][]byte
	var wrapped []string
	for range 3 {
		pt, w, err := k.NewDataKey(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		plain, wrapped = append(plain, pt), append(wrapped, w)
	}
	if err := k.Rotate(t.Context()); err != nil {
		t.Fatal(err)
	}
	pt, w, err := k.NewDataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	plain, wrapped = append(plain, pt), append(wrapped, w)

	k2 := open(t, path)
	ki, err := k2.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if ki.LatestVersion != 2 || ki.MinDecryptionVersion != 1 {
		t.Fatalf("reopened Info = %+v, want latest 2, min 1", ki)
	}
	got, err := k2.Unwrap(t.Context(), wrapped)
	if err != nil {
		t.Fatalf("Unwrap after reopen: %v", err)
	}
	for i := range plain {
		if string(got[i]) != string(plain[i]) {
			t.Fatalf("item %d differs after reopen", i)
		}
	}
}

// TestSharedFile checks that two Keyrings on one file (as two processes
// would be) see each other's rotations and minimum-version changes.
func TestSharedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	a, b := open(t, path), open(t, path)
	_, w1, err := a.NewDataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Rotate(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, w2, err := a.NewDataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if v := phi.KeyVersion(w2); v != 2 {
		t.Fatalf("after another instance rotated, new key has version %d, want 2", v)
	}
	rw, err := a.Rewrap(t.Context(), []string{w1})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetMinDecryptionVersion(t.Context(), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Unwrap(t.Context(), []string{w1}); !errors.Is(err, phi.ErrUnwrap) {
		t.Fatalf("other instance unwrapped a key below the new minimum version: %v", err)
	}
	if _, err := b.Unwrap(t.Context(), append(rw, w2)); err != nil {
		t.Fatalf("other instance: %v", err)
	}
}

func TestRefusesCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	if err := os.WriteFile(path, []byte(`{"format":1,"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := keyring.Open(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open of a keyring without keys: %v, want an error naming the file", err)
	}
	if err := os.WriteFile(path, []byte(`not json`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := keyring.Open(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open of a non-JSON keyring: %v, want an error naming the file", err)
	}
}
