// Package mllp is the Minimal Lower Layer Protocol transport for HL7 v2:
// a server that interface engines connect to (plain TCP or TLS, optionally
// mutual TLS), a client for tests and the bench, and the frame codec
// (0x0B <message> 0x1C 0x0D) underneath both.
//
// It frames bytes only. It never parses HL7 beyond finding MSH-10 (the
// message control id) for log lines, and it must never log message content:
// messages carry PHI, so log lines name the peer address, the connection
// id, byte counts and at most the control id.
package mllp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// The MLLP block characters.
const (
	StartBlock byte = 0x0B // VT: starts a frame
	EndBlock   byte = 0x1C // FS: ends a frame's content
	CR         byte = 0x0D // CR: follows EndBlock
)

// DefaultMaxFrameBytes is the default limit on one frame's content.
const DefaultMaxFrameBytes = 4 << 20

// maxOversizeHead bounds how much of an oversize frame is kept for
// OversizeError.Head: enough for the MSH segment a NAK is built from.
const maxOversizeHead = 64 << 10

// keepBuffer is the largest frame buffer a Reader keeps between frames.
const keepBuffer = 256 << 10

// ErrUnterminated is returned by Reader.Next when a frame grows past twice
// the limit without an end block: the stream is unusable and the
// connection must be closed.
var ErrUnterminated = errors.New("mllp: frame not terminated within twice the frame limit")

// ErrTruncated is returned by Reader.Next when the stream ends inside a
// frame (a start block without an end block).
var ErrTruncated = errors.New("mllp: stream ended inside a frame")

// OversizeError is returned by Reader.Next for a complete frame larger
// than the limit. The frame has been read and discarded up to its end
// block, so the stream is positioned at the next frame and reading may go
// on.
type OversizeError struct {
	Size  int64  // the frame's content length in bytes
	Limit int    // the limit it exceeded
	Head  []byte // the frame's first bytes (at most 64 KiB): the MSH segment, to build a NAK from
}

func (e *OversizeError) Error() string {
	return fmt.Sprintf("mllp: frame of %d bytes exceeds the limit of %d", e.Size, e.Limit)
}

// Stats counts the irregularities a Reader tolerated.
type Stats struct {
	Frames    uint64 // frames returned, oversize ones included
	Skipped   uint64 // bytes outside frames, dropped while looking for a start block
	Restarts  uint64 // frames abandoned because a second start block arrived before the end block
	MissingCR uint64 // end blocks not followed by CR
}

// Reader decodes MLLP frames from a byte stream.
//
// Its leniency, chosen to accept what real interface engines send while
// never merging two messages:
//   - bytes before a start block (including a stray CR or LF between
//     frames) are skipped and counted in Stats.Skipped;
//   - a start block inside a frame abandons the partial frame and starts a
//     new one (the sender evidently gave up on the first and is resending;
//     HL7 content never contains 0x0B), counted in Stats.Restarts;
//   - a frame ends at its end block: the CR that should follow is consumed
//     when it comes but is not waited for, so a sender that omits it (or
//     closes the connection right after 0x1C) still gets its frame handled;
//     a missing CR is counted in Stats.MissingCR.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	br    *bufio.Reader
	limit int
	frame []byte
	stats Stats
	// afterEnd is set after an end block until the byte after it has been
	// looked at (it should be the CR).
	afterEnd bool
	// framing is set when Next failed after a start block, before the
	// frame's end.
	framing bool
	// OnStart, when set, is called each time a start block is seen (the
	// server uses it to switch from the idle to the per-frame timeout).
	OnStart func()
}

// NewReader returns a Reader of frames of at most limit bytes (the default
// when limit <= 0) from r.
func NewReader(r io.Reader, limit int) *Reader {
	if limit <= 0 {
		limit = DefaultMaxFrameBytes
	}
	return &Reader{br: bufio.NewReaderSize(r, 32<<10), limit: limit}
}

// Stats returns the counts so far.
func (r *Reader) Stats() Stats { return r.stats }

