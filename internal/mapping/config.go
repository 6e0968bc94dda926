package mapping

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/fhirgate/fhirgate/internal/hl7v2"
	"github.com/fhirgate/fhirgate/internal/spec"
)

// The YAML schema. Every file is decoded strictly: an unknown key is an
// error naming the file and line.

type mappingFile struct {
	Version  string                  `yaml:"version"`
	Messages []messageSpec           `yaml:"messages"`
	Segments map[string]*segmentSpec `yaml:"segments"`
}

type messageSpec struct {
	Types     []string       `yaml:"types"`
	Groups    []string       `yaml:"groups"` // segments that open a segment group, outermost level first: ["ORC+OBR"], [ORC, "RXO|RXE"]
	Resources []producerSpec `yaml:"resources"`
}

type producerSpec struct {
	ID       string    `yaml:"id"`
	Segment  string    `yaml:"segment"`
	Map      string    `yaml:"map"`
	Required bool      `yaml:"required"`
	Refs     []refSpec `yaml:"refs"`
	Into     string    `yaml:"into"`
}

type refSpec struct {
	To  string         `yaml:"to"`
	Ref string         `yaml:"ref"`
	Set map[string]any `yaml:"set"`
}

type segmentSpec struct {
	Resource string      `yaml:"resource"`
	Identity []string    `yaml:"identity"`
	Fallback []string    `yaml:"fallback"`
	Item     string      `yaml:"item"`
	Fields   []fieldSpec `yaml:"fields"`
}

type fieldSpec struct {
	From     string         `yaml:"from"`
	To       string         `yaml:"to"`
	Type     string         `yaml:"type"`
	Const    any            `yaml:"const"`
	Map      string         `yaml:"map"`
	Table    string         `yaml:"table"`
	Required bool           `yaml:"required"`
	Join     bool           `yaml:"join"`
	Fallback bool           `yaml:"fallback"`
	Skip     bool           `yaml:"skip"`
	Set      map[string]any `yaml:"set"`
	Ext      []string       `yaml:"ext"`
	Merge    bool           `yaml:"merge"`
	Adjacent bool           `yaml:"adjacent"` // read the segments of from's kind right after this one
	Value    any            `yaml:"value"`    // with from: this constant whenever the field is sent
	Unit     string         `yaml:"unit"`     // the field holding the value's units (RXE-5 for RXE-3)
	Sibling  bool           `yaml:"sibling"`  // write into the array item the rule before made (class.name beside class.value)
}

type codemapFile struct {
	Systems     map[string]string        `yaml:"systems"`
	Codemaps    map[string]*codemapSpec  `yaml:"codemaps"`
	Conceptmaps map[string][]conceptSpec `yaml:"conceptmaps"`
}

type codemapSpec struct {
	Source  string            `yaml:"source"` // informative: the HL7 table, e.g. "0001"
	System  string            `yaml:"system"` // the target code system, for Coding targets
	Map     map[string]string `yaml:"map"`
	Display map[string]string `yaml:"display"`
	Default string            `yaml:"default"`
	Partial bool              `yaml:"partial"` // a code not in map gives no value, silently: a later rule decides
}

type conceptSpec struct {
	Source codingSpec `yaml:"source"`
	Target codingSpec `yaml:"target"`
}

type codingSpec struct {
	System  string `yaml:"system"`
	Code    string `yaml:"code"`
	Display string `yaml:"display"`
}

type sourceFile struct {
	Name              string            `yaml:"name"`
	Match             []matchSpec       `yaml:"match"`
	Default           bool              `yaml:"default"`
	Timezone          string            `yaml:"timezone"`
	IdentifierSystems map[string]string `yaml:"identifierSystems"`
	SystemTemplate    string            `yaml:"identifierSystemTemplate"`
	Conceptmaps       []string          `yaml:"conceptmaps"`
	ZSegments         []zsegSpec        `yaml:"zsegments"`
}

type matchSpec struct {
	Application string `yaml:"application"`
	Facility    string `yaml:"facility"`
}

type zsegSpec struct {
	Segment string       `yaml:"segment"`
	Ignore  bool         `yaml:"ignore"`
	Fields  []zfieldSpec `yaml:"fields"`
}

