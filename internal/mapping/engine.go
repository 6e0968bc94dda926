package mapping

import (
	"encoding/json"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/hl7v2"
)

// Engine is a loaded, validated mapping set. It is immutable and safe for
// concurrent use.
type Engine struct {
	version        string
	messages       map[string]*messageMap // "ADT^A01" or structure "ADT_A01"
	codes          map[string]bool        // message codes with at least one map
	profiles       []*profile
	defaultProfile *profile
	systems        map[string]string
	codemaps       map[string]*codeMap
}

// Version returns the mapping set's version string.
func (e *Engine) Version() string { return e.version }

// Output is what one message maps to.
type Output struct {
	// Resources have Type and ID set; references are "Type/id" to
	// resources in the same Output (or stable ids of resources elsewhere).
	Resources []*fhir.Resource
	Profile   string           // source profile name used
	Version   string           // mapping version
	Warnings  []hl7v2.AckError // non-fatal problems, severity W
}

// MapError says why a message was not mapped. Reject means the message
// type or trigger has no mapping (answer AR); otherwise the data was bad
// (answer AE). Errs locate each problem by segment, field, repetition and
// component; SegmentIndex is the 1-based occurrence of that segment name
// in the message. No text ever quotes message content.
type MapError struct {
	Reject bool
	Errs   []hl7v2.AckError
}

func (e *MapError) Error() string {
	var b strings.Builder
	if e.Reject {
		b.WriteString("mapping: message rejected")
	} else {
		b.WriteString("mapping: message has errors")
	}
	for i, x := range e.Errs {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(locate(x))
		b.WriteString(" ")
		b.WriteString(x.Text)
	}
	return b.String()
}

func locate(x hl7v2.AckError) string {
	s := x.Segment
	if x.SegmentIndex > 1 {
		s += "[" + strconv.Itoa(x.SegmentIndex) + "]"
	}
	if x.Field > 0 {
		s += "-" + strconv.Itoa(x.Field)
		if x.Rep > 1 {
			s += "(" + strconv.Itoa(x.Rep) + ")"
		}
		if x.Comp > 0 {
			s += "." + strconv.Itoa(x.Comp)
		}
	}
	return s
}

func jsonNumber(s string) json.Number { return json.Number(s) }

// mctx is the state of one Map call.
type mctx struct {
	e       *Engine
	m       *hl7v2.Message
	prof    *profile
	tenant  string
	sender  string
	insts   [][]*instance // by producer index
	sides   []*instance
	sideIdx map[string]*instance
	errs    []hl7v2.AckError
	warns   []hl7v2.AckError
	occ     []int      // occurrence (1-based) of each segment by message index
	grp     []int      // innermost segment group of each segment by message index (-1: none); nil without groups
	groups  []segGroup // the message's segment groups, by number
	// outside lists, by segment name, the message indexes of segments in
	// no group (ascending); built on first use.
	outside map[string][]int
}

// segGroup is one segment group of a message: its leading segment opens
// it at index start; it ends before end, where a leader of its level or
// an outer one opens the next. parent is the group it nests in, -1: none.
type segGroup struct {
	parent, start, end int
	level              int
	names              []string // its leaders' names (joint leaders)
}

type instance struct {
	p       *producer
	typ     string
	seg     *hl7v2.Segment
	id      string
	content map[string]any
}

func (mc *mctx) profileFor(app, facility string) *profile {
	for _, p := range mc.e.profiles {
		for _, m := range p.match {
			if (m.Application == "" || m.Application == app) && (m.Facility == "" || m.Facility == facility) && (m.Application != "" || m.Facility != "") {
				return p
			}
		}
	}
	return mc.e.defaultProfile
}

