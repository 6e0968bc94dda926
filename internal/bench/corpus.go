package bench

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/fhirgate/fhirgate/internal/fhir"
)

// node is a JSON value that keeps object member order, so a replayed
// resource looks like the original apart from the rewritten values.
type node struct {
	kind kind
	text string // string value, or the literal of a number, true, false, null
	obj  []member
	arr  []*node
}

type member struct {
	key string
	val *node
}

type kind uint8

const (
	kString kind = iota
	kLiteral
	kObject
	kArray
)

func (n *node) get(key string) *node {
	if n == nil || n.kind != kObject {
		return nil
	}
	for _, m := range n.obj {
		if m.key == key {
			return m.val
		}
	}
	return nil
}

func (n *node) str(key string) string {
	if v := n.get(key); v != nil && v.kind == kString {
		return v.text
	}
	return ""
}

func (n *node) index(i int) *node {
	if n == nil || n.kind != kArray || i >= len(n.arr) {
		return nil
	}
	return n.arr[i]
}

// parseJSON reads one JSON value, keeping member order.
func parseJSON(r io.Reader) (*node, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	n, err := parseValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after JSON value")
	}
	return n, nil
}

func parseValue(dec *json.Decoder) (*node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n := &node{kind: kObject}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := parseValue(dec)
				if err != nil {
					return nil, err
				}
				n.obj = append(n.obj, member{key: kt.(string), val: v})
			}
			_, err := dec.Token() // '}'
			return n, err
		case '[':
			n := &node{kind: kArray}
			for dec.More() {
				v, err := parseValue(dec)
				if err != nil {
					return nil, err
				}
				n.arr = append(n.arr, v)
			}
			_, err := dec.Token() // ']'
			return n, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	case string:
		return &node{kind: kString, text: t}, nil
	case json.Number:
		return &node{kind: kLiteral, text: t.String()}, nil
	case bool:
		return &node{kind: kLiteral, text: strconv.FormatBool(t)}, nil
	case nil:
		return &node{kind: kLiteral, text: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected token %T", tok)
}

// Bundle is one corpus transaction bundle, parsed once and replayed many
// times through a Rewriter.
type Bundle struct {
	Name    string
	root    *node
	entries []*node
	// Types[i] is the resourceType of entry i.
	Types []string
	// uuids are the bare UUIDs of the entries' urn:uuid: fullUrls.
	uuids []string
	// patient is the entry index of the bundle's Patient, -1 if none.
	patient int
	// family is the first family name of that Patient.
	family string
	// obsCodes[i] is "system|code" of Observation entry i whose subject is
	// the bundle's Patient ("" otherwise).
	obsCodes []string
}

// Len is the number of resources in the bundle.
func (b *Bundle) Len() int { return len(b.entries) }

// LoadCorpus reads every *.json transaction bundle in dir, in name order.
func LoadCorpus(dir string) ([]*Bundle, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("bench: no *.json bundles in %s", dir)
	}
	sort.Strings(paths)
	var out []*Bundle
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		b, err := ParseBundle(filepath.Base(p), f)
		f.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// ParseBundle reads one transaction bundle whose entries all have
// urn:uuid: fullUrls (as Synthea writes them).
func ParseBundle(name string, r io.Reader) (*Bundle, error) {
	root, err := parseJSON(r)
	if err != nil {
		return nil, fmt.Errorf("bench: %s: %w", name, err)
	}
	if root.str("resourceType") != "Bundle" || root.str("type") != "transaction" {
		return nil, fmt.Errorf("bench: %s: not a transaction Bundle", name)
	}
	b := &Bundle{Name: name, root: root, patient: -1}
	entry := root.get("entry")
	if entry == nil || entry.kind != kArray || len(entry.arr) == 0 {
		return nil, fmt.Errorf("bench: %s: no entries", name)
	}
	b.entries = entry.arr
	byURL := map[string]int{}
	for i, e := range b.entries {
		fu := e.str("fullUrl")
		id, ok := strings.CutPrefix(fu, "urn:uuid:")
		if !ok || !isUUID(id) {
			return nil, fmt.Errorf("bench: %s: entry[%d].fullUrl is not a urn:uuid", name, i)
		}
		typ := e.get("resource").str("resourceType")
		if typ == "" {
			return nil, fmt.Errorf("bench: %s: entry[%d] has no resource", name, i)
		}
		if method := e.get("request").str("method"); method != "POST" {
			return nil, fmt.Errorf("bench: %s: entry[%d].request.method is %q, want POST", name, i, method)
		}
		b.Types = append(b.Types, typ)
		b.uuids = append(b.uuids, id)
		byURL[fu] = i
		if typ == "Patient" && b.patient < 0 {
			b.patient = i
			b.family = e.get("resource").get("name").index(0).str("family")
		}
	}
	b.obsCodes = make([]string, len(b.entries))
	for i, e := range b.entries {
		if b.Types[i] != "Observation" || b.patient < 0 {
			continue
		}
		res := e.get("resource")
		if j, ok := byURL[res.get("subject").str("reference")]; !ok || j != b.patient {
			continue
		}
		c := res.get("code").get("coding").index(0)
		if sys, code := c.str("system"), c.str("code"); sys != "" && code != "" {
			b.obsCodes[i] = sys + "|" + code
		}
	}
	return b, nil
}

