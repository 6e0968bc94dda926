package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fhirgate/fhirgate/internal/mllp"
)

// DefaultMLLPTypes are the HL7 v2 message types (MSH-9.1^MSH-9.2) the mllp
// phase sends unless told otherwise: the ones the gateway maps.
var DefaultMLLPTypes = []string{"ADT^A01", "ADT^A03", "ADT^A04", "ADT^A08", "ORU^R01"}

// hl7Template is one corpus message ready to be resent with a fresh MSH-10.
type hl7Template struct {
	file   string
	typ    string // MSH-9.1^MSH-9.2
	prefix []byte // up to and including the separator before MSH-10
	suffix []byte // from the end of MSH-10 to the end of the message
	// idEnds are offsets in suffix where an identifier's first component
	// ends (patient, visit and order numbers): build appends the control
	// id there, so every message is about its own patient, visit and
	// orders, as in real traffic, instead of all messages updating the
	// same few resources.
	idEnds []int
}

// identifierFields are the fields whose identifiers build makes unique.
var identifierFields = map[string][]int{
	"PID": {2, 3, 4, 18, 21}, "PV1": {19, 50, 54}, "MRG": {1, 2, 3}, "ORC": {2, 3}, "OBR": {2, 3},
	"TXA": {12, 14, 15, 16}, "SCH": {1, 2}, "SPM": {2, 3}, "IN1": {2}, "GT1": {2}, "RF1": {6, 11},
}

// pairFields are identifier fields of type EIP (placer^filler): both
// identifiers are made unique, not only the first component.
var pairFields = map[string]int{"SPM": 2}

func (t *hl7Template) build(dst []byte, controlID string) []byte {
	dst = append(dst, t.prefix...)
	dst = append(dst, controlID...)
	last := 0
	for _, at := range t.idEnds {
		dst = append(dst, t.suffix[last:at]...)
		dst = append(dst, '-')
		dst = append(dst, controlID...)
		last = at
	}
	return append(dst, t.suffix[last:]...)
}

// appendEnd records the end of an identifier starting at start, if it
// is not empty.
func appendEnd(out []int, start, length int) []int {
	if length > 0 {
		out = append(out, start+length)
	}
	return out
}

// findIdentifierEnds records, for each repetition of the identifier
// fields in the segments after MSH, where its first component ends.
func findIdentifierEnds(rest []byte, sep, comp, rep, sub byte) []int {
	var out []int
	pos := 0
	for _, seg := range bytes.Split(rest, []byte{'\r'}) {
		start := pos
		pos += len(seg) + 1
		if len(seg) < 4 {
			continue
		}
		fields, ok := identifierFields[string(seg[:3])]
		if !ok || len(fields) == 0 {
			continue
		}
		want := map[int]bool{}
		for _, f := range fields {
			want[f] = true
		}
		n, fstart := 0, 0
		for i := 0; i <= len(seg); i++ {
			if i < len(seg) && seg[i] != sep {
				continue
			}
			if n > 0 && want[n] {
				field := seg[fstart:i]
				rs := 0
				for j := 0; j <= len(field); j++ {
					if j < len(field) && field[j] != rep {
						continue
					}
					r := field[rs:j]
					pair := pairFields[string(seg[:3])] == n
					end := bytes.IndexByte(r, comp)
					if end < 0 {
						end = len(r)
					}
					if pair {
						// EIP: the placer's and the filler's identifiers,
						// each the first subcomponent of its component.
						if e := bytes.IndexByte(r[:end], sub); e >= 0 {
							out = appendEnd(out, start+fstart+rs, e)
						} else {
							out = appendEnd(out, start+fstart+rs, end)
						}
						if end < len(r) {
							second := r[end+1:]
							e := bytes.IndexAny(second, string([]byte{comp, sub}))
							if e < 0 {
								e = len(second)
							}
							out = appendEnd(out, start+fstart+rs+end+1, e)
						}
					} else {
						out = appendEnd(out, start+fstart+rs, end)
					}
					rs = j + 1
				}
			}
			n++
			fstart = i + 1
		}
	}
	return out
}

