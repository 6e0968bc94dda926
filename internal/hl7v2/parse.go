package hl7v2

import (
	"bytes"
	"fmt"
)

// Limits that bound the work and memory one message can cost. Input beyond
// them is rejected with a *ParseError rather than parsed slowly. The nesting
// depth is fixed by the encoding (field, repetition, component,
// subcomponent), so it needs no limit of its own.
const (
	MaxSegments      = 10000   // segments per message
	MaxFields        = 10000   // fields per segment
	MaxRepetitions   = 10000   // repetitions per field
	MaxComponents    = 10000   // components per repetition
	MaxSubcomponents = 10000   // subcomponents per component
	MaxValues        = 1 << 20 // delimiters per message, which bounds memory
)

var bom = []byte{0xEF, 0xBB, 0xBF}

// line is one non-blank segment line: where it starts in the caller's input
// and where it lies in the normalised buffer.
type line struct{ orig, start, end int }

// Parse parses one ER7 message. Segment terminators may be CR, LF or CRLF,
// mixed; a leading byte-order mark and blank lines are ignored. The error, if
// any, is a *ParseError. Input holding a second MSH segment is rejected: use
// ParseBatch for batches and concatenated messages.
func Parse(data []byte) (*Message, error) {
	m, err := parseMessage(data, 0)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// splitLines returns the non-blank lines of data, at most limit+1 of them.
// It is linear: the next CR and LF positions are each searched once per
// occurrence.
func splitLines(data []byte, base, limit int) []line {
	var lines []line
	nextCR, nextLF := -2, -2
	for i := 0; i < len(data) && len(lines) <= limit; {
		if nextCR != -1 && nextCR < i {
			nextCR = indexFrom(data, '\r', i)
		}
		if nextLF != -1 && nextLF < i {
			nextLF = indexFrom(data, '\n', i)
		}
		end := len(data)
		if nextCR >= 0 {
			end = nextCR
		}
		if nextLF >= 0 && nextLF < end {
			end = nextLF
		}
		if !blank(data[i:end]) {
			lines = append(lines, line{orig: base + i, start: i, end: end})
		}
		i = end + 1
		if end < len(data) && data[end] == '\r' && end+1 < len(data) && data[end+1] == '\n' {
			i++
		}
	}
	return lines
}

func indexFrom(data []byte, c byte, from int) int {
	j := bytes.IndexByte(data[from:], c)
	if j < 0 {
		return -1
	}
	return from + j
}

func blank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\v' && c != '\f' {
			return false
		}
	}
	return true
}

// parseMessage parses data, which starts at offset base of the caller's
// input (error offsets are reported in the caller's terms).
func parseMessage(data []byte, base int) (*Message, error) {
	skip := 0
	if bytes.HasPrefix(data, bom) {
		skip = len(bom)
	}
	lines := splitLines(data[skip:], base+skip, MaxSegments)
	if len(lines) == 0 {
		return nil, &ParseError{Offset: base, Reason: "empty message"}
	}
	if len(lines) > MaxSegments {
		l := lines[MaxSegments]
		return nil, &ParseError{SegmentIndex: MaxSegments, Offset: l.orig, Reason: fmt.Sprintf("message has more than %d segments", MaxSegments)}
	}
	// Normalise into one buffer: every segment followed by \r.
	size := 0
	for _, l := range lines {
		size += l.end - l.start + 1
	}
	raw := make([]byte, 0, size)
	for i, l := range lines {
		start := len(raw)
		raw = append(raw, data[skip+l.start:skip+l.end]...)
		raw = append(raw, '\r')
		lines[i].start, lines[i].end = start, len(raw)-1
	}
	first := raw[lines[0].start:lines[0].end]
	if len(first) < 3 || string(first[:3]) != "MSH" {
		return nil, &ParseError{Offset: lines[0].orig, Reason: "message does not start with an MSH segment"}
	}
	d, err := readDelimiters(first, lines[0].orig)
	if err != nil {
		return nil, err
	}
	nSegs := len(lines)
	nFields := bytes.Count(raw, []byte{d.Field}) + 3*nSegs
	nReps := nFields + bytes.Count(raw, []byte{d.Repetition})
	nComps := nReps + bytes.Count(raw, []byte{d.Component})
	nSubs := nComps + bytes.Count(raw, []byte{d.Subcomponent})
	if nSubs-3*nSegs > MaxValues {
		return nil, &ParseError{Segment: "MSH", Offset: lines[0].orig, Reason: fmt.Sprintf("message has more than %d delimiters", MaxValues)}
	}
	str := string(raw)
	p := &parser{
		d:      d,
		str:    str,
		fields: make([]Field, nFields),
		reps:   make([]Rep, nReps),
		comps:  make([]Comp, nComps),
		subs:   make([]string, nSubs),
	}
	p.class[d.Field] = clsField
	p.class[d.Repetition] = clsRep
	p.class[d.Component] = clsComp
	p.class[d.Subcomponent] = clsSub
	p.class[d.Escape] = clsEsc

	segs := make([]Segment, nSegs)
	m := &Message{Delims: d, Segments: make([]*Segment, nSegs), Raw: raw}
	for i, l := range lines {
		s := &segs[i]
		s.Index, s.Offset = i, l.start
		if err := p.segment(s, l, i); err != nil {
			return nil, err
		}
		m.Segments[i] = s
	}
	return m, nil
}

