package phi

import (
	"bytes"
	"container/list"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fhirgate/fhirgate/internal/fhir"
)

// Key purposes. A tenant has data keys, one per epoch, that encrypt PHI
// values, and one index key from which every blind index derives its own
// key. The two are never the same key.
const (
	PurposeData  = "data"
	PurposeIndex = "index"
)

// StoredKey is a wrapped data key as the database keeps it.
type StoredKey struct {
	Tenant  string
	Purpose string // PurposeData or PurposeIndex
	Epoch   int    // data keys: 1, 2, ...; the index key: 1
	Wrapped string // the provider's wrapped form ("vault:v3:...")
	Created time.Time
}

// KeyStore keeps wrapped data keys. internal/store implements it over
// PostgreSQL; the plaintext of a key is never passed to it.
type KeyStore interface {
	// TenantKeys returns every key of a tenant.
	TenantKeys(ctx context.Context, tenant string) ([]StoredKey, error)
	// AddKey stores k unless a key with its tenant, purpose and epoch
	// exists; it returns the key stored under that name (k or the other
	// writer's), so concurrent creators agree on one key.
	AddKey(ctx context.Context, k StoredKey) (StoredKey, error)
	// AllKeys returns every stored key (rotation, status).
	AllKeys(ctx context.Context) ([]StoredKey, error)
	// UpdateWrapped replaces the wrapped form of keys (after a rewrap).
	UpdateWrapped(ctx context.Context, ks []StoredKey) error
	// DestroyTenantKeys deletes a tenant's keys: crypto-shredding.
	DestroyTenantKeys(ctx context.Context, tenant string) (int, error)
}

// KeyOptions tune the data-key cache.
type KeyOptions struct {
	// TTL is how long an unwrapped key stays usable in memory; after it,
	// the key is unwrapped again by the provider (so a revoked or
	// unreachable provider stops decryption within TTL: fail closed).
	TTL time.Duration
	// MaxKeys bounds the cache; the least recently used key is evicted
	// (and zeroed) first.
	MaxKeys int
	// Refresh is how often a tenant's current epoch is re-read from the
	// database, so a new epoch made by `fhirgate keys reencrypt` in
	// another process is used for writes within that time.
	Refresh time.Duration
}

func (o *KeyOptions) defaults() {
	if o.TTL <= 0 {
		o.TTL = 10 * time.Minute
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = 4096
	}
	if o.Refresh <= 0 {
		o.Refresh = 30 * time.Second
	}
}

// Keys hands out unwrapped data keys: from a bounded in-memory cache, or
// from the provider in one batch call per tenant when the cache misses.
// Keys are zeroed when they leave the cache. It is safe for concurrent use.
type Keys struct {
	prov  KeyProvider
	store KeyStore
	opt   KeyOptions
	now   func() time.Time

	mu       sync.Mutex
	cache    map[cacheKey]*list.Element // of *cached
	lru      *list.List
	tenants  map[string]tenantState
	inflight map[string]*load
	// createMu serializes key creation (rare: a tenant's first write, a new
	// epoch), so concurrent first writers make one key, not one each.
	createMu sync.Mutex
}

type cacheKey struct {
	tenant, purpose string
	epoch           int
}

type cached struct {
	k       cacheKey
	raw     []byte
	aead    cipher.AEAD
	expires time.Time
	derived sync.Map // blind-index keys derived from an index key: param -> []byte
}

type tenantState struct {
	current int // newest data epoch, 0 when the tenant has none yet
	checked time.Time
}

type load struct {
	done chan struct{}
	err  error
}

// NewKeys returns a key manager.
func NewKeys(prov KeyProvider, store KeyStore, opt KeyOptions) *Keys {
	opt.defaults()
	return &Keys{
		prov: prov, store: store, opt: opt, now: time.Now,
		cache: map[cacheKey]*list.Element{}, lru: list.New(),
		tenants: map[string]tenantState{}, inflight: map[string]*load{},
	}
}

// get returns a cached, unexpired key.
func (k *Keys) get(ck cacheKey) *cached {
	k.mu.Lock()
	defer k.mu.Unlock()
	el, ok := k.cache[ck]
	if !ok {
		return nil
	}
	c := el.Value.(*cached)
	if k.now().After(c.expires) {
		k.evict(el)
		return nil
	}
	k.lru.MoveToFront(el)
	return c
}

// evict removes and zeroes a cached key. k.mu is held.
func (k *Keys) evict(el *list.Element) {
	c := el.Value.(*cached)
	delete(k.cache, c.k)
	k.lru.Remove(el)
	clear(c.raw)
	c.derived.Range(func(key, v any) bool {
		clear(v.([]byte))
		return true
	})
}

