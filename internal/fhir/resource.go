package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Resource is one FHIR resource as JSON: the ordered top-level members as
// raw bytes (what is stored and served) and a decoded view for reading.
type Resource struct {
	Type string
	ID   string // "" when the resource carries no id
	// Content is the decoded resource: map[string]any, []any, string,
	// json.Number, bool, nil. Treat it as read-only: edits go through the
	// Resource methods so the bytes stay the source of truth.
	Content map[string]any
	fields  []member
}

type member struct {
	key    string
	rawKey []byte // the key as written, quotes included; nil for keys the server adds
	val    []byte // compact JSON
}

// MaxDepth bounds nesting so hostile input cannot exhaust the stack.
const MaxDepth = 100

// Parse reads one resource. It rejects anything that is not a single JSON
// object with a string resourceType, duplicate member names at any level,
// and nesting deeper than MaxDepth. Errors are KindInvalid.
func Parse(body []byte) (*Resource, error) {
	b, err := Compact(body)
	if err != nil {
		return nil, err
	}
	return parseChecked(b)
}

// Compact validates JSON (syntax, duplicate member names, depth) and
// returns it without insignificant white space.
func Compact(body []byte) ([]byte, error) {
	var compact bytes.Buffer
	compact.Grow(len(body))
	if err := json.Compact(&compact, body); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, Errorf(KindInvalid, "", "malformed JSON at byte %d: %s", se.Offset, se.Error()).WithCode("structure")
		}
		return nil, Errorf(KindInvalid, "", "malformed JSON: %s", err).WithCode("structure")
	}
	b := compact.Bytes()
	if !utf8.Valid(b) {
		return nil, Errorf(KindInvalid, "", "the JSON is not valid UTF-8").WithCode("structure")
	}
	if len(b) > 0 && (b[0] == '{' || b[0] == '[') {
		if path, err := checkStructure(b); err != nil {
			return nil, Errorf(KindInvalid, path, "%s", err).WithCode("structure")
		}
	}
	return b, nil
}

// ParseCompacted reads a resource from JSON that Compact returned (or a
// value inside it), skipping the checks Compact already made.
func ParseCompacted(b []byte) (*Resource, error) { return parseChecked(b) }

// Member is one member of a JSON object.
type Member struct {
	Key   string
	Value []byte // compact JSON
}

// Members splits a compact JSON object (from Compact) into its members.
func Members(obj []byte) []Member {
	if len(obj) < 2 || obj[0] != '{' {
		return nil
	}
	ms := splitObject(obj)
	out := make([]Member, len(ms))
	for i, m := range ms {
		out[i] = Member{Key: m.key, Value: m.val}
	}
	return out
}

// Elements splits a compact JSON array (from Compact) into its elements.
func Elements(arr []byte) [][]byte {
	if len(arr) < 2 || arr[0] != '[' {
		return nil
	}
	var out [][]byte
	for i := 1; i < len(arr) && arr[i] != ']'; {
		end := skipValue(arr, i)
		out = append(out, arr[i:end:end])
		i = end
		if i < len(arr) && arr[i] == ',' {
			i++
		}
	}
	return out
}

// ParseValue reads a resource from a value already decoded by Parse or by a
// json.Decoder with UseNumber (a Bundle entry's resource).
func ParseValue(v any) (*Resource, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, Errorf(KindInvalid, "", "resource must be a JSON object").WithCode("structure")
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, Errorf(KindInvalid, "", "resource cannot be encoded: %s", err).WithCode("structure")
	}
	return parseCompact(b)
}

func parseCompact(b []byte) (*Resource, error) {
	if len(b) > 0 && b[0] == '{' {
		if path, err := checkStructure(b); err != nil {
			return nil, Errorf(KindInvalid, path, "%s", err).WithCode("structure")
		}
	}
	return parseChecked(b)
}

