package hl7v2

import (
	"testing"
	"time"
)

// BenchmarkParseADT parses a typical ADT^A01: ADT-A01-02 (2.5 KB, 4
// segments) and the fuller ADT-A01-01 (8.5 KB, 24 segments).
func BenchmarkParseADT(b *testing.B) {
	for _, name := range []string{"ADT-A01-02.hl7", "ADT-A01-01.hl7"} {
		data := readCorpus(b, name)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := Parse(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkBuildACK(b *testing.B) {
	m, err := Parse(readCorpus(b, "ADT-A01-01.hl7"))
	if err != nil {
		b.Fatal(err)
	}
	errs := []AckError{{Segment: "PID", SegmentIndex: 1, Field: 7, Code: "102", Text: "PID-7 is not a valid date"}}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		BuildACK(m, "AE", errs, "ACK1", now)
	}
}
