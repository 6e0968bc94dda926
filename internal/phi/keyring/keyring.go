// Package keyring is fhirgate's local key provider, the no-configuration
// development default: a JSON file of key-encryption key (KEK) versions,
// random 256-bit AES keys that wrap data keys with AES-256-GCM.
//
// The file is created on first use with mode 0600 in a 0700 directory, and
// a file that group or others may access is refused. Every write replaces
// the file atomically (temporary file + rename) under an exclusive flock on
// "<file>.lock", so several processes can share one keyring; each process
// notices another's rotation on its next call.
//
// It must never log, print or return KEK or data-key material in errors,
// and it is not a substitute for Vault in production: whoever can read the
// file can unwrap every data key.
package keyring

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fhirgate/fhirgate/internal/phi"
)

const (
	// name is the provider's Name.
	name = "local-keyring"
	// prefix starts every wrapped key: "local:v<N>:<base64(nonce|ciphertext)>".
	prefix = "local:v"
	// keySize is the size of KEKs and data keys (AES-256).
	keySize = 32
	// fileFormat is the version of the JSON layout written by this package.
	fileFormat = 1
	// maxFileSize bounds what is read from the keyring file.
	maxFileSize = 4 << 20
)

// Keyring is a phi.KeyProvider backed by a local file. It is safe for
// concurrent use, also by several processes sharing the file.
type Keyring struct {
	path string

	mu    sync.Mutex // guards st and fi
	st    *state
	fi    fs.FileInfo // the file st was read from
	write sync.Mutex  // serialises this process's writers (flock does the rest)
}

var _ phi.KeyProvider = (*Keyring)(nil)

// state is a parsed keyring file.
type state struct {
	latest int
	min    int
	aeads  map[int]cipher.AEAD
}

// diskFile is the JSON layout of the keyring file.
type diskFile struct {
	Format               int       `json:"format"`
	MinDecryptionVersion int       `json:"min_decryption_version"`
	Keys                 []diskKey `json:"keys"`
}

type diskKey struct {
	Version int       `json:"version"`
	Key     string    `json:"key"` // base64 (standard encoding) of the 32-byte KEK
	Created time.Time `json:"created"`
}

// Open opens the keyring file at path, creating it (mode 0600, parent
// directories 0700) with one fresh KEK version if it does not exist. It
// refuses a file that group or others may access.
func Open(path string) (*Keyring, error) {
	if path == "" {
		return nil, errors.New("local-keyring: empty keyring path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("local-keyring: %s: %w", path, err)
	}
	k := &Keyring{path: abs}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("local-keyring: create directory for %s: %w", abs, err)
	}
	if _, err := os.Lstat(abs); errors.Is(err, fs.ErrNotExist) {
		if err := k.create(); err != nil {
			return nil, err
		}
	}
	if _, err := k.load(); err != nil {
		return nil, err
	}
	return k, nil
}

// Path returns the keyring file's path.
func (k *Keyring) Path() string { return k.path }

// Name implements phi.KeyProvider.
func (k *Keyring) Name() string { return name }

// NewDataKey implements phi.KeyProvider.
func (k *Keyring) NewDataKey(ctx context.Context) ([]byte, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("%s: new data key: %w", name, err)
	}
	st, err := k.load()
	if err != nil {
		return nil, "", err
	}
	dk := make([]byte, keySize)
	if _, err := rand.Read(dk); err != nil {
		return nil, "", fmt.Errorf("%s: new data key: %w", name, err)
	}
	return dk, st.seal(dk), nil
}

// Unwrap implements phi.KeyProvider.
func (k *Keyring) Unwrap(ctx context.Context, wrapped []string) ([][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: unwrap: %w", name, err)
	}
	if len(wrapped) == 0 {
		return [][]byte{}, nil
	}
	st, err := k.load()
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(wrapped))
	for i, w := range wrapped {
		pt, err := st.open(w)
		if err != nil {
			return nil, fmt.Errorf("%s: unwrap item %d: %w", name, i, err)
		}
		out[i] = pt
	}
	return out, nil
}

// Rewrap implements phi.KeyProvider.
func (k *Keyring) Rewrap(ctx context.Context, wrapped []string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: rewrap: %w", name, err)
	}
	if len(wrapped) == 0 {
		return []string{}, nil
	}
	st, err := k.load()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(wrapped))
	for i, w := range wrapped {
		pt, err := st.open(w)
		if err != nil {
			return nil, fmt.Errorf("%s: rewrap item %d: %w", name, i, err)
		}
		out[i] = st.seal(pt)
		clear(pt)
	}
	return out, nil
}