// Map converts one message. tenant and the sender (MSH-3/MSH-4) scope
// the stable ids. It returns *MapError for a message it cannot map.
func (e *Engine) Map(m *hl7v2.Message, tenant string) (*Output, error) {
	if m == nil || m.Segment("MSH") == nil {
		return nil, &MapError{Reject: true, Errs: []hl7v2.AckError{{Segment: "MSH", SegmentIndex: 1, Code: "100", Severity: "E", Text: "no MSH segment"}}}
	}
	code, event, structure := m.MessageType()
	mm := e.messages[code+"^"+event]
	if mm == nil && structure != "" {
		mm = e.messages[structure]
	}
	if mm == nil {
		c, comp, text := "201", 2, "unsupported event code"
		if !e.codes[code] {
			c, comp, text = "200", 1, "unsupported message type"
		}
		return nil, &MapError{Reject: true, Errs: []hl7v2.AckError{{Segment: "MSH", SegmentIndex: 1, Field: 9, Rep: 1, Comp: comp, Code: c, Severity: "E", Text: text}}}
	}
	app, fac := m.Sender()
	mc := &mctx{e: e, m: m, tenant: tenant, sender: app + "|" + fac, sideIdx: map[string]*instance{}}
	mc.prof = mc.profileFor(app, fac)
	mc.occ = make([]int, len(m.Segments))
	seen := map[string]int{}
	for i, s := range m.Segments {
		seen[s.Name]++
		mc.occ[i] = seen[s.Name]
	}
	mc.grp, mc.groups = groupsOf(m.Segments, mm.groups)

	// Phase 1: one instance per segment of each producer, fields filled.
	mc.insts = make([][]*instance, len(mm.producers))
	for i, p := range mm.producers {
		segs := m.All(p.segment)
		if len(segs) == 0 && p.required {
			mc.errs = append(mc.errs, hl7v2.AckError{Segment: p.segment, Code: "100", Severity: "E", Text: "required segment missing"})
		}
		for _, s := range segs {
			in := &instance{p: p, typ: p.smap.resource, seg: s, content: map[string]any{}}
			if mc.fill(in) {
				mc.insts[i] = append(mc.insts[i], in)
			}
		}
	}
	if len(mc.errs) > 0 {
		return nil, &MapError{Errs: mc.errs}
	}
	// Phase 2: ids, in producer order (identity refs point backwards).
	used := map[string]bool{}
	for _, list := range mc.insts {
		for _, in := range list {
			in.id = mc.identity(in)
			if used[in.typ+"/"+in.id] && !in.p.smap.converterKeyed() { // two segments with the same business key
				in.id = mc.messageID(in)
			}
			used[in.typ+"/"+in.id] = true
		}
	}
	// Phase 3: references.
	for _, list := range mc.insts {
		for _, in := range list {
			for _, rr := range in.p.refs {
				for _, t := range mc.resolve(in, rr.ref, rr.all) {
					put(in.content, rr.to, "Reference", map[string]any{"reference": t.typ + "/" + t.id}, rr.set, nil, in.p.smap.item, false)
				}
			}
		}
	}
	// Joined content (into) moves with its references (a DG1's
	// Encounter.diagnosis names the DG1's Condition).
	mc.join()
	mc.zsegments()

	out := &Output{Profile: mc.prof.name, Version: e.version, Warnings: mc.warns}
	all := make([]*instance, 0, 8)
	for _, list := range mc.insts {
		all = append(all, list...)
	}
	// A resource a producer makes with the id of one a converter made
	// (an Organization keyed hd: or xon:) is one resource: the
	// producer's content takes what the converter's adds.
	byKey := make(map[string]*instance, len(all))
	for _, in := range all {
		if first, ok := byKey[in.typ+"/"+in.id]; ok {
			mergeContent(first.content, in.content) // converter-keyed: one resource
			continue
		}
		byKey[in.typ+"/"+in.id] = in
	}
	for _, sd := range mc.sides {
		if in, ok := byKey[sd.typ+"/"+sd.id]; ok {
			mergeContent(in.content, sd.content)
		}
	}
	all = append(all, mc.sides...)
	done := make(map[string]bool, len(all))
	for _, in := range all {
		key := in.typ + "/" + in.id
		if done[key] {
			continue
		}
		done[key] = true
		r, err := render(in)
		if err != nil {
			return nil, &MapError{Errs: []hl7v2.AckError{{Segment: segName(in), SegmentIndex: mc.occOf(in.seg), Code: "207", Severity: "E", Text: "mapped " + in.typ + " is not valid JSON"}}}
		}
		out.Resources = append(out.Resources, r)
	}
	return out, nil
}

