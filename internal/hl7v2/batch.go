package hl7v2

import "bytes"

// ParseBatch parses a batch file (FHS/BHS ... BTS/FTS around messages) or
// several MSH messages back to back. Envelope segments (FHS, BHS, BTS, FTS)
// are checked for a well-formed name and otherwise skipped; every MSH starts
// a new message, parsed as Parse would. An envelope with no messages gives
// an empty slice. Error offsets are relative to data; SegmentIndex is
// relative to the failing message.
func ParseBatch(data []byte) ([]*Message, error) {
	skip := 0
	if bytes.HasPrefix(data, bom) {
		skip = len(bom)
	}
	lines := splitLines(data[skip:], skip, len(data))
	if len(lines) == 0 {
		return nil, &ParseError{Reason: "empty batch"}
	}
	msgs := []*Message{}
	start := -1 // offset of the current message's MSH
	flush := func(end int) error {
		if start < 0 {
			return nil
		}
		m, err := parseMessage(data[start:end], start)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
		start = -1
		return nil
	}
	for i, l := range lines {
		seg := data[l.orig : l.orig+(l.end-l.start)]
		name := ""
		if len(seg) >= 3 && (len(seg) == 3 || !isUpperAlnum(seg[3])) {
			name = string(seg[:3])
		}
		switch name {
		case "MSH":
			if err := flush(l.orig); err != nil {
				return nil, err
			}
			start = l.orig
		case "FHS", "BHS", "BTS", "FTS":
			if err := flush(l.orig); err != nil {
				return nil, err
			}
		default:
			if start < 0 {
				reason := "segment outside a message (expected MSH, FHS, BHS, BTS or FTS)"
				if i == 0 {
					reason = "batch does not start with an FHS, BHS or MSH segment"
				}
				return nil, &ParseError{SegmentIndex: i, Offset: l.orig, Reason: reason}
			}
		}
	}
	if err := flush(len(data)); err != nil {
		return nil, err
	}
	return msgs, nil
}