// Rewriter makes each replay of a bundle new: every urn:uuid: becomes a
// fresh UUID per round (consistently within one bundle), and every
// Identifier.value gets a suffix naming the run and round, so that replays
// never collide with each other or with earlier runs.
type Rewriter struct {
	// Tag distinguishes this run from earlier ones.
	Tag uint32
}

// NewRewriter returns a Rewriter with a random run tag.
func NewRewriter() Rewriter {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return Rewriter{Tag: uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])}
}

// replay is one rewriting of one bundle.
type replay struct {
	rw    Rewriter
	round int
	uuids map[string]string // old bare UUID -> new
}

func (rw Rewriter) replay(b *Bundle, round int) *replay {
	r := &replay{rw: rw, round: round, uuids: make(map[string]string, len(b.uuids))}
	for _, u := range b.uuids {
		r.uuids[u] = newUUID()
	}
	return r
}

// Bundle returns the bundle's JSON for the given round.
func (rw Rewriter) Bundle(b *Bundle, round int) []byte {
	r := rw.replay(b, round)
	buf := make([]byte, 0, 64<<10)
	return r.encode(buf, b.root, false)
}

// Resources returns each entry's resource JSON for the given round, as
// Bundle would write them.
func (rw Rewriter) Resources(b *Bundle, round int) [][]byte {
	r := rw.replay(b, round)
	out := make([][]byte, len(b.entries))
	for i, e := range b.entries {
		out[i] = r.encode(nil, e.get("resource"), false)
	}
	return out
}

// mapString replaces every urn:uuid:<old> in s, and s itself when it is a
// bare old UUID (a resource id), by the round's new UUID.
func (r *replay) mapString(s string) string {
	if n, ok := r.uuids[s]; ok {
		return n
	}
	const p = "urn:uuid:"
	if !strings.Contains(s, p) {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, p)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+len(p)])
		s = s[i+len(p):]
		if len(s) >= 36 {
			if n, ok := r.uuids[s[:36]]; ok {
				b.WriteString(n)
				s = s[36:]
			}
		}
	}
}

// identifierValue makes an Identifier.value unique to the run and round.
func (r *replay) identifierValue(v string) string {
	if m := r.mapString(v); m != v {
		return m
	}
	if strings.HasPrefix(v, "urn:oid:") {
		// Stay a valid OID: add arcs.
		return fmt.Sprintf("%s.%d.%d", v, r.rw.Tag, r.round)
	}
	return fmt.Sprintf("%s-b%dr%d", v, r.rw.Tag, r.round)
}

// encode appends n as JSON. ident is true when n is an Identifier.
func (r *replay) encode(buf []byte, n *node, ident bool) []byte {
	switch n.kind {
	case kString:
		return fhir.AppendString(buf, r.mapString(n.text))
	case kLiteral:
		return append(buf, n.text...)
	case kArray:
		buf = append(buf, '[')
		for i, v := range n.arr {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = r.encode(buf, v, ident)
		}
		return append(buf, ']')
	}
	buf = append(buf, '{')
	for i, m := range n.obj {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = fhir.AppendString(buf, m.key)
		buf = append(buf, ':')
		switch {
		case ident && m.key == "value" && m.val.kind == kString:
			buf = fhir.AppendString(buf, r.identifierValue(m.val.text))
		case m.key == "identifier":
			// An array of Identifiers, or one (Reference.identifier).
			buf = r.encode(buf, m.val, true)
		default:
			buf = r.encode(buf, m.val, false)
		}
	}
	return append(buf, '}')
}

func newUUID() string {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		panic(err)
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return string(s[:])
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
