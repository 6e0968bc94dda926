package mllp

import "bytes"

// maxControlID bounds the control id put in a log line.
const maxControlID = 64

// ControlID returns MSH-10 (the message control id) of msg, or "" when msg
// does not start with an MSH segment that has one. It scans the first
// segment only, without parsing HL7, and returns at most 64 printable
// ASCII characters, so the result is safe to log: the control id is the
// one piece of a message that identifies it without carrying PHI.
func ControlID(msg []byte) string {
	msg = bytes.TrimPrefix(msg, []byte("\xef\xbb\xbf"))
	msg = bytes.TrimLeft(msg, "\r\n\t ")
	if len(msg) < 4 || !bytes.HasPrefix(msg, []byte("MSH")) {
		return ""
	}
	sep := msg[3]
	if sep == '\r' || sep == '\n' {
		return ""
	}
	if i := bytes.IndexAny(msg, "\r\n"); i >= 0 {
		msg = msg[:i]
	}
	// The separator after "MSH" is MSH-1; the text after the n-th
	// separator is MSH-(n+1), so MSH-10 follows the 9th.
	rest := msg[4:]
	for range 8 {
		i := bytes.IndexByte(rest, sep)
		if i < 0 {
			return ""
		}
		rest = rest[i+1:]
	}
	if i := bytes.IndexByte(rest, sep); i >= 0 {
		rest = rest[:i]
	}
	if len(rest) > maxControlID {
		rest = rest[:maxControlID]
	}
	for _, c := range rest {
		if c < 0x20 || c > 0x7e {
			return ""
		}
	}
	return string(rest)
}
