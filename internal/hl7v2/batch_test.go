package hl7v2

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseBatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		data string
		ids  []string
		segs []int
	}{
		{
			name: "FHS/BHS envelope",
			data: "FHS|^~\\&|APP\rBHS|^~\\&|APP\rMSH|^~\\&|||||||ADT^A01|M1|P|2.5\rPID|1\rMSH|^~\\&|||||||ADT^A08|M2|P|2.5\rPID|2\rEVN|A08\rBTS|2\rFTS|1\r",
			ids:  []string{"M1", "M2"},
			segs: []int{2, 3},
		},
		{
			name: "BHS only, LF terminators",
			data: "BHS|^~\\&\nMSH|^~\\&|||||||ORU^R01|X|P|2.3\nOBX|1\nBTS|1\n",
			ids:  []string{"X"},
			segs: []int{2},
		},
		{
			name: "concatenated messages with blank lines and a BOM",
			data: "\xef\xbb\xbfMSH|^~\\&|||||||ADT^A01|A|P|2.5\r\n\r\nMSH#^~\\&#######ADT^A01#B#P#2.4\r\nPID#x|y\r\n\r\n",
			ids:  []string{"A", "B"},
			segs: []int{1, 2},
		},
		{
			name: "empty batch",
			data: "FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1",
			ids:  []string{},
			segs: []int{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			msgs, err := ParseBatch([]byte(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			ids, segs := []string{}, []int{}
			for _, m := range msgs {
				ids = append(ids, m.ControlID())
				segs = append(segs, len(m.Segments))
			}
			if diff := cmp.Diff(tc.ids, ids); diff != "" {
				t.Errorf("control IDs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.segs, segs); diff != "" {
				t.Errorf("segment counts (-want +got):\n%s", diff)
			}
		})
	}
	// A batch of one message parses like Parse.
	data := readCorpus(t, "ORU-R01-01.hl7")
	one, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := ParseBatch(data)
	if err != nil || len(msgs) != 1 || firstDifference(one, msgs[0]) >= 0 {
		t.Errorf("ParseBatch of one message = %d messages, %v", len(msgs), err)
	}
}

func TestParseBatchErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		data string
		want ParseError
	}{
		{"empty", "\r\n", ParseError{Reason: "empty batch"}},
		{"bad start", "PID|1\rMSH|^~\\&", ParseError{Reason: "batch does not start with an FHS, BHS or MSH segment"}},
		{"segment outside a message", "FHS|^~\\&\rPID|1", ParseError{SegmentIndex: 1, Offset: 9, Reason: "segment outside a message (expected MSH, FHS, BHS, BTS or FTS)"}},
		{"segment after the trailer", "BHS|^~\\&\rMSH|^~\\&\rBTS|1\rOBX|1", ParseError{SegmentIndex: 3, Offset: 24, Reason: "segment outside a message (expected MSH, FHS, BHS, BTS or FTS)"}},
		// The second message starts at byte 11; its PID at 20, the escape at 26.
		{"error in the second message", "MSH|^~\\&|A\rMSH|^~\\&\rPID|1|\\", ParseError{Segment: "PID", SegmentIndex: 1, Field: 2, Offset: 26, Reason: "escape sequence never ends"}},
		{"bad delimiters in a message", "FHS|^~\\&\rMSH|^^\\&", ParseError{Segment: "MSH", Field: 2, Offset: 14, Reason: "duplicate encoding character in MSH-2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseBatch([]byte(tc.data))
			pe, ok := err.(*ParseError)
			if !ok {
				t.Fatalf("error = %v (%T), want *ParseError", err, err)
			}
			if diff := cmp.Diff(tc.want, *pe); diff != "" {
				t.Errorf("ParseError (-want +got):\n%s", diff)
			}
		})
	}
}
