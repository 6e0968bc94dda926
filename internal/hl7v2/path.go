package hl7v2

// Get returns the value at path, written SEG[n]-F(r).C.S:
//
//	PID-3         PID-3(1).1.1: first PID, field 3, first repetition,
//	              first component, first subcomponent
//	PID-3.1       component 1
//	PID-3(2).4.1  second repetition, component 4, subcomponent 1
//	PID[2]-3      field 3 of the second PID segment
//	MSH-9.2       the trigger event; MSH-1 is the field separator and MSH-2
//	              the encoding characters, as HL7 numbers them
//
// Indexes are 1-based. It returns "" when the element is absent and when
// the path is not of that form (lowercase segment names, missing numbers,
// a zero index, trailing text...); it never panics.
func (m *Message) Get(path string) string {
	if m == nil || len(path) < 5 {
		return ""
	}
	name := path[:3]
	if !isUpperAlnum(name[0]) || !isUpperAlnum(name[1]) || !isUpperAlnum(name[2]) {
		return ""
	}
	rest, occ := path[3:], 1
	if rest[0] == '[' {
		n, r, ok := number(rest[1:])
		if !ok || n < 1 || len(r) == 0 || r[0] != ']' {
			return ""
		}
		occ, rest = n, r[1:]
	}
	if len(rest) == 0 || rest[0] != '-' {
		return ""
	}
	return m.nth(name, occ).Get(rest[1:])
}

// nth returns the occ-th (1-based) segment called name, or nil.
func (m *Message) nth(name string, occ int) *Segment {
	if m == nil {
		return nil
	}
	for _, s := range m.Segments {
		if s != nil && s.Name == name {
			occ--
			if occ == 0 {
				return s
			}
		}
	}
	return nil
}

// Segment returns the first segment called name, or nil.
func (m *Message) Segment(name string) *Segment { return m.nth(name, 1) }

// All returns every segment called name, in message order.
func (m *Message) All(name string) []*Segment {
	if m == nil {
		return nil
	}
	var out []*Segment
	for _, s := range m.Segments {
		if s != nil && s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// Get returns the value at path relative to the segment, written F(r).C.S
// ("3(2).4.1"); see Message.Get. It returns "" on a nil segment, an absent
// element or a malformed path.
func (s *Segment) Get(path string) string {
	if s == nil {
		return ""
	}
	f, rest, ok := number(path)
	if !ok {
		return ""
	}
	r, c, sub := 1, 1, 1
	if len(rest) > 0 && rest[0] == '(' {
		if r, rest, ok = number(rest[1:]); !ok || r < 1 || len(rest) == 0 || rest[0] != ')' {
			return ""
		}
		rest = rest[1:]
	}
	if len(rest) > 0 && rest[0] == '.' {
		if c, rest, ok = number(rest[1:]); !ok || c < 1 {
			return ""
		}
		if len(rest) > 0 && rest[0] == '.' {
			if sub, rest, ok = number(rest[1:]); !ok || sub < 1 {
				return ""
			}
		}
	}
	if len(rest) != 0 {
		return ""
	}
	return s.Field(f).Rep(r).Sub(c, sub)
}

// number reads up to 6 leading decimal digits.
func number(s string) (n int, rest string, ok bool) {
	i := 0
	for i < len(s) && i < 7 && s[i] >= '0' && s[i] <= '9' {
		n = n*10 + int(s[i]-'0')
		i++
	}
	if i == 0 || i > 6 {
		return 0, s, false
	}
	return n, s[i:], true
}

// Field returns SEG-n, or nil when it is absent or empty.
func (s *Segment) Field(n int) *Field {
	if s == nil || n < 0 || n >= len(s.Fields) || len(s.Fields[n].Reps) == 0 {
		return nil
	}
	return &s.Fields[n]
}

// Rep returns the i-th (1-based) repetition, or nil when it is absent or
// empty.
func (f *Field) Rep(i int) *Rep {
	if f == nil || i < 1 || i > len(f.Reps) || len(f.Reps[i-1].Comps) == 0 {
		return nil
	}
	return &f.Reps[i-1]
}

// Comp returns the first subcomponent of the i-th (1-based) component, or
// "" when absent.
func (r *Rep) Comp(i int) string { return r.Sub(i, 1) }

// Sub returns subcomponent s of component c (both 1-based), or "" when
// absent.
func (r *Rep) Sub(c, s int) string {
	if r == nil || c < 1 || c > len(r.Comps) {
		return ""
	}
	subs := r.Comps[c-1].Subs
	if s < 1 || s > len(subs) {
		return ""
	}
	return subs[s-1]
}

// MessageType returns MSH-9.1, MSH-9.2 and MSH-9.3 (e.g. ADT, A01,
// ADT_A01).
func (m *Message) MessageType() (code, event, structure string) {
	msh := m.Segment("MSH")
	return msh.Get("9.1"), msh.Get("9.2"), msh.Get("9.3")
}

// ControlID returns MSH-10.
func (m *Message) ControlID() string { return m.Segment("MSH").Get("10") }

// Version returns MSH-12.1 (e.g. 2.5.1).
func (m *Message) Version() string { return m.Segment("MSH").Get("12") }

// Sender returns MSH-3.1 and MSH-4.1.
func (m *Message) Sender() (app, facility string) {
	msh := m.Segment("MSH")
	return msh.Get("3"), msh.Get("4")
}

// Time returns MSH-7.1, the message date/time as sent (see ParseTS).
func (m *Message) Time() string { return m.Segment("MSH").Get("7") }
