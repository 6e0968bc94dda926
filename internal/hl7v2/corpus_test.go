package hl7v2

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readCorpus(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "corpus", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestCorpusParses checks every sample message against facts read from its
// text independently of the parser: the number of non-blank lines and the
// MSH fields split naively on '|'.
func TestCorpusParses(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "corpus", "*.hl7"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 82 {
		t.Fatalf("corpus has %d messages, want 82", len(files))
	}
	for _, name := range files {
		t.Run(filepath.Base(name), func(t *testing.T) {
			t.Parallel()
			data := readCorpus(t, filepath.Base(name))
			m, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			text := strings.TrimPrefix(string(data), "\uFEFF")
			var lines []string
			for _, l := range strings.Split(strings.ReplaceAll(text, "\r", "\n"), "\n") {
				if strings.TrimSpace(l) != "" {
					lines = append(lines, l)
				}
			}
			if len(m.Segments) != len(lines) {
				t.Fatalf("%d segments, want %d", len(m.Segments), len(lines))
			}
			for i, s := range m.Segments {
				if s.Name != lines[i][:3] || s.Index != i {
					t.Errorf("segment %d = %s/%d, want %s/%d", i, s.Name, s.Index, lines[i][:3], i)
				}
				if !bytes.HasPrefix(m.Raw[s.Offset:], []byte(lines[i]+"\r")) {
					t.Errorf("segment %d offset %d does not point at its text in Raw", i, s.Offset)
				}
			}
			msh := strings.Split(lines[0], "|")
			type9 := strings.Split(msh[8], "^")
			code, event, _ := m.MessageType()
			if code != type9[0] || event != type9[1] {
				t.Errorf("MessageType = %s^%s, want %s^%s", code, event, type9[0], type9[1])
			}
			if got, want := m.ControlID(), msh[9]; got != want {
				t.Errorf("ControlID = %q, want %q", got, want)
			}
			if got, want := m.Version(), strings.Split(msh[11], "^")[0]; got != want {
				t.Errorf("Version = %q, want %q", got, want)
			}
			if m.Delims != DefaultDelimiters {
				t.Errorf("Delims = %+v", m.Delims)
			}
			// Re-encoding is stable.
			again, err := Parse(m.Bytes())
			if err != nil {
				t.Fatalf("re-parse: %v", err)
			}
			if i := firstDifference(m, again); i >= 0 {
				t.Errorf("re-encoded message differs at segment %d", i)
			}
		})
	}
}

func TestCorpusValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file     string
		segments int
		want     map[string]string
	}{
		{"ADT-A01-01.hl7", 24, map[string]string{
			"PID-2(1).1":   "1234567",
			"PID-3(1).1":   "PATID1234",
			"PID-3(1).4.2": "2.16.1",
			"PID-3(2).1":   "123456789",
			"PID-3(2).4":   "USSSA",
			"PID-5(1).1.1": "EVERYMAN",
			"PID-5(1).1.5": "Aniston",
			"PID-5(2).1.1": "Josh",
			"PID-7":        "198808181126+0215",
			"MSH-1":        "|",
			"MSH-2":        "^~\\&",
			"MSH-3":        "ADTApp",
			"MSH-4.2":      "2.16.840.1.122848.1.30",
			"MSH-9.3":      "ADT_A01",
			"PV1-14":       "NHS Provider-General (inc.A&E-this Hosp)",
			"EVN-1":        "A01",
			"ROL[2]-1":     "1",
			"ROL[3]-4.2":   "Phoeb",
			"OBX-5(2)":     "120",
		}},
		{"ADT01-23.hl7", 12, map[string]string{
			"PID-3.1":  "10006579",
			"PID-5.2":  "DONALD",
			"IN1[2]-2": "NON-PRIMARY",
			"IN1[3]-2": "SELF PAY",
			"IN1[4]-2": "",
			"EVN-2":    "20050110045502+0700",
			"MSH-7":    "20050110045504+0700",
			"MSH-9.3":  "",
			"DG1-3.2":  "OSTEOARTHROS NOS-L/LEG ",
		}},
		{"LRI_2.0-NG_CBC_Typ_Message.hl7", 33, map[string]string{
			"PID-5.1":    "Jones",
			"OBX-5":      "4.41",
			"MSH-12":     "2.5.1",
			"OBX[2]-3.1": "718-7",
		}},
		{"ORU-R01-01.hl7", 29, map[string]string{
			"MSH-3.2": "2.16.840.1.114222.4.3.3.5.1.2",
			"MSH-3.3": "ISO",
			"PID-5":   "Finn",
		}},
		{"PC1-Problem-Add-v2.3.1.hl7", 3, map[string]string{
			"MSH-12":  "2.3.1",
			"PRB-3.2": "BLADDER DYSFUNCTION",
			"PRB-13":  "ACTIVE",
			"PID-5.5": "MR.",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			m, err := Parse(readCorpus(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Segments) != tc.segments {
				t.Errorf("%d segments, want %d", len(m.Segments), tc.segments)
			}
			got := map[string]string{}
			for p := range tc.want {
				got[p] = m.Get(p)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
		})
	}
}