type zfieldSpec struct {
	Field    int    `yaml:"field"`
	Resource string `yaml:"resource"`
	URL      string `yaml:"url"`
}

// Compiled forms.

type messageMap struct {
	key       string
	producers []*producer
	groups    map[string]groupLeader // segments that open a group; see (*mctx).near
}

type producer struct {
	id       string
	segment  string
	smap     *segmentMap
	required bool
	refs     []*refRule
	index    int
	into     int // producer whose resource this one's content joins; -1: none
}

// groupLeader is a segment that opens a segment group at a nesting
// level (0 outermost). With joins, it joins the open group of its level
// instead when a segment named joins opened that group and it has none
// of this name yet (ORC+OBR: an ORC and the OBR after it are one order;
// OBR+ORC, as OUL sends them, the other way round).
type groupLeader struct {
	level int
	joins string
}

type refRule struct {
	to     *target
	ref    int // producer index
	all    bool
	set    map[string]any
	target string // the referenced resource type
}

type segmentMap struct {
	name     string
	resource string
	identity []idKey
	fallback []idKey
	item     string // top-level array element that gets one item per segment
	fields   []*fieldRule
}

const (
	keyField = iota // first non-empty of the paths, raw text
	keyCX           // identifier system|value of a CX field, MR preferred
	keyRef          // the id of a resource another producer made (by producer id)
	keyHD           // the id of the Organization an HD names (as the HD converter makes it)
	keyXON          // the id of the Organization an XON names (as the XON converter makes it)
)

type idKey struct {
	kind  int
	paths []segPath
	ref   string
}

type fieldRule struct {
	from     segPath
	hasFrom  bool
	constVal any
	to       *target
	conv     *converter
	codemap  *codeMap
	table    string
	required bool
	join     bool
	fallback bool // applies only while the target's top element is absent
	skip     bool // a required value missing drops the resource with a warning instead of failing the message
	set      map[string]any
	ext      []string // urls of the extension items made on the way, outermost first
	merge    bool     // reuse the outer extension item with the same url
	adjacent bool     // from names the run of segments right after this one
	unit     segPath  // the units of the value (NM, MINUTES); seg "" when none
	sibling  bool     // joins the item of its first array that the rule before made; nothing when that made none
}

// segPath is a compiled "PID-3(2).4.1"; zero rep/comp/sub mean "all
// repetitions" / "the whole field" / "the whole component".
type segPath struct {
	seg                   string
	field, rep, comp, sub int
}

func (p segPath) String() string {
	s := p.seg + "-" + strconv.Itoa(p.field)
	if p.rep > 0 {
		s += "(" + strconv.Itoa(p.rep) + ")"
	}
	if p.comp > 0 {
		s += "." + strconv.Itoa(p.comp)
	}
	if p.sub > 0 {
		s += "." + strconv.Itoa(p.sub)
	}
	return s
}

var pathRe = regexp.MustCompile(`^([A-Z][A-Z0-9]{2})-([0-9]{1,3})(?:\(([0-9]{1,3})\))?(?:\.([0-9]{1,3}))?(?:\.([0-9]{1,3}))?$`)

func parsePath(s string) (segPath, error) {
	m := pathRe.FindStringSubmatch(s)
	if m == nil {
		return segPath{}, fmt.Errorf("bad segment path %q (want e.g. PID-3, PID-3.1, PID-3(2).4.1)", s)
	}
	p := segPath{seg: m[1]}
	p.field, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		p.rep, _ = strconv.Atoi(m[3])
	}
	if m[4] != "" {
		p.comp, _ = strconv.Atoi(m[4])
	}
	if m[5] != "" {
		p.sub, _ = strconv.Atoi(m[5])
	}
	if p.field == 0 || (m[3] != "" && p.rep == 0) || (m[4] != "" && p.comp == 0) || (m[5] != "" && p.sub == 0) {
		return segPath{}, fmt.Errorf("bad segment path %q: positions are 1-based", s)
	}
	return p, nil
}

// target is a compiled element path inside a resource ("name",
// "hospitalization.admitSource", "value[x]").
type target struct {
	path  string
	steps []step
}