func (k *Keys) put(ck cacheKey, raw []byte) (*cached, error) {
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("phi: data key for %s/%s/%d: %w", ck.tenant, ck.purpose, ck.epoch, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	c := &cached{k: ck, raw: raw, aead: aead, expires: k.now().Add(k.opt.TTL)}
	k.mu.Lock()
	defer k.mu.Unlock()
	if el, ok := k.cache[ck]; ok {
		k.evict(el)
	}
	k.cache[ck] = k.lru.PushFront(c)
	for k.lru.Len() > k.opt.MaxKeys {
		k.evict(k.lru.Back())
	}
	return c, nil
}

// Flush drops (and zeroes) every cached key.
func (k *Keys) Flush() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for k.lru.Len() > 0 {
		k.evict(k.lru.Back())
	}
	clear(k.tenants)
}

// key returns the key (tenant, purpose, epoch), loading the tenant's keys
// when it is not cached: one provider call unwraps every key of the tenant
// that is not cached, and concurrent misses share that call.
func (k *Keys) key(ctx context.Context, ck cacheKey) (*cached, error) {
	for attempt := 0; ; attempt++ {
		if c := k.get(ck); c != nil {
			return c, nil
		}
		if attempt > 0 {
			// Missing after a load: not stored, or evicted again at once
			// by other tenants' loads (a cache smaller than the keys in use).
			stored, err := k.stored(ctx, ck)
			if err != nil {
				return nil, err
			}
			if !stored {
				return nil, fmt.Errorf("%w: tenant %s has no %s key epoch %d (destroyed or never made)", ErrNoKey, ck.tenant, ck.purpose, ck.epoch)
			}
			if attempt == 3 {
				return nil, fmt.Errorf("phi: tenant %s's %s key epoch %d was evicted from the key cache as soon as it was loaded, three times (KeyOptions.MaxKeys is too small for the keys in use)", ck.tenant, ck.purpose, ck.epoch)
			}
		}
		if err := k.loadTenant(ctx, ck.tenant); err != nil {
			return nil, err
		}
	}
}

// stored reports whether the key store holds key ck.
func (k *Keys) stored(ctx context.Context, ck cacheKey) (bool, error) {
	ks, err := k.store.TenantKeys(ctx, ck.tenant)
	if err != nil {
		return false, err
	}
	for _, s := range ks {
		if s.Purpose == ck.purpose && s.Epoch == ck.epoch {
			return true, nil
		}
	}
	return false, nil
}