// converterKeyed reports whether the map's identity is the id a
// converter gives (hd:, xon:): every segment naming the same one makes
// the same resource.
func (sm *segmentMap) converterKeyed() bool {
	return len(sm.identity) == 1 && (sm.identity[0].kind == keyHD || sm.identity[0].kind == keyXON)
}

// mergeContent adds src's members to dst: a member dst lacks is taken,
// an array gets the items it does not hold yet.
func mergeContent(dst, src map[string]any) {
	for k, v := range src {
		old, ok := dst[k]
		if !ok {
			dst[k] = v
			continue
		}
		oa, ok1 := old.([]any)
		na, ok2 := v.([]any)
		if !ok1 || !ok2 {
			continue
		}
	items:
		for _, x := range na {
			for _, y := range oa {
				if reflect.DeepEqual(x, y) {
					continue items
				}
			}
			oa = append(oa, x)
		}
		dst[k] = oa
	}
}

func segName(in *instance) string {
	if in.seg == nil {
		return ""
	}
	return in.seg.Name
}

func (mc *mctx) occOf(s *hl7v2.Segment) int {
	if s == nil || s.Index < 0 || s.Index >= len(mc.occ) {
		return 0
	}
	return mc.occ[s.Index]
}

// render makes the instance's resource with fhir.Build: the JSON is
// written (resourceType and id first, then the members sorted) and the
// content becomes the Resource's decoded view in the same walk, with no
// JSON round trip. The instance's content is handed over: render is its
// last use.
func render(in *instance) (*fhir.Resource, error) {
	return fhir.Build(in.typ, in.id, in.content)
}

// side registers a resource made by a converter (Practitioner,
// Organization, Location) and returns a reference to it.
func (mc *mctx) side(typ, id string, content map[string]any) map[string]any {
	key := typ + "/" + id
	if _, ok := mc.sideIdx[key]; !ok {
		in := &instance{typ: typ, id: id, content: content}
		mc.sideIdx[key] = in
		mc.sides = append(mc.sides, in)
	}
	return map[string]any{"reference": key}
}

func (mc *mctx) warn(c *cv, code, text string) {
	mc.warns = append(mc.warns, mc.ackErr(c, code, "W", text))
}

func (mc *mctx) ackErr(c *cv, code, sev, text string) hl7v2.AckError {
	x := hl7v2.AckError{Code: code, Severity: sev, Text: text}
	if c != nil && c.seg != nil {
		x.Segment, x.SegmentIndex = c.seg.Name, mc.occOf(c.seg)
		if c.rule != nil && c.rule.hasFrom {
			x.Field, x.Rep, x.Comp = c.rule.from.field, c.rule.from.rep, c.rule.from.comp
		}
	}
	return x
}

// near returns the segment named name that a field of from refers to:
// from itself, else the nearest one before it, else the first one after
// it within its group (before the next segment named like from), so PID
// reaches PD1 and RXA reaches RXR. In a message map with groups, a
// segment inside a group looks in its own group first (nearest before,
// else first after), then in each enclosing group, then among the
// segments before the first group (the patient's): an order's OBR reads
// its ORC's TQ1 and never the previous order's; RXE reads the TQ1 and
// RXR after it, RXO those after it or its ORC's.
func (mc *mctx) near(from *hl7v2.Segment, name string) *hl7v2.Segment {
	if from.Name == name {
		return from
	}
	segs := mc.m.Segments
	g := mc.groupOf(from.Index)
	if g < 0 {
		for i := from.Index - 1; i >= 0; i-- {
			if s := segs[i]; s.Name == name {
				return s
			}
		}
		for i := from.Index + 1; i < len(segs); i++ {
			s := segs[i]
			if s.Name == from.Name {
				break
			}
			if s.Name == name {
				return s
			}
		}
		return nil
	}
	for ; g >= 0; g = mc.groups[g].parent {
		gr := mc.groups[g]
		for i := from.Index - 1; i >= gr.start; i-- {
			if s := segs[i]; s.Name == name && mc.grp[i] == g {
				return s
			}
		}
		for i := from.Index + 1; i < gr.end; i++ {
			if s := segs[i]; s.Name == name && mc.grp[i] == g {
				return s
			}
		}
	}
	// The nearest segment of that name in no group, before from: found in
	// an index rather than by walking back over every group each time.
	if mc.outside == nil {
		mc.outside = map[string][]int{}
		for i, s := range segs {
			if mc.grp[i] < 0 {
				mc.outside[s.Name] = append(mc.outside[s.Name], i)
			}
		}
	}
	idx := mc.outside[name]
	if k := sort.SearchInts(idx, from.Index); k > 0 {
		return segs[idx[k-1]]
	}
	return nil
}