// Next returns the next frame's content (without block characters). The
// slice is valid until the next call. Errors: io.EOF at a clean end of
// stream (between frames); ErrTruncated when it ends inside a frame;
// *OversizeError for a frame over the limit (reading may go on);
// ErrUnterminated (reading must stop); or the underlying read error.
func (r *Reader) Next() ([]byte, error) {
	r.framing = false
	if err := r.skipToStart(); err != nil {
		return nil, err
	}
	frame, err := r.readFrame()
	var oversize *OversizeError
	r.framing = err != nil && !errors.As(err, &oversize)
	return frame, err
}

// inFrame reports whether the last Next call was interrupted inside a frame.
func (r *Reader) inFrame() bool { return r.framing }

// skipToStart consumes bytes up to and including the next start block.
func (r *Reader) skipToStart() error {
	for {
		b, err := r.br.ReadByte()
		if err != nil {
			return err
		}
		if r.afterEnd {
			r.afterEnd = false
			if b == CR {
				continue
			}
			r.stats.MissingCR++
		}
		if b == StartBlock {
			if r.OnStart != nil {
				r.OnStart()
			}
			return nil
		}
		r.stats.Skipped++
	}
}

// readFrame reads after a start block up to the end block.
func (r *Reader) readFrame() ([]byte, error) {
	if cap(r.frame) > keepBuffer {
		r.frame = nil // a past large frame: do not pin its buffer per connection
	}
	r.frame = r.frame[:0]
	var size int64 // content bytes so far, kept or not
	oversize := false
	for {
		if r.br.Buffered() == 0 {
			if _, err := r.br.Peek(1); err != nil {
				if errors.Is(err, io.EOF) {
					return nil, ErrTruncated
				}
				return nil, err
			}
		}
		chunk, _ := r.br.Peek(r.br.Buffered())
		end := bytes.IndexByte(chunk, EndBlock)
		data := chunk
		if end >= 0 {
			data = chunk[:end]
		}
		if sb := bytes.IndexByte(data, StartBlock); sb >= 0 {
			// A new frame starts: drop the partial one.
			r.stats.Restarts++
			r.stats.Skipped += uint64(size) + uint64(sb)
			r.discard(sb + 1)
			if r.OnStart != nil {
				r.OnStart()
			}
			r.frame = r.frame[:0]
			size, oversize = 0, false
			continue
		}
		size += int64(len(data))
		if !oversize {
			if len(r.frame)+len(data) <= r.limit {
				r.frame = append(r.frame, data...)
			} else {
				oversize = true
				headCap := min(maxOversizeHead, r.limit)
				if len(r.frame) >= headCap {
					r.frame = r.frame[:headCap]
				} else {
					r.frame = append(r.frame, data[:min(len(data), headCap-len(r.frame))]...)
				}
			}
		}
		if oversize && size > 2*int64(r.limit) {
			r.discard(len(data))
			return nil, ErrUnterminated
		}
		if end < 0 {
			r.discard(len(data))
			continue
		}
		r.discard(end + 1)
		r.afterEnd = true
		r.stats.Frames++
		if oversize {
			head := bytes.Clone(r.frame)
			return nil, &OversizeError{Size: size, Limit: r.limit, Head: head}
		}
		// Look at a CR that has already arrived, so a frame's end is
		// consumed whole when the sender was conformant.
		if r.br.Buffered() > 0 {
			if b, _ := r.br.Peek(1); b[0] == CR {
				r.discard(1)
				r.afterEnd = false
			}
		}
		return r.frame, nil
	}
}

func (r *Reader) discard(n int) {
	// Discard of buffered bytes cannot fail.
	_, _ = r.br.Discard(n)
}

// AppendFrame appends msg framed as one MLLP frame to dst.
func AppendFrame(dst, msg []byte) []byte {
	dst = append(dst, StartBlock)
	dst = append(dst, msg...)
	return append(dst, EndBlock, CR)
}

// WriteFrame writes msg as one MLLP frame in a single Write.
func WriteFrame(w io.Writer, msg []byte) error {
	_, err := w.Write(AppendFrame(make([]byte, 0, len(msg)+3), msg))
	return err
}
