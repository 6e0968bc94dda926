package phi

import (
	"context"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/search"
	"github.com/fhirgate/fhirgate/internal/spec"
)

// Service seals and opens resources and blobs, and computes blind-index
// tokens, for one policy and one key manager. It is safe for concurrent
// use.
type Service struct {
	policy *Policy
	keys   *Keys

	protection sync.Map // resourceType -> *sync.Map of code -> search.Protection

	sealed, opened atomic.Int64 // values, for metrics and the benchmark
}

// NewService returns a PHI service.
func NewService(p *Policy, k *Keys) *Service {
	return &Service{policy: p, keys: k}
}

// Policy returns the loaded policy.
func (s *Service) Policy() *Policy { return s.policy }

// Keys returns the key manager.
func (s *Service) Keys() *Keys { return s.keys }

// Counts reports how many values were sealed and opened.
func (s *Service) Counts() (sealed, opened int64) { return s.sealed.Load(), s.opened.Load() }

// Seal encrypts the PHI elements of a resource body (compact JSON, id and
// meta set) under the tenant's current data key, and turns the index
// entries of parameters that read PHI into blind tokens. It returns the
// body to store and the key epoch used (0 when nothing needed sealing).
func (s *Service) Seal(ctx context.Context, tenant, typ, id string, body []byte, e *search.Entries) ([]byte, int, error) {
	st, ok := spec.StructOf(typ)
	if !ok {
		return nil, 0, fmt.Errorf("phi: seal: %q is not a resource type", typ)
	}
	if Sealed(body) {
		return nil, 0, fhir.Errorf(fhir.KindInvalid, "", "the resource holds the reserved sequence U+0001 \"fg1.\" in a string")
	}
	epoch, aead, err := s.keys.Current(ctx, tenant)
	if err != nil {
		return nil, 0, err
	}
	sl := sealer{p: s.policy, aead: aead, epoch: epoch, tenant: tenant, typ: typ, id: id, out: make([]byte, 0, len(body)+len(body)/2)}
	sl.object(body, st)
	if e != nil {
		if err := e.ApplyBlind(typ, s.blinder(ctx, tenant)); err != nil {
			return nil, 0, err
		}
	}
	if sl.count == 0 {
		return body, 0, nil
	}
	s.sealed.Add(int64(sl.count))
	return sl.out, epoch, nil
}

// Open decrypts the sealed values of a stored body. A body without sealed
// values is returned as it is.
func (s *Service) Open(ctx context.Context, tenant, typ, id string, body []byte) ([]byte, error) {
	if !Sealed(body) {
		return body, nil
	}
	o := opener{
		keyFor: func(epoch int) (cipher.AEAD, error) { return s.keys.Data(ctx, tenant, epoch) },
		tenant: tenant, typ: typ, id: id, out: make([]byte, 0, len(body)),
	}
	o.value(body)
	if o.err != nil {
		return nil, o.err
	}
	s.opened.Add(1)
	return o.out, nil
}

// SealBlob encrypts a whole value that is PHI through and through (a raw
// HL7 v2 message), bound to tenant, kind and id. The result is the sealed
// form as bytes: fg1.<epoch>.<base64url>.
func (s *Service) SealBlob(ctx context.Context, tenant, kind, id string, plaintext []byte) ([]byte, int, error) {
	epoch, aead, err := s.keys.Current(ctx, tenant)
	if err != nil {
		return nil, 0, err
	}
	ad := aad(nil, tenant, kind, id, []byte("blob"))
	out := sealValue(nil, aead, epoch, ad, plaintext)
	// Strip the JSON quotes and the \u0000 escape: blobs are not JSON.
	return append([]byte(nil), out[len(marker)-4:len(out)-1]...), epoch, nil
}

