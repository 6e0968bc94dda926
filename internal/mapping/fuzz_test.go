package mapping

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/fhirgate/fhirgate/internal/hl7v2"
)

// FuzzMap maps arbitrary messages that parse with the shipped mappings:
// every one is mapped or refused with a MapError, never a panic, and what
// is mapped has a type and an id on every resource. The seeds are whole
// corpus messages: run it with -fuzzminimizetime (make fuzz does), or the
// workers spend minutes minimizing each new input.
func FuzzMap(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "messages", "*.hl7"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("MSH|^~\\&|A|B|C|D|20240101||ADT^A01^ADT_A01|1|P|2.5\rPID|1||1^^^X^MR||Doe^Jane\rPV1|1|I\r"))
	f.Add([]byte("MSH|^~\\&|A|B|C|D|20240101||ORU^R01|2|P|2.5\rPID|1||2\rOBR|1\rOBX|1|NM|x||abc\r"))
	e, err := Load("../../mappings")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := hl7v2.Parse(raw)
		if err != nil || m.Segment("MSH") == nil {
			return
		}
		out, err := e.Map(m, "fuzz")
		if err != nil {
			var me *MapError
			if !errors.As(err, &me) {
				t.Fatalf("Map failed without a MapError: %v", err)
			}
			return
		}
		for i, r := range out.Resources {
			if r.Type == "" || r.ID == "" {
				t.Fatalf("resource %d has type %q id %q", i, r.Type, r.ID)
			}
		}
	})
}