type step struct {
	name   string // JSON member name; for a choice the base name
	array  bool
	choice bool
	types  []string // allowed FHIR types of the value (one unless choice)
	all    []string // for a choice, every type of the element
	refTo  []string // Reference targets
}

func (t *target) last() *step { return &t.steps[len(t.steps)-1] }

func resolveTarget(resource, path string) (*target, error) {
	s, ok := spec.StructOf(resource)
	if !ok || s.Kind != spec.KindResource {
		return nil, fmt.Errorf("unknown resource type %q", resource)
	}
	t := &target{path: path}
	parts := strings.Split(path, ".")
	for i, part := range parts {
		if s == nil {
			return nil, fmt.Errorf("unknown target element %s.%s", resource, path)
		}
		var st step
		if base, ok := strings.CutSuffix(part, "[x]"); ok {
			var el *spec.Element
			for _, e := range s.Elements {
				if e.Name == base && e.Choice {
					el = e
				}
			}
			if el == nil || i != len(parts)-1 {
				return nil, fmt.Errorf("unknown target element %s.%s", resource, path)
			}
			st = step{name: base, array: el.IsArray(), choice: true, types: el.Types, all: el.Types}
			t.steps = append(t.steps, st)
			break
		}
		if base, ok := strings.CutPrefix(part, "_"); ok && i+1 < len(parts) {
			// A single primitive's own extensions (_birthDate.extension).
			m, ok := s.Member(base)
			el, elOK := spec.StructOf("Element")
			if !ok || !m.Primitive || m.Element.IsArray() || m.Element.Choice || !elOK {
				return nil, fmt.Errorf("unknown target element %s.%s", resource, path)
			}
			t.steps = append(t.steps, step{name: part, types: []string{"Element"}})
			s = el
			continue
		}
		m, ok := s.Member(part)
		if !ok || part == "resourceType" || part == "id" {
			return nil, fmt.Errorf("unknown target element %s.%s", resource, path)
		}
		st = step{name: part, array: m.Element.IsArray(), types: []string{m.Type}, refTo: m.Element.TargetProfiles}
		if m.Element.Choice { // a choice named with its type, e.g. valueString
			st.name, st.choice, st.all = m.Element.Name, true, m.Element.Types
		}
		t.steps = append(t.steps, st)
		s = m.Struct
		if m.Primitive && i != len(parts)-1 {
			return nil, fmt.Errorf("unknown target element %s.%s: %s is a primitive", resource, path, part)
		}
	}
	return t, nil
}

type codeMap struct {
	name    string
	system  string
	m       map[string]string
	display map[string]string
	def     string
	partial bool
}

type conceptRule struct {
	target codingSpec
}

type profile struct {
	name        string
	match       []matchSpec
	loc         *time.Location
	idSystems   map[string]string
	sysTemplate string
	concepts    map[string]conceptRule // key source system + "\x1f" + code
	zsegs       map[string]*zsegSpec
}

