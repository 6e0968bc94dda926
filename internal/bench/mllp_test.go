package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fhirgate/fhirgate/internal/mllp"
)

const (
	hl7ADT = "\xef\xbb\xbfMSH|^~\\&|App|Fac|GW|GWF|20240101||ADT^A01^ADT_A01|ORIG1|P|2.5\nEVN|A01|20240101\nPID|1||MRN1^^^H^MR||DOE^JANE\n"
	hl7ORU = "MSH|^~\\&|Lab|Fac|GW|GWF|20240101||ORU^R01|ORIG2|P|2.3\r\nPID|1||MRN2\r\nOBX|1|NM|GLU||5.5\r\n"
	hl7SIU = "MSH|^~\\&|Sch|Fac|GW|GWF|20240101||SIU^S12^SIU_S12|ORIG3|P|2.5\rSCH|1\r"
)

// hl7Corpus writes a corpus of ADT^A01, ORU^R01 and SIU^S12 messages, the
// last two in one file.
func hl7Corpus(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{"adt.hl7": hl7ADT, "two.hl7": hl7ORU + hl7SIU, "notes.txt": "not a message"}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadHL7Corpus(t *testing.T) {
	t.Parallel()
	dir := hl7Corpus(t)
	tests := []struct {
		name    string
		types   []string
		want    []string // file:type
		wantErr string
	}{
		{name: "defaults", types: DefaultMLLPTypes, want: []string{"adt.hl7:ADT^A01", "two.hl7:ORU^R01"}},
		{name: "all", types: []string{"*"}, want: []string{"adt.hl7:ADT^A01", "two.hl7:ORU^R01", "two.hl7:SIU^S12"}},
		{name: "one type", types: []string{"SIU^S12"}, want: []string{"two.hl7:SIU^S12"}},
		{name: "none matching", types: []string{"MDM^T02"}, wantErr: "no message of types MDM^T02"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := loadHL7Corpus(dir, tt.types)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, m := range got {
				names = append(names, m.file+":"+m.typ)
			}
			if diff := cmp.Diff(tt.want, names); diff != "" {
				t.Errorf("messages (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := loadHL7Corpus(t.TempDir(), DefaultMLLPTypes); err == nil || !strings.Contains(err.Error(), "no *.hl7 file") {
		t.Errorf("empty directory: error = %v, want no *.hl7 file", err)
	}
}

// TestLoadSharedHL7Corpus loads the project's HL7 v2 corpus with the
// default types, when it is present.
func TestLoadSharedHL7Corpus(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "..", "..", "shared", "corpus", "hl7v2", "messages")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("no shared corpus: %v", err)
	}
	got, err := loadHL7Corpus(dir, DefaultMLLPTypes)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range got {
		msg := m.build(nil, "NEWID")
		if !bytes.HasPrefix(msg, []byte("MSH")) || bytes.ContainsAny(msg, "\n") || mllp.ControlID(msg) != "NEWID" {
			t.Errorf("%s: rebuilt message does not start with MSH, has LF, or MSH-10 is %q", m.file, mllp.ControlID(msg))
		}
	}
}

func TestHL7Template(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		msg      string
		wantType string
		want     string // the message rebuilt with control id NEW
		wantErr  string
	}{
		{name: "MSH-10 in the middle", msg: "MSH|^~\\&|a|b|c|d|e||ADT^A08|OLD|P|2.5\rPID|1\r",
			wantType: "ADT^A08", want: "MSH|^~\\&|a|b|c|d|e||ADT^A08|NEW|P|2.5\rPID|1\r"},
		{name: "MSH-10 last", msg: "MSH|^~\\&|a|b|c|d|e||ORU^R01^ORU_R01|OLD\rOBX|1\r",
			wantType: "ORU^R01", want: "MSH|^~\\&|a|b|c|d|e||ORU^R01^ORU_R01|NEW\rOBX|1\r"},
		{name: "MSH ends at MSH-9", msg: "MSH|^~\\&|a|b|c|d|e||ADT^A03\rPV1|1\r",
			wantType: "ADT^A03", want: "MSH|^~\\&|a|b|c|d|e||ADT^A03|NEW\rPV1|1\r"},
		{name: "other delimiters", msg: "MSH#$~\\&#a#b#c#d#e##ADT$A04#OLD#P\r",
			wantType: "ADT^A04", want: "MSH#$~\\&#a#b#c#d#e##ADT$A04#NEW#P\r"},
		{name: "identifiers made unique", msg: "MSH|^~\\&|a|b|c|d|e||ORU^R01|OLD|P|2.5\rPID|1||MRN1^^^H^MR~X2||Doe\rSPM|1|P1&A^F1&B||BLD\rSPM|2|^F2\r",
			wantType: "ORU^R01", want: "MSH|^~\\&|a|b|c|d|e||ORU^R01|NEW|P|2.5\rPID|1||MRN1-NEW^^^H^MR~X2-NEW||Doe\rSPM|1|P1-NEW&A^F1-NEW&B||BLD\rSPM|2|^F2-NEW\r"},
		{name: "no MSH-9", msg: "MSH|^~\\&|a|b|c\r", wantErr: "no MSH-9"},
		{name: "no trigger event", msg: "MSH|^~\\&|a|b|c|d|e||ADT|X\r", wantErr: "trigger event"},
		{name: "not MSH", msg: "PID|1|2|3|4|5|6|7|8|9|10\r", wantErr: "MSH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tmpl, err := newHL7Template([]byte(tt.msg))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []string{tmpl.typ, string(tmpl.build(nil, "NEW"))}
			if diff := cmp.Diff([]string{tt.wantType, tt.want}, got); diff != "" {
				t.Errorf("type and rebuilt message (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSplitHL7(t *testing.T) {
	t.Parallel()
	got := splitHL7([]byte("\xef\xbb\xbfMSH|1\r\nPID|1\r\n\r\nMSH|2\nPID|2\n\n"))
	want := [][]byte{[]byte("MSH|1\rPID|1\r"), []byte("MSH|2\rPID|2\r")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("splitHL7 (-want +got):\n%s", diff)
	}
}

func TestScanMSA(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, ack      string
		wantCode, want string
		wantOK         bool
	}{
		{"AA", "MSH|^~\\&|GW||||20240101||ACK^A01^ACK|1|P|2.5\rMSA|AA|C1\r", "AA", "C1", true},
		{"AE with text", "MSH|^~\\&|GW||||x||ACK|1|P|2.5\rMSA|AE|C2|bad\rERR|||101\r", "AE", "C2", true},
		{"LF segments", "MSH|^~\\&|GW||||x||ACK|1|P|2.5\nMSA|CA|C3\n", "CA", "C3", true},
		{"no MSA", "MSH|^~\\&|GW||||x||ACK|1|P|2.5\r", "", "", false},
		{"empty code", "MSH|^~\\&|GW\rMSA||C4\r", "", "C4", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, id, ok := scanMSA([]byte(tt.ack))
			if diff := cmp.Diff([]any{tt.wantCode, tt.want, tt.wantOK}, []any{code, id, ok}); diff != "" {
				t.Errorf("scanMSA (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateMLLP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*Config)
		want   string // "" for valid
	}{
		{"mllp alone", func(*Config) {}, ""},
		{"localhost", func(c *Config) { c.MLLPAddr = "localhost:2575" }, ""},
		{"remote refused", func(c *Config) { c.MLLPAddr = "10.0.0.5:2575" }, "-mllp-addr: host \"10.0.0.5\" is not a loopback address"},
		{"remote allowed", func(c *Config) { c.MLLPAddr = "10.0.0.5:2575"; c.AllowRemote = true }, ""},
		{"all interfaces refused", func(c *Config) { c.MLLPAddr = ":2575" }, "not a loopback address"},
		{"no port", func(c *Config) { c.MLLPAddr = "127.0.0.1" }, "-mllp-addr"},
		{"no messages", func(c *Config) { c.MLLPMessages = 0 }, "-mllp-messages"},
		{"no corpus", func(c *Config) { c.MLLPCorpus = "" }, "-mllp-corpus"},
		{"bad type", func(c *Config) { c.MLLPTypes = []string{"ADT"} }, "-mllp-types"},
		{"all types", func(c *Config) { c.MLLPTypes = []string{"*"} }, ""},
		{"unbounded", func(c *Config) { c.Duration = 0 }, "-duration"},
		{"not checked without the phase", func(c *Config) { c.Phases = []string{PhaseIngest}; c.MLLPAddr = "10.0.0.5:2575" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := DefaultConfig()
			c.Phases = []string{PhaseMLLP}
			tt.change(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	c := DefaultConfig()
	if got := c.workers(PhaseMLLP); got != 16 {
		t.Errorf("mllp workers = %d, want 16", got)
	}
}

// ackServer is an in-test MLLP server answering each message with code,
// or AE for ORU messages when aeForORU is set; it records the control ids
// it received.
type ackServer struct {
	addr     string
	mu       sync.Mutex
	ids      map[string]int
	aeForORU bool
}

func startACKServer(t *testing.T, aeForORU bool) *ackServer {
	t.Helper()
	as := &ackServer{ids: map[string]int{}, aeForORU: aeForORU}
	h := mllp.HandlerFunc(func(ctx context.Context, msg []byte, p mllp.Peer) []byte {
		id := mllp.ControlID(msg)
		as.mu.Lock()
		as.ids[id]++
		as.mu.Unlock()
		code := "AA"
		if as.aeForORU && bytes.Contains(msg, []byte("|ORU^R01")) {
			code = "AE"
		}
		return []byte("MSH|^~\\&|GW|GWF|App|Fac|20240101||ACK^A01^ACK|ACK" + id + "|P|2.5\rMSA|" + code + "|" + id + "\r")
	})
	srv, err := mllp.NewServer(mllp.Config{}, h, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	as.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, mllp.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return as
}

func mllpConfig(t *testing.T, addr string, messages int) Config {
	cfg := DefaultConfig()
	cfg.Phases = []string{PhaseMLLP}
	cfg.MLLPAddr = addr
	cfg.MLLPCorpus = hl7Corpus(t)
	cfg.MLLPMessages = messages
	cfg.Concurrency = 4
	cfg.Duration = time.Minute
	cfg.RequestTimeout = 10 * time.Second
	return cfg
}

func TestRunMLLP(t *testing.T) {
	t.Parallel()
	as := startACKServer(t, false)
	const n = 500
	var out bytes.Buffer
	rep, err := Run(t.Context(), mllpConfig(t, as.addr, n), &out, io.Discard)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	p := rep.Phase(PhaseMLLP)
	got := []any{p.Requests, p.Acknowledged, p.AckCodes, p.Errors, p.Latency.Count(), p.Connections, len(p.Mismatches)}
	want := []any{uint64(n), uint64(n), map[string]uint64{"AA": n}, map[int]uint64{}, uint64(n), 4, 0}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	as.mu.Lock()
	defer as.mu.Unlock()
	if len(as.ids) != n {
		t.Errorf("server saw %d distinct control ids, want %d (one fresh id per message)", len(as.ids), n)
	}
	for id, c := range as.ids {
		if c != 1 || !strings.HasPrefix(id, "FG") || len(id) > 20 {
			t.Errorf("control id %q sent %d times; want once, FG prefix, at most 20 characters", id, c)
			break
		}
	}
	for _, s := range []string{"mllp: 500 messages over 4 connections", "ACK codes: AA: 500", "errors: none"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("summary lacks %q:\n%s", s, out.String())
		}
	}
}

func TestRunMLLPCountsRefusals(t *testing.T) {
	t.Parallel()
	as := startACKServer(t, true)
	rep, err := Run(t.Context(), mllpConfig(t, as.addr, 100), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "phases with errors: mllp") {
		t.Fatalf("Run error = %v, want phases with errors: mllp", err)
	}
	p := rep.Phase(PhaseMLLP)
	// The corpus alternates ADT^A01 and ORU^R01.
	if diff := cmp.Diff(map[string]uint64{"AA": 50, "AE": 50}, p.AckCodes); diff != "" {
		t.Errorf("ACK codes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"messages not accepted: AE 50"}, p.Mismatches); diff != "" {
		t.Errorf("mismatches (-want +got):\n%s", diff)
	}
}

func TestRunMLLPUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	rep, err := Run(t.Context(), mllpConfig(t, addr, 100), io.Discard, io.Discard)
	if err == nil {
		t.Fatal("Run against a closed port succeeded")
	}
	p := rep.Phase(PhaseMLLP)
	if p.Requests != 0 || p.Errors[0] != 4*mllpWorkerDialFailures || len(p.Mismatches) != 1 || !strings.Contains(p.Mismatches[0], "gave up") {
		t.Errorf("report = requests %d, errors %v, mismatches %q; want 0, %d dial failures, workers giving up",
			p.Requests, p.Errors, p.Mismatches, 4*mllpWorkerDialFailures)
	}
}

func TestRunMLLPStopsAtDuration(t *testing.T) {
	t.Parallel()
	as := startACKServer(t, false)
	cfg := mllpConfig(t, as.addr, 1<<30)
	cfg.Duration = 200 * time.Millisecond
	rep, err := Run(t.Context(), cfg, io.Discard, io.Discard)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	p := rep.Phase(PhaseMLLP)
	if p.Requests == 0 || p.Requests >= 1<<30 || !strings.Contains(p.Note, "stopped by -duration") {
		t.Errorf("requests %d, note %q: want some messages and a stop by -duration", p.Requests, p.Note)
	}
}

func TestTemplateMakesIdentifiersUnique(t *testing.T) {
	t.Parallel()
	msg := "MSH|^~\\&|A|B|C|D|20240101||ADT^A01^ADT_A01|OLD|P|2.5\r" +
		"PID|1||123^^^H^MR~456^^^SSA^SS||Doe^Jane\r" +
		"PV1|1|I|W^1^1||||||||||||||||V1\r"
	tpl, err := newHL7Template([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	got := string(tpl.build(nil, "C9"))
	want := "MSH|^~\\&|A|B|C|D|20240101||ADT^A01^ADT_A01|C9|P|2.5\r" +
		"PID|1||123-C9^^^H^MR~456-C9^^^SSA^SS||Doe^Jane\r" +
		"PV1|1|I|W^1^1||||||||||||||||V1-C9\r"
	if got != want {
		t.Errorf("build:\n got %q\nwant %q", got, want)
	}
}

func TestCheckHL7Delta(t *testing.T) {
	t.Parallel()
	p := &PhaseReport{AckCodes: map[string]uint64{"AA": 8, "CA": 2, "AE": 1}}
	before := &serverStats{HL7: hl7Stats{Messages: 5, Mapped: 50, Written: 30, Unchanged: 10, Named: 10}}
	good := &serverStats{HL7: hl7Stats{Messages: 15, Batches: 4, Mapped: 150, Written: 100, Unchanged: 20, Named: 30}}
	if got := checkHL7Delta(p, before, good); len(got) != 0 {
		t.Errorf("consistent counters: %v", got)
	}
	lost := &serverStats{HL7: hl7Stats{Messages: 14, Mapped: 150, Written: 99, Unchanged: 20, Named: 30}}
	got := checkHL7Delta(p, before, lost)
	if len(got) != 2 || !strings.Contains(got[0], "stored 9 messages") || !strings.Contains(got[1], "100 resources mapped") {
		t.Errorf("a lost message and a lost resource: %v", got)
	}
	// Two messages cut off by the end of the phase: stored or not, both fine;
	// a third stored message was refused, or never sent.
	p.Unanswered = 2
	for stored, ok := range map[int64]bool{15: true, 16: true, 17: true, 18: false} {
		after := &serverStats{HL7: hl7Stats{Messages: stored, Mapped: 150, Written: 100, Unchanged: 20, Named: 30}}
		if got := checkHL7Delta(p, before, after); (len(got) == 0) != ok {
			t.Errorf("%d stored with 10 acknowledged and 2 cut off: %v", stored-5, got)
		}
	}
}