// loadHL7Corpus reads the *.hl7 files of dir (several messages per file
// allowed; LF, CRLF or CR segment ends; a UTF-8 BOM ignored) and keeps the
// messages whose type is in types ("*" for all).
func loadHL7Corpus(dir string, types []string) ([]*hl7Template, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.hl7"))
	if err != nil {
		return nil, fmt.Errorf("bench: -mllp-corpus: %w", err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("bench: -mllp-corpus: no *.hl7 file in %s", dir)
	}
	sort.Strings(paths)
	all := slices.Contains(types, "*")
	var out []*hl7Template
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("bench: -mllp-corpus: %w", err)
		}
		for i, msg := range splitHL7(data) {
			t, err := newHL7Template(msg)
			if err != nil {
				return nil, fmt.Errorf("bench: -mllp-corpus: %s message %d: %w", filepath.Base(p), i+1, err)
			}
			t.file = filepath.Base(p)
			if all || slices.Contains(types, t.typ) {
				out = append(out, t)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench: -mllp-corpus: no message of types %s in %s", strings.Join(types, ","), dir)
	}
	return out, nil
}

// splitHL7 normalises segment ends to CR and cuts data at each MSH
// segment.
func splitHL7(data []byte) [][]byte {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\r"))
	data = bytes.ReplaceAll(data, []byte("\n"), []byte("\r"))
	var msgs [][]byte
	var cur []byte
	for _, seg := range bytes.Split(data, []byte("\r")) {
		if len(bytes.TrimSpace(seg)) == 0 {
			continue
		}
		if bytes.HasPrefix(seg, []byte("MSH")) && cur != nil {
			msgs = append(msgs, cur)
			cur = nil
		}
		cur = append(append(cur, seg...), '\r')
	}
	if cur != nil {
		msgs = append(msgs, cur)
	}
	return msgs
}

// newHL7Template finds MSH-9 and MSH-10 in msg's first segment by counting
// field separators (no HL7 parse: the bench only rewrites one field).
func newHL7Template(msg []byte) (*hl7Template, error) {
	if len(msg) < 8 || !bytes.HasPrefix(msg, []byte("MSH")) {
		return nil, errors.New("does not start with an MSH segment")
	}
	sep, comp := msg[3], msg[4]
	end := bytes.IndexByte(msg, '\r')
	msh := msg[:end]
	// Offsets of the field separators; MSH-n follows the (n-1)-th.
	var seps []int
	for i := 3; i < len(msh); i++ {
		if msh[i] == sep {
			seps = append(seps, i)
		}
	}
	if len(seps) < 8 {
		return nil, errors.New("MSH has no MSH-9 (message type)")
	}
	fieldEnd := func(k int) int { // end of the field after the k-th separator (1-based)
		if k < len(seps) {
			return seps[k]
		}
		return len(msh)
	}
	msgType := msh[seps[7]+1 : fieldEnd(8)]
	parts := bytes.SplitN(msgType, []byte{comp}, 3)
	if len(parts) < 2 || len(parts[0]) == 0 || len(parts[1]) == 0 {
		return nil, errors.New("MSH-9 lacks the message code or trigger event")
	}
	t := &hl7Template{typ: string(parts[0]) + "^" + string(parts[1])}
	if len(seps) >= 9 {
		t.prefix = bytes.Clone(msh[:seps[8]+1])
		t.suffix = bytes.Clone(msg[fieldEnd(9):])
	} else {
		// MSH ends at MSH-9: add the separator before MSH-10.
		t.prefix = append(bytes.Clone(msh), sep)
		t.suffix = bytes.Clone(msg[end:])
	}
	if rest := bytes.IndexByte(t.suffix, '\r'); rest >= 0 && len(msh) > 7 {
		for _, at := range findIdentifierEnds(t.suffix[rest+1:], sep, comp, msh[5], msh[7]) {
			t.idEnds = append(t.idEnds, rest+1+at)
		}
	}
	return t, nil
}

// scanMSA returns MSA-1 (the acknowledgment code) and MSA-2 (the control
// id acknowledged) of an ACK, by scanning for its MSA segment.
func scanMSA(ack []byte) (code, controlID string, ok bool) {
	for len(ack) > 0 {
		seg := ack
		if i := bytes.IndexAny(ack, "\r\n"); i >= 0 {
			seg, ack = ack[:i], ack[i+1:]
		} else {
			ack = nil
		}
		if len(seg) < 4 || !bytes.HasPrefix(seg, []byte("MSA")) {
			continue
		}
		f := bytes.Split(seg[4:], seg[3:4])
		code = string(f[0])
		if len(f) > 1 {
			controlID = string(f[1])
		}
		return code, controlID, code != ""
	}
	return "", "", false
}

// newRunTag returns a short tag unique to this run, so control ids never
// repeat across runs (the gateway deduplicates on them).
func newRunTag() string {
	n, err := rand.Int(rand.Reader, big.NewInt(36*36))
	if err != nil {
		n = big.NewInt(0)
	}
	r := strconv.FormatInt(n.Int64(), 36)
	if len(r) < 2 {
		r = "0" + r
	}
	return strconv.FormatInt(time.Now().Unix(), 36) + r
}

// mllpWorkerDialFailures is how many dial failures in a row make a worker
// stop: a refusing endpoint must not be hammered.
const mllpWorkerDialFailures = 3

// mllpPhase sends cfg.MLLPMessages corpus messages over cfg.workers(mllp)
// connections, each with a fresh control id, and checks each ACK names it.
func (r *runner) mllpPhase(ctx context.Context, corpus []*hl7Template) *PhaseReport {
	p := &PhaseReport{Errors: map[int]uint64{}, Latency: &Histogram{}, AckCodes: map[string]uint64{}}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Duration)
	defer cancel()
	deadline, _ := ctx.Deadline()
	// over reports the phase's end; a connection deadline derived from it
	// can fire a moment before ctx reports it.
	over := func() bool { return ctx.Err() != nil || !time.Now().Before(deadline) }
	workers := r.cfg.workers(PhaseMLLP)
	p.Connections = workers
	m := r.startMeter(PhaseMLLP, "messages")
	tag := newRunTag()
	var next atomic.Int64
	var mu sync.Mutex
	var wrongID, gaveUp, cut uint64
	var dialErr error
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &Histogram{}
			codes := map[string]uint64{}
			var sent, transport, wrong, cutHere uint64
			var client *mllp.Client
			defer func() {
				if client != nil {
					client.Close()
				}
			}()
			var buf []byte
			dialFailures := 0
			for ctx.Err() == nil {
				seq := next.Add(1)
				if seq > int64(r.cfg.MLLPMessages) {
					break
				}
				if client == nil {
					dctx, dcancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
					c, err := mllp.Dial(dctx, r.cfg.MLLPAddr, nil)
					dcancel()
					if err != nil {
						if over() {
							break
						}
						transport++
						m.errs.Add(1)
						if dialFailures++; dialFailures >= mllpWorkerDialFailures {
							mu.Lock()
							gaveUp++
							dialErr = err
							mu.Unlock()
							break
						}
						continue
					}
					client, dialFailures = c, 0
				}
				t := corpus[int(seq-1)%len(corpus)]
				id := "FG" + tag + "-" + strconv.FormatInt(seq, 10)
				buf = t.build(buf[:0], id)
				sctx, scancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
				t0 := time.Now()
				reply, err := client.Send(sctx, buf)
				d := time.Since(t0)
				scancel()
				if err != nil && over() {
					cutHere++ // sent, but the phase's time is up: not the server's failure
					break
				}
				h.Record(d)
				sent++
				m.n.Add(1)
				if err != nil {
					transport++
					m.errs.Add(1)
					client.Close()
					client = nil
					continue
				}
				code, ackID, ok := scanMSA(reply)
				switch {
				case !ok:
					transport++
					m.errs.Add(1)
				case ackID != id:
					wrong++
					m.errs.Add(1)
				default:
					codes[code]++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			p.Latency.Merge(h)
			p.Requests += sent
			if transport+wrong > 0 {
				p.Errors[0] += transport + wrong
			}
			wrongID += wrong
			cut += cutHere
			for c, n := range codes {
				p.AckCodes[c] += n
			}
		}()
	}
	wg.Wait()
	m.stop()
	p.Elapsed = time.Since(start)
	for c, n := range p.AckCodes {
		if c == "AA" || c == "CA" {
			p.Acknowledged += n
		}
	}
	p.Rate = float64(p.Requests) / p.Elapsed.Seconds()
	p.Unanswered = cut
	if wrongID > 0 {
		p.Mismatches = append(p.Mismatches, fmt.Sprintf("%d ACKs acknowledged another control id than the message's", wrongID))
	}
	if gaveUp > 0 {
		p.Mismatches = append(p.Mismatches, fmt.Sprintf("%d of %d connections gave up after %d failed dials: %v", gaveUp, workers, mllpWorkerDialFailures, dialErr))
	}
	var refused []string
	for _, c := range sortedKeys(p.AckCodes) {
		if c != "AA" && c != "CA" {
			refused = append(refused, fmt.Sprintf("%s %d", c, p.AckCodes[c]))
		}
	}
	if len(refused) > 0 {
		p.Mismatches = append(p.Mismatches, "messages not accepted: "+strings.Join(refused, ", "))
	}
	if p.Requests < uint64(r.cfg.MLLPMessages) && over() {
		p.Note = fmt.Sprintf("stopped by -duration %s after %d of %d messages", r.cfg.Duration, p.Requests, r.cfg.MLLPMessages)
	}
	return p
}

func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func writeMLLPSummary(w io.Writer, p *PhaseReport) {
	fmt.Fprintf(w, "mllp: %d messages over %d connections in %.1fs: %.0f messages/s, %d accepted (AA/CA)\n",
		p.Requests, p.Connections, p.Elapsed.Seconds(), p.Rate, p.Acknowledged)
	if p.Note != "" {
		fmt.Fprintf(w, "  %s\n", p.Note)
	}
	fmt.Fprintf(w, "  ACK latency: %s\n", latencyLine(p.Latency))
	var codes []string
	for _, c := range sortedKeys(p.AckCodes) {
		codes = append(codes, fmt.Sprintf("%s: %d", c, p.AckCodes[c]))
	}
	if len(codes) == 0 {
		codes = []string{"none"}
	}
	fmt.Fprintf(w, "  ACK codes: %s\n", strings.Join(codes, ", "))
}
