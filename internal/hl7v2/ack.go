package hl7v2

import (
	"bytes"
	"strconv"
	"time"
)

// AckError is one error reported in an ERR segment.
//
// PHI contract: Text must describe the rule that failed and where ("PID-7
// is not a valid date"), never quote a value from the message. BuildACK
// copies nothing but header fields (MSH-3..6, MSH-9.2, MSH-10, MSH-11,
// MSH-12) from the original message, so an acknowledgement carries PHI only
// if a caller puts it in Text.
type AckError struct {
	Segment      string // segment name, e.g. PID
	SegmentIndex int    // ERL-2 segment sequence, 1-based; 0 = not given
	Field        int    // field number; 0 = not given
	Rep          int    // repetition, 1-based; 0 = not given
	Comp         int    // component, 1-based; 0 = not given
	// Code is from HL7 table 0357: 100 segment sequence error, 101 required
	// field missing, 102 data type error, 103 table value not found, 200
	// unsupported message type, 201 unsupported event code, 204 unknown key
	// identifier, 206 application record locked, 207 application internal
	// error. Empty means 207.
	Code     string
	Severity string // E (default), W or I
	Text     string // rule description, never a message value
}

// table0357 is HL7 table 0357, message error condition codes.
var table0357 = map[string]string{
	"0":   "Message accepted",
	"100": "Segment sequence error",
	"101": "Required field missing",
	"102": "Data type error",
	"103": "Table value not found",
	"104": "Value too long",
	"200": "Unsupported message type",
	"201": "Unsupported event code",
	"202": "Unsupported processing id",
	"203": "Unsupported version id",
	"204": "Unknown key identifier",
	"205": "Duplicate key identifier",
	"206": "Application record locked",
	"207": "Application internal error",
}

// BuildACK builds the acknowledgement of m: an MSH with the sending and
// receiving application and facility swapped, MSH-7 now, MSH-9
// ACK^<event>^ACK, MSH-10 controlID and MSH-11/MSH-12 copied, with the
// original delimiters; an MSA with code (AA/AE/AR, or CA/CE/CR in enhanced
// mode, echoed as given) and the original MSH-10; and one ERR per error.
// From v2.5 on ERR-2 holds the location SEG^seq^field^rep^comp, ERR-3
// code^description^HL70357, ERR-4 the severity and ERR-8 Text; before v2.5
// ERR-1 holds SEG^seq^field^code&text&HL70357. Every value is escaped.
// Segments end with \r. m may be nil or hold only an MSH; BuildACK never
// panics. See AckError for the PHI contract on Text.
func BuildACK(m *Message, code string, errs []AckError, controlID string, now time.Time) []byte {
	d := DefaultDelimiters
	var msh *Segment
	if m != nil {
		if m.Delims.valid() {
			d = m.Delims
		}
		msh = m.Segment("MSH")
	}
	h := header{
		recvApp: fieldText(msh.Field(5), d), recvFac: fieldText(msh.Field(6), d),
		sendApp: fieldText(msh.Field(3), d), sendFac: fieldText(msh.Field(4), d),
		event:       Escape(msh.Get("9.2"), d),
		processing:  fieldText(msh.Field(11), d),
		version:     fieldText(msh.Field(12), d),
		origControl: Escape(msh.Get("10"), d),
		old:         before25(msh.Get("12")),
	}
	return buildAck(d, h, code, errs, controlID, now)
}

// header holds the already-escaped values an acknowledgement echoes.
type header struct {
	recvApp, recvFac, sendApp, sendFac string // of the original message
	event, processing, version         string
	origControl                        string
	old                                bool // version before 2.5: ERR-1 layout
}

func buildAck(d Delimiters, h header, code string, errs []AckError, controlID string, now time.Time) []byte {
	if h.version == "" {
		h.version = "2.5"
	}
	b := make([]byte, 0, 256+96*len(errs))
	b = append(b, "MSH"...)
	b = append(b, d.Field)
	b = append(b, d.EncodingCharacters()...)
	for _, v := range []string{h.recvApp, h.recvFac, h.sendApp, h.sendFac, now.Format("20060102150405-0700"), ""} {
		b = append(b, d.Field)
		b = append(b, v...)
	}
	b = append(b, d.Field)
	b = append(b, "ACK"...)
	b = append(b, d.Component)
	b = append(b, h.event...)
	b = append(b, d.Component)
	b = append(b, "ACK"...)
	for _, v := range []string{Escape(controlID, d), h.processing, h.version} {
		b = append(b, d.Field)
		b = append(b, v...)
	}
	b = append(b, '\r')

	b = append(b, "MSA"...)
	b = append(b, d.Field)
	b = append(b, Escape(code, d)...)
	b = append(b, d.Field)
	b = append(b, h.origControl...)
	b = append(b, '\r')

	for _, e := range errs {
		b = appendERR(b, e, d, h.old)
	}
	return b
}