// groupOf is the innermost group of the segment at index i, -1 when none.
func (mc *mctx) groupOf(i int) int {
	if mc.grp == nil || i < 0 || i >= len(mc.grp) {
		return -1
	}
	return mc.grp[i]
}

// groupsOf finds the segment groups of a message. A leader closes the
// open groups of its level and deeper and opens one inside the open group
// of the level above, if any; a joining leader (OBR of ORC+OBR) instead
// joins the open group of its level that its partner opened while that
// has none of its name yet. Segments before the first leader are in no
// group (-1).
func groupsOf(segs []*hl7v2.Segment, leaders map[string]groupLeader) ([]int, []segGroup) {
	if len(leaders) == 0 {
		return nil, nil
	}
	inner := make([]int, len(segs))
	var groups []segGroup
	var open []int // open group numbers, outermost first
	for i, s := range segs {
		if ld, ok := leaders[s.Name]; ok {
			for len(open) > 0 && groups[open[len(open)-1]].level > ld.level {
				groups[open[len(open)-1]].end = i
				open = open[:len(open)-1]
			}
			top := -1
			if len(open) > 0 {
				top = open[len(open)-1]
			}
			if ld.joins != "" && top >= 0 && groups[top].level == ld.level && groups[top].names[0] == ld.joins && !contains(groups[top].names, s.Name) {
				groups[top].names = append(groups[top].names, s.Name)
			} else {
				if top >= 0 && groups[top].level == ld.level {
					groups[top].end = i
					open = open[:len(open)-1]
				}
				parent := -1
				if len(open) > 0 {
					parent = open[len(open)-1]
				}
				groups = append(groups, segGroup{parent: parent, start: i, end: len(segs), level: ld.level, names: []string{s.Name}})
				open = append(open, len(groups)-1)
			}
		}
		inner[i] = -1
		if len(open) > 0 {
			inner[i] = open[len(open)-1]
		}
	}
	return inner, groups
}

