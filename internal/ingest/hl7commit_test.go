package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fhirgate/fhirgate/internal/database/databasetest"
	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/hl7v2"
	"github.com/fhirgate/fhirgate/internal/mapping"
	"github.com/fhirgate/fhirgate/internal/search"
	"github.com/fhirgate/fhirgate/internal/store"
	"github.com/fhirgate/fhirgate/internal/validate"
)

// doctored wraps the shipped mappings and spoils the output of chosen
// messages, to put a bad message in a batch of good ones.
type doctored struct {
	*mapping.Engine
	badMaster, twice string // control ids
}

func (d doctored) Map(m *hl7v2.Message, tenant string) (*mapping.Output, error) {
	out, err := d.Engine.Map(m, tenant)
	if err != nil {
		return out, err
	}
	switch m.ControlID() {
	case d.badMaster: // a new Practitioner that fails validation
		r, err := fhir.Parse([]byte(`{"resourceType":"Practitioner","id":"bad-doctor","active":"yes"}`))
		if err != nil {
			return nil, err
		}
		out.Resources = append(out.Resources, r)
	case d.twice: // one resource twice: its transaction fails
		for _, r := range out.Resources {
			if r.Type == "Patient" {
				out.Resources = append(out.Resources, r)
				break
			}
		}
	}
	return out, nil
}

// newTestHL7 is intake over a fresh database with the shipped mappings
// (wrapped by wrap when it is not nil) and, when sl is not nil, a Sealer.
func newTestHL7(t *testing.T, sl store.Sealer, wrap func(*mapping.Engine) Mapper) (*HL7, *pgxpool.Pool) {
	t.Helper()
	pool := databasetest.NewPool(t)
	engine, err := mapping.Load("../../mappings")
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(pool)
	if sl != nil {
		st.WithSealer(sl)
	}
	var m Mapper = engine
	if wrap != nil {
		m = wrap(engine)
	}
	return NewHL7(New(st, validate.Resource), st, m, slog.New(slog.NewTextHandler(io.Discard, nil))), pool
}

// processAtOnce runs n messages through intake from n goroutines at once
// and returns their results in order.
func processAtOnce(h *HL7, tenant string, n int, msg func(i int) []byte) []result {
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = h.process(context.Background(), tenant, msg(i), time.Now().UTC())
		}()
	}
	wg.Wait()
	return results
}

func adt(cid, mrn, family string) []byte {
	return []byte(strings.Join([]string{
		"MSH|^~\\&|LAB|HOSP|FHIRGATE|FG|20240101120000+0000||ADT^A08^ADT_A01|" + cid + "|P|2.5.1",
		"EVN|A08|20240101120000+0000",
		"PID|1||" + mrn + "^^^HOSP^MR||" + family + "^Jane||19800101|F",
		"PV1|1|I|W^1^1||||1234^Smith^John",
	}, "\r") + "\r")
}