// Load reads a mapping set: dir/hl7v2/*.yaml (message and segment maps,
// exactly one file declaring version), dir/codemaps/*.yaml and
// dir/sources/*.yaml. It refuses the whole set on the first bad file with
// an error naming the file, the line where known and the offending key.
func Load(dir string) (*Engine, error) {
	e := &Engine{
		messages: map[string]*messageMap{},
		codes:    map[string]bool{},
		systems:  map[string]string{},
		codemaps: map[string]*codeMap{},
	}
	concepts := map[string][]conceptSpec{}

	// Code maps first: segment maps refer to them.
	cfiles, err := yamlFiles(filepath.Join(dir, "codemaps"))
	if err != nil {
		return nil, err
	}
	for _, f := range cfiles {
		var cf codemapFile
		doc, err := decode(f, &cf)
		if err != nil {
			return nil, err
		}
		for k, v := range cf.Systems {
			if _, dup := e.systems[k]; dup {
				return nil, doc.errf("$.systems."+k, "coding system %q declared twice", k)
			}
			if !strings.Contains(v, ":") {
				return nil, doc.errf("$.systems."+k, "system %q: %q is not an absolute URI", k, v)
			}
			e.systems[k] = v
		}
		for name, c := range cf.Codemaps {
			if _, dup := e.codemaps[name]; dup {
				return nil, doc.errf("$.codemaps."+name, "code map %q declared twice", name)
			}
			if len(c.Map) == 0 {
				return nil, doc.errf("$.codemaps."+name+".map", "code map %q: empty map", name)
			}
			e.codemaps[name] = &codeMap{name: name, system: c.System, m: c.Map, display: c.Display, def: c.Default, partial: c.Partial}
		}
		for name, rules := range cf.Conceptmaps {
			if _, dup := concepts[name]; dup {
				return nil, doc.errf("$.conceptmaps."+name, "concept map %q declared twice", name)
			}
			for i, r := range rules {
				if r.Source.System == "" || r.Source.Code == "" || r.Target.System == "" || r.Target.Code == "" {
					return nil, doc.errf(fmt.Sprintf("$.conceptmaps.%s[%d]", name, i), "concept map %q: source and target need system and code", name)
				}
			}
			concepts[name] = rules
		}
	}

	// Source profiles.
	sfiles, err := yamlFiles(filepath.Join(dir, "sources"))
	if err != nil {
		return nil, err
	}
	for _, f := range sfiles {
		var sf sourceFile
		doc, err := decode(f, &sf)
		if err != nil {
			return nil, err
		}
		p, err := compileProfile(doc, &sf, concepts)
		if err != nil {
			return nil, err
		}
		for _, q := range e.profiles {
			if q.name == p.name {
				return nil, doc.errf("$.name", "source profile %q declared twice", p.name)
			}
		}
		if sf.Default {
			if e.defaultProfile != nil {
				return nil, doc.errf("$.default", "a second default source profile (%s)", p.name)
			}
			e.defaultProfile = p
		}
		e.profiles = append(e.profiles, p)
	}
	if e.defaultProfile == nil {
		return nil, fmt.Errorf("mapping: %s: no source profile has default: true", filepath.Join(dir, "sources"))
	}

	// Message and segment maps.
	mfiles, err := yamlFiles(filepath.Join(dir, "hl7v2"))
	if err != nil {
		return nil, err
	}
	type pendingMsg struct {
		doc  *yamlDoc
		path string
		spec messageSpec
	}
	var msgs []pendingMsg
	segDocs := map[string]*yamlDoc{}
	segSpecs := map[string]*segmentSpec{}
	var versionFile string
	for _, f := range mfiles {
		var mf mappingFile
		doc, err := decode(f, &mf)
		if err != nil {
			return nil, err
		}
		if mf.Version != "" {
			if versionFile != "" {
				return nil, doc.errf("$.version", "version declared again (first in %s)", versionFile)
			}
			versionFile, e.version = f, mf.Version
		}
		for name, s := range mf.Segments {
			if _, dup := segSpecs[name]; dup {
				return nil, doc.errf("$.segments."+name, "segment map %q declared twice", name)
			}
			segSpecs[name], segDocs[name] = s, doc
		}
		for i, m := range mf.Messages {
			msgs = append(msgs, pendingMsg{doc, fmt.Sprintf("$.messages[%d]", i), m})
		}
	}
	if versionFile == "" {
		return nil, fmt.Errorf("mapping: %s: no file declares version", filepath.Join(dir, "hl7v2"))
	}
	segs := map[string]*segmentMap{}
	names := make([]string, 0, len(segSpecs))
	for n := range segSpecs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sm, err := e.compileSegment(segDocs[n], "$.segments."+n, n, segSpecs[n])
		if err != nil {
			return nil, err
		}
		segs[n] = sm
	}
	for _, pm := range msgs {
		if err := e.compileMessage(pm.doc, pm.path, &pm.spec, segs); err != nil {
			return nil, err
		}
	}
	return e, nil
}

var triggerRe = regexp.MustCompile(`^[A-Z0-9]{3}(\^[A-Z0-9]{3}|_[A-Z0-9]{3})$`)