func parseChecked(b []byte) (*Resource, error) {
	if len(b) == 0 || b[0] != '{' {
		return nil, Errorf(KindInvalid, "", "resource must be a JSON object").WithCode("structure")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var content map[string]any
	if err := dec.Decode(&content); err != nil {
		return nil, Errorf(KindInvalid, "", "malformed JSON: %s", err).WithCode("structure")
	}
	rt, ok := content["resourceType"].(string)
	if !ok || rt == "" {
		return nil, Errorf(KindInvalid, "resourceType", "resourceType is missing or not a string").WithCode("required")
	}
	r := &Resource{Type: rt, Content: content, fields: splitObject(b)}
	if id, present := content["id"]; present {
		s, ok := id.(string)
		if !ok {
			return nil, Errorf(KindInvalid, rt+".id", "id must be a string").WithCode("value")
		}
		r.ID = s
	}
	return r, nil
}

// Bytes is the resource as compact JSON, members in the client's order.
func (r *Resource) Bytes() []byte {
	n := 2
	for _, f := range r.fields {
		n += len(f.key) + len(f.val) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, f := range r.fields {
		if i > 0 {
			b = append(b, ',')
		}
		if f.rawKey != nil {
			b = append(b, f.rawKey...)
		} else {
			b = strconv.AppendQuote(b, f.key) // server-added keys are plain ASCII
		}
		b = append(b, ':')
		b = append(b, f.val...)
	}
	return append(b, '}')
}

// SetID sets (or with "" removes) the resource id.
func (r *Resource) SetID(id string) {
	r.ID = id
	if id == "" {
		delete(r.Content, "id")
		r.remove("id")
		return
	}
	r.Content["id"] = id
	r.set("id", strconv.AppendQuote(nil, id), "resourceType")
}

// SetMeta sets meta.versionId and meta.lastUpdated, keeping every other
// meta element (profile, security, tag, source, extensions) as it was.
func (r *Resource) SetMeta(versionID string, lastUpdated time.Time) {
	lu := FormatInstant(lastUpdated)
	var metaFields []member
	meta, _ := r.Content["meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
	} else if raw := r.get("meta"); raw != nil {
		metaFields = splitObject(raw)
	}
	meta["versionId"] = versionID
	meta["lastUpdated"] = lu
	r.Content["meta"] = meta
	m := &Resource{fields: metaFields}
	m.set("versionId", strconv.AppendQuote(nil, versionID), "")
	m.set("lastUpdated", strconv.AppendQuote(nil, lu), "versionId")
	after := "id"
	if r.get("id") == nil {
		after = "resourceType"
	}
	r.set("meta", m.Bytes(), after)
}

// RewriteStrings replaces every JSON string value (never a member name)
// that is a key of repl by its value, in both the bytes and the decoded
// view. Transactions use it to turn urn:uuid: references into assigned ids.
func (r *Resource) RewriteStrings(repl map[string]string) {
	for i := range r.fields {
		r.fields[i].val = rewriteStrings(r.fields[i].val, repl)
	}
	for k, v := range r.Content {
		r.Content[k] = rewriteValue(v, repl)
	}
}

func rewriteValue(v any, repl map[string]string) any {
	switch t := v.(type) {
	case string:
		if s, ok := repl[t]; ok {
			return s
		}
	case map[string]any:
		for k, e := range t {
			t[k] = rewriteValue(e, repl)
		}
	case []any:
		for i, e := range t {
			t[i] = rewriteValue(e, repl)
		}
	}
	return v
}

func (r *Resource) get(key string) []byte {
	for _, f := range r.fields {
		if f.key == key {
			return f.val
		}
	}
	return nil
}

// set replaces key's value, or inserts it after the member named after
// (at the front when after is "" or absent).
func (r *Resource) set(key string, val []byte, after string) {
	for i := range r.fields {
		if r.fields[i].key == key {
			r.fields[i].val = val
			return
		}
	}
	pos := 0
	for i, f := range r.fields {
		if f.key == after {
			pos = i + 1
			break
		}
	}
	r.fields = append(r.fields, member{})
	copy(r.fields[pos+1:], r.fields[pos:])
	r.fields[pos] = member{key: key, val: val}
}

func (r *Resource) remove(key string) {
	for i, f := range r.fields {
		if f.key == key {
			r.fields = append(r.fields[:i], r.fields[i+1:]...)
			return
		}
	}
}

// FormatInstant renders t as a FHIR instant in UTC with microseconds, the
// precision PostgreSQL keeps.
func FormatInstant(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
}

// splitObject splits a compact, valid JSON object into its members.
func splitObject(b []byte) []member {
	var out []member
	i := 1 // past '{'
	for i < len(b) && b[i] != '}' {
		kEnd := skipString(b, i)
		key, _ := unquote(b[i:kEnd])
		vStart := kEnd + 1 // past ':'
		vEnd := skipValue(b, vStart)
		out = append(out, member{key: key, rawKey: b[i:kEnd:kEnd], val: b[vStart:vEnd:vEnd]})
		i = vEnd
		if i < len(b) && b[i] == ',' {
			i++
		}
	}
	return out
}

// skipString returns the index just past the string starting at b[i] == '"'.
// It jumps from quote to quote (bytes.IndexByte), so a long string — a
// narrative's div — costs a vectorized scan, not a byte loop; a quote is
// escaped when an odd number of backslashes precedes it.
func skipString(b []byte, i int) int {
	i++
	for i < len(b) {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return len(b)
		}
		q := i + j
		n := 0
		for p := q - 1; p >= i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q + 1
		}
		i = q + 1
	}
	return len(b)
}

// SkipString returns the index just past the JSON string at b[i] == '"'
// (len(b) when it is not closed).
func SkipString(b []byte, i int) int { return skipString(b, i) }

// SkipValue returns the index just past the compact JSON value at b[i]
// (len(b) when it is not closed). It never panics, whatever b holds.
func SkipValue(b []byte, i int) int { return skipValue(b, i) }