// OpenBlob decrypts a SealBlob result; a blob that was stored before
// encryption was on (no "fg1." prefix) is returned as it is.
func (s *Service) OpenBlob(ctx context.Context, tenant, kind, id string, b []byte) ([]byte, error) {
	if !IsSealedBlob(b) {
		return b, nil
	}
	quoted := make([]byte, 0, len(b)+8)
	quoted = append(quoted, marker[:len(marker)-4]...)
	quoted = append(quoted, b...)
	quoted = append(quoted, '"')
	epoch, raw, err := parseSealed(quoted)
	if err != nil {
		return nil, fmt.Errorf("phi: %s %s: %w", kind, id, err)
	}
	aead, err := s.keys.Data(ctx, tenant, epoch)
	if err != nil {
		return nil, fmt.Errorf("phi: %s %s (key epoch %d): %w", kind, id, epoch, err)
	}
	pt, err := openRaw(aead, aad(nil, tenant, kind, id, []byte("blob")), raw)
	if err != nil {
		return nil, fmt.Errorf("phi: %s %s (key epoch %d): %w", kind, id, epoch, err)
	}
	return pt, nil
}

// IsSealedBlob reports whether b is a SealBlob result.
func IsSealedBlob(b []byte) bool { return len(b) > 4 && string(b[:4]) == formatTag+"." }

// BlobEpoch returns the key epoch of a sealed blob, 0 when it is plaintext.
func BlobEpoch(b []byte) int {
	if !IsSealedBlob(b) {
		return 0
	}
	rest := b[4:]
	for i, c := range rest {
		if c == '.' {
			n, _ := strconv.Atoi(string(rest[:i]))
			return n
		}
	}
	return 0
}

// Blinder returns the tenant's blind-index token source for searches.
func (s *Service) Blinder(ctx context.Context, tenant string) search.Blinder {
	return s.blinder(ctx, tenant)
}

func (s *Service) blinder(ctx context.Context, tenant string) *blinder {
	return &blinder{s: s, ctx: ctx, tenant: tenant}
}

type blinder struct {
	s      *Service
	ctx    context.Context
	tenant string
}

func (b *blinder) MinYear() int { return b.s.policy.MinYear }

func (b *blinder) Protection(typ, code string) search.Protection {
	return b.s.Protection(typ, code)
}

// Protection says how a search parameter's index is kept under the policy:
// Blind when it reads PHI elements whose values can be blind-indexed
// (strings, tokens, dates), Hidden when it reads PHI otherwise or is a
// low-cardinality flag or code (a blind token of a sensitive flag alone
// would reveal it by frequency), Plain when it reads no PHI.
func (s *Service) Protection(typ, code string) search.Protection {
	m, ok := s.protection.Load(typ)
	if !ok {
		m, _ = s.protection.LoadOrStore(typ, &sync.Map{})
	}
	byCode := m.(*sync.Map)
	if v, ok := byCode.Load(code); ok {
		return v.(search.Protection)
	}
	prot := search.Plain
	if p := search.Lookup(typ, code); p != nil {
		for _, path := range p.Paths() {
			if !s.policy.ElementPHI(typ, path.Steps) {
				continue
			}
			switch {
			case p.Type == search.TypeString || p.Type == search.TypeDate:
				prot = max(prot, search.Blind)
			case p.Type == search.TypeToken && path.Leaf != "boolean" && path.Leaf != "code":
				prot = max(prot, search.Blind)
			default:
				prot = search.Hidden
			}
		}
	}
	if prot != search.Plain && s.policy.unblinded[code] {
		prot = search.Hidden // the policy's blind_index.refuse
	}
	byCode.Store(code, prot)
	return prot
}

func (b *blinder) Tokens(typ, code string, canon []string) ([][]byte, error) {
	key, err := b.s.keys.indexKey(b.ctx, b.tenant, typ, code)
	if err != nil {
		return nil, err
	}
	n := b.s.policy.TokenBytes
	out := make([][]byte, len(canon))
	mac := hmac.New(sha256.New, key)
	clear(key) // hmac.New keeps its own copy
	for i, c := range canon {
		mac.Reset()
		mac.Write([]byte(c))
		out[i] = mac.Sum(nil)[:n]
	}
	return out, nil
}