func (e *Engine) compileMessage(doc *yamlDoc, at string, ms *messageSpec, segs map[string]*segmentMap) error {
	if len(ms.Types) == 0 {
		return doc.errf(at+".types", "message map without types")
	}
	mm := &messageMap{key: ms.Types[0]}
	for j, g := range ms.Groups {
		sep, joint := "|", strings.Contains(g, "+")
		if joint {
			sep = "+"
		}
		prev := ""
		for _, name := range strings.Split(g, sep) {
			if !segNameRe.MatchString(name) {
				return doc.errf(fmt.Sprintf("%s.groups[%d]", at, j), "bad segment name %q", name)
			}
			if mm.groups == nil {
				mm.groups = map[string]groupLeader{}
			}
			if _, dup := mm.groups[name]; dup {
				return doc.errf(fmt.Sprintf("%s.groups[%d]", at, j), "segment %q opens groups at two levels", name)
			}
			ld := groupLeader{level: j}
			if joint {
				ld.joins, prev = prev, name
			}
			mm.groups[name] = ld
		}
	}
	ids := map[string]int{}
	for i, ps := range ms.Resources {
		pat := fmt.Sprintf("%s.resources[%d]", at, i)
		if ps.ID == "" {
			return doc.errf(pat+".id", "resource without id")
		}
		if _, dup := ids[ps.ID]; dup {
			return doc.errf(pat+".id", "resource id %q used twice", ps.ID)
		}
		sm, ok := segs[ps.Map]
		if !ok {
			return doc.errf(pat+".map", "unknown segment map %q", ps.Map)
		}
		if !segNameRe.MatchString(ps.Segment) {
			return doc.errf(pat+".segment", "bad segment name %q", ps.Segment)
		}
		p := &producer{id: ps.ID, segment: ps.Segment, smap: sm, required: ps.Required, index: i, into: -1}
		for _, k := range append(append([]idKey(nil), sm.identity...), sm.fallback...) {
			if k.kind == keyRef {
				if _, ok := ids[k.ref]; !ok {
					return doc.errf(pat+".map", "segment map %q: identity ref:%s needs a resource with id %q listed before %q", ps.Map, k.ref, k.ref, ps.ID)
				}
			}
		}
		ids[ps.ID] = i
		mm.producers = append(mm.producers, p)
	}
	for i, ps := range ms.Resources {
		if ps.Into != "" {
			p := mm.producers[i]
			pat := fmt.Sprintf("%s.resources[%d]", at, i)
			idx, ok := ids[ps.Into]
			if !ok || idx == i {
				return doc.errf(pat+".into", "unknown resource id %q", ps.Into)
			}
			t := mm.producers[idx]
			if t.smap.resource != p.smap.resource || ms.Resources[idx].Into != "" {
				return doc.errf(pat+".into", "segment map %q makes a %s; %q is not a resource of that type", ps.Map, p.smap.resource, ps.Into)
			}
			if ps.Required {
				return doc.errf(pat+".into", "a resource joined into %q is never required", ps.Into)
			}
			p.into = idx
		}
	}
	for i, ps := range ms.Resources {
		p := mm.producers[i]
		for j, rs := range ps.Refs {
			rat := fmt.Sprintf("%s.resources[%d].refs[%d]", at, i, j)
			t, err := resolveTarget(p.smap.resource, rs.To)
			if err != nil {
				return doc.errf(rat+".to", "%s", err)
			}
			if l := t.last(); l.choice || l.types[0] != "Reference" {
				return doc.errf(rat+".to", "%s.%s is not a Reference", p.smap.resource, rs.To)
			}
			name, all := strings.CutSuffix(rs.Ref, "[]")
			idx, ok := ids[name]
			if !ok {
				return doc.errf(rat+".ref", "unknown resource id %q", name)
			}
			if mm.producers[idx].into >= 0 {
				return doc.errf(rat+".ref", "resource %q is joined into another and cannot be referenced", name)
			}
			rt := mm.producers[idx].smap.resource
			if tp := t.last().refTo; len(tp) > 0 && !contains(tp, rt) && !contains(tp, "Resource") {
				return doc.errf(rat+".ref", "%s.%s cannot reference a %s", p.smap.resource, rs.To, rt)
			}
			if err := checkSet(p.smap.resource, t, rs.Set); err != nil {
				return doc.errf(rat+".set", "%s", err)
			}
			p.refs = append(p.refs, &refRule{to: t, ref: idx, all: all, set: rs.Set, target: rt})
		}
	}
	for j, ty := range ms.Types {
		if !triggerRe.MatchString(ty) {
			return doc.errf(fmt.Sprintf("%s.types[%d]", at, j), "bad message type %q (want ADT^A01 or ADT_A01)", ty)
		}
		if _, dup := e.messages[ty]; dup {
			return doc.errf(fmt.Sprintf("%s.types[%d]", at, j), "duplicate message type %q", ty)
		}
		e.messages[ty] = mm
		e.codes[ty[:3]] = true
	}
	return nil
}

