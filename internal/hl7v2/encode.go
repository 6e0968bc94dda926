package hl7v2

// Bytes encodes the message in ER7 with its own delimiters, each segment
// terminated by \r, escaping every value. Parsing the result gives a
// message with the same segments and values (Raw and offsets aside). Values
// dropped at parse time (formatting escapes such as \H\) are not restored.
func (m *Message) Bytes() []byte {
	if m == nil {
		return nil
	}
	d := m.Delims
	if !d.valid() {
		d = DefaultDelimiters
	}
	b := make([]byte, 0, len(m.Raw)+64)
	for _, s := range m.Segments {
		if s == nil {
			continue
		}
		b = append(b, s.Name...)
		from := 1
		if s.Name == "MSH" {
			b = append(b, d.Field)
			b = append(b, d.EncodingCharacters()...)
			from = 3
		}
		for n := from; n < len(s.Fields); n++ {
			b = append(b, d.Field)
			b = appendField(b, &s.Fields[n], d)
		}
		b = append(b, '\r')
	}
	return b
}

func appendField(b []byte, f *Field, d Delimiters) []byte {
	if f == nil {
		return b
	}
	for i, r := range f.Reps {
		if i > 0 {
			b = append(b, d.Repetition)
		}
		for j, c := range r.Comps {
			if j > 0 {
				b = append(b, d.Component)
			}
			for k, s := range c.Subs {
				if k > 0 {
					b = append(b, d.Subcomponent)
				}
				b = append(b, Escape(s, d)...)
			}
		}
	}
	return b
}
