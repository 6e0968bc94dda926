package hl7v2

import (
	"fmt"
)

// Delimiters are the encoding characters declared in MSH-1 and MSH-2.
// Truncation is 0 when absent (before v2.7, or when MSH-2 has 4 characters).
type Delimiters struct{ Field, Component, Repetition, Escape, Subcomponent, Truncation byte }

// DefaultDelimiters are the customary |^~\& encoding characters.
var DefaultDelimiters = Delimiters{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&'}

// EncodingCharacters returns the MSH-2 value these delimiters declare.
func (d Delimiters) EncodingCharacters() string {
	b := []byte{d.Component, d.Repetition, d.Escape, d.Subcomponent}
	if d.Truncation != 0 {
		b = append(b, d.Truncation)
	}
	return string(b)
}

// valid reports whether d could have come out of a successful parse.
func (d Delimiters) valid() bool {
	set := []byte{d.Field, d.Component, d.Repetition, d.Escape, d.Subcomponent}
	if d.Truncation != 0 {
		set = append(set, d.Truncation)
	}
	for i, c := range set {
		if !legalDelimiter(c) {
			return false
		}
		for _, o := range set[:i] {
			if o == c {
				return false
			}
		}
	}
	return true
}

// legalDelimiter reports whether c may serve as an encoding character:
// printable ASCII punctuation. Letters and digits would make segment names
// ambiguous; whitespace and control bytes would collide with terminators.
func legalDelimiter(c byte) bool {
	return c > ' ' && c < 0x7f && !isUpperAlnum(c) && !(c >= 'a' && c <= 'z')
}

func isUpperAlnum(c byte) bool { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') }

// Message is one parsed ER7 message. Values are stored unescaped.
type Message struct {
	Delims   Delimiters
	Segments []*Segment
	// Raw is the message as received with every segment terminated by \r:
	// CRLF and LF terminators become \r, and a leading byte-order mark and
	// blank (whitespace-only) lines are dropped. It is what an archive or a
	// duplicate check should store or hash.
	Raw []byte
}

// Segment is one segment. Fields[n] is always SEG-n: Fields[0] holds the
// segment name and, for MSH, Fields[1] is MSH-1 (the field separator) and
// Fields[2] is MSH-2 (the encoding characters, verbatim).
//
// Trailing empty fields, repetitions, components and subcomponents are not
// kept (HL7 treats them as absent), so Fields ends at the last non-empty
// field and an empty element in the middle has a nil slice.
type Segment struct {
	Name   string
	Index  int // position in the message, 0-based
	Offset int // byte offset of the segment in Message.Raw
	Fields []Field
}

// Field is one field: its repetitions.
type Field struct{ Reps []Rep }

// Rep is one repetition of a field: its components.
type Rep struct{ Comps []Comp }

// Comp is one component: its subcomponents, unescaped. The HL7 null `""`
// is kept as the two-character string `""`; the mapping layer decides what
// it means.
type Comp struct{ Subs []string }

// ParseError locates malformed input precisely. It never quotes message
// content, so it is safe to log.
type ParseError struct {
	Segment      string // segment name, "" when the name itself is unreadable
	SegmentIndex int    // 0-based position of the segment in the message
	Field        int    // field number (SEG-n), 0 when the error is not in a field
	Offset       int    // byte offset in the input passed to Parse or ParseBatch
	Reason       string // fixed description, never a value from the message
}

func (e *ParseError) Error() string {
	seg := e.Segment
	if seg == "" {
		seg = "?"
	}
	if e.Field > 0 {
		return fmt.Sprintf("hl7v2: segment %d (%s) field %d at byte %d: %s", e.SegmentIndex, seg, e.Field, e.Offset, e.Reason)
	}
	return fmt.Sprintf("hl7v2: segment %d (%s) at byte %d: %s", e.SegmentIndex, seg, e.Offset, e.Reason)
}
