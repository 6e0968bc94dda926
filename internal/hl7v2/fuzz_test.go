package hl7v2

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// structure compares messages by segments and values only.
var structure = cmp.Options{
	cmpopts.IgnoreFields(Message{}, "Raw"),
	cmpopts.IgnoreFields(Segment{}, "Offset"),
}

// firstDifference returns the index of the first segment that differs
// between a and b (ignoring offsets), len of the shorter when one is a
// prefix of the other, or -1.
func firstDifference(a, b *Message) int {
	if a.Delims != b.Delims {
		return 0
	}
	for i := range min(len(a.Segments), len(b.Segments)) {
		x, y := a.Segments[i], b.Segments[i]
		if x.Name != y.Name || x.Index != y.Index || !reflect.DeepEqual(x.Fields, y.Fields) {
			return i
		}
	}
	if len(a.Segments) != len(b.Segments) {
		return min(len(a.Segments), len(b.Segments)) - 1
	}
	return -1
}

func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "corpus", "*.hl7"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("MSH|^~\\&#|A|B|C|D|20240101||ADT^A01|1|P|2.7\rPID|1||X\\P\\Y\\XE9\\\\.br\\"))
	f.Add([]byte("FHS|^~\\&\nBHS|^~\\&\nMSH|^~\\&|||||||ORU^R01|1|P|2.5\nBTS|1\nFTS|1"))
	now := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			pe, ok := err.(*ParseError)
			if !ok {
				t.Fatalf("Parse error is %T, want *ParseError", err)
			}
			_ = pe.Error()
			NAKForUnparseable(data, pe, "ACK1", now)
		} else {
			for _, p := range []string{"MSH-1", "MSH-2", "MSH-9.2", "PID-3(2).4.1", "PID[2]-3", "OBX-5(1).1.2"} {
				m.Get(p)
			}
			m.MessageType()
			BuildACK(m, "AE", []AckError{{Segment: "PID", SegmentIndex: 1, Field: 3, Code: "101", Text: "required"}}, "ACK1", now)
			again, err := Parse(m.Bytes())
			if err != nil {
				t.Fatalf("re-parse of encoded message: %v", err)
			}
			if i := firstDifference(m, again); i >= 0 {
				t.Fatalf("parse(encode(parse(x))) differs at segment %d (-want +got):\n%s", i, cmp.Diff(m.Segments[i], again.Segments[i], structure))
			}
		}
		if msgs, err := ParseBatch(data); err == nil {
			for _, m := range msgs {
				m.Get("MSH-10")
			}
		} else if _, ok := err.(*ParseError); !ok {
			t.Fatalf("ParseBatch error is %T, want *ParseError", err)
		}
		if ts, prec, err := ParseTS(string(data), nil); err == nil {
			FormatFHIR(ts, prec)
		}
	})
}
