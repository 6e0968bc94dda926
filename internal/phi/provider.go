package phi

import (
	"context"
	"errors"
)

// KeyProvider holds the key-encryption key (KEK) that wraps fhirgate's data
// keys. The KEK never leaves the provider: fhirgate only ever sees data keys
// in plaintext (in memory) and in wrapped form (in the database). Vault
// Transit is the production provider; a local keyring file is the
// no-configuration development default. Both pass the same conformance
// suite (internal/phi/providertest).
//
// Implementations must be safe for concurrent use, must never log key
// material, and must send many items to the backend in one call wherever
// the backend allows it (Vault's batch_input).
type KeyProvider interface {
	// Name identifies the provider and its key for status output and error
	// messages, e.g. "vault-transit:fhirgate" or "local-keyring".
	Name() string

	// NewDataKey returns a fresh 256-bit data key in plaintext and wrapped
	// under the newest KEK version. The wrapped form is self-describing
	// text (e.g. "vault:v3:..." or "local:v3:...") that names that version.
	NewDataKey(ctx context.Context) (plaintext []byte, wrapped string, err error)

	// Unwrap returns the plaintext of each wrapped data key, in order, in
	// one backend call (or as few as the backend's batch limits allow).
	// A key that cannot be unwrapped (tampered, wrong KEK, below the
	// minimum decryption version) fails the whole call with an error that
	// names its index and wraps ErrUnwrap.
	Unwrap(ctx context.Context, wrapped []string) ([][]byte, error)

	// Rewrap re-wraps each wrapped data key under the newest KEK version,
	// without the plaintext ever leaving the provider, in batch.
	Rewrap(ctx context.Context, wrapped []string) ([]string, error)

	// Rotate adds a new KEK version; later NewDataKey and Rewrap calls use it.
	Rotate(ctx context.Context) error

	// Info reports the KEK's versions.
	Info(ctx context.Context) (KeyInfo, error)

	// SetMinDecryptionVersion refuses, from now on, to unwrap data keys
	// wrapped under versions below v. It fails for v above the latest
	// version.
	SetMinDecryptionVersion(ctx context.Context, v int) error
}

// KeyInfo describes a provider's key-encryption key.
type KeyInfo struct {
	Name                 string
	LatestVersion        int
	MinDecryptionVersion int
}

// Provider errors. Implementations wrap these so that callers can tell an
// outage (retry later, answer 503) from bad key material (fail the item).
var (
	// ErrUnavailable: the provider cannot be reached, is sealed, or timed
	// out. Writes that need a new data key fail with 503; the gateway never
	// falls back to plaintext.
	ErrUnavailable = errors.New("phi: key provider unavailable")
	// ErrUnwrap: a wrapped key is malformed, was wrapped by another KEK,
	// or its KEK version is below the minimum decryption version.
	ErrUnwrap = errors.New("phi: data key cannot be unwrapped")
	// ErrDenied: the provider refused the credentials or the operation.
	ErrDenied = errors.New("phi: key provider denied the operation")
)

// KeyVersion returns the KEK version named by a wrapped key's prefix
// ("vault:v3:..." → 3), or 0 when it names none.
func KeyVersion(wrapped string) int {
	// prefix:vN:rest
	i := 0
	for i < len(wrapped) && wrapped[i] != ':' {
		i++
	}
	if i+2 >= len(wrapped) || wrapped[i+1] != 'v' {
		return 0
	}
	n := 0
	for j := i + 2; j < len(wrapped); j++ {
		c := wrapped[j]
		if c == ':' {
			if j == i+2 {
				return 0
			}
			return n
		}
		if c < '0' || c > '9' || n > 1<<24 {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return 0
}