// TestStoreBatchIsolatesMessages stores one batch holding a message, a
// second message about the same patient, a copy of the first, a message
// whose new master data is invalid and a good one; then a batch holding a
// message whose transaction cannot succeed and a good one: each message is
// answered for itself.
func TestStoreBatchIsolatesMessages(t *testing.T) {
	t.Parallel()
	h, pool := newTestHL7(t, nil, func(e *mapping.Engine) Mapper { return doctored{Engine: e, badMaster: "D", twice: "F"} })
	ctx := context.Background()
	now := time.Now().UTC()
	const tenant = "batch"
	jobsOf := func(msgs ...[3]string) []*hl7Job {
		t.Helper()
		var jobs []*hl7Job
		for _, m := range msgs {
			j, r := h.job(ctx, tenant, adt(m[0], m[1], m[2]), now)
			if j == nil {
				t.Fatalf("message %s not mapped: %q", m[0], r.ack)
			}
			jobs = append(jobs, j)
		}
		return jobs
	}
	// answers checks the answer of each job that should have one (by
	// index; "" is a transient failure: AE 207, send again).
	answers := func(jobs []*hl7Job, want map[int]string) map[int]result {
		t.Helper()
		got := map[int]result{}
		for i, code := range want {
			select {
			case r := <-jobs[i].done:
				got[i] = r
				if r.code != code {
					t.Errorf("message %s: code %q, want %q (ACK %q)", jobs[i].cid, r.code, code, r.ack)
				}
			default:
				t.Errorf("message %s was not answered", jobs[i].cid)
			}
		}
		return got
	}

	jobs := jobsOf([3]string{"A", "MRN1", "Doe"}, [3]string{"B", "MRN1", "Roe"}, [3]string{"A", "MRN1", "Doe"},
		[3]string{"D", "MRN2", "Poe"}, [3]string{"E", "MRN4", "Moe"})
	deferred := h.storeBatch(tenant, jobs)
	if len(deferred) != 2 || deferred[0] != jobs[2] || deferred[1] != jobs[1] {
		t.Fatalf("deferred %d jobs, want the copy of A and the second message about its patient", len(deferred))
	}
	got := answers(jobs, map[int]string{0: "AA", 3: "AE", 4: "AA"})
	if !strings.Contains(string(got[3].ack), "Practitioner") {
		t.Errorf("the AE does not name the invalid resource: %q", got[3].ack)
	}

	// The next batch: the copy is answered from the archive with the first
	// message's ACK, the second message updates the patient.
	if again := h.storeBatch(tenant, deferred); len(again) != 0 {
		t.Fatalf("deferred again: %d", len(again))
	}
	if r := answers(jobs, map[int]string{1: "AA", 2: "AA"}); string(r[2].ack) != string(got[0].ack) {
		t.Errorf("copy of the first message: %q, want the first message's ACK %q", r[2].ack, got[0].ack)
	}

	// A message that fails its batch's transaction: the batch is stored
	// again message by message, and only that message fails.
	jobs = jobsOf([3]string{"F", "MRN3", "Loe"}, [3]string{"G", "MRN5", "Noe"})
	if d := h.storeBatch(tenant, jobs); len(d) != 0 {
		t.Fatalf("deferred %d", len(d))
	}
	if r := answers(jobs, map[int]string{0: "", 1: "AA"}); !strings.Contains(string(r[0].ack), "MSA|AE|F") {
		t.Errorf("message F: ACK %q, want an AE asking for a retry", r[0].ack)
	}

	count := func(sql string, args ...any) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(`SELECT count(*) FROM hl7_messages WHERE tenant = $1`, tenant); n != 4 {
		t.Errorf("%d archived messages, want 4 (A, B, E, G)", n)
	}
	if n := count(`SELECT count(*) FROM resources WHERE tenant = $1 AND type = 'Patient'`, tenant); n != 3 {
		t.Errorf("%d Patients, want 3 (MRN1, MRN4, MRN5): the rejected and failed messages wrote nothing", n)
	}
	if n := count(`SELECT max(version) FROM resources WHERE tenant = $1 AND type = 'Patient'`, tenant); n != 2 {
		t.Errorf("the patient of A and B is at version %d, want 2", n)
	}
	if n := count(`SELECT count(*) FROM resources WHERE tenant = $1 AND type = 'Practitioner'`, tenant); n != 1 {
		t.Errorf("%d Practitioners, want 1: the doctor every message names, written once", n)
	}
}

