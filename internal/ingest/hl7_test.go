package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fhirgate/fhirgate/internal/database/databasetest"
	"github.com/fhirgate/fhirgate/internal/hl7v2"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/mapping"
	"github.com/fhirgate/fhirgate/internal/mllp"
	"github.com/fhirgate/fhirgate/internal/store"
	"github.com/fhirgate/fhirgate/internal/validate"
)

const tenant = "t1"

// env is HL7 v2 intake over a real database, the shipped mappings and a
// real MLLP listener on a loopback socket.
type env struct {
	pool   *pgxpool.Pool
	st     *store.Store
	intake *ingest.HL7
	addr   string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	pool := databasetest.NewPool(t)
	engine, err := mapping.Load("../../mappings")
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(pool)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	intake := ingest.NewHL7(ingest.New(st, validate.Resource), st, engine, logger)
	srv, err := mllp.NewServer(mllp.Config{}, mllp.HandlerFunc(func(ctx context.Context, msg []byte, _ mllp.Peer) []byte {
		return intake.Handle(ctx, tenant, msg)
	}), logger)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &env{pool: pool, st: st, intake: intake, addr: ln.Addr().String()}
}

func (e *env) send(t testing.TB, msg string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := mllp.Dial(ctx, e.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ack, err := c.Send(ctx, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	return string(ack)
}

func (e *env) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func msg(controlID, msh15, pid3, family, msgType string) string {
	return strings.Join([]string{
		"MSH|^~\\&|LAB|HOSP|FHIRGATE|FG|20240101120000+0000||" + msgType + "|" + controlID + "|P|2.5.1|||" + msh15,
		"EVN|A01|20240101120000+0000",
		"PID|1||" + pid3 + "||" + family + "^Jane||19800101|F",
		"PV1|1|I|W^1^1||||||||||||||||V100",
	}, "\r") + "\r"
}

// segment returns the line of ack starting with name.
func segment(ack, name string) string {
	for _, line := range strings.Split(ack, "\r") {
		if strings.HasPrefix(line, name+"|") {
			return line
		}
	}
	return ""
}

func TestHL7AcceptStoreAndDuplicate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ack := e.send(t, msg("C1", "", "MRN1^^^HOSP^MR", "Doe", "ADT^A01^ADT_A01"))
	if got := segment(ack, "MSA"); got != "MSA|AA|C1" {
		t.Fatalf("MSA = %q, want MSA|AA|C1\n%s", got, ack)
	}
	resources := e.count(t, `SELECT count(*) FROM resources WHERE tenant = $1`, tenant)
	if resources < 3 { // Patient, Encounter, Provenance at least
		t.Fatalf("%d resources stored, want Patient, Encounter and Provenance", resources)
	}
	if n := e.count(t, `SELECT count(*) FROM resources WHERE tenant = $1 AND type = 'Provenance'`, tenant); n != 1 {
		t.Errorf("%d Provenance resources, want 1", n)
	}
	if n := e.count(t, `SELECT count(*) FROM hl7_messages WHERE tenant = $1 AND control_id = 'C1' AND length(raw) > 0`, tenant); n != 1 {
		t.Errorf("%d archived messages, want 1", n)
	}
	var prov []byte
	e.pool.QueryRow(context.Background(), `SELECT body FROM resources WHERE type = 'Provenance'`).Scan(&prov)
	for _, want := range []string{`"Patient/`, `"Encounter/`, `LAB^HOSP`, `2026.11`} {
		if !bytes.Contains(prov, []byte(want)) {
			t.Errorf("Provenance lacks %s: %s", want, prov)
		}
	}

	// The usual retry after a lost ACK: same sender and control id.
	again := e.send(t, msg("C1", "", "MRN1^^^HOSP^MR", "Doe", "ADT^A01^ADT_A01"))
	if again != ack {
		t.Errorf("duplicate got a different ACK:\n%q\nwant\n%q", again, ack)
	}
	if n := e.count(t, `SELECT count(*) FROM resources WHERE tenant = $1`, tenant); n != resources {
		t.Errorf("duplicate changed the resource count %d -> %d", resources, n)
	}
	if n := e.count(t, `SELECT count(*) FROM resource_history`); n != 0 {
		t.Errorf("duplicate wrote %d new versions", n)
	}

	// The same patient in a new message: same resources, no new versions
	// when nothing changed, a new version of the Patient when the name did.
	e.send(t, msg("C2", "", "MRN1^^^HOSP^MR", "Doe", "ADT^A08^ADT_A01"))
	if n := e.count(t, `SELECT count(*) FROM resources WHERE tenant = $1 AND type = 'Patient'`, tenant); n != 1 {
		t.Errorf("%d Patients after an update message, want 1", n)
	}
	if n := e.count(t, `SELECT count(*) FROM resource_history WHERE type = 'Patient'`); n != 0 {
		t.Errorf("an unchanged Patient got %d new versions", n)
	}
	e.send(t, msg("C3", "", "MRN1^^^HOSP^MR", "Roe", "ADT^A08^ADT_A01"))
	if n := e.count(t, `SELECT max(version) FROM resources WHERE tenant = $1 AND type = 'Patient'`, tenant); n != 2 {
		t.Errorf("Patient version %d after a name change, want 2", n)
	}
	if n := e.count(t, `SELECT count(*) FROM resources WHERE tenant = $1 AND type = 'Provenance'`, tenant); n != 3 {
		t.Errorf("%d Provenance resources after three messages, want 3", n)
	}
}

func TestHL7Rejections(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name, msg, msa, err string
	}{
		{"unsupported message type", msg("R1", "", "MRN1^^^HOSP^MR", "Doe", "ZZZ^Z99^ZZZ_Z99"), "MSA|AR|R1", "|200^"},
		{"missing patient identifier", msg("R2", "", "", "Doe", "ADT^A01^ADT_A01"), "MSA|AE|R2", "PID^1^3"},
		{"no control id", msg("", "", "MRN1^^^HOSP^MR", "Doe", "ADT^A01^ADT_A01"), "MSA|AR|", "MSH^1^10"},
		{"garbage", "this is not HL7", "MSA|AR|", ""},
	}
	for _, tt := range tests {
		ack := e.send(t, tt.msg)
		if got := segment(ack, "MSA"); !strings.HasPrefix(got, tt.msa) {
			t.Errorf("%s: MSA = %q, want %s\n%s", tt.name, got, tt.msa, ack)
		}
		if tt.err != "" && !strings.Contains(segment(ack, "ERR"), tt.err) {
			t.Errorf("%s: ERR = %q, want it to name %s", tt.name, segment(ack, "ERR"), tt.err)
		}
		if strings.Contains(ack, "Doe") || strings.Contains(ack, "MRN1") {
			t.Errorf("%s: the NAK quotes message values (PHI): %q", tt.name, ack)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM resources`); n != 0 {
		t.Errorf("rejected messages wrote %d resources", n)
	}
	if n := e.count(t, `SELECT count(*) FROM hl7_dead_letters WHERE length(raw) > 0 AND reason <> ''`); n != len(tests) {
		t.Errorf("%d dead letters, want %d", n, len(tests))
	}
	var reasons string
	e.pool.QueryRow(context.Background(), `SELECT string_agg(reason, ' ') FROM hl7_dead_letters`).Scan(&reasons)
	if strings.Contains(reasons, "Doe") || strings.Contains(reasons, "MRN1") {
		t.Errorf("dead letter reasons quote message values: %s", reasons)
	}
}

func TestHL7EnhancedMode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if got := segment(e.send(t, msg("E1", "AL", "MRN9^^^HOSP^MR", "Doe", "ADT^A01^ADT_A01")), "MSA"); got != "MSA|CA|E1" {
		t.Errorf("MSH-15 AL: MSA = %q, want MSA|CA|E1", got)
	}
	if got := segment(e.send(t, msg("E2", "ER", "", "Doe", "ADT^A01^ADT_A01")), "MSA"); got != "MSA|CE|E2" {
		t.Errorf("MSH-15 ER on an error: MSA = %q, want MSA|CE|E2", got)
	}
	// NE asks for no acknowledgement at all (HTTP and callers get nil).
	if ack := e.intake.Handle(context.Background(), tenant, []byte(msg("E3", "NE", "MRN9^^^HOSP^MR", "Doe", "ADT^A01^ADT_A01"))); ack != nil {
		t.Errorf("MSH-15 NE: got an ACK %q, want none", ack)
	}
	if n := e.count(t, `SELECT count(*) FROM hl7_messages WHERE control_id = 'E3'`); n != 1 {
		t.Errorf("a message with MSH-15 NE was not stored")
	}
	// MSH-16 asks for the application acknowledgement: sent on the
	// connection when MSH-15 asks for no commit ACK.
	for _, tc := range []struct{ cid, modes, mrn, want string }{
		{"E4", "NE|AL", "MRN9^^^HOSP^MR", "MSA|AA|E4"},
		{"E5", "|AL", "MRN9^^^HOSP^MR", "MSA|AA|E5"},
		{"E6", "NE|ER", "", "MSA|AE|E6"},
		{"E7", "SU|ER", "", "MSA|AE|E7"},               // the commit ACK is for success only; the error gets the application ACK
		{"E8", "ER|SU", "MRN9^^^HOSP^MR", "MSA|AA|E8"}, // success: no commit ACK asked, the application ACK is
		{"E9", "XX|NE", "MRN9^^^HOSP^MR", "MSA|CA|E9"}, // not a table 0155 value: answered as AL
	} {
		if got := segment(e.send(t, msg(tc.cid, tc.modes, tc.mrn, "Doe", "ADT^A01^ADT_A01")), "MSA"); got != tc.want {
			t.Errorf("MSH-15|MSH-16 %s: MSA = %q, want %q", tc.modes, got, tc.want)
		}
	}
	if ack := e.intake.Handle(context.Background(), tenant, []byte(msg("E10", "NE|ER", "MRN9^^^HOSP^MR", "Doe", "ADT^A01^ADT_A01"))); ack != nil {
		t.Errorf("MSH-15 NE, MSH-16 ER on success: got an ACK %q, want none", ack)
	}
	// The outcome intake reports for the access log does not depend on
	// the reply asked for: stored is AA even when no ACK is sent.
	if ack, outcome := e.intake.HandleOutcome(context.Background(), tenant, []byte(msg("E11", "NE|NE", "MRN9^^^HOSP^MR", "Doe", "ADT^A01^ADT_A01"))); ack != nil || outcome != "AA" {
		t.Errorf("MSH-15/16 NE|NE: ACK %q outcome %q, want no ACK and outcome AA", ack, outcome)
	}
	if _, outcome := e.intake.HandleOutcome(context.Background(), tenant, []byte(msg("E12", "NE|NE", "", "Doe", "ADT^A01^ADT_A01"))); outcome != "AE" {
		t.Errorf("MSH-15/16 NE|NE, no PID-3: outcome %q, want AE", outcome)
	}
	// A re-send of E10 (no reply asked) is answered from the archive.
	if got := segment(e.send(t, msg("E10", "", "MRN9^^^HOSP^MR", "Doe", "ADT^A01^ADT_A01")), "MSA"); got != "MSA|CA|E10" {
		t.Errorf("re-send of a message that asked for no ACK: MSA = %q, want MSA|CA|E10", got)
	}
}

// TestHL7ConcurrentDuplicates sends one message from eight connections at
// once: every sender gets AA, and it is stored once.
func TestHL7ConcurrentDuplicates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := msg("D1", "", "MRN5^^^HOSP^MR", "Doe", "ADT^A01^ADT_A01")
	var wg sync.WaitGroup
	acks := make([]string, 8)
	for i := range acks {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			acks[i] = e.send(t, m)
		}(i)
	}
	wg.Wait()
	for i, a := range acks {
		if segment(a, "MSA") != "MSA|AA|D1" {
			t.Errorf("sender %d: %q", i, segment(a, "MSA"))
		}
	}
	if n := e.count(t, `SELECT count(*) FROM hl7_messages`); n != 1 {
		t.Errorf("%d archived copies, want 1", n)
	}
	if n := e.count(t, `SELECT count(*) FROM resources WHERE type = 'Patient'`); n != 1 {
		t.Errorf("%d Patients, want 1", n)
	}
}

// rejectAll stands in for mappings that lack a message type.
type rejectAll struct{}

func (rejectAll) Map(*hl7v2.Message, string) (*mapping.Output, error) {
	return nil, &mapping.MapError{Reject: true, Errs: []hl7v2.AckError{{Segment: "MSH", SegmentIndex: 1, Field: 9, Code: "200", Severity: "E", Text: "unsupported message type"}}}
}
func (rejectAll) Version() string { return "broken" }

func TestHL7ReplayAfterMappingFix(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	engine, err := mapping.Load("../../mappings")
	if err != nil {
		t.Fatal(err)
	}
	e.intake.SetMapper(rejectAll{})
	for i := 0; i < 3; i++ {
		if got := segment(e.send(t, msg(fmt.Sprintf("P%d", i), "", fmt.Sprintf("MRN%d^^^HOSP^MR", i), "Doe", "ADT^A01^ADT_A01")), "MSA"); !strings.HasPrefix(got, "MSA|AR") {
			t.Fatalf("with broken mappings: %q", got)
		}
	}
	e.intake.SetMapper(engine) // the fix
	accepted, rejected, err := e.intake.Replay(context.Background(), tenant, e.st, nil)
	if err != nil || accepted != 3 || rejected != 0 {
		t.Fatalf("Replay = %d accepted, %d rejected, %v; want 3, 0, nil", accepted, rejected, err)
	}
	if n := e.count(t, `SELECT count(*) FROM resources WHERE type = 'Patient'`); n != 3 {
		t.Errorf("%d Patients after replay, want 3", n)
	}
	if n := e.count(t, `SELECT count(*) FROM hl7_dead_letters WHERE replayed_at IS NULL`); n != 0 {
		t.Errorf("%d dead letters still pending", n)
	}
	// A second replay finds nothing to do.
	if a, r, err := e.intake.Replay(context.Background(), tenant, e.st, nil); a != 0 || r != 0 || err != nil {
		t.Errorf("second Replay = %d, %d, %v", a, r, err)
	}
}

// TestHL7MasterDataIsNotOverwritten: a doctor named in two messages with
// different spellings keeps the first version; messages do not rewrite
// master data.
func TestHL7MasterDataIsNotOverwritten(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i, name := range []string{"Smith^John", "SMITH^JOHN^Q"} {
		m := strings.Join([]string{
			"MSH|^~\\&|LAB|HOSP|FHIRGATE|FG|20240101120000+0000||ADT^A01^ADT_A01|MD" + fmt.Sprint(i) + "|P|2.5.1",
			"PID|1||MRN" + fmt.Sprint(i) + "^^^HOSP^MR||Doe^Jane||19800101|F",
			"PV1|1|I|W^1^1||||1234^" + name,
		}, "\r") + "\r"
		if ack := e.send(t, m); !strings.Contains(ack, "MSA|AA") {
			t.Fatalf("message %d: %q", i, ack)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM resources WHERE type = 'Practitioner'`); n != 1 {
		t.Fatalf("%d Practitioners, want 1", n)
	}
	if n := e.count(t, `SELECT max(version) FROM resources WHERE type = 'Practitioner'`); n != 1 {
		t.Errorf("the Practitioner was rewritten by a later message (version %d)", n)
	}
	// The first message created the doctor: its Provenance names it; the
	// second only mentioned it: its Provenance lists what it produced.
	for i, want := range []bool{true, false} {
		var prov string
		if err := e.pool.QueryRow(context.Background(), `SELECT convert_from(r.body, 'UTF8') FROM resources r
			JOIN hl7_messages m ON m.provenance_id = r.id AND r.type = 'Provenance' WHERE m.control_id = $1`, fmt.Sprintf("MD%d", i)).Scan(&prov); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(prov, `"Practitioner/`); got != want {
			t.Errorf("message %d: Provenance names the Practitioner: %v, want %v", i, got, want)
		}
		if !strings.Contains(prov, `"Patient/`) {
			t.Errorf("message %d: Provenance lacks the Patient", i)
		}
	}
}