// readDelimiters validates MSH-1 and MSH-2 in the first segment line.
func readDelimiters(seg []byte, orig int) (Delimiters, error) {
	perr := func(field, off int, reason string) error {
		return &ParseError{Segment: "MSH", Field: field, Offset: orig + off, Reason: reason}
	}
	if len(seg) < 4 {
		return Delimiters{}, perr(1, len(seg), "MSH segment ends before the field separator (MSH-1)")
	}
	fs := seg[3]
	if !legalDelimiter(fs) {
		return Delimiters{}, perr(1, 3, "invalid field separator (MSH-1)")
	}
	enc := seg[4:]
	if i := bytes.IndexByte(enc, fs); i >= 0 {
		enc = enc[:i]
	}
	if len(enc) < 4 {
		return Delimiters{}, perr(2, 4+len(enc), "MSH-2 declares fewer than 4 encoding characters")
	}
	if len(enc) > 5 {
		return Delimiters{}, perr(2, 9, "MSH-2 declares more than 5 encoding characters")
	}
	d := Delimiters{Field: fs, Component: enc[0], Repetition: enc[1], Escape: enc[2], Subcomponent: enc[3]}
	if len(enc) == 5 {
		d.Truncation = enc[4]
	}
	seen := []byte{fs}
	for i, c := range enc {
		if !legalDelimiter(c) {
			return Delimiters{}, perr(2, 4+i, "invalid encoding character in MSH-2")
		}
		if bytes.IndexByte(seen, c) >= 0 {
			return Delimiters{}, perr(2, 4+i, "duplicate encoding character in MSH-2")
		}
		seen = append(seen, c)
	}
	return d, nil
}

const (
	clsNone = iota
	clsField
	clsRep
	clsComp
	clsSub
	clsEsc
)

// parser fills slabs sized from delimiter counts, so a message costs a
// handful of allocations whatever its size; values without escape sequences
// are substrings of one string holding the whole message.
type parser struct {
	d      Delimiters
	str    string
	class  [256]uint8
	fields []Field
	reps   []Rep
	comps  []Comp
	subs   []string
	nf     int
	nr     int
	nc     int
	ns     int
}

func (p *parser) segment(s *Segment, l line, idx int) error {
	str := p.str[l.start:l.end]
	perr := func(field, off int, reason string) error {
		return &ParseError{Segment: s.Name, SegmentIndex: idx, Field: field, Offset: l.orig + off, Reason: reason}
	}
	if len(str) < 3 || !isUpperAlnum(str[0]) || !isUpperAlnum(str[1]) || !isUpperAlnum(str[2]) || (len(str) > 3 && str[3] != p.d.Field) {
		return perr(0, 0, "segment name is not 3 uppercase letters or digits followed by the field separator")
	}
	s.Name = str[:3]
	if idx > 0 && s.Name == "MSH" {
		return perr(0, 0, "second MSH segment: the input holds more than one message (use ParseBatch)")
	}
	f0 := p.nf
	p.literal(str[:3])
	pos, field := 4, 1 // pos: start of field `field` in str
	minFields := 1
	if s.Name == "MSH" {
		p.literal(str[3:4])
		end := len(str)
		for i := 4; i < len(str); i++ {
			if str[i] == p.d.Field {
				end = i
				break
			}
		}
		p.literal(str[4:end])
		pos, field, minFields = end+1, 3, 3
	}
	if pos <= len(str) {
		if err := p.fieldsFrom(str, pos, field, perr); err != nil {
			return err
		}
	}
	for p.nf > f0+minFields && len(p.fields[p.nf-1].Reps) == 0 {
		p.nf--
	}
	s.Fields = p.fields[f0:p.nf:p.nf]
	return nil
}

