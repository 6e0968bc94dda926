package phi

// Key administration for `fhirgate keys`: rewrapping every stored data key
// under the provider's newest KEK version, and raising the provider's
// minimum decryption version once no stored key needs an older one. The
// plaintext of a data key never passes through here: rewrapping happens
// inside the provider. Nothing here logs or returns key material.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// DefaultRewrapBatch is the number of keys RewrapAll sends to the provider
// and stores per call when no batch size is given.
const DefaultRewrapBatch = 200

// ErrKeysBehind reports stored keys wrapped under a KEK version older than
// the provider's latest: raising the minimum decryption version now would
// make them (and the data they encrypt) unreadable.
var ErrKeysBehind = errors.New("phi: stored keys are wrapped under an older KEK version")

// RewrapReport says what RewrapAll did.
type RewrapReport struct {
	// Keys is the number of stored keys (every tenant, both purposes).
	Keys int
	// Rewrapped is how many were rewrapped and stored again.
	Rewrapped int
	// Current is how many were already wrapped under the latest version
	// and were left as they are.
	Current int
	// From counts the rewrapped keys by the KEK version they were wrapped
	// under before.
	From map[int]int
	// Calls is the number of Rewrap calls made to the provider.
	Calls int
	// Version is the provider's latest KEK version, which every stored key
	// is wrapped under (or above, after a concurrent rotation) when
	// RewrapAll succeeds.
	Version int
}

// FromString lists From as "v1: 3, v2: 5", oldest first.
func (r RewrapReport) FromString() string {
	var b strings.Builder
	for i, v := range slices.Sorted(maps.Keys(r.From)) {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "v%d: %d", v, r.From[v])
	}
	return b.String()
}

// RewrapAll rewraps every stored key that is wrapped under a KEK version
// below the provider's latest, batch keys per provider call (batch < 1
// means DefaultRewrapBatch), and stores each batch before the next. Data is
// not touched: the data keys stay the same, only their wrapping changes.
//
// It is safe to run beside a serving gateway (a key created meanwhile is
// wrapped under the latest version already) and to run again after a
// failure: keys already on the latest version are skipped.
func RewrapAll(ctx context.Context, prov KeyProvider, ks KeyStore, batch int) (RewrapReport, error) {
	if batch < 1 {
		batch = DefaultRewrapBatch
	}
	rep := RewrapReport{From: map[int]int{}}
	info, err := prov.Info(ctx)
	if err != nil {
		return rep, fmt.Errorf("phi: rewrap: read the KEK versions of %s: %w", prov.Name(), err)
	}
	rep.Version = info.LatestVersion
	all, err := ks.AllKeys(ctx)
	if err != nil {
		return rep, fmt.Errorf("phi: rewrap: list the stored keys: %w", err)
	}
	rep.Keys = len(all)
	var todo []StoredKey
	for _, k := range all {
		if KeyVersion(k.Wrapped) >= info.LatestVersion {
			rep.Current++
			continue
		}
		todo = append(todo, k)
	}
	for start := 0; start < len(todo); start += batch {
		chunk := todo[start:min(start+batch, len(todo))]
		in := make([]string, len(chunk))
		for i, k := range chunk {
			in[i] = k.Wrapped
		}
		rep.Calls++
		out, err := prov.Rewrap(ctx, in)
		if err != nil {
			return rep, fmt.Errorf("phi: rewrap keys %d to %d of %d with %s (%d rewrapped so far; run again to continue): %w",
				start+1, start+len(chunk), len(todo), prov.Name(), rep.Rewrapped, err)
		}
		if len(out) != len(chunk) {
			return rep, fmt.Errorf("phi: rewrap: %s returned %d keys for %d", prov.Name(), len(out), len(chunk))
		}
		upd := make([]StoredKey, len(chunk))
		for i, k := range chunk {
			if v := KeyVersion(out[i]); v < info.LatestVersion {
				return rep, fmt.Errorf("phi: rewrap: %s returned key %s/%s/%d wrapped under version %d, below the latest %d",
					prov.Name(), k.Tenant, k.Purpose, k.Epoch, v, info.LatestVersion)
			}
			upd[i] = k
			upd[i].Wrapped = out[i]
		}
		if err := ks.UpdateWrapped(ctx, upd); err != nil {
			return rep, fmt.Errorf("phi: rewrap: store keys %d to %d of %d (%d stored so far; run again to continue): %w",
				start+1, start+len(chunk), len(todo), rep.Rewrapped, err)
		}
		for _, k := range chunk {
			rep.From[KeyVersion(k.Wrapped)]++
		}
		rep.Rewrapped += len(chunk)
	}
	return rep, nil
}

// Behind counts the keys wrapped under a KEK version below latest and
// returns the oldest version among them (0 when none is behind).
func Behind(keys []StoredKey, latest int) (n, oldest int) {
	for _, k := range keys {
		v := KeyVersion(k.Wrapped)
		if v >= latest {
			continue
		}
		n++
		if oldest == 0 || v < oldest {
			oldest = v
		}
	}
	return n, oldest
}

// RaiseMinDecryption raises the provider's minimum decryption version to
// its latest KEK version, so that keys wrapped under older versions (in
// backups, say, or in a copy of the database) can no longer be unwrapped.
// It refuses with ErrKeysBehind while any stored key is wrapped under an
// older version (rewrap them first: RewrapAll). A key stored by a
// concurrent writer between the check and the change is caught by a
// second check, which puts the previous minimum back.
func RaiseMinDecryption(ctx context.Context, prov KeyProvider, ks KeyStore) error {
	info, err := prov.Info(ctx)
	if err != nil {
		return fmt.Errorf("phi: raise min decryption version: read the KEK versions of %s: %w", prov.Name(), err)
	}
	check := func() error {
		all, err := ks.AllKeys(ctx)
		if err != nil {
			return fmt.Errorf("phi: raise min decryption version: list the stored keys: %w", err)
		}
		if n, oldest := Behind(all, info.LatestVersion); n > 0 {
			return fmt.Errorf("%w: %d of %d stored keys are wrapped under versions below %s's latest version %d (the oldest under v%d); rewrap them first (fhirgate keys rotate)",
				ErrKeysBehind, n, len(all), prov.Name(), info.LatestVersion, oldest)
		}
		return nil
	}
	if err := check(); err != nil {
		return err
	}
	if info.MinDecryptionVersion >= info.LatestVersion {
		return nil
	}
	if err := prov.SetMinDecryptionVersion(ctx, info.LatestVersion); err != nil {
		return fmt.Errorf("phi: raise min decryption version of %s to %d: %w", prov.Name(), info.LatestVersion, err)
	}
	if err := check(); err != nil {
		// A key wrapped under an older version was stored meanwhile: put
		// the previous minimum back so that it stays readable.
		if rerr := prov.SetMinDecryptionVersion(context.WithoutCancel(ctx), info.MinDecryptionVersion); rerr != nil {
			return fmt.Errorf("%w; putting min decryption version %d back also failed, so that key cannot be unwrapped until it is: %v",
				err, info.MinDecryptionVersion, rerr)
		}
		return fmt.Errorf("%w (min decryption version left at %d)", err, info.MinDecryptionVersion)
	}
	return nil
}
