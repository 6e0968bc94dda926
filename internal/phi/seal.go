package phi

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"

	"github.com/fhirgate/fhirgate/internal/spec"
)

// A sealed value is a JSON string in place of the element's value:
//
//	"\u0001fg1.<epoch>.<base64url(nonce | AES-256-GCM ciphertext+tag)>"
//
// The leading U+0001 does not occur in valid FHIR (validation refuses C0
// control characters in strings, and Seal refuses any body that already
// holds the marker), so a sealed value is unambiguous and a body without
// the marker needs no walk at all. (U+0001 rather than U+0000 so that a
// stored body still casts to PostgreSQL jsonb, which refuses \u0000.) "fg1" is the format
// version; epoch names the tenant's data key. The AAD binds the ciphertext
// to format, tenant, resource type, resource id and the element's JSON
// path with array indexes ("contact[0].name"): moved anywhere else it
// fails to decrypt.
var marker = []byte(`"\u0001fg1.`)

const (
	formatTag = "fg1"
	nonceSize = 12
)

// ErrTampered reports a sealed value that fails authentication: it was
// altered, moved to another row or element, or belongs to another key.
var ErrTampered = errors.New("phi: sealed value fails authentication (altered, moved, or wrong key)")

// Sealed reports whether body holds any sealed value.
func Sealed(body []byte) bool { return bytes.Contains(body, marker) }

func aad(buf []byte, tenant, typ, id string, path []byte) []byte {
	buf = append(buf[:0], formatTag...)
	for _, s := range [...]string{tenant, typ, id} {
		buf = append(buf, 0)
		buf = append(buf, s...)
	}
	buf = append(buf, 0)
	return append(buf, path...)
}

// sealValue appends the sealed JSON string of plaintext JSON value v.
func sealValue(out []byte, aead cipher.AEAD, epoch int, ad, v []byte) []byte {
	out = append(out, marker...)
	out = strconv.AppendInt(out, int64(epoch), 10)
	out = append(out, '.')
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic("phi: crypto/rand failed: " + err.Error()) // never happens on supported platforms (Go's crypto/rand does not return errors)
	}
	ctLen := nonceSize + len(v) + aead.Overhead()
	raw := make([]byte, nonceSize, ctLen)
	copy(raw, nonce[:])
	raw = aead.Seal(raw, nonce[:], v, ad)
	out = base64.RawURLEncoding.AppendEncode(out, raw)
	return append(out, '"')
}

// parseSealed splits a sealed JSON string (with quotes) into epoch and raw
// ciphertext.
func parseSealed(s []byte) (epoch int, raw []byte, err error) {
	if len(s) <= len(marker) || s[len(s)-1] != '"' { // unterminated: a stored body cut short
		return 0, nil, fmt.Errorf("%w: malformed sealed value", ErrTampered)
	}
	rest := s[len(marker) : len(s)-1]
	dot := bytes.IndexByte(rest, '.')
	if dot <= 0 {
		return 0, nil, fmt.Errorf("%w: malformed sealed value", ErrTampered)
	}
	e, err := strconv.Atoi(string(rest[:dot]))
	if err != nil || e <= 0 {
		return 0, nil, fmt.Errorf("%w: malformed epoch", ErrTampered)
	}
	raw, err = base64.RawURLEncoding.AppendDecode(nil, rest[dot+1:])
	if err != nil || len(raw) < nonceSize+16 {
		return 0, nil, fmt.Errorf("%w: truncated or malformed ciphertext", ErrTampered)
	}
	return e, raw, nil
}

func openRaw(aead cipher.AEAD, ad, raw []byte) ([]byte, error) {
	pt, err := aead.Open(nil, raw[:nonceSize], raw[nonceSize:], ad)
	if err != nil {
		return nil, ErrTampered
	}
	return pt, nil
}

// sealer walks one resource, copying it to out with its PHI values sealed.
type sealer struct {
	p      *Policy
	aead   cipher.AEAD
	epoch  int
	tenant string
	typ    string
	id     string
	out    []byte
	path   []byte
	ad     []byte
	count  int
}

func (s *sealer) seal(v []byte) {
	s.ad = aad(s.ad, s.tenant, s.typ, s.id, s.path)
	s.out = sealValue(s.out, s.aead, s.epoch, s.ad, v)
	s.count++
}

func (s *sealer) pushName(name []byte) int {
	n := len(s.path)
	if n > 0 {
		s.path = append(s.path, '.')
	}
	s.path = append(s.path, name...)
	return n
}

func (s *sealer) pushIndex(i int) int {
	n := len(s.path)
	s.path = append(s.path, '[')
	s.path = strconv.AppendInt(s.path, int64(i), 10)
	s.path = append(s.path, ']')
	return n
}

// value copies the JSON value b (of structure st, nil for unknown) to out.
func (s *sealer) value(b []byte, st *spec.Struct) {
	switch {
	case len(b) > 0 && b[0] == '{' && st != nil:
		s.object(b, st)
	case len(b) > 0 && b[0] == '[' && st != nil:
		s.out = append(s.out, '[')
		eachElement(b, func(i int, el []byte) {
			if i > 0 {
				s.out = append(s.out, ',')
			}
			n := s.pushIndex(i)
			s.value(el, st)
			s.path = s.path[:n]
		})
		s.out = append(s.out, ']')
	default:
		s.out = append(s.out, b...)
	}
}