// group returns the segments named name after from and before the next
// segment with from's name: the segment group that from opens.
func (mc *mctx) group(from *hl7v2.Segment, name string) []*hl7v2.Segment {
	var out []*hl7v2.Segment
	for i := from.Index + 1; i < len(mc.m.Segments); i++ {
		s := mc.m.Segments[i]
		if s.Name == from.Name {
			break
		}
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// values returns the repetitions the path designates in s, components
// promoted to repetitions.
func values(s *hl7v2.Segment, p segPath) []*hl7v2.Rep {
	if s == nil {
		return nil
	}
	f := s.Field(p.field)
	if f == nil {
		return nil
	}
	var reps []*hl7v2.Rep
	if p.rep > 0 {
		if r := f.Rep(p.rep); r != nil {
			reps = []*hl7v2.Rep{r}
		}
	} else {
		for i := range f.Reps {
			reps = append(reps, &f.Reps[i])
		}
	}
	if p.comp == 0 {
		return reps
	}
	out := make([]*hl7v2.Rep, 0, len(reps))
	for _, r := range reps {
		cr := repOf(r, p.comp)
		if cr != nil && p.sub > 0 {
			if p.sub <= len(cr.Comps) {
				cr = &hl7v2.Rep{Comps: cr.Comps[p.sub-1 : p.sub]}
			} else {
				cr = nil
			}
		}
		if cr != nil {
			out = append(out, cr)
		}
	}
	return out
}

// fill applies the segment map's field rules; false means the instance is
// dropped (a required value with skip was missing).
// join moves the content of every producer with into (NK1 as
// Patient.contact) into the nearest resource of its target producer:
// arrays are appended, a singular element already set is kept. The
// joined instances make no resource of their own.
func (mc *mctx) join() {
	for i, list := range mc.insts {
		if len(list) == 0 || list[0].p.into < 0 {
			continue
		}
		for _, in := range list {
			targets := mc.resolve(in, in.p.into, false)
			if len(targets) == 0 {
				continue
			}
			dst := targets[0].content
			for k, v := range in.content {
				if arr, ok := v.([]any); ok {
					old, _ := dst[k].([]any)
					dst[k] = append(old, arr...)
				} else if _, ok := dst[k]; !ok {
					dst[k] = v
				}
			}
		}
		mc.insts[i] = nil
	}
}

func (mc *mctx) fill(in *instance) bool {
	stored := false // whether the rule before stored a value (for sibling)
	for _, r := range in.p.smap.fields {
		prev := stored
		stored = false
		if r.fallback {
			if _, ok := in.content[r.to.steps[0].name]; ok {
				continue
			}
		}
		item := in.p.smap.item
		if r.sibling {
			// The item the rule before made (class.value's class) takes
			// this member; without that item the member would stand
			// alone, e.g. a costToBeneficiary without its value.
			if !prev {
				continue
			}
			item = r.to.steps[0].name
		}
		if !r.hasFrom {
			stored = put(in.content, r.to, r.to.last().types[0], cloneConst(r.constVal), r.set, r.ext, item, r.merge)
			continue
		}
		var reps []*hl7v2.Rep
		var repSegs []*hl7v2.Segment // with adjacent: each value's own segment
		seg := in.seg
		if r.join {
			segs := mc.group(in.seg, r.from.seg)
			if r.from.seg == in.seg.Name {
				segs = []*hl7v2.Segment{in.seg}
			}
			var lines []string
			for _, s := range segs {
				for _, rp := range values(s, r.from) {
					lines = append(lines, rp.Comp(1))
				}
			}
			if txt := strings.TrimSpace(strings.Join(lines, "\n")); txt != "" {
				reps = []*hl7v2.Rep{{Comps: []hl7v2.Comp{{Subs: []string{txt}}}}}
			}
		} else if r.adjacent {
			// The run of such segments right after this one (an OBR's or
			// an OBX's NTE notes), each repetition a value.
			seg = nil
			for i := in.seg.Index + 1; i < len(mc.m.Segments); i++ {
				s := mc.m.Segments[i]
				if s.Name != r.from.seg {
					break
				}
				if seg == nil {
					seg = s
				}
				for _, rp := range values(s, r.from) {
					reps, repSegs = append(reps, rp), append(repSegs, s)
				}
			}
		} else {
			seg = mc.near(in.seg, r.from.seg)
			reps = values(seg, r.from)
		}
		c := &cv{mc: mc, seg: seg, rule: r, types: r.to.last().types}
		if seg == nil {
			c.seg = in.seg
		}
		if r.unit.seg != "" {
			if u := values(mc.near(in.seg, r.unit.seg), r.unit); len(u) > 0 {
				c.unit = u[0]
			}
		}
		produced := 0
		single := !r.to.repeats()
		for i, rp := range reps {
			if empty(rp) {
				continue
			}
			if repSegs != nil {
				c.seg = repSegs[i] // a converter may read the note's other fields (NTE)
			}
			c.problemCode = ""
			typ, v := r.conv.fn(c, rp)
			if c.problemCode != "" {
				sev := "W"
				if r.required {
					sev = "E"
				}
				x := mc.ackErr(c, c.problemCode, sev, c.problemText)
				if sev == "E" {
					mc.errs = append(mc.errs, x)
				} else {
					mc.warns = append(mc.warns, x)
				}
			}
			if v == nil {
				continue
			}
			if put(in.content, r.to, typ, v, r.set, r.ext, item, r.merge) {
				produced++
			}
			if single && produced > 0 {
				break
			}
		}
		stored = produced > 0
		if produced == 0 && r.required {
			if r.skip {
				// The resource exists only when the field does (the
				// mother by PID-21, the account by PID-18): its absence is
				// not the sender's mistake, and an ACK warning on every
				// message without it would bury the warnings that matter.
				return false
			}
			if !hasErrFor(mc.errs, c) {
				mc.errs = append(mc.errs, mc.ackErr(c, "101", "E", "required field missing"))
			}
		}
	}
	return true
}

func hasErrFor(errs []hl7v2.AckError, c *cv) bool {
	if len(errs) == 0 || c.seg == nil {
		return false
	}
	l := errs[len(errs)-1]
	return l.Segment == c.seg.Name && l.Field == c.rule.from.field
}

// repeats reports whether the target takes more than one value (it or an
// element on its path is an array).
func (t *target) repeats() bool {
	for _, s := range t.steps {
		if s.array {
			return true
		}
	}
	return false
}

// put stores v (of FHIR type typ) at t in obj. Array steps on the way get
// a new item per value; a singular element already set is left alone (so
// a later rule to the same element is a fallback). set adds constant
// siblings beside the value; ext names the url of each extension item
// made on the way. item names the top-level array whose last item is
// reused rather than a new one made (one item per segment). It reports
// whether v was stored. merge reuses an extension item already holding
// the url ext names (one complex extension, e.g. patient-animal, filled
// by several rules).
func put(obj map[string]any, t *target, typ string, v any, set map[string]any, ext []string, item string, merge bool) bool {
	cur := obj
	n := len(t.steps)
	for i, st := range t.steps[:n-1] {
		key := st.name
		if st.choice {
			key += upperFirst(st.types[0])
		}
		if st.array && i == 0 && key == item {
			if arr, _ := cur[key].([]any); len(arr) > 0 {
				if last, ok := arr[len(arr)-1].(map[string]any); ok {
					cur = last
					continue
				}
			}
		}
		if st.array {
			arr, _ := cur[key].([]any)
			if merge && st.name == "extension" && len(ext) > 1 {
				if old := extItem(arr, ext[0]); old != nil {
					cur, ext = old, ext[1:]
					continue
				}
			}
			item := map[string]any{}
			if st.name == "extension" && len(ext) > 0 {
				item["url"], ext = ext[0], ext[1:]
			}
			cur[key] = append(arr, item)
			cur = item
			continue
		}
		child, ok := cur[key].(map[string]any)
		if !ok {
			child = map[string]any{}
			cur[key] = child
		}
		cur = child
	}
	l := t.steps[n-1]
	name := l.name
	if l.choice {
		for _, ty := range l.all {
			if _, ok := cur[l.name+upperFirst(ty)]; ok {
				return false
			}
		}
		name += upperFirst(typ)
	}
	if l.array {
		arr, _ := cur[name].([]any)
		// The segment's item of a top-level array (payor: its name, then
		// the reference to its Organization) takes the members it lacks.
		if n == 1 && name == item && len(arr) > 0 {
			last, ok1 := arr[len(arr)-1].(map[string]any)
			m, ok2 := v.(map[string]any)
			if ok1 && ok2 && disjoint(last, m) {
				for k, x := range m {
					last[k] = x
				}
				return true
			}
		}
		m, isMap := v.(map[string]any)
		if isMap {
			// set names members of the item (checked by Load).
			for k, sv := range set {
				if _, has := m[k]; !has {
					m[k] = cloneConst(sv)
				}
			}
		}
		// The same value twice (ORC-2 and OBR-2 naming one order) is one.
		for _, x := range arr {
			if sameValue(x, v) {
				return false
			}
		}
		cur[name] = append(arr, v)
		if isMap {
			return true
		}
	} else {
		if _, ok := cur[name]; ok {
			return false
		}
		cur[name] = v
	}
	for k, sv := range set {
		if _, ok := cur[k]; !ok {
			cur[k] = cloneConst(sv)
		}
	}
	return true
}

// sameValue is reflect.DeepEqual with a quick no for the usual case: two
// items that differ in a reference, value, code or system string (each
// OBX's reference in DiagnosticReport.result), so appending k items costs
// k² string comparisons, not k² reflective walks.
func sameValue(a, b any) bool {
	ma, ok1 := a.(map[string]any)
	mb, ok2 := b.(map[string]any)
	if ok1 && ok2 {
		if len(ma) != len(mb) {
			return false
		}
		for _, k := range [...]string{"reference", "value", "code", "system"} {
			if x, ok := ma[k].(string); ok {
				if y, _ := mb[k].(string); x != y {
					return false
				}
			}
		}
	}
	return reflect.DeepEqual(a, b)
}

// cloneConst copies a constant of the mappings (const:, value:, set:)
// before it joins a resource: the constants are shared by every message
// mapped at once, and later rules write into what they put (a set
// function's coding, then its text), so the resource must own its copy.
func cloneConst(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = cloneConst(e)
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = cloneConst(e)
		}
		return a
	}
	return v
}