// TestGroupCommitUnderConcurrency sends many messages at once through
// the committers, several about the same patients: every one is
// answered AA, every one is archived, and each patient's version count
// equals the number of distinct names it was sent with.
func TestGroupCommitUnderConcurrency(t *testing.T) {
	t.Parallel()
	h, pool := newTestHL7(t, nil, nil)
	const tenant, n = "concurrent", 120
	results := processAtOnce(h, tenant, n, func(i int) []byte {
		// six patients, two names each
		return adt(fmt.Sprintf("G%d", i), fmt.Sprintf("MRN%d", i%6), fmt.Sprintf("Name%c", 'a'+i%12))
	})
	for i, r := range results {
		if c := r.code; c != "AA" {
			t.Errorf("message %d: %q", i, c)
		}
	}
	var archived, patients, versions int
	ctx := context.Background()
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM hl7_messages WHERE tenant = $1`, tenant).Scan(&archived); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*), sum(version) FROM resources WHERE tenant = $1 AND type = 'Patient'`, tenant).Scan(&patients, &versions); err != nil {
		t.Fatal(err)
	}
	if archived != n {
		t.Errorf("%d messages archived, want %d", archived, n)
	}
	if patients != 6 {
		t.Errorf("%d Patients, want 6", patients)
	}
	stats := h.Stats()
	if stats.Messages != n || stats.Batches < 1 || stats.Batches > n {
		t.Errorf("stats: %d messages in %d batches, want %d messages", stats.Messages, stats.Batches, n)
	}
	if stats.Mapped == 0 || stats.Mapped != stats.Written+stats.Unchanged+stats.Named {
		t.Errorf("stats: %d resources mapped, %d written + %d unchanged + %d named", stats.Mapped, stats.Written, stats.Unchanged, stats.Named)
	}
	var stored int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM resources WHERE tenant = $1 AND type <> 'Provenance')
		+ (SELECT count(*) FROM resource_history WHERE tenant = $1 AND type <> 'Provenance')`, tenant).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if int64(stored) != stats.Written {
		t.Errorf("%d versions stored, the counters say %d written", stored, stats.Written)
	}
	// Each patient alternates between two names in an unknown order: at
	// least 2 versions each, at most one per message about it.
	if versions < 12 || versions > n {
		t.Errorf("%d Patient versions in all, want between 12 and %d", versions, n)
	}
}

// panicky is a Sealer with a defect: sealing panics.
type panicky struct{ store.Sealer }

func (panicky) Prepare(context.Context, string) error { return nil }
func (panicky) Seal(context.Context, string, string, string, []byte, *search.Entries) ([]byte, int, error) {
	panic("defect")
}

// TestBatchPanicIsContained: a defect that panics inside a batch answers
// its messages AE (send again) instead of taking the gateway down.
func TestBatchPanicIsContained(t *testing.T) {
	t.Parallel()
	h, _ := newTestHL7(t, panicky{}, nil)
	results := processAtOnce(h, "panic", 6, func(i int) []byte {
		return adt(fmt.Sprintf("P%d", i), fmt.Sprintf("MRN%d", i), "Doe")
	})
	for i, r := range results {
		if r.code != "" || !strings.Contains(string(r.ack), "MSA|AE|P") {
			t.Errorf("message %d: code %q ACK %q, want a transient AE", i, r.code, r.ack)
		}
	}
}

// TestHotPatientSerializes sends a burst of messages about one patient
// from many goroutines: its shard stores them one batch after another, so
// none fails on a concurrent write, and each one's update is kept.
func TestHotPatientSerializes(t *testing.T) {
	t.Parallel()
	h, pool := newTestHL7(t, nil, nil)
	const tenant, n = "hot", 40
	results := processAtOnce(h, tenant, n, func(i int) []byte {
		return adt(fmt.Sprintf("H%d", i), "MRN1", fmt.Sprintf("Name%d", i))
	})
	for i, r := range results {
		if c := r.code; c != "AA" {
			t.Errorf("message %d: %q", i, c)
		}
	}
	var versions int
	if err := pool.QueryRow(context.Background(), `SELECT max(version) FROM resources WHERE tenant = $1 AND type = 'Patient'`, tenant).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if versions != n { // every message renamed the patient
		t.Errorf("the patient is at version %d after %d renames", versions, n)
	}
}