// Rotate implements phi.KeyProvider: it appends a fresh KEK version.
func (k *Keyring) Rotate(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: rotate: %w", name, err)
	}
	return k.update(func(d *diskFile) error {
		latest := 0
		for _, key := range d.Keys {
			latest = max(latest, key.Version)
		}
		nk, err := newDiskKey(latest + 1)
		if err != nil {
			return err
		}
		d.Keys = append(d.Keys, nk)
		return nil
	})
}

// Info implements phi.KeyProvider.
func (k *Keyring) Info(ctx context.Context) (phi.KeyInfo, error) {
	if err := ctx.Err(); err != nil {
		return phi.KeyInfo{}, fmt.Errorf("%s: info: %w", name, err)
	}
	st, err := k.load()
	if err != nil {
		return phi.KeyInfo{}, err
	}
	return phi.KeyInfo{Name: name, LatestVersion: st.latest, MinDecryptionVersion: st.min}, nil
}

// SetMinDecryptionVersion implements phi.KeyProvider.
func (k *Keyring) SetMinDecryptionVersion(ctx context.Context, v int) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: set min decryption version: %w", name, err)
	}
	return k.update(func(d *diskFile) error {
		latest := 0
		for _, key := range d.Keys {
			latest = max(latest, key.Version)
		}
		if v < 1 || v > latest {
			return fmt.Errorf("%s: min decryption version %d is out of range: versions are 1 to %d", name, v, latest)
		}
		d.MinDecryptionVersion = v
		return nil
	})
}

// seal wraps a data key under the latest KEK version.
func (st *state) seal(dk []byte) string {
	aead := st.aeads[st.latest]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(dk)+aead.Overhead())
	_, _ = rand.Read(nonce) // crypto/rand.Read never returns an error (Go 1.24+)
	ct := aead.Seal(nonce, nonce, dk, aad(st.latest))
	return prefix + strconv.Itoa(st.latest) + ":" + base64.StdEncoding.EncodeToString(ct)
}

// open unwraps one wrapped key; its errors wrap phi.ErrUnwrap and never
// include key material.
func (st *state) open(w string) ([]byte, error) {
	rest, ok := strings.CutPrefix(w, prefix)
	if !ok {
		return nil, fmt.Errorf("%w: not a local keyring wrapped key", phi.ErrUnwrap)
	}
	vs, b64, ok := strings.Cut(rest, ":")
	if !ok || vs == "" || len(vs) > 9 || strings.Trim(vs, "0123456789") != "" {
		return nil, fmt.Errorf("%w: malformed key version", phi.ErrUnwrap)
	}
	v, _ := strconv.Atoi(vs)
	aead, ok := st.aeads[v]
	if !ok {
		return nil, fmt.Errorf("%w: unknown key version %d", phi.ErrUnwrap, v)
	}
	if v < st.min {
		return nil, fmt.Errorf("%w: key version %d is below the minimum decryption version %d", phi.ErrUnwrap, v, st.min)
	}
	ct, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed ciphertext encoding", phi.ErrUnwrap)
	}
	if len(ct) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%w: ciphertext too short", phi.ErrUnwrap)
	}
	n := aead.NonceSize()
	pt, err := aead.Open(nil, ct[:n], ct[n:], aad(v))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed (tampered, or wrapped by another key)", phi.ErrUnwrap)
	}
	if len(pt) != keySize {
		clear(pt)
		return nil, fmt.Errorf("%w: data key has %d bytes, want %d", phi.ErrUnwrap, len(pt), keySize)
	}
	return pt, nil
}

// aad binds a ciphertext to its KEK version.
func aad(v int) []byte { return []byte("fhirgate/local-keyring/v" + strconv.Itoa(v)) }

// load returns the current state, re-reading the file when another writer
// (this process or another one) has replaced it since the last read.
func (k *Keyring) load() (*state, error) {
	fi, err := os.Stat(k.path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", name, phi.ErrUnavailable, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.st != nil && os.SameFile(fi, k.fi) && fi.ModTime().Equal(k.fi.ModTime()) && fi.Size() == k.fi.Size() && fi.Mode() == k.fi.Mode() {
		return k.st, nil
	}
	d, rfi, err := readFile(k.path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", phi.ErrUnavailable, err)
	}
	st, err := d.parse(k.path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", phi.ErrUnavailable, err)
	}
	k.st, k.fi = st, rfi
	return st, nil
}

// readFile reads and decodes the keyring file, refusing files that are not
// regular or that group or others may access.
func readFile(path string) (*diskFile, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: refusing %s: not a regular file (mode %s)", name, path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, nil, fmt.Errorf("%s: refusing %s: mode %04o lets group or others access it; it must be 0600 (chmod 600 %s)", name, path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: read %s: %w", name, path, err)
	}
	if len(b) > maxFileSize {
		return nil, nil, fmt.Errorf("%s: %s is larger than %d bytes", name, path, maxFileSize)
	}
	var d diskFile
	if err := json.Unmarshal(b, &d); err != nil {
		// The JSON error may quote file content: do not include it.
		return nil, nil, fmt.Errorf("%s: %s is not a valid keyring file (JSON)", name, path)
	}
	return &d, fi, nil
}