func appendERR(b []byte, e AckError, d Delimiters, old bool) []byte {
	code := e.Code
	if code == "" {
		code = "207"
	}
	desc, known := table0357[code]
	if !known {
		desc = e.Text
	}
	sev := e.Severity
	if sev == "" {
		sev = "E"
	}
	b = append(b, "ERR"...)
	b = append(b, d.Field)
	if old {
		text := e.Text
		if text == "" {
			text = desc
		}
		cwe := joinTrim(d.Subcomponent, Escape(code, d), Escape(text, d), "HL70357")
		b = append(b, joinTrim(d.Component, Escape(e.Segment, d), num(e.SegmentIndex), num(e.Field), cwe)...)
		return append(b, '\r')
	}
	loc := joinTrim(d.Component, Escape(e.Segment, d), num(e.SegmentIndex), num(e.Field), num(e.Rep), num(e.Comp))
	b = append(b, d.Field) // ERR-1 empty
	b = append(b, loc...)
	b = append(b, d.Field)
	b = append(b, joinTrim(d.Component, Escape(code, d), Escape(desc, d), "HL70357")...)
	b = append(b, d.Field)
	b = append(b, Escape(sev, d)...)
	if e.Text != "" {
		b = append(b, d.Field, d.Field, d.Field, d.Field) // ERR-5..7 empty
		b = append(b, Escape(e.Text, d)...)
	}
	return append(b, '\r')
}

// joinTrim joins parts with sep, dropping trailing empty parts.
func joinTrim(sep byte, parts ...string) string {
	n := len(parts)
	for n > 0 && parts[n-1] == "" {
		n--
	}
	var b []byte
	for i, p := range parts[:n] {
		if i > 0 {
			b = append(b, sep)
		}
		b = append(b, p...)
	}
	return string(b)
}

func num(n int) string {
	if n <= 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// fieldText re-encodes a whole field (all components) with d.
func fieldText(f *Field, d Delimiters) string {
	return string(appendField(nil, f, d))
}

// before25 reports whether version v (2.3, 2.4.1...) predates 2.5; unknown
// versions get the 2.5 layout.
func before25(v string) bool {
	if len(v) < 3 || v[0] != '2' || v[1] != '.' {
		return false
	}
	minor, rest, ok := number(v[2:])
	if !ok || (rest != "" && rest[0] != '.') {
		return false
	}
	return minor < 5
}

// NAKForUnparseable builds an AR acknowledgement for input that could not be
// parsed at all. It uses the default delimiters and version 2.5 unless it
// can salvage them, and salvages MSH-3/4/5/6, MSH-9.2, MSH-10, MSH-11 and
// MSH-12 from an MSH line that is partly readable (only printable ASCII is
// kept, and only plausible codes). perr, when given, becomes an ERR whose
// text is its Reason (parse reasons never quote message content).
func NAKForUnparseable(data []byte, perr *ParseError, controlID string, now time.Time) []byte {
	d := DefaultDelimiters
	v := salvageMSH(data)
	h := header{
		recvApp: Escape(v[5], d), recvFac: Escape(v[6], d),
		sendApp: Escape(v[3], d), sendFac: Escape(v[4], d),
		origControl: Escape(v[10], d),
		event:       v[9],
		processing:  v[11],
		version:     v[12],
	}
	if !plausibleCode(h.event, 8) {
		h.event = ""
	}
	if h.processing != "P" && h.processing != "T" && h.processing != "D" {
		h.processing = "P"
	}
	if len(h.version) < 3 || h.version[:2] != "2." || !plausibleVersion(h.version) {
		h.version = "2.5"
	}
	h.old = before25(h.version)
	var errs []AckError
	if perr != nil {
		e := AckError{Segment: perr.Segment, Field: perr.Field, Code: "102", Severity: "E", Text: perr.Reason}
		if perr.Field == 0 {
			e.Code = "100"
		}
		if perr.Segment != "" || perr.SegmentIndex > 0 {
			e.SegmentIndex = perr.SegmentIndex + 1
		}
		errs = append(errs, e)
	}
	return buildAck(d, h, "AR", errs, controlID, now)
}

// salvageMSH reads what it can of the first MSH line in data: index n holds
// the first component of MSH-n, except 9 which holds MSH-9.2.
func salvageMSH(data []byte) [13]string {
	var out [13]string
	if len(data) > 1<<16 {
		data = data[:1<<16]
	}
	i := bytes.Index(data, []byte("MSH"))
	if i < 0 || i+4 > len(data) {
		return out
	}
	ln := data[i:]
	if j := bytes.IndexAny(ln, "\r\n"); j >= 0 {
		ln = ln[:j]
	}
	if len(ln) < 4 {
		return out
	}
	fs := ln[3]
	if !legalDelimiter(fs) {
		return out
	}
	cs := byte('^')
	if len(ln) > 4 && legalDelimiter(ln[4]) && ln[4] != fs {
		cs = ln[4]
	}
	parts := bytes.SplitN(ln, []byte{fs}, 14)
	// parts[0] is "MSH", parts[1] is MSH-2, parts[n-1] is MSH-n for n >= 3.
	for n := 3; n <= 12 && n-1 < len(parts); n++ {
		comps := bytes.Split(parts[n-1], []byte{cs})
		c := 0
		if n == 9 {
			c = 1
		}
		if c < len(comps) {
			out[n] = printable(comps[c], 64)
		}
	}
	return out
}

// printable keeps the printable ASCII bytes of b, at most max of them.
func printable(b []byte, max int) string {
	out := make([]byte, 0, min(len(b), max))
	for _, c := range b {
		if c >= ' ' && c < 0x7f && len(out) < max {
			out = append(out, c)
		}
	}
	return string(out)
}

func plausibleCode(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isUpperAlnum(s[i]) {
			return false
		}
	}
	return true
}

func plausibleVersion(s string) bool {
	if len(s) > 8 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '.' && (s[i] < '0' || s[i] > '9') {
			return false
		}
	}
	return true
}