var segNameRe = regexp.MustCompile(`^[A-Z][A-Z0-9]{2}$`)

func (e *Engine) compileSegment(doc *yamlDoc, at, name string, ss *segmentSpec) (*segmentMap, error) {
	if s, ok := spec.StructOf(ss.Resource); !ok || s.Kind != spec.KindResource {
		return nil, doc.errf(at+".resource", "unknown resource type %q", ss.Resource)
	}
	sm := &segmentMap{name: name, resource: ss.Resource, item: ss.Item}
	if ss.Item != "" {
		t, err := resolveTarget(ss.Resource, ss.Item)
		if err != nil || len(t.steps) != 1 || !t.steps[0].array || spec.IsPrimitive(t.steps[0].types[0]) {
			return nil, doc.errf(at+".item", "%s.%s is not a repeating element with children", ss.Resource, ss.Item)
		}
	}
	var err error
	if sm.identity, err = compileKeys(doc, at+".identity", ss.Identity); err != nil {
		return nil, err
	}
	if sm.fallback, err = compileKeys(doc, at+".fallback", ss.Fallback); err != nil {
		return nil, err
	}
	for i, fs := range ss.Fields {
		fat := fmt.Sprintf("%s.fields[%d]", at, i)
		r, err := e.compileField(doc, fat, ss.Resource, &fs)
		if err != nil {
			return nil, err
		}
		if r.sibling && (len(sm.fields) == 0 || sm.fields[len(sm.fields)-1].to.steps[0].name != r.to.steps[0].name) {
			return nil, doc.errf(fat+".sibling", "the rule before does not write %s", r.to.steps[0].name)
		}
		sm.fields = append(sm.fields, r)
	}
	return sm, nil
}

func compileKeys(doc *yamlDoc, at string, keys []string) ([]idKey, error) {
	var out []idKey
	for i, k := range keys {
		kat := fmt.Sprintf("%s[%d]", at, i)
		switch {
		case strings.HasPrefix(k, "ref:"):
			out = append(out, idKey{kind: keyRef, ref: strings.TrimPrefix(k, "ref:")})
		case strings.HasPrefix(k, "hd:"), strings.HasPrefix(k, "xon:"):
			// The same id as the Organization the converter makes, so
			// the two are one resource (see Map): the only key there is.
			name, path, _ := strings.Cut(k, ":")
			p, err := parsePath(path)
			if err != nil {
				return nil, doc.errf(kat, "%s", err)
			}
			if len(keys) != 1 {
				return nil, doc.errf(kat, "%s: is the only identity key when used", name)
			}
			kind := keyHD
			if name == "xon" {
				kind = keyXON
			}
			out = append(out, idKey{kind: kind, paths: []segPath{p}})
		case strings.HasPrefix(k, "cx:"):
			p, err := parsePath(strings.TrimPrefix(k, "cx:"))
			if err != nil {
				return nil, doc.errf(kat, "%s", err)
			}
			out = append(out, idKey{kind: keyCX, paths: []segPath{p}})
		default:
			key := idKey{kind: keyField}
			for _, alt := range strings.Split(k, "|") {
				p, err := parsePath(alt)
				if err != nil {
					return nil, doc.errf(kat, "%s", err)
				}
				key.paths = append(key.paths, p)
			}
			out = append(out, key)
		}
	}
	return out, nil
}

