package mllp

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

// frameResult is one Reader.Next outcome, comparable with cmp.
type frameResult struct {
	Frame    string
	Oversize int64  // size of an oversize frame
	Err      string // other errors
}

func readAll(r *Reader) []frameResult {
	var out []frameResult
	for range 1000 {
		f, err := r.Next()
		var ov *OversizeError
		switch {
		case err == nil:
			out = append(out, frameResult{Frame: string(f)})
		case errors.As(err, &ov):
			out = append(out, frameResult{Oversize: ov.Size, Frame: string(ov.Head)})
		case errors.Is(err, io.EOF):
			return out
		default:
			return append(out, frameResult{Err: err.Error()})
		}
	}
	panic("reader made no progress")
}

func TestReader(t *testing.T) {
	t.Parallel()
	const vt, fs, cr = "\x0b", "\x1c", "\r"
	tests := []struct {
		name      string
		in        string
		limit     int
		want      []frameResult
		wantStats Stats
	}{
		{name: "one frame", in: vt + "MSH|a" + fs + cr, want: []frameResult{{Frame: "MSH|a"}}, wantStats: Stats{Frames: 1}},
		{name: "empty stream", in: "", wantStats: Stats{}},
		{name: "two frames back to back", in: vt + "a" + fs + cr + vt + "b" + fs + cr,
			want: []frameResult{{Frame: "a"}, {Frame: "b"}}, wantStats: Stats{Frames: 2}},
		{name: "segments keep their CRs", in: vt + "MSH|x\rPID|y\r" + fs + cr, want: []frameResult{{Frame: "MSH|x\rPID|y\r"}}, wantStats: Stats{Frames: 1}},
		{name: "garbage before start", in: "junk\r\n" + vt + "a" + fs + cr, want: []frameResult{{Frame: "a"}}, wantStats: Stats{Frames: 1, Skipped: 6}},
		{name: "newline between frames is skipped", in: vt + "a" + fs + cr + "\n" + vt + "b" + fs + cr,
			want: []frameResult{{Frame: "a"}, {Frame: "b"}}, wantStats: Stats{Frames: 2, Skipped: 1}},
		{name: "second start block restarts", in: vt + "partial" + vt + "whole" + fs + cr,
			want: []frameResult{{Frame: "whole"}}, wantStats: Stats{Frames: 1, Skipped: 7, Restarts: 1}},
		{name: "end block without CR", in: vt + "a" + fs + vt + "b" + fs + cr,
			want: []frameResult{{Frame: "a"}, {Frame: "b"}}, wantStats: Stats{Frames: 2, MissingCR: 1}},
		{name: "end block then other byte", in: vt + "a" + fs + "x" + vt + "b" + fs + cr,
			want: []frameResult{{Frame: "a"}, {Frame: "b"}}, wantStats: Stats{Frames: 2, Skipped: 1, MissingCR: 1}},
		{name: "end block at end of stream", in: vt + "a" + fs, want: []frameResult{{Frame: "a"}}, wantStats: Stats{Frames: 1}},
		{name: "truncated frame", in: vt + "abc", want: []frameResult{{Err: ErrTruncated.Error()}}},
		{name: "empty frame", in: vt + fs + cr, want: []frameResult{{Frame: ""}}, wantStats: Stats{Frames: 1}},
		{name: "frame at the limit", in: vt + "12345" + fs + cr, limit: 5, want: []frameResult{{Frame: "12345"}}, wantStats: Stats{Frames: 1}},
		{name: "oversize then next frame", in: vt + "1234567" + fs + cr + vt + "ok" + fs + cr, limit: 5,
			want: []frameResult{{Oversize: 7, Frame: "12345"}, {Frame: "ok"}}, wantStats: Stats{Frames: 2}},
		{name: "oversize at twice the limit is still answered", in: vt + "1234567890" + fs + cr, limit: 5,
			want: []frameResult{{Oversize: 10, Frame: "12345"}}, wantStats: Stats{Frames: 1}},
		{name: "unterminated past twice the limit", in: vt + "12345678901" + fs + cr, limit: 5,
			want: []frameResult{{Err: ErrUnterminated.Error()}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Whole, and one byte per Read: the outcome must not depend
			// on how the stream is cut.
			for _, src := range []io.Reader{strings.NewReader(tt.in), iotest.OneByteReader(strings.NewReader(tt.in))} {
				r := NewReader(src, tt.limit)
				got := readAll(r)
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("frames (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(tt.wantStats, r.Stats()); diff != "" {
					t.Errorf("stats (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestReaderOnStart(t *testing.T) {
	t.Parallel()
	r := NewReader(strings.NewReader("\x0ba\x0bb\x1c\r\x0bc\x1c\r"), 0)
	starts := 0
	r.OnStart = func() { starts++ }
	readAll(r)
	if starts != 3 {
		t.Errorf("OnStart called %d times, want 3", starts)
	}
}

func TestAppendFrameRoundTrip(t *testing.T) {
	t.Parallel()
	msgs := []string{"MSH|^~\\&|A|B\rPID|1\r", "", strings.Repeat("x", 100000)}
	var buf bytes.Buffer
	for _, m := range msgs {
		if err := WriteFrame(&buf, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, f := range readAll(NewReader(&buf, 0)) {
		got = append(got, f.Frame)
	}
	if diff := cmp.Diff(msgs, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestControlID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, msg, want string
	}{
		{"standard", "MSH|^~\\&|App|Fac|GW|GWF|20240101||ADT^A01^ADT_A01|MSG00001|P|2.5\rPID|1", "MSG00001"},
		{"last field of a short MSH", "MSH|^~\\&|a|b|c|d|e|f|ADT^A01|CTL9", "CTL9"},
		{"LF terminator", "MSH|^~\\&|a|b|c|d|e|f|ADT^A01|X1|P\nPID|1|||SECRET", "X1"},
		{"BOM", "\xef\xbb\xbfMSH|^~\\&|a|b|c|d|e|f|ADT^A01|X2|P", "X2"},
		{"other separator", "MSH#^~\\&#a#b#c#d#e#f#ADT^A01#X3#P", "X3"},
		{"too few fields", "MSH|^~\\&|a|b|c\rPID|1|2|3|4|5|6|7|8|9|10", ""},
		{"empty control id", "MSH|^~\\&|a|b|c|d|e|f|ADT^A01||P", ""},
		{"not MSH", "PID|1|2|3|4|5|6|7|8|9|10|11", ""},
		{"control characters refused", "MSH|^~\\&|a|b|c|d|e|f|ADT^A01|A\x1bB|P", ""},
		{"long id truncated", "MSH|^~\\&|a|b|c|d|e|f|ADT^A01|" + strings.Repeat("9", 100) + "|P", strings.Repeat("9", 64)},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := ControlID([]byte(tt.msg)); got != tt.want {
				t.Errorf("ControlID(%q) = %q, want %q", tt.msg, got, tt.want)
			}
		})
	}
}

// FuzzFrameReader checks that the decoder never panics, never returns a
// frame over its limit or holding a block character, always makes progress,
// and decodes what AppendFrame encodes.
func FuzzFrameReader(f *testing.F) {
	f.Add([]byte("\x0bMSH|a\x1c\r"), uint16(16))
	f.Add([]byte("junk\x0ba\x0bb\x1c\x0bc\x1c\rx"), uint16(4))
	f.Add([]byte("\x0b1234567890\x1c\r\x0bok\x1c\r"), uint16(3))
	f.Add([]byte("\x0b\x0b\x1c\x1c\r\r\x0b"), uint16(1))
	f.Fuzz(func(t *testing.T, data []byte, limit16 uint16) {
		limit := int(limit16%512) + 1
		r := NewReader(iotest.HalfReader(bytes.NewReader(data)), limit)
		for calls := 0; ; calls++ {
			if calls > len(data)+1 {
				t.Fatalf("no progress after %d calls on %d bytes", calls, len(data))
			}
			fr, err := r.Next()
			var ov *OversizeError
			if errors.As(err, &ov) {
				if ov.Size <= int64(limit) || len(ov.Head) > limit {
					t.Fatalf("oversize error for %d bytes (head %d) with limit %d", ov.Size, len(ov.Head), limit)
				}
				continue
			}
			if err != nil {
				break
			}
			if len(fr) > limit {
				t.Fatalf("frame of %d bytes over the limit %d", len(fr), limit)
			}
			if bytes.ContainsAny(fr, "\x0b\x1c") {
				t.Fatalf("frame %q holds a block character", fr)
			}
		}

		// Content without block characters round-trips.
		msg := bytes.Clone(data)
		for i, c := range msg {
			if c == StartBlock || c == EndBlock {
				msg[i] = 'x'
			}
		}
		if len(msg) > limit {
			msg = msg[:limit]
		}
		got, err := NewReader(bytes.NewReader(AppendFrame(nil, msg)), limit).Next()
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("round trip of %q = %q, %v", msg, got, err)
		}
	})
}