// object copies a JSON object of structure st, sealing its PHI members.
func (s *sealer) object(b []byte, st *spec.Struct) {
	if st.Kind == spec.KindResource || st.Kind == spec.KindAbstractResource {
		// contained resources and Bundle entries: dispatch on resourceType.
		if rt, ok := memberString(b, "resourceType"); ok {
			if rst, ok := spec.StructOf(rt); ok && rst.Kind == spec.KindResource {
				st = rst
			}
		}
	}
	isExt := st.Name == "Extension"
	s.out = append(s.out, '{')
	first := true
	eachMember(b, func(m member) {
		if !first {
			s.out = append(s.out, ',')
		}
		first = false
		s.out = append(s.out, m.rawName...)
		s.out = append(s.out, ':')
		n := s.pushName(m.name) // the path (AAD) keeps the name as written, as the opener sees it
		s.member(st, m.key(), m.value, isExt)
		s.path = s.path[:n]
	})
	s.out = append(s.out, '}')
}

func (s *sealer) member(st *spec.Struct, name, v []byte, isExt bool) {
	base := name
	companion := false
	if len(name) > 1 && name[0] == '_' {
		base, companion = name[1:], true
	}
	m, ok := st.Member(string(base))
	if !ok {
		s.out = append(s.out, v...) // resourceType, unknown members (kept losslessly, never PHI by policy)
		return
	}
	if s.p.isPHI(st.Name, string(base), m.Type) {
		s.seal(v)
		return
	}
	if companion || !m.Primitive {
		if m.Type == "Extension" {
			s.extensions(v)
			return
		}
		s.value(v, m.Struct)
		return
	}
	s.out = append(s.out, v...)
}

// extensions copies an extension array, sealing whole extensions whose URL
// the policy lists.
func (s *sealer) extensions(v []byte) {
	ext, _ := spec.StructOf("Extension")
	if len(v) == 0 || v[0] != '[' {
		s.value(v, ext)
		return
	}
	s.out = append(s.out, '[')
	eachElement(v, func(i int, el []byte) {
		if i > 0 {
			s.out = append(s.out, ',')
		}
		n := s.pushIndex(i)
		if url, ok := memberString(el, "url"); ok && s.p.exts[url] {
			s.seal(el)
		} else {
			s.value(el, ext)
		}
		s.path = s.path[:n]
	})
	s.out = append(s.out, ']')
}

// opener walks a stored body, replacing sealed values by their plaintext.
type opener struct {
	keyFor func(epoch int) (cipher.AEAD, error)
	tenant string
	typ    string
	id     string
	out    []byte
	path   []byte
	ad     []byte
	err    error
}

func (o *opener) value(b []byte) {
	if o.err != nil {
		return
	}
	switch {
	case len(b) == 0:
	case (b[0] == '{' || b[0] == '[') && !bytes.Contains(b, marker):
		// Nothing sealed below: copy the subtree as it is.
	case b[0] == '{':
		o.out = append(o.out, '{')
		first := true
		eachMember(b, func(m member) {
			if !first {
				o.out = append(o.out, ',')
			}
			first = false
			o.out = append(o.out, m.rawName...)
			o.out = append(o.out, ':')
			n := len(o.path)
			if n > 0 {
				o.path = append(o.path, '.')
			}
			o.path = append(o.path, m.name...)
			o.value(m.value)
			o.path = o.path[:n]
		})
		o.out = append(o.out, '}')
		return
	case b[0] == '[':
		o.out = append(o.out, '[')
		eachElement(b, func(i int, el []byte) {
			if i > 0 {
				o.out = append(o.out, ',')
			}
			n := len(o.path)
			o.path = append(o.path, '[')
			o.path = strconv.AppendInt(o.path, int64(i), 10)
			o.path = append(o.path, ']')
			o.value(el)
			o.path = o.path[:n]
		})
		o.out = append(o.out, ']')
		return
	case b[0] == '"' && bytes.HasPrefix(b, marker):
		epoch, raw, err := parseSealed(b)
		if err != nil {
			o.err = fmt.Errorf("%s/%s %s: %w", o.typ, o.id, o.path, err)
			return
		}
		aead, err := o.keyFor(epoch)
		if err != nil {
			o.err = fmt.Errorf("%s/%s %s (key epoch %d): %w", o.typ, o.id, o.path, epoch, err)
			return
		}
		o.ad = aad(o.ad, o.tenant, o.typ, o.id, o.path)
		pt, err := openRaw(aead, o.ad, raw)
		if err != nil {
			o.err = fmt.Errorf("%s/%s %s (key epoch %d): %w", o.typ, o.id, o.path, epoch, err)
			return
		}
		o.out = append(o.out, pt...)
		return
	}
	o.out = append(o.out, b...)
}