func (e *Engine) compileField(doc *yamlDoc, at, resource string, fs *fieldSpec) (*fieldRule, error) {
	r := &fieldRule{required: fs.Required, join: fs.Join, fallback: fs.Fallback, skip: fs.Skip, set: fs.Set, table: fs.Table, ext: fs.Ext, merge: fs.Merge, adjacent: fs.Adjacent, sibling: fs.Sibling}
	t, err := resolveTarget(resource, fs.To)
	if err != nil {
		return nil, doc.errf(at+".to", "%s", err)
	}
	r.to = t
	if fs.Sibling && (len(t.steps) < 2 || !t.steps[0].array || t.steps[0].choice || fs.Fallback) {
		return nil, doc.errf(at+".sibling", "sibling needs a path below a top-level array (class.name) and no fallback")
	}
	if len(fs.Ext) > 0 {
		n := 0
		for _, st := range t.steps[:len(t.steps)-1] {
			if st.name == "extension" {
				n++
			}
		}
		if n != len(fs.Ext) {
			return nil, doc.errf(at+".ext", "%d extension urls for %d extension steps in %s", len(fs.Ext), n, fs.To)
		}
		for _, u := range fs.Ext {
			if !strings.Contains(u, ":") && strings.Contains(u, "/") {
				return nil, doc.errf(at+".ext", "extension url %q is neither absolute nor a simple name", u)
			}
		}
	}
	if err := checkSet(resource, t, fs.Set); err != nil {
		return nil, doc.errf(at+".set", "%s", err)
	}
	if fs.Skip && !fs.Required {
		return nil, doc.errf(at+".skip", "skip needs required: true")
	}
	if fs.Const != nil {
		if fs.From != "" || fs.Type != "" {
			return nil, doc.errf(at+".const", "const excludes from and type")
		}
		if len(t.last().types) > 1 {
			return nil, doc.errf(at+".to", "const cannot target a choice element; name the type (e.g. valueString)")
		}
		r.constVal = fs.Const
		return r, nil
	}
	p, err := parsePath(fs.From)
	if err != nil {
		return nil, doc.errf(at+".from", "%s", err)
	}
	r.from, r.hasFrom = p, true
	if fs.Unit != "" {
		if fs.Type != "NM" && fs.Type != "MINUTES" {
			return nil, doc.errf(at+".unit", "unit needs type NM or MINUTES")
		}
		if r.unit, err = parsePath(fs.Unit); err != nil {
			return nil, doc.errf(at+".unit", "%s", err)
		}
	}
	if fs.Value != nil {
		if fs.Type != "" || fs.Map != "" || fs.Table != "" {
			return nil, doc.errf(at+".value", "value excludes type, map and table")
		}
		if len(t.last().types) > 1 {
			return nil, doc.errf(at+".to", "value cannot target a choice element; name the type (e.g. valueString)")
		}
		v := fs.Value
		r.conv = &converter{fn: func(c *cv, _ *hl7v2.Rep) (string, any) { return c.types[0], cloneConst(v) }}
		return r, nil
	}
	c, ok := converters[fs.Type]
	if !ok {
		return nil, doc.errf(at+".type", "unknown datatype converter %q", fs.Type)
	}
	r.conv = c
	for _, need := range c.codemaps {
		if _, ok := e.codemaps[need]; !ok {
			return nil, doc.errf(at+".type", "converter %s needs code map %q, which no codemaps file declares", fs.Type, need)
		}
	}
	l := t.last()
	okType := false
	for _, ty := range l.types {
		if c.targets[ty] {
			okType = true
		}
	}
	if !okType {
		return nil, doc.errf(at+".type", "converter %s cannot produce %s (%s.%s)", fs.Type, strings.Join(l.types, "|"), resource, fs.To)
	}
	if fs.Map != "" {
		cm, ok := e.codemaps[fs.Map]
		if !ok {
			return nil, doc.errf(at+".map", "unknown code map %q", fs.Map)
		}
		r.codemap = cm
	}
	if fs.Table != "" && !knownTable(fs.Table) {
		return nil, doc.errf(at+".table", "unknown HL7 table %q", fs.Table)
	}
	return r, nil
}

