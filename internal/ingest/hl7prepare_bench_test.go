package ingest

import (
	"bytes"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/internal/hl7v2"
	"github.com/fhirgate/fhirgate/internal/mapping"
	"github.com/fhirgate/fhirgate/internal/validate"
)

var hl7Corpus = flag.String("hl7corpus", "../../../shared/corpus/hl7v2/messages", "folder of HL7 v2 sample messages (*.hl7)")

// benchTypes is the bench tool's default mllp mix.
var benchTypes = []string{"ADT^A01", "ADT^A03", "ADT^A04", "ADT^A08", "ORU^R01"}

// BenchmarkHL7Prepare is the gateway's own CPU per message before the
// database: parse, map, validate and index the corpus messages of the
// bench tool's ADT/ORU mix, one after another. With the database's work
// (BenchmarkHL7Intake, the bench tool's mllp phase) it tells where the
// time of a message goes.
func BenchmarkHL7Prepare(b *testing.B) {
	files, _ := filepath.Glob(filepath.Join(*hl7Corpus, "*.hl7"))
	if len(files) == 0 {
		b.Skipf("no HL7 v2 corpus in %s (-hl7corpus)", *hl7Corpus)
	}
	var msgs [][]byte
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		raw = bytes.ReplaceAll(bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\r")), []byte("\n"), []byte("\r"))
		for i, part := range bytes.Split(raw, []byte("\rMSH|")) {
			if i > 0 {
				part = append([]byte("MSH|"), part...)
			}
			m, err := hl7v2.Parse(part)
			if err != nil || m.Segment("MSH") == nil {
				continue
			}
			if slices.Contains(benchTypes, m.Get("MSH-9.1")+"^"+m.Get("MSH-9.2")) {
				msgs = append(msgs, part)
			}
		}
	}
	engine, err := mapping.Load("../../mappings")
	if err != nil {
		b.Fatal(err)
	}
	h := NewHL7(New(nil, validate.Resource), nil, engine, slog.New(slog.NewTextHandler(io.Discard, nil)))
	now := time.Now().UTC()
	resources := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		j, r := h.job(b.Context(), "bench", msgs[i%len(msgs)], now)
		if j == nil {
			b.Fatalf("message %d not mapped: %q", i%len(msgs), r.ack)
		}
		resources += len(j.out.Resources)
	}
	b.ReportMetric(float64(resources)/float64(b.N), "resources/msg")
}
