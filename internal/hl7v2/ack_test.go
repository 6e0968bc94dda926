package hl7v2

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var ackTime = time.Date(2024, 3, 4, 5, 6, 7, 0, time.FixedZone("", 2*3600+15*60))

func segmentsOf(b []byte) []string {
	s := string(b)
	if !strings.HasSuffix(s, "\r") {
		return []string{"missing final \\r", s}
	}
	return strings.Split(strings.TrimSuffix(s, "\r"), "\r")
}

func TestBuildACK(t *testing.T) {
	t.Parallel()
	const v25 = "MSH|^~\\&|SAPP^1.2.3^ISO|SFAC|RAPP|RFAC|20240101||ADT^A01^ADT_A01|ORIG1|P^T|2.5.1\rPID|1||MRN123^^^H||Doe^Jane||19800101\r"
	const v23 = "MSH|^~\\&|SAPP|SFAC|RAPP|RFAC|20240101||ADT^A04|ORIG2|P|2.3\rPID|1||MRN123\r"
	errs := []AckError{
		{Segment: "PID", SegmentIndex: 1, Field: 7, Code: "102", Severity: "E", Text: "PID-7 is not a valid date"},
		{Segment: "PID", SegmentIndex: 1, Field: 3, Rep: 2, Comp: 4, Code: "103", Severity: "W", Text: "assigning authority | unknown & unmapped"},
		{Code: "207"},
	}
	tests := []struct {
		name string
		msg  string
		code string
		errs []AckError
		want []string
	}{
		{
			name: "AA v2.5.1",
			msg:  v25, code: "AA",
			want: []string{
				"MSH|^~\\&|RAPP|RFAC|SAPP^1.2.3^ISO|SFAC|20240304050607+0215||ACK^A01^ACK|ACK9|P^T|2.5.1",
				"MSA|AA|ORIG1",
			},
		},
		{
			name: "AE with ERR in the 2.5 layout",
			msg:  v25, code: "AE", errs: errs,
			want: []string{
				"MSH|^~\\&|RAPP|RFAC|SAPP^1.2.3^ISO|SFAC|20240304050607+0215||ACK^A01^ACK|ACK9|P^T|2.5.1",
				"MSA|AE|ORIG1",
				"ERR||PID^1^7|102^Data type error^HL70357|E||||PID-7 is not a valid date",
				"ERR||PID^1^3^2^4|103^Table value not found^HL70357|W||||assigning authority \\F\\ unknown \\T\\ unmapped",
				"ERR|||207^Application internal error^HL70357|E",
			},
		},
		{
			name: "CR enhanced mode echoed",
			msg:  v25, code: "CR", errs: []AckError{{Code: "200", Text: "unsupported message type"}},
			want: []string{
				"MSH|^~\\&|RAPP|RFAC|SAPP^1.2.3^ISO|SFAC|20240304050607+0215||ACK^A01^ACK|ACK9|P^T|2.5.1",
				"MSA|CR|ORIG1",
				"ERR|||200^Unsupported message type^HL70357|E||||unsupported message type",
			},
		},
		{
			name: "AR with ERR-1 before 2.5",
			msg:  v23, code: "AR", errs: errs,
			want: []string{
				"MSH|^~\\&|RAPP|RFAC|SAPP|SFAC|20240304050607+0215||ACK^A04^ACK|ACK9|P|2.3",
				"MSA|AR|ORIG2",
				"ERR|PID^1^7^102&PID-7 is not a valid date&HL70357",
				"ERR|PID^1^3^103&assigning authority \\F\\ unknown \\T\\ unmapped&HL70357",
				"ERR|^^^207&Application internal error&HL70357",
			},
		},
		{
			name: "custom delimiters and truncation kept",
			msg:  "MSH#*$!%@#S*X#SF#R#RF#2024##ORU*R01#C!F!1#P#2.7\r", code: "AE",
			errs: []AckError{{Segment: "OBX", SegmentIndex: 2, Field: 5, Code: "101", Text: "a*b#c"}},
			want: []string{
				"MSH#*$!%@#R#RF#S*X#SF#20240304050607+0215##ACK*R01*ACK#ACK9#P#2.7",
				"MSA#AE#C!F!1",
				"ERR##OBX*2*5#101*Required field missing*HL70357#E####a!S!b!F!c",
			},
		},
		{
			name: "only an MSH, no version or event",
			msg:  "MSH|^~\\&", code: "AA",
			want: []string{
				"MSH|^~\\&|||||20240304050607+0215||ACK^^ACK|ACK9||2.5",
				"MSA|AA|",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := mustParse(t, tc.msg)
			got := BuildACK(m, tc.code, tc.errs, "ACK9", ackTime)
			if diff := cmp.Diff(tc.want, segmentsOf(got)); diff != "" {
				t.Errorf("ACK segments (-want +got):\n%s", diff)
			}
			ack, err := Parse(got)
			if err != nil {
				t.Fatalf("ACK does not parse: %v", err)
			}
			if ack.Get("MSA-1") != tc.code || ack.ControlID() != "ACK9" {
				t.Errorf("parsed ACK: MSA-1=%q MSH-10=%q", ack.Get("MSA-1"), ack.ControlID())
			}
		})
	}
	// A nil message still yields a well-formed acknowledgement.
	want := []string{"MSH|^~\\&|||||20240304050607+0215||ACK^^ACK|ACK9||2.5", "MSA|AR|"}
	if diff := cmp.Diff(want, segmentsOf(BuildACK(nil, "AR", nil, "ACK9", ackTime))); diff != "" {
		t.Errorf("nil message (-want +got):\n%s", diff)
	}
}