// checkSet verifies that the constant siblings name elements of the
// object holding the target's last step.
func checkSet(resource string, t *target, set map[string]any) error {
	if len(set) == 0 {
		return nil
	}
	parent := resource
	if len(t.steps) > 1 {
		parent = resource + "." + t.path[:strings.LastIndexByte(t.path, '.')]
	}
	// On an array of a complex type the siblings go into the item made
	// (an identifier's type beside its value): see put.
	if l := t.last(); l.array && !l.choice && !spec.IsPrimitive(l.types[0]) {
		parent = resource + "." + t.path
	}
	for k := range set {
		if _, err := resolveTarget(resource, strings.TrimPrefix(parent+"."+k, resource+".")); err != nil {
			return fmt.Errorf("set: %w", err)
		}
	}
	return nil
}

func compileProfile(doc *yamlDoc, sf *sourceFile, concepts map[string][]conceptSpec) (*profile, error) {
	if sf.Name == "" {
		return nil, doc.errf("$.name", "source profile without name")
	}
	p := &profile{name: sf.Name, match: sf.Match, idSystems: sf.IdentifierSystems, sysTemplate: sf.SystemTemplate,
		concepts: map[string]conceptRule{}, zsegs: map[string]*zsegSpec{}}
	if !sf.Default && len(sf.Match) == 0 {
		return nil, doc.errf("$.match", "source profile %q matches nothing and is not the default", sf.Name)
	}
	tz := sf.Timezone
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, doc.errf("$.timezone", "unknown time zone %q", tz)
	}
	p.loc = loc
	for i, name := range sf.Conceptmaps {
		rules, ok := concepts[name]
		if !ok {
			return nil, doc.errf(fmt.Sprintf("$.conceptmaps[%d]", i), "unknown concept map %q", name)
		}
		for _, r := range rules {
			p.concepts[r.Source.System+"\x1f"+r.Source.Code] = conceptRule{target: r.Target}
		}
	}
	for i := range sf.ZSegments {
		z := &sf.ZSegments[i]
		zat := fmt.Sprintf("$.zsegments[%d]", i)
		if !strings.HasPrefix(z.Segment, "Z") || !segNameRe.MatchString(z.Segment) {
			return nil, doc.errf(zat+".segment", "%q is not a Z-segment name", z.Segment)
		}
		for j, f := range z.Fields {
			if f.Field < 1 || !strings.Contains(f.URL, ":") {
				return nil, doc.errf(fmt.Sprintf("%s.fields[%d]", zat, j), "Z-field needs field >= 1 and an absolute url")
			}
			if s, ok := spec.StructOf(f.Resource); !ok || s.Kind != spec.KindResource {
				return nil, doc.errf(fmt.Sprintf("%s.fields[%d].resource", zat, j), "unknown resource type %q", f.Resource)
			}
		}
		p.zsegs[z.Segment] = z
	}
	return p, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// yamlDoc keeps a decoded file's AST so that semantic errors found after
// decoding can still name the line.
type yamlDoc struct {
	name string
	file *ast.File
}

func (d *yamlDoc) errf(path, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	line := 0
	if d.file != nil {
		if p, err := yaml.PathString(path); err == nil {
			if n, err := p.FilterFile(d.file); err == nil && n != nil && n.GetToken() != nil {
				line = n.GetToken().Position.Line
			}
		}
	}
	key := strings.TrimPrefix(path, "$.")
	if line > 0 {
		return fmt.Errorf("mapping: %s:%d: %s: %s", d.name, line, key, msg)
	}
	return fmt.Errorf("mapping: %s: %s: %s", d.name, key, msg)
}

func decode(name string, v any) (*yamlDoc, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("mapping: %w", err)
	}
	if err := yaml.UnmarshalWithOptions(data, v, yaml.Strict()); err != nil {
		return nil, fmt.Errorf("mapping: %s: %s", name, yaml.FormatError(err, false, false))
	}
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, fmt.Errorf("mapping: %s: %s", name, yaml.FormatError(err, false, false))
	}
	return &yamlDoc{name: name, file: f}, nil
}

func yamlFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("mapping: %s: missing folder", dir)
		}
		return nil, fmt.Errorf("mapping: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}