// literal appends a field holding exactly v, unsplit and not unescaped.
func (p *parser) literal(v string) {
	p.subs[p.ns] = v
	p.comps[p.nc] = Comp{Subs: p.subs[p.ns : p.ns+1 : p.ns+1]}
	p.reps[p.nr] = Rep{Comps: p.comps[p.nc : p.nc+1 : p.nc+1]}
	p.fields[p.nf] = Field{Reps: p.reps[p.nr : p.nr+1 : p.nr+1]}
	p.ns++
	p.nc++
	p.nr++
	p.nf++
}

// fieldsFrom splits str[pos:] into fields starting at number field, in one
// pass over the bytes.
func (p *parser) fieldsFrom(str string, pos, field int, perr func(int, int, string) error) error {
	s0, c0, r0 := p.ns, p.nc, p.nr
	start, esc := pos, -1
	for i := pos; i <= len(str); i++ {
		cls := uint8(clsField)
		if i < len(str) {
			cls = p.class[str[i]]
			if cls == clsNone {
				continue
			}
			if cls == clsEsc {
				if esc < 0 {
					esc = i
				}
				continue
			}
		}
		// Close the subcomponent str[start:i].
		v := str[start:i]
		if esc >= 0 {
			u, bad := unescape(v, p.d)
			if bad >= 0 {
				return perr(field, start+bad, "escape sequence never ends")
			}
			v = u
		}
		if p.ns-s0 >= MaxSubcomponents {
			return perr(field, start, fmt.Sprintf("component has more than %d subcomponents", MaxSubcomponents))
		}
		p.subs[p.ns] = v
		p.ns++
		start, esc = i+1, -1
		if cls == clsSub {
			continue
		}
		// Close the component.
		for p.ns > s0 && p.subs[p.ns-1] == "" {
			p.ns--
		}
		if p.nc-c0 >= MaxComponents {
			return perr(field, i, fmt.Sprintf("repetition has more than %d components", MaxComponents))
		}
		p.comps[p.nc] = Comp{Subs: p.sliceSubs(s0)}
		p.nc++
		s0 = p.ns
		if cls == clsComp {
			continue
		}
		// Close the repetition.
		for p.nc > c0 && len(p.comps[p.nc-1].Subs) == 0 {
			p.nc--
		}
		if p.nr-r0 >= MaxRepetitions {
			return perr(field, i, fmt.Sprintf("field has more than %d repetitions", MaxRepetitions))
		}
		p.reps[p.nr] = Rep{Comps: p.sliceComps(c0)}
		p.nr++
		c0 = p.nc
		if cls == clsRep {
			continue
		}
		// Close the field.
		for p.nr > r0 && len(p.reps[p.nr-1].Comps) == 0 {
			p.nr--
		}
		if field > MaxFields {
			return perr(field, i, fmt.Sprintf("segment has more than %d fields", MaxFields))
		}
		p.fields[p.nf] = Field{Reps: p.sliceReps(r0)}
		p.nf++
		r0 = p.nr
		field++
	}
	return nil
}

func (p *parser) sliceSubs(from int) []string {
	if p.ns == from {
		return nil
	}
	return p.subs[from:p.ns:p.ns]
}

func (p *parser) sliceComps(from int) []Comp {
	if p.nc == from {
		return nil
	}
	return p.comps[from:p.nc:p.nc]
}

func (p *parser) sliceReps(from int) []Rep {
	if p.nr == from {
		return nil
	}
	return p.reps[from:p.nr:p.nr]
}
