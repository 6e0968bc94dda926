package hl7v2

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustParse(t testing.TB, s string) *Message {
	t.Helper()
	m, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return m
}

func TestDelimiters(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		msg   string
		want  Delimiters
		paths map[string]string
	}{
		{
			name:  "default",
			msg:   "MSH|^~\\&|A\rZZZ|a^b~c&d",
			want:  DefaultDelimiters,
			paths: map[string]string{"MSH-1": "|", "MSH-2": "^~\\&", "ZZZ-1.2": "b", "ZZZ-1(2).1.2": "d"},
		},
		{
			name:  "unusual choice",
			msg:   "MSH#*$!%#A\rZZZ#a!F!b*c$d%e#x|y^z",
			want:  Delimiters{Field: '#', Component: '*', Repetition: '$', Escape: '!', Subcomponent: '%'},
			paths: map[string]string{"MSH-1": "#", "MSH-2": "*$!%", "MSH-3": "A", "ZZZ-1": "a#b", "ZZZ-1.2": "c", "ZZZ-1(2).1.2": "e", "ZZZ-2": "x|y^z"},
		},
		{
			name:  "truncation character (2.7+)",
			msg:   "MSH|^~\\&#|A|||||||||2.7\rZZZ|ab\\P\\c|lost#",
			want:  Delimiters{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&', Truncation: '#'},
			paths: map[string]string{"MSH-2": "^~\\&#", "MSH-12": "2.7", "ZZZ-1": "ab#c", "ZZZ-2": "lost#"},
		},
		{
			name:  "MSH with only the encoding characters",
			msg:   "MSH|^~\\&",
			want:  DefaultDelimiters,
			paths: map[string]string{"MSH-1": "|", "MSH-2": "^~\\&", "MSH-3": ""},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := mustParse(t, tc.msg)
			if diff := cmp.Diff(tc.want, m.Delims); diff != "" {
				t.Errorf("Delims (-want +got):\n%s", diff)
			}
			got := map[string]string{}
			for p := range tc.paths {
				got[p] = m.Get(p)
			}
			if diff := cmp.Diff(tc.paths, got); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnescape(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, value, want string
	}{
		{"plain", "abc", "abc"},
		{"field", `a\F\b`, "a|b"},
		{"component", `a\S\b`, "a^b"},
		{"subcomponent", `a\T\b`, "a&b"},
		{"repetition", `a\R\b`, "a~b"},
		{"escape", `a\E\b`, `a\b`},
		{"all in a row", `\F\\S\\T\\R\\E\`, `|^&~\`},
		{"truncation without one declared", `a\P\b`, `a\P\b`},
		{"hex ASCII", `\X41\`, "A"},
		{"hex UTF-8", `\XC3A9\`, "é"},
		{"hex Latin-1", `\XE9\`, "é"},
		{"hex lowercase", `\Xc3a9\`, "é"},
		{"hex CRLF", `a\X0D0A\b`, "a\r\nb"},
		{"hex odd digits kept", `\X4\`, `\X4\`},
		{"hex not hex kept", `\XZZ\`, `\XZZ\`},
		{"line break", `one\.br\two`, "one\ntwo"},
		{"skip space", `one\.sp\two`, "one\ntwo"},
		{"skip spaces with count", `one\.sp2\two`, "one\ntwo"},
		{"highlight dropped", `\H\bold\N\ text`, "bold text"},
		{"formatting dropped", `\.fi\a\.nf\b\.ce\c\.in+4\d\.ti-2\e\.sk3\f`, "abcdef"},
		{"local escape dropped", `a\Zlocal\b`, "ab"},
		{"charset escapes dropped", `a\C2842\b\M2442\c`, "abc"},
		{"unknown kept verbatim", `C:\temp\x`, `C:\temp\x`},
		{"empty sequence kept", `a\\b`, `a\\b`},
		{"unknown formatting kept", `\.zz\`, `\.zz\`},
		{"HL7 null kept", `""`, `""`},
		{"only formatting becomes absent", `\H\`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := mustParse(t, "MSH|^~\\&\rZZZ|"+tc.value)
			if got := m.Get("ZZZ-1"); got != tc.want {
				t.Errorf("ZZZ-1 = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestEscapeRoundTrip(t *testing.T) {
	t.Parallel()
	alphabet := []byte("|^~\\&#\r\nab Z09.\x00\xe9\xc3\xa9XHN")
	delims := []Delimiters{
		DefaultDelimiters,
		{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&', Truncation: '#'},
		{Field: '#', Component: '*', Repetition: '$', Escape: '!', Subcomponent: '%'},
		{Field: '|', Component: '!', Repetition: '"', Escape: '#', Subcomponent: '.'},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, d := range delims {
		for range 2000 {
			b := make([]byte, rng.IntN(24))
			for i := range b {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			}
			s := string(b)
			msg := "MSH" + string(d.Field) + d.EncodingCharacters() + "\rZZZ" + string(d.Field) + "x" + string(d.Field) + Escape(s, d)
			m, err := Parse([]byte(msg))
			if err != nil {
				t.Fatalf("Parse(Escape(%q)): %v", s, err)
			}
			// Trailing empty values are absent, so compare via the field.
			if got := m.Get("ZZZ-2"); got != s {
				t.Fatalf("Escape(%q) with %q parsed back as %q", s, d.EncodingCharacters(), got)
			}
		}
	}
	if got := Escape("a|b", Delimiters{}); got != `a\F\b` {
		t.Errorf("Escape with zero Delimiters = %q", got)
	}
	if s := "no specials"; Escape(s, DefaultDelimiters) != s {
		t.Errorf("Escape changed a plain string")
	}
}

func TestTerminatorsEquivalent(t *testing.T) {
	t.Parallel()
	lf := readCorpus(t, "ADT-A01-01.hl7")
	lf = bytes.TrimPrefix(lf, bom)
	want, err := Parse(lf)
	if err != nil {
		t.Fatal(err)
	}
	cr := bytes.ReplaceAll(lf, []byte("\n"), []byte("\r"))
	crlf := bytes.ReplaceAll(lf, []byte("\n"), []byte("\r\n"))
	var mixed []byte
	for i, l := range bytes.Split(lf, []byte("\n")) {
		mixed = append(mixed, l...)
		mixed = append(mixed, [][]byte{[]byte("\r"), []byte("\n"), []byte("\r\n"), []byte("\r\n \t\n\n")}[i%4]...)
	}
	for name, data := range map[string][]byte{"CR": cr, "CRLF": crlf, "mixed with blank lines": mixed, "BOM and leading blank lines": append([]byte("\xef\xbb\xbf\r\n  \n"), cr...)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			if i := firstDifference(want, got); i >= 0 {
				t.Errorf("differs from the LF parse at segment %d", i)
			}
			if !bytes.Equal(got.Raw, want.Raw) {
				t.Errorf("Raw differs from the LF parse")
			}
			if bytes.ContainsAny(got.Raw, "\n") || !bytes.HasSuffix(got.Raw, []byte("\r")) {
				t.Errorf("Raw is not normalised to \\r terminators")
			}
		})
	}
}

func TestTrailingEmptiesAbsent(t *testing.T) {
	t.Parallel()
	m := mustParse(t, "MSH|^~\\&|A||||\rPID|1||a^^~~||b&&^|\rZZZ|||\r")
	one := func(v string) Field { return Field{Reps: []Rep{{Comps: []Comp{{Subs: []string{v}}}}}} }
	want := [][]Field{
		{one("MSH"), one("|"), one("^~\\&"), one("A")},
		{one("PID"), one("1"), {}, one("a"), {}, one("b")},
		{one("ZZZ")},
	}
	for i, s := range m.Segments {
		if diff := cmp.Diff(want[i], s.Fields); diff != "" {
			t.Errorf("segment %d fields (-want +got):\n%s", i, diff)
		}
	}
	pid := m.Segment("PID")
	if pid.Field(2) != nil || pid.Field(6) != nil || pid.Field(-1) != nil {
		t.Errorf("empty or absent fields are not nil")
	}
	if pid.Field(3).Rep(2) != nil {
		t.Errorf("trailing empty repetition is present")
	}
	m = mustParse(t, "MSH|^~\\&\rZZZ|~b|^c|&d")
	if diff := cmp.Diff([]Rep{{}, {Comps: []Comp{{Subs: []string{"b"}}}}}, m.Segment("ZZZ").Fields[1].Reps); diff != "" {
		t.Errorf("leading empty repetition (-want +got):\n%s", diff)
	}
	if got := m.Get("ZZZ-2.2") + m.Get("ZZZ-3.1.2"); got != "cd" {
		t.Errorf("values after leading empties = %q", got)
	}
	if m.Segment("ZZZ").Field(1).Rep(1) != nil {
		t.Errorf("empty middle repetition is not nil")
	}
}

func TestZSegmentsAndVersions(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "9.9"} {
		m := mustParse(t, "MSH|^~\\&|||||||ADT^A01|1|P|"+v+"\rZPI|custom^value\rZ01|x")
		if m.Version() != v || m.Get("ZPI-1.2") != "value" || m.Get("Z01-1") != "x" {
			t.Errorf("version %s: Version=%q ZPI-1.2=%q Z01-1=%q", v, m.Version(), m.Get("ZPI-1.2"), m.Get("Z01-1"))
		}
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	const msh = "MSH|^~\\&|A\r" // 11 bytes: the next segment starts at offset 11
	manySegs := "MSH|^~\\&\r" + strings.Repeat("ZZZ\r", MaxSegments)
	tests := []struct {
		name string
		data string
		want ParseError
	}{
		{"empty", "", ParseError{Reason: "empty message"}},
		{"blank lines only", "\r\n  \n\t\r", ParseError{Reason: "empty message"}},
		{"BOM only", "\xef\xbb\xbf", ParseError{Reason: "empty message"}},
		{"not MSH", "PID|1\r", ParseError{Reason: "message does not start with an MSH segment"}},
		{"not MSH after BOM and blank line", "\xef\xbb\xbf\nEVN|1", ParseError{Offset: 4, Reason: "message does not start with an MSH segment"}},
		{"batch header", "FHS|^~\\&\rMSH|^~\\&", ParseError{Reason: "message does not start with an MSH segment"}},
		{"MSH alone", "MSH", ParseError{Segment: "MSH", Field: 1, Offset: 3, Reason: "MSH segment ends before the field separator (MSH-1)"}},
		{"MSH-2 too short", "MSH|^~", ParseError{Segment: "MSH", Field: 2, Offset: 6, Reason: "MSH-2 declares fewer than 4 encoding characters"}},
		{"MSH-2 too short before fields", "MSH|^~\\|A", ParseError{Segment: "MSH", Field: 2, Offset: 7, Reason: "MSH-2 declares fewer than 4 encoding characters"}},
		{"MSH-2 too long", "MSH|^~\\&#$|A", ParseError{Segment: "MSH", Field: 2, Offset: 9, Reason: "MSH-2 declares more than 5 encoding characters"}},
		{"letter as field separator", "MSHA^~\\&", ParseError{Segment: "MSH", Field: 1, Offset: 3, Reason: "invalid field separator (MSH-1)"}},
		{"space as field separator", "MSH ^~\\&", ParseError{Segment: "MSH", Field: 1, Offset: 3, Reason: "invalid field separator (MSH-1)"}},
		{"letter as encoding character", "MSH|^~\\a|", ParseError{Segment: "MSH", Field: 2, Offset: 7, Reason: "invalid encoding character in MSH-2"}},
		{"duplicate encoding character", "MSH|^~^&|", ParseError{Segment: "MSH", Field: 2, Offset: 6, Reason: "duplicate encoding character in MSH-2"}},
		{"lowercase segment name", msh + "pid|1", ParseError{SegmentIndex: 1, Offset: 11, Reason: "segment name is not 3 uppercase letters or digits followed by the field separator"}},
		{"4-letter segment name", msh + "ZPID|1", ParseError{SegmentIndex: 1, Offset: 11, Reason: "segment name is not 3 uppercase letters or digits followed by the field separator"}},
		{"short segment name", msh + "PI", ParseError{SegmentIndex: 1, Offset: 11, Reason: "segment name is not 3 uppercase letters or digits followed by the field separator"}},
		{"indented segment", msh + " PID|1", ParseError{SegmentIndex: 1, Offset: 11, Reason: "segment name is not 3 uppercase letters or digits followed by the field separator"}},
		{"escape never ends", msh + "PID|1|ab\\F", ParseError{Segment: "PID", SegmentIndex: 1, Field: 2, Offset: 19, Reason: "escape sequence never ends"}},
		{"escape never ends in a subcomponent", msh + "PID|1|x^y&z\\T", ParseError{Segment: "PID", SegmentIndex: 1, Field: 2, Offset: 22, Reason: "escape sequence never ends"}},
		{"escape split by a delimiter", msh + "PID|\\F|\\", ParseError{Segment: "PID", SegmentIndex: 1, Field: 1, Offset: 15, Reason: "escape sequence never ends"}},
		{"offset counts BOM and CRLF", "\xef\xbb\xbfMSH|^~\\&|A\r\nPID|1|\\", ParseError{Segment: "PID", SegmentIndex: 1, Field: 2, Offset: 21, Reason: "escape sequence never ends"}},
		{"escape in MSH field", "MSH|^~\\&|\\X", ParseError{Segment: "MSH", Field: 3, Offset: 9, Reason: "escape sequence never ends"}},
		{"second MSH", msh + "MSH|^~\\&|B", ParseError{Segment: "MSH", SegmentIndex: 1, Offset: 11, Reason: "second MSH segment: the input holds more than one message (use ParseBatch)"}},
		{"too many segments", manySegs + "ZZZ", ParseError{SegmentIndex: MaxSegments, Offset: 9 + 4*(MaxSegments-1), Reason: "message has more than 10000 segments"}},
		{"too many fields", "MSH|^~\\&\rZZZ" + strings.Repeat("|a", MaxFields+1), ParseError{Segment: "ZZZ", SegmentIndex: 1, Field: MaxFields + 1, Offset: 9 + 3 + 2*(MaxFields+1), Reason: "segment has more than 10000 fields"}},
		{"too many repetitions", "MSH|^~\\&\rZZZ|" + strings.Repeat("a~", MaxRepetitions) + "a", ParseError{Segment: "ZZZ", SegmentIndex: 1, Field: 1, Offset: 9 + 4 + 2*MaxRepetitions + 1, Reason: "field has more than 10000 repetitions"}},
		{"too many components", "MSH|^~\\&\rZZZ|" + strings.Repeat("^", MaxComponents), ParseError{Segment: "ZZZ", SegmentIndex: 1, Field: 1, Offset: 9 + 4 + MaxComponents, Reason: "repetition has more than 10000 components"}},
		{"too many subcomponents", "MSH|^~\\&\rZZZ|" + strings.Repeat("&", MaxSubcomponents), ParseError{Segment: "ZZZ", SegmentIndex: 1, Field: 1, Offset: 9 + 4 + MaxSubcomponents, Reason: "component has more than 10000 subcomponents"}},
		{"too many delimiters", "MSH|^~\\&\r" + strings.Repeat("ZZZ|"+strings.Repeat("a^", 999)+"\r", MaxValues/1000+1), ParseError{Segment: "MSH", Reason: "message has more than 1048576 delimiters"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := Parse([]byte(tc.data))
			if m != nil {
				t.Errorf("Parse returned a message with the error")
			}
			pe, ok := err.(*ParseError)
			if !ok {
				t.Fatalf("error = %v (%T), want *ParseError", err, err)
			}
			if diff := cmp.Diff(tc.want, *pe); diff != "" {
				t.Errorf("ParseError (-want +got):\n%s", diff)
			}
			if pe.Error() == "" {
				t.Error("empty Error()")
			}
		})
	}
}

func TestParseErrorNeverQuotesContent(t *testing.T) {
	t.Parallel()
	for _, data := range []string{"SECRETNAME|x", "MSH|^~\\&\rPID|1|SECRETNAME\\", "MSH|^~\\&\rsecretname|"} {
		_, err := Parse([]byte(data))
		if err == nil || strings.Contains(strings.ToLower(err.Error()), "secretname") {
			t.Errorf("Parse(%q) error %v quotes content", data, err)
		}
	}
}

func TestErrorMessage(t *testing.T) {
	t.Parallel()
	got := (&ParseError{Segment: "PID", SegmentIndex: 2, Field: 5, Offset: 80, Reason: "escape sequence never ends"}).Error()
	if want := "hl7v2: segment 2 (PID) field 5 at byte 80: escape sequence never ends"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	got = (&ParseError{Reason: "empty message"}).Error()
	if want := "hl7v2: segment 0 (?) at byte 0: empty message"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestGet(t *testing.T) {
	t.Parallel()
	m := mustParse(t, "MSH|^~\\&|APP|FAC|RAPP|RFAC|20240102030405||ADT^A01^ADT_A01|CTRL1|P|2.5\r"+
		"PID|1||111^^^H&1.2&ISO^MR~222^^^S^SS||Doe^John\rPID|2||333\rZPI|z1\r")
	tests := map[string]string{
		"PID-3":          "111",
		"PID-3.1":        "111",
		"PID-3(1).1.1":   "111",
		"PID-3(2)":       "222",
		"PID-3(2).4":     "S",
		"PID-3(2).5":     "SS",
		"PID-3(1).4.2":   "1.2",
		"PID-3(1).4.3":   "ISO",
		"PID-3(1).4.4":   "",
		"PID-3(3)":       "",
		"PID-5.2":        "John",
		"PID[1]-1":       "1",
		"PID[2]-1":       "2",
		"PID[2]-3":       "333",
		"PID[3]-3":       "",
		"MSH-1":          "|",
		"MSH-2":          "^~\\&",
		"MSH-3":          "APP",
		"MSH-9.2":        "A01",
		"MSH-12":         "2.5",
		"ZPI-1":          "z1",
		"OBX-5":          "",
		"PID-0":          "PID",
		"":               "",
		"PID":            "",
		"pid-3":          "",
		"PID-":           "",
		"PID-x":          "",
		"PID-3(0)":       "",
		"PID-3.0":        "",
		"PID-3.1.0":      "",
		"PID[0]-3":       "",
		"PID[2-3":        "",
		"PID[]-3":        "",
		"PID-3(2":        "",
		"PID-3()":        "",
		"PID-3.1.1.1":    "",
		"PID-3 ":         "",
		"PID-3(1)x":      "",
		"PID--3":         "",
		"PID.3":          "",
		"PID-9999999":    "",
		"PID-3(9999999)": "",
		"PID-3.":         "",
	}
	for path, want := range tests {
		if got := m.Get(path); got != want {
			t.Errorf("Get(%q) = %q, want %q", path, got, want)
		}
	}
	pid := m.Segment("PID")
	if got := pid.Get("3(2).4"); got != "S" {
		t.Errorf("Segment.Get = %q", got)
	}
	if got := pid.Field(3).Rep(1).Sub(4, 2); got != "1.2" {
		t.Errorf("Sub(4,2) = %q", got)
	}
	if got := pid.Field(5).Rep(1).Comp(2); got != "John" {
		t.Errorf("Comp(2) = %q", got)
	}
	// Absent elements chain to "" without panicking.
	if got := m.Segment("NOPE").Field(3).Rep(1).Comp(1); got != "" {
		t.Errorf("chain on absent segment = %q", got)
	}
	var nilMsg *Message
	if nilMsg.Get("PID-3") != "" || nilMsg.Segment("PID") != nil || nilMsg.All("PID") != nil || nilMsg.ControlID() != "" {
		t.Error("nil message accessors")
	}
	if n := len(m.All("PID")); n != 2 {
		t.Errorf("All(PID) = %d segments", n)
	}
	code, event, structure := m.MessageType()
	app, fac := m.Sender()
	got := []string{code, event, structure, m.ControlID(), m.Version(), app, fac, m.Time()}
	if diff := cmp.Diff([]string{"ADT", "A01", "ADT_A01", "CTRL1", "2.5", "APP", "FAC", "20240102030405"}, got); diff != "" {
		t.Errorf("header accessors (-want +got):\n%s", diff)
	}
}

func TestBytes(t *testing.T) {
	t.Parallel()
	in := "MSH|^~\\&|A^B|||||||1|P|2.5\rPID|1||a\\F\\b^c&d~e||\\.br\\x\\XE9\\\rZZZ\r"
	m := mustParse(t, in)
	want := "MSH|^~\\&|A^B|||||||1|P|2.5\rPID|1||a\\F\\b^c&d~e||\\.br\\xé\rZZZ\r"
	if got := string(m.Bytes()); got != want {
		t.Errorf("Bytes() = %q, want %q", got, want)
	}
}

// TestLargeInputs exercises the limits at their edge; the work is linear, so
// these stay fast (benchmarks, not this test, measure speed).
func TestLargeInputs(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("MSH|^~\\&|||||||ORU^R01|1|P|2.5\n")
	for range MaxSegments - 1 {
		b.WriteString("OBX|1|ST|code^text^LN||value\\.br\\more~x\n")
	}
	m, err := Parse([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Segments) != MaxSegments || m.Get("OBX[9999]-5") != "value\nmore" || m.Get("OBX[9999]-5(2)") != "x" {
		t.Errorf("%d segments, OBX[9999]-5 = %q", len(m.Segments), m.Get("OBX[9999]-5"))
	}
	long := strings.Repeat("abc\\F\\", 400000) // 2.4 MB, one value
	m, err = Parse([]byte("MSH|^~\\&\rOBX|1|ED|||" + long))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Get("OBX-5"); len(got) != 400000*4 || got[:8] != "abc|abc|" {
		t.Errorf("long value: %d bytes", len(got))
	}
	if _, err := ParseBatch([]byte(strings.Repeat("MSH|^~\\&\n", 20000))); err != nil {
		t.Errorf("ParseBatch of 20000 messages: %v", err)
	}
}