func disjoint(a, b map[string]any) bool {
	for k := range b {
		if _, ok := a[k]; ok {
			return false
		}
	}
	return true
}

// extItem returns the extension item of arr with the given url.
func extItem(arr []any, url string) map[string]any {
	for _, x := range arr {
		if m, ok := x.(map[string]any); ok && m["url"] == url {
			return m
		}
	}
	return nil
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// identity computes an instance's stable id from its segment map's
// identity keys (else fallback keys, else the message control id and the
// segment's position).
func (mc *mctx) identity(in *instance) string {
	if k := in.p.smap.identity; in.p.smap.converterKeyed() {
		// An Organization a converter also makes from this field gets
		// the converter's id, so both are one resource.
		if reps := values(mc.near(in.seg, k[0].paths[0].seg), k[0].paths[0]); len(reps) > 0 {
			r := reps[0]
			if k[0].kind == keyHD {
				if ns, uid := comp(r, 1), comp(r, 2); ns != "" || uid != "" {
					return mc.hdOrgID(ns, uid, comp(r, 3))
				}
			} else if id := mc.xonOrgID(r); id != "" {
				return id
			}
		}
	}
	if parts, ok := mc.keyParts(in, in.p.smap.identity); ok {
		return StableID(parts...)
	}
	if parts, ok := mc.keyParts(in, in.p.smap.fallback); ok {
		return StableID(parts...)
	}
	return mc.messageID(in)
}

func (mc *mctx) messageID(in *instance) string {
	return StableID(mc.tenant, in.typ, "message", mc.sender, mc.m.ControlID(), strconv.Itoa(in.seg.Index), in.p.id)
}

func (mc *mctx) keyParts(in *instance, keys []idKey) ([]string, bool) {
	if len(keys) == 0 {
		return nil, false
	}
	parts := []string{mc.tenant, in.typ}
	scoped, any := false, false
	for _, k := range keys {
		switch k.kind {
		case keyRef:
			idx := -1
			for i, p := range mc.insts {
				if len(p) > 0 && p[0].p.id == k.ref {
					idx = i
				}
			}
			v := ""
			if idx >= 0 {
				if t := mc.resolve(in, idx, false); len(t) > 0 {
					v = t[0].typ + "/" + t[0].id
				}
			}
			parts = append(parts, v)
		case keyCX:
			seg := mc.near(in.seg, k.paths[0].seg)
			sys, val := mc.cxKey(seg, k.paths[0])
			if val != "" {
				any = true
			}
			if sys == "" {
				scoped = true
			}
			parts = append(parts, sys, val)
		default:
			v := ""
			for _, p := range k.paths {
				reps := values(mc.near(in.seg, p.seg), p)
				if len(reps) > 0 {
					if v = strings.TrimSpace(reps[0].Comp(1)); v != "" {
						break
					}
				}
			}
			if v != "" {
				any = true
			}
			scoped = true
			parts = append(parts, v)
		}
	}
	if !any {
		return nil, false
	}
	if scoped {
		parts = append(parts[:2:2], append([]string{mc.sender}, parts[2:]...)...)
	}
	return parts, true
}

// cxKey picks the identifier a CX field identifies by: the first
// repetition with type MR, else the first.
func (mc *mctx) cxKey(seg *hl7v2.Segment, p segPath) (string, string) {
	reps := values(seg, p)
	var pick *hl7v2.Rep
	for _, r := range reps {
		if comp(r, 1) == "" {
			continue
		}
		if pick == nil {
			pick = r
		}
		if comp(r, 5) == "MR" {
			pick = r
			break
		}
	}
	if pick == nil {
		return "", ""
	}
	return mc.identifierSystem(sub(pick, 4, 1), sub(pick, 4, 2), sub(pick, 4, 3)), comp(pick, 1)
}

// resolve finds the instances of producer idx that in refers to: with
// all, those in in's segment group; from a segment of in's own name, the
// one made from in's segment; otherwise the nearest one at or before
// in's segment, else the first.
func (mc *mctx) resolve(in *instance, idx int, all bool) []*instance {
	list := mc.insts[idx]
	if all {
		end := len(mc.m.Segments)
		for i := in.seg.Index + 1; i < len(mc.m.Segments); i++ {
			if mc.m.Segments[i].Name == in.seg.Name {
				end = i
				break
			}
		}
		// In message order (phase 1): the ones from this segment up to the
		// next one of its name are a contiguous run.
		from := sort.Search(len(list), func(i int) bool { return list[i].seg.Index >= in.seg.Index })
		var out []*instance
		for _, t := range list[from:] {
			if t.seg.Index >= end {
				break
			}
			if t != in {
				out = append(out, t)
			}
		}
		return out
	}
	// A producer's instances are in message order, one per segment (phase
	// 1), so the ones at or before this segment are found by bisection:
	// per-OBX producers resolving each other stay linear per message.
	at := sort.Search(len(list), func(i int) bool { return list[i].seg.Index > in.seg.Index })
	if len(list) > 0 && list[0].p.segment == in.seg.Name {
		// Made from a segment of this one's name: only the one made from
		// this very segment is this one's (an OBX's observer, an IN1's
		// insurer), never the previous segment's.
		if at > 0 && list[at-1] != in && list[at-1].seg == in.seg {
			return []*instance{list[at-1]}
		}
		return nil
	}
	var best *instance
	for i := at - 1; i >= 0; i-- {
		if list[i] != in {
			best = list[i]
			break
		}
	}
	if best == nil {
		for _, t := range list {
			if t != in {
				return []*instance{t}
			}
		}
		return nil
	}
	return []*instance{best}
}

// zsegments applies the source profile's Z-segment rules: extensions on
// the first resource of the named type.
func (mc *mctx) zsegments() {
	if len(mc.prof.zsegs) == 0 {
		return
	}
	for _, s := range mc.m.Segments {
		z, ok := mc.prof.zsegs[s.Name]
		if !ok || z.Ignore {
			continue
		}
		for _, f := range z.Fields {
			v := strings.TrimSpace(s.Get(strconv.Itoa(f.Field)))
			if v == "" {
				continue
			}
			var target *instance
			for _, list := range mc.insts {
				if len(list) > 0 && list[0].typ == f.Resource {
					target = list[0]
					break
				}
			}
			if target == nil {
				continue
			}
			ext, _ := target.content["extension"].([]any)
			target.content["extension"] = append(ext, map[string]any{"url": f.URL, "valueString": v})
		}
	}
}

// Types lists the message types and structures the engine maps, sorted.
func (e *Engine) Types() []string {
	out := make([]string, 0, len(e.messages))
	for k := range e.messages {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