// skipValue returns the index just past the compact JSON value at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = skipString(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
			j++
		}
		return j
	}
}

// checkStructure walks compact JSON, refusing duplicate member names and
// excessive depth; it returns the path of the offending member. It runs on
// every resource written, so it allocates nothing on valid input: member
// names are compared as raw bytes and the path is built only for an error.
func checkStructure(b []byte) (string, error) {
	_, serr := walkStructure(b, 0, 0)
	if serr == nil {
		return "", nil
	}
	var path strings.Builder
	for i := len(serr.path) - 1; i >= 0; i-- {
		seg := serr.path[i]
		if path.Len() > 0 && !strings.HasPrefix(seg, "[") { // seg is "" for a member named ""
			path.WriteByte('.')
		}
		path.WriteString(seg)
	}
	return path.String(), serr.err
}

// structError is a structure problem and the path to it, innermost
// segment first (segments are added while the walk unwinds).
type structError struct {
	path []string
	err  error
}

func (e *structError) at(seg string) *structError {
	e.path = append(e.path, seg)
	return e
}

// smallObject is how many members an object may have before duplicate
// detection switches from comparing raw names to a map.
const smallObject = 16

func walkStructure(b []byte, i, depth int) (int, *structError) {
	if depth > MaxDepth {
		return 0, &structError{err: fmt.Errorf("nesting deeper than %d levels", MaxDepth)}
	}
	switch b[i] {
	case '{':
		var names [smallObject][]byte
		var many map[string]struct{}
		n := 0
		i++
		for i < len(b) && b[i] != '}' {
			kEnd := skipString(b, i)
			raw := b[i+1 : kEnd-1]
			if bytes.IndexByte(raw, '\\') >= 0 { // compare escaped names decoded
				key, err := unquote(b[i:kEnd])
				if err != nil {
					return 0, &structError{err: err}
				}
				raw = []byte(key)
			}
			dup := false
			switch {
			case many != nil:
				_, dup = many[string(raw)]
				many[string(raw)] = struct{}{}
			case n < smallObject:
				for _, prev := range names[:n] {
					if bytes.Equal(prev, raw) {
						dup = true
						break
					}
				}
				names[n] = raw
			default:
				many = make(map[string]struct{}, 2*smallObject)
				for _, prev := range names {
					many[string(prev)] = struct{}{}
				}
				_, dup = many[string(raw)]
				many[string(raw)] = struct{}{}
			}
			n++
			if dup {
				return 0, (&structError{err: fmt.Errorf("duplicate member %q", raw)}).at(string(raw))
			}
			next, serr := walkStructure(b, kEnd+1, depth+1)
			if serr != nil {
				return 0, serr.at(string(raw))
			}
			i = next
			if b[i] == ',' {
				i++
			}
		}
		return i + 1, nil
	case '[':
		i++
		for n := 0; i < len(b) && b[i] != ']'; n++ {
			next, serr := walkStructure(b, i, depth+1)
			if serr != nil {
				return 0, serr.at("[" + strconv.Itoa(n) + "]")
			}
			i = next
			if b[i] == ',' {
				i++
			}
		}
		return i + 1, nil
	}
	return skipValue(b, i), nil
}

// rewriteStrings rewrites string values (not member names) in compact JSON.
func rewriteStrings(b []byte, repl map[string]string) []byte {
	var out []byte // nil until the first change
	last := 0
	// One entry per open container: 'k' object expecting a member name,
	// 'v' object expecting a value, 'a' array.
	var stack []byte
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{':
			stack = append(stack, 'k')
		case '[':
			stack = append(stack, 'a')
		case '}', ']':
			stack = stack[:len(stack)-1]
		case ':':
			stack[len(stack)-1] = 'v'
		case ',':
			if stack[len(stack)-1] == 'v' {
				stack[len(stack)-1] = 'k'
			}
		case '"':
			end := skipString(b, i)
			if len(stack) == 0 || stack[len(stack)-1] != 'k' {
				var (
					to string
					ok bool
				)
				if raw := b[i+1 : end-1]; bytes.IndexByte(raw, '\\') < 0 {
					to, ok = repl[string(raw)] // no allocation for the lookup
				} else if s, err := unquote(b[i:end]); err == nil {
					to, ok = repl[s]
				}
				if ok {
					if out == nil {
						out = make([]byte, 0, len(b)+64)
					}
					out = append(out, b[last:i]...)
					out = AppendString(out, to)
					last = end
				}
			}
			i = end - 1
		}
	}
	if out == nil {
		return b
	}
	return append(out, b[last:]...)
}

// unquote decodes a JSON string literal, without allocating beyond the
// result when it has no escapes.
func unquote(q []byte) (string, error) {
	if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		return "", fmt.Errorf("malformed string")
	}
	raw := q[1 : len(q)-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw), nil
	}
	var s string
	err := json.Unmarshal(q, &s)
	return s, err
}
