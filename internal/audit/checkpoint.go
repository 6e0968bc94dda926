package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Checkpoint is a signed statement of the log's head: "record Seq has hash
// Hash", made at Time. It names no tenant: the chain is global.
type Checkpoint struct {
	Seq       int64
	Hash      []byte
	Time      time.Time
	KeyID     string
	Signature []byte
}

// Message returns the bytes the signature covers:
//
//	fhirgate audit checkpoint v1\n
//	seq <decimal>\n
//	hash <lowercase hex>\n
//	time <RFC 3339, UTC, nanoseconds trimmed>\n
func (c Checkpoint) Message() []byte {
	var b bytes.Buffer
	b.WriteString("fhirgate audit checkpoint v1\n")
	b.WriteString("seq " + strconv.FormatInt(c.Seq, 10) + "\n")
	b.WriteString("hash " + hex.EncodeToString(c.Hash) + "\n")
	b.WriteString("time " + c.Time.UTC().Format(time.RFC3339Nano) + "\n")
	return b.Bytes()
}

// Signer signs checkpoints. The signing key lives with a key provider: a
// local file (Ed25519File) or, later, Vault Transit (sign/verify with a
// named key; the signature then carries its key version, "vault:v3:...").
// Implementations must be safe for concurrent use and never log key
// material.
type Signer interface {
	// KeyID names the key, recorded with each checkpoint.
	KeyID() string
	// Sign signs msg.
	Sign(ctx context.Context, msg []byte) ([]byte, error)
	// Verify returns nil when sig is a valid signature of msg by this key,
	// an error wrapping ErrBadSignature when it is not, and any other error
	// when it cannot tell (the provider is unreachable).
	Verify(ctx context.Context, msg, sig []byte) error
}

// CheckpointSink stores checkpoints where the database role cannot rewrite
// them. Put must be durable when it returns.
type CheckpointSink interface {
	Put(ctx context.Context, c Checkpoint) error
	// Checkpoints returns every stored checkpoint, oldest first. Stored
	// checkpoints it cannot parse are reported as an error wrapping
	// ErrBadCheckpoint.
	Checkpoints(ctx context.Context) ([]Checkpoint, error)
}

// ErrBadCheckpoint: the sink holds a checkpoint that cannot be parsed.
var ErrBadCheckpoint = errors.New("audit: malformed checkpoint")

// ErrBadSignature: a signature does not verify.
var ErrBadSignature = errors.New("audit: signature does not verify")

// Ed25519File is a Signer whose Ed25519 key is a local JSON file (mode
// 0600 in a 0700 directory). Whoever can read the file can forge
// checkpoints: keep it away from the database host's administrators, or
// use a key provider.
type Ed25519File struct {
	path  string
	priv  ed25519.PrivateKey
	pub   ed25519.PublicKey
	keyID string
}

type ed25519Disk struct {
	Format    int       `json:"format"`
	Algorithm string    `json:"algorithm"`
	Seed      string    `json:"seed"` // base64 of the 32-byte seed
	PublicKey string    `json:"public_key"`
	Created   time.Time `json:"created"`
}

// OpenEd25519File loads the signing key at path. When the file does not
// exist it is created with a fresh key if create is true, else the error
// wraps fs.ErrNotExist. A file that group or others may access is refused.
func OpenEd25519File(path string, create bool) (*Ed25519File, error) {
	if path == "" {
		return nil, errors.New("audit: empty signing key path")
	}
	b, err := readPrivate(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		if err := createEd25519File(path); err != nil {
			return nil, err
		}
		b, err = readPrivate(path)
	}
	if err != nil {
		return nil, err
	}
	var d ed25519Disk
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("audit: signing key %s: not a key file", path)
	}
	seed, err := base64.StdEncoding.DecodeString(d.Seed)
	if d.Format != 1 || d.Algorithm != "ed25519" || err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("audit: signing key %s: want format 1, algorithm ed25519 and a 32-byte seed", path)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	clear(seed)
	pub := priv.Public().(ed25519.PublicKey)
	if d.PublicKey != "" && d.PublicKey != base64.StdEncoding.EncodeToString(pub) {
		return nil, fmt.Errorf("audit: signing key %s: the public key does not match the seed", path)
	}
	sum := sha256.Sum256(pub)
	return &Ed25519File{path: path, priv: priv, pub: pub, keyID: "ed25519:" + hex.EncodeToString(sum[:8])}, nil
}

func readPrivate(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("audit: signing key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("audit: signing key %s: mode %v lets group or others access it; chmod 600", path, fi.Mode().Perm())
	}
	if fi.Size() > 1<<16 {
		return nil, fmt.Errorf("audit: signing key %s: too large", path)
	}
	return os.ReadFile(path)
}