// parse validates a decoded file and builds its ciphers.
func (d *diskFile) parse(path string) (*state, error) {
	if d.Format != fileFormat {
		return nil, fmt.Errorf("%s: %s: unsupported keyring format %d", name, path, d.Format)
	}
	if len(d.Keys) == 0 {
		return nil, fmt.Errorf("%s: %s holds no keys", name, path)
	}
	st := &state{aeads: make(map[int]cipher.AEAD, len(d.Keys))}
	for i, key := range d.Keys {
		if key.Version < 1 {
			return nil, fmt.Errorf("%s: %s: key %d has invalid version %d", name, path, i, key.Version)
		}
		if _, dup := st.aeads[key.Version]; dup {
			return nil, fmt.Errorf("%s: %s: key version %d appears twice", name, path, key.Version)
		}
		raw, err := base64.StdEncoding.DecodeString(key.Key)
		if err != nil || len(raw) != keySize {
			return nil, fmt.Errorf("%s: %s: key version %d is not a base64 256-bit key", name, path, key.Version)
		}
		block, err := aes.NewCipher(raw)
		clear(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: key version %d: %w", name, path, key.Version, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: key version %d: %w", name, path, key.Version, err)
		}
		st.aeads[key.Version] = aead
		st.latest = max(st.latest, key.Version)
	}
	st.min = max(d.MinDecryptionVersion, 1)
	if st.min > st.latest {
		return nil, fmt.Errorf("%s: %s: min decryption version %d is above the latest version %d", name, path, st.min, st.latest)
	}
	return st, nil
}

// newDiskKey returns a fresh random KEK version.
func newDiskKey(v int) (diskKey, error) {
	raw := make([]byte, keySize)
	if _, err := rand.Read(raw); err != nil {
		return diskKey{}, fmt.Errorf("%s: generate key: %w", name, err)
	}
	defer clear(raw)
	return diskKey{Version: v, Key: base64.StdEncoding.EncodeToString(raw), Created: time.Now().UTC()}, nil
}

// create writes a new keyring file with one KEK version, unless another
// process created it first.
func (k *Keyring) create() error {
	k.write.Lock()
	defer k.write.Unlock()
	unlock, err := lockFile(k.path + ".lock")
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Lstat(k.path); err == nil {
		return nil // created by another process meanwhile
	}
	nk, err := newDiskKey(1)
	if err != nil {
		return err
	}
	return k.writeFile(&diskFile{Format: fileFormat, MinDecryptionVersion: 1, Keys: []diskKey{nk}})
}

// update applies fn to the file as it is on disk now, under the lock, and
// replaces the file atomically.
func (k *Keyring) update(fn func(*diskFile) error) error {
	k.write.Lock()
	defer k.write.Unlock()
	unlock, err := lockFile(k.path + ".lock")
	if err != nil {
		return fmt.Errorf("%w: %w", phi.ErrUnavailable, err)
	}
	defer unlock()
	d, _, err := readFile(k.path)
	if err != nil {
		return fmt.Errorf("%w: %w", phi.ErrUnavailable, err)
	}
	if _, err := d.parse(k.path); err != nil {
		return fmt.Errorf("%w: %w", phi.ErrUnavailable, err)
	}
	if err := fn(d); err != nil {
		return err
	}
	if _, err := d.parse(k.path); err != nil {
		return err
	}
	if err := k.writeFile(d); err != nil {
		return fmt.Errorf("%w: %w", phi.ErrUnavailable, err)
	}
	_, err = k.load()
	return err
}

// writeFile replaces the keyring file atomically: a 0600 temporary file in
// the same directory, synced, then renamed over the old one.
func (k *Keyring) writeFile(d *diskFile) (err error) {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: encode: %w", name, err)
	}
	b = append(b, '\n')
	dir := filepath.Dir(k.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(k.path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("%s: write %s: %w", name, k.path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	defer clear(b)
	if err = tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("%s: write %s: %w", name, k.path, err)
	}
	if _, err = tmp.Write(b); err != nil {
		return fmt.Errorf("%s: write %s: %w", name, k.path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("%s: write %s: %w", name, k.path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("%s: write %s: %w", name, k.path, err)
	}
	if err = os.Rename(tmp.Name(), k.path); err != nil {
		return fmt.Errorf("%s: write %s: %w", name, k.path, err)
	}
	if df, derr := os.Open(dir); derr == nil {
		_ = df.Sync() // make the rename durable; best effort
		df.Close()
	}
	return nil
}
