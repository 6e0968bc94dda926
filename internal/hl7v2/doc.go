// Package hl7v2 parses HL7 version 2 messages in the ER7 ("pipe and hat")
// encoding and builds the acknowledgements a receiver sends back.
//
// It reads the encoding characters each message declares in MSH-1/MSH-2,
// splits segments (CR, LF or CRLF), fields, repetitions, components and
// subcomponents, and unescapes values once at parse time so callers see plain
// text. Path accessors (Message.Get "PID-3(2).4.1") and a structured view
// (Segment, Field, Rep, Comp) serve the mapping layer; BuildACK and
// NAKForUnparseable build original- and enhanced-mode acknowledgements;
// ParseTS reads HL7 TS/DTM values with their precision.
//
// Messages carry PHI. The package never logs, and its errors never quote,
// message content: a *ParseError names a segment, a field number and a byte
// offset, never a value. It never panics on any input, bounds the work it
// does per message (MaxSegments, MaxFields, ...) and runs in time linear in
// the input size. MLLP framing is the transport's concern, not this
// package's.
package hl7v2