// createEd25519File writes a fresh key without ever replacing an existing
// file: a temporary file is linked into place, so of two processes
// creating at once one wins and the other reads its key.
func createEd25519File(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("audit: signing key directory: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("audit: generate signing key: %w", err)
	}
	seed := priv.Seed()
	b, err := json.MarshalIndent(ed25519Disk{Format: 1, Algorithm: "ed25519", Seed: base64.StdEncoding.EncodeToString(seed),
		PublicKey: base64.StdEncoding.EncodeToString(pub), Created: time.Now().UTC()}, "", "  ")
	clear(seed)
	clear(priv)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".audit-signing-*")
	if err != nil {
		return fmt.Errorf("audit: create signing key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err == nil {
		_, err = tmp.Write(append(b, '\n'))
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
	} else {
		tmp.Close()
	}
	clear(b)
	if err != nil {
		return fmt.Errorf("audit: write signing key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("audit: create signing key: %w", err)
	}
	return syncDir(dir)
}

// Path returns the key file's path.
func (s *Ed25519File) Path() string { return s.path }

// PublicKey returns the public key, for verifiers without the private key.
func (s *Ed25519File) PublicKey() ed25519.PublicKey { return s.pub }

// KeyID implements Signer: "ed25519:" and the first 8 bytes of the
// SHA-256 of the public key, in hex.
func (s *Ed25519File) KeyID() string { return s.keyID }

// Sign implements Signer.
func (s *Ed25519File) Sign(_ context.Context, msg []byte) ([]byte, error) {
	return ed25519.Sign(s.priv, msg), nil
}

// Verify implements Signer.
func (s *Ed25519File) Verify(_ context.Context, msg, sig []byte) error {
	if !ed25519.Verify(s.pub, msg, sig) {
		return ErrBadSignature
	}
	return nil
}

// FileSink is a CheckpointSink writing JSON lines to a local file, opened
// O_APPEND (created 0600), each checkpoint one write followed by fsync.
// The database role cannot touch it; against the gateway's own user, set
// the append-only attribute (chattr +a) or use another sink.
type FileSink struct {
	path string

	mu sync.Mutex
	f  *os.File // opened on the first Put
}

// NewFileSink returns a sink for the file at path. Nothing is opened or
// created until the first Put.
func NewFileSink(path string) *FileSink { return &FileSink{path: path} }

// Path returns the file's path.
func (s *FileSink) Path() string { return s.path }

type checkpointLine struct {
	Format    int       `json:"format"`
	Seq       int64     `json:"seq"`
	Hash      string    `json:"hash"` // hex
	Time      time.Time `json:"time"`
	KeyID     string    `json:"key_id"`
	Signature string    `json:"signature"` // base64
}

// Put implements CheckpointSink.
func (s *FileSink) Put(_ context.Context, c Checkpoint) error {
	b, err := json.Marshal(checkpointLine{Format: 1, Seq: c.Seq, Hash: hex.EncodeToString(c.Hash), Time: c.Time.UTC(),
		KeyID: c.KeyID, Signature: base64.StdEncoding.EncodeToString(c.Signature)})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	if _, err := s.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("audit: checkpoint file %s: %w", s.path, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("audit: checkpoint file %s: fsync: %w", s.path, err)
	}
	return nil
}

func (s *FileSink) open() error {
	dir := filepath.Dir(s.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("audit: checkpoint directory: %w", err)
	}
	_, statErr := os.Stat(s.path)
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: checkpoint file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: checkpoint file: %w", err)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		f.Close()
		return fmt.Errorf("audit: checkpoint file %s: mode %v lets group or others write it; chmod 600", s.path, fi.Mode().Perm())
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		if err := syncDir(dir); err != nil {
			f.Close()
			return err
		}
	}
	s.f = f
	return nil
}

// Checkpoints implements CheckpointSink. A missing file holds none. A last
// line without its newline (a write cut short by a crash) is ignored; any
// other line that does not parse is an error wrapping ErrBadCheckpoint.
func (s *FileSink) Checkpoints(ctx context.Context) ([]Checkpoint, error) {
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint file: %w", err)
	}
	defer f.Close()
	var out []Checkpoint
	r := bufio.NewReaderSize(f, 64<<10)
	for n := 1; ; n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return out, nil // a torn last line (no newline) is ignored
		}
		if err != nil {
			return nil, fmt.Errorf("audit: checkpoint file %s: %w", s.path, err)
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		c, err := parseCheckpointLine(line)
		if err != nil {
			return nil, fmt.Errorf("%w: %s line %d: %v", ErrBadCheckpoint, s.path, n, err)
		}
		out = append(out, c)
	}
}

func parseCheckpointLine(line []byte) (Checkpoint, error) {
	var l checkpointLine
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return Checkpoint{}, errors.New("not a checkpoint JSON object")
	}
	h, err := hex.DecodeString(l.Hash)
	if err != nil || len(h) != HashSize {
		return Checkpoint{}, errors.New("hash is not 32 bytes of hex")
	}
	sig, err := base64.StdEncoding.DecodeString(l.Signature)
	if err != nil {
		return Checkpoint{}, errors.New("signature is not base64")
	}
	if l.Format != 1 || l.Seq < 1 || l.Time.IsZero() {
		return Checkpoint{}, errors.New("want format 1, a positive seq and a time")
	}
	return Checkpoint{Seq: l.Seq, Hash: h, Time: l.Time, KeyID: l.KeyID, Signature: sig}, nil
}

// Close closes the file.
func (s *FileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("audit: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("audit: sync %s: %w", dir, err)
	}
	return nil
}