// TestACKCarriesNoPHI is the PHI contract: an acknowledgement copies header
// fields only, never a value from the message body.
func TestACKCarriesNoPHI(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"ADT-A01-01.hl7", "ORU-R01-01.hl7", "ADT01-23.hl7"} {
		m, err := Parse(readCorpus(t, name))
		if err != nil {
			t.Fatal(err)
		}
		var errs []AckError
		for _, s := range m.Segments[1:] {
			errs = append(errs, AckError{Segment: s.Name, SegmentIndex: s.Index + 1, Field: 3, Code: "102", Text: s.Name + "-3 has the wrong data type"})
		}
		ack := string(BuildACK(m, "AE", errs, "ACK1", ackTime))
		pid := m.Segment("PID")
		tested := 0
		for _, path := range []string{"3(1).1", "5(1).1.1", "5(1).2", "7", "11.1", "11.3", "13.1"} {
			v := pid.Get(path)
			if len(v) < 4 {
				continue
			}
			tested++
			if strings.Contains(ack, v) {
				t.Errorf("%s: ACK contains PID-%s value", name, path)
			}
		}
		if tested < 3 {
			t.Errorf("%s: only %d PID values long enough to test", name, tested)
		}
		if strings.Contains(ack, "PID-3 has the wrong data type") != true {
			t.Errorf("%s: ACK lacks the rule text", name)
		}
	}
}

func TestNAKForUnparseable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		data string
		want []string
	}{
		{
			name: "garbage",
			data: "hello, not HL7",
			want: []string{
				"MSH|^~\\&|||||20240304050607+0215||ACK^^ACK|NAK1|P|2.5",
				"MSA|AR|",
				"ERR|||100^Segment sequence error^HL70357|E||||message does not start with an MSH segment",
			},
		},
		{
			name: "readable MSH, broken body, version 2.3",
			data: "MSH|^~\\&|SAPP^x|SFAC|RAPP|RFAC|2024||ADT^A01|CTRL7|T|2.3\rPID|1|\\oops",
			want: []string{
				"MSH|^~\\&|RAPP|RFAC|SAPP|SFAC|20240304050607+0215||ACK^A01^ACK|NAK1|T|2.3",
				"MSA|AR|CTRL7",
				"ERR|PID^2^2^102&escape sequence never ends&HL70357",
			},
		},
		{
			name: "odd delimiters salvaged, implausible values dropped",
			data: "MSH#*~\\&#S|APP#F^AC#R\x01APP##2024##ADT*a01!#ID|1^2#X#9.9\rbad",
			want: []string{
				"MSH|^~\\&|RAPP||S\\F\\APP|F\\S\\AC|20240304050607+0215||ACK^^ACK|NAK1|P|2.5",
				"MSA|AR|ID\\F\\1\\S\\2",
				"ERR||^2|100^Segment sequence error^HL70357|E||||segment name is not 3 uppercase letters or digits followed by the field separator",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tc.data))
			pe, ok := err.(*ParseError)
			if !ok {
				t.Fatalf("Parse error = %v", err)
			}
			got := NAKForUnparseable([]byte(tc.data), pe, "NAK1", ackTime)
			if diff := cmp.Diff(tc.want, segmentsOf(got)); diff != "" {
				t.Errorf("NAK segments (-want +got):\n%s", diff)
			}
			if _, err := Parse(got); err != nil {
				t.Errorf("NAK does not parse: %v", err)
			}
		})
	}
	got := NAKForUnparseable(nil, nil, "N", ackTime)
	want := []string{"MSH|^~\\&|||||20240304050607+0215||ACK^^ACK|N|P|2.5", "MSA|AR|"}
	if diff := cmp.Diff(want, segmentsOf(got)); diff != "" {
		t.Errorf("NAK of nothing (-want +got):\n%s", diff)
	}
}