func (k *Keys) loadTenant(ctx context.Context, tenant string) error {
	k.mu.Lock()
	if l, ok := k.inflight[tenant]; ok {
		k.mu.Unlock()
		select {
		case <-l.done:
			return l.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	l := &load{done: make(chan struct{})}
	k.inflight[tenant] = l
	k.mu.Unlock()

	l.err = k.loadTenantNow(ctx, tenant)
	k.mu.Lock()
	delete(k.inflight, tenant)
	k.mu.Unlock()
	close(l.done)
	return l.err
}

func (k *Keys) loadTenantNow(ctx context.Context, tenant string) error {
	stored, err := k.store.TenantKeys(ctx, tenant)
	if err != nil {
		return err
	}
	var want []StoredKey
	current := 0
	for _, s := range stored {
		if s.Purpose == PurposeData && s.Epoch > current {
			current = s.Epoch
		}
		if k.get(cacheKey{s.Tenant, s.Purpose, s.Epoch}) == nil {
			want = append(want, s)
		}
	}
	if len(want) > 0 {
		wrapped := make([]string, len(want))
		for i, s := range want {
			wrapped[i] = s.Wrapped
		}
		raws, err := k.prov.Unwrap(ctx, wrapped)
		if err != nil {
			return providerError("unwrap the data keys of tenant "+tenant, err)
		}
		for i, s := range want {
			if _, err := k.put(cacheKey{s.Tenant, s.Purpose, s.Epoch}, raws[i]); err != nil {
				return err
			}
		}
	}
	k.mu.Lock()
	k.tenants[tenant] = tenantState{current: current, checked: k.now()}
	k.mu.Unlock()
	return nil
}

// create makes a new key (tenant, purpose, epoch) with the provider and
// stores it; a concurrent creator may win, and its key is used.
func (k *Keys) create(ctx context.Context, tenant, purpose string, epoch int) (*cached, error) {
	k.createMu.Lock()
	defer k.createMu.Unlock()
	ck := cacheKey{tenant, purpose, epoch}
	if c := k.get(ck); c != nil {
		return c, nil // made by a concurrent caller while we waited
	}
	if stored, err := k.stored(ctx, ck); err != nil {
		return nil, err
	} else if stored { // made by another process
		if err := k.loadTenant(ctx, tenant); err != nil {
			return nil, err
		}
		if c := k.get(ck); c != nil {
			return c, nil
		}
	}
	raw, wrapped, err := k.prov.NewDataKey(ctx)
	if err != nil {
		return nil, providerError("create a data key for tenant "+tenant, err)
	}
	got, err := k.store.AddKey(ctx, StoredKey{Tenant: tenant, Purpose: purpose, Epoch: epoch, Wrapped: wrapped, Created: k.now().UTC()})
	if err != nil {
		clear(raw)
		return nil, err
	}
	if got.Wrapped != wrapped { // lost the race: use the winner's key
		clear(raw)
		if err := k.loadTenant(ctx, tenant); err != nil {
			return nil, err
		}
		return k.key(ctx, cacheKey{tenant, purpose, epoch})
	}
	return k.put(cacheKey{tenant, purpose, epoch}, raw)
}

// Current returns the tenant's newest data key and its epoch, creating
// epoch 1 on the tenant's first write.
func (k *Keys) Current(ctx context.Context, tenant string) (int, cipher.AEAD, error) {
	k.mu.Lock()
	st, ok := k.tenants[tenant]
	k.mu.Unlock()
	if !ok || k.now().Sub(st.checked) > k.opt.Refresh {
		if err := k.loadTenant(ctx, tenant); err != nil {
			return 0, nil, err
		}
		k.mu.Lock()
		st = k.tenants[tenant]
		k.mu.Unlock()
	}
	if st.current == 0 {
		c, err := k.create(ctx, tenant, PurposeData, 1)
		if err != nil {
			return 0, nil, err
		}
		k.mu.Lock()
		if k.tenants[tenant].current < 1 {
			k.tenants[tenant] = tenantState{current: 1, checked: k.now()}
		}
		k.mu.Unlock()
		return 1, c.aead, nil
	}
	c, err := k.key(ctx, cacheKey{tenant, PurposeData, st.current})
	if err != nil {
		return 0, nil, err
	}
	return st.current, c.aead, nil
}

// Data returns the tenant's data key of an epoch, for decryption.
func (k *Keys) Data(ctx context.Context, tenant string, epoch int) (cipher.AEAD, error) {
	c, err := k.key(ctx, cacheKey{tenant, PurposeData, epoch})
	if err != nil {
		return nil, err
	}
	return c.aead, nil
}

// ErrNoKey reports ciphertext whose data key no longer exists (shredded).
var ErrNoKey = errors.New("phi: data key not found")

// NewEpoch makes a new data key epoch for the tenant and returns it; later
// writes use it (within KeyOptions.Refresh in other processes).
func (k *Keys) NewEpoch(ctx context.Context, tenant string) (int, error) {
	if err := k.loadTenant(ctx, tenant); err != nil {
		return 0, err
	}
	k.mu.Lock()
	next := k.tenants[tenant].current + 1
	k.mu.Unlock()
	if _, err := k.create(ctx, tenant, PurposeData, next); err != nil {
		return 0, err
	}
	k.mu.Lock()
	k.tenants[tenant] = tenantState{current: next, checked: k.now()}
	k.mu.Unlock()
	return next, nil
}

// indexKey returns the blind-index key derived for one parameter: a copy,
// which the caller zeroes after use.
func (k *Keys) indexKey(ctx context.Context, tenant, typ, param string) ([]byte, error) {
	ck := cacheKey{tenant, PurposeIndex, 1}
	name := typ + "." + param
	for attempt := 0; attempt < 3; attempt++ {
		c, err := k.key(ctx, ck)
		if errors.Is(err, ErrNoKey) && attempt == 0 {
			c, err = k.create(ctx, tenant, PurposeIndex, 1)
		}
		if err != nil {
			return nil, err
		}
		if d, err := k.derive(c, name); d != nil || err != nil {
			return d, err
		}
		// c was evicted (and zeroed) after key returned it: load it again.
	}
	return nil, fmt.Errorf("phi: the index key of tenant %s was evicted from the key cache three times in a row (KeyOptions.MaxKeys too small?)", tenant)
}

// derive returns a copy of c's key derived for name, or nil when c has
// left the cache: eviction zeroes c.raw and the derived keys, so both are
// read under k.mu and only while c is cached.
func (k *Keys) derive(c *cached, name string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if el, ok := k.cache[c.k]; !ok || el.Value.(*cached) != c {
		return nil, nil
	}
	d, ok := c.derived.Load(name)
	if !ok {
		v, err := hkdf.Key(sha256.New, c.raw, nil, "fhirgate blind index v1\x00"+name, 32)
		if err != nil {
			return nil, err
		}
		c.derived.Store(name, v)
		d = v
	}
	return bytes.Clone(d.([]byte)), nil
}

// providerError turns a provider failure into the error the API answers:
// 503 when the provider is unreachable or sealed.
func providerError(op string, err error) error {
	switch {
	case errors.Is(err, ErrUnavailable):
		return fhir.Errorf(fhir.KindUnavailable, "", "the PHI key provider is unavailable, so PHI cannot be encrypted or decrypted; try again later").Wrap(fmt.Errorf("phi: %s: %w", op, err))
	case errors.Is(err, ErrDenied):
		return fhir.Errorf(fhir.KindUnavailable, "", "the PHI key provider refused fhirgate's credentials").Wrap(fmt.Errorf("phi: %s: %w", op, err))
	}
	return fmt.Errorf("phi: %s: %w", op, err)
}
