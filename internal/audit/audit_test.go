package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fhirgate/fhirgate/internal/database"
	"github.com/fhirgate/fhirgate/internal/database/databasetest"
	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/phi/keyring"
	"github.com/fhirgate/fhirgate/internal/store"
)

// fixture is a Log over a fresh database with checkpoints to a file.
type fixture struct {
	t      testing.TB
	pool   *pgxpool.Pool
	log    *Log
	signer *Ed25519File
	sink   *FileSink
}

func newFixture(t testing.TB, opt Options) *fixture {
	t.Helper()
	pool := databasetest.NewPool(t)
	dir := t.TempDir()
	signer, err := OpenEd25519File(filepath.Join(dir, "keys", "audit-signing.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	sink := NewFileSink(filepath.Join(dir, "audit", "checkpoints.jsonl"))
	t.Cleanup(func() { sink.Close() })
	opt.Signer, opt.Sink = signer, sink
	f := &fixture{t: t, pool: pool, signer: signer, sink: sink}
	f.log = f.open(pool, opt)
	return f
}

// open starts a Log on pool with the fixture's signer and sink, closed
// when the test ends.
func (f *fixture) open(pool *pgxpool.Pool, opt Options) *Log {
	f.t.Helper()
	opt.Signer, opt.Sink = f.signer, f.sink
	l, err := New(pool, opt)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l
}

// appendN appends n records concurrently (a few commits, not n).
func (f *fixture) appendN(n int) {
	f.t.Helper()
	appendAll(f.t, f.log, n, sample)
}

func appendAll(t testing.TB, l *Log, n int, rec func(i int) Record) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = l.Append(context.Background(), rec(i)) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("append: %v", err)
	}
}

func (f *fixture) checkpoint() Checkpoint {
	f.t.Helper()
	cp, err := f.log.Checkpoint(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return cp
}

func (f *fixture) verify() Report {
	f.t.Helper()
	rep, err := Verify(context.Background(), f.pool, f.sink, f.signer)
	if err != nil {
		f.t.Fatalf("verify: %v", err)
	}
	return rep
}

// tamper runs statements as the superuser with triggers bypassed.
func (f *fixture) tamper(stmts ...string) {
	f.t.Helper()
	err := pgx.BeginFunc(context.Background(), f.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), `SET LOCAL session_replication_role = replica`); err != nil {
			return err
		}
		for _, s := range stmts {
			if _, err := tx.Exec(context.Background(), s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatalf("tamper: %v", err)
	}
}

func (f *fixture) count() int {
	f.t.Helper()
	var n int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_log`).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

func sample(i int) Record {
	return Record{
		RequestID: fmt.Sprintf("req-%d", i), Tenant: "t1", SubjectID: fmt.Sprintf("user-%d", i%3), SubjectKind: "user",
		ClientID: "app", TokenID: fmt.Sprintf("jti-%d", i), IP: "10.0.0.1", Interaction: InteractionRead,
		ResourceType: "Observation", ResourceIDs: []string{fmt.Sprintf("obs-%d", i)}, PatientIDs: []string{fmt.Sprintf("pat-%d", i%5)},
		PurposeOfUse: "TREAT", DecisionID: fmt.Sprintf("dec-%d", i), Reason: "care team", Outcome: "200", Action: ActionRead,
	}
}

func wantBreak(t *testing.T, rep Report, seq int64, kind string) {
	t.Helper()
	if rep.OK || rep.Broken == nil {
		t.Fatalf("verify passed (%d records); want a %s break at seq %d", rep.Records, kind, seq)
	}
	if rep.Broken.Seq != seq || rep.Broken.Kind != kind {
		t.Fatalf("verify: %v; want a %s break at seq %d", rep.Broken, kind, seq)
	}
}

func TestConcurrentAppendsGroupCommitAndVerify(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{})
	const writers, each = 50, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	start := make(chan struct{})
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < each; i++ {
				if err := f.log.Append(context.Background(), sample(w*each+i)); err != nil {
					errs <- err
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("append: %v", err)
	}
	var n, minSeq, maxSeq int64
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*), min(seq), max(seq) FROM audit_log`).Scan(&n, &minSeq, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if n != writers*each || minSeq != 1 || maxSeq != writers*each {
		t.Fatalf("%d records, seq %d..%d; want %d contiguous from 1", n, minSeq, maxSeq, writers*each)
	}
	st := f.log.Stats()
	if st.Records != writers*each || st.RecordsPerCommit() <= 1 {
		t.Fatalf("stats %+v: want %d records and more than one record per commit", st, writers*each)
	}
	t.Logf("%d records in %d commits (%.1f per commit, largest %d), commit p50 %v p99 %v",
		st.Records, st.Commits, st.RecordsPerCommit(), st.MaxBatch, st.CommitP50, st.CommitP99)
	f.checkpoint()
	rep := f.verify()
	if !rep.OK || rep.Records != writers*each || rep.Checkpoints != 1 || len(rep.Warnings) != 0 {
		t.Fatalf("verify of an untouched log: %+v (break %v)", rep, rep.Broken)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{})
	when := time.Date(2024, 3, 1, 12, 30, 0, 123456789, time.FixedZone("x", 3600))
	in := Record{Time: when, RequestID: "r\x00id", Tenant: "t1", SubjectID: "bad\xffutf8", SubjectKind: "user",
		ClientID: "c", TokenID: "j", IP: "::1", Interaction: InteractionSearch, ResourceType: "Observation",
		ResourceIDs: []string{"a", `q"uo\te`, "NULL", "", "{x,y}"}, PatientIDs: []string{"p1", "p2"},
		Query: "code=1234-5", PurposeOfUse: "TREAT", DecisionID: "d", Reason: "r", BreakGlass: true, Outcome: "200", Action: ActionExecute}
	if err := f.log.Append(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if err := f.log.Append(context.Background(), Record{Interaction: InteractionLoginFailed, Outcome: "401"}); err != nil {
		t.Fatal(err)
	}
	got, err := f.log.Query(context.Background(), Filter{}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d entries; want 2", len(got))
	}
	want := in
	want.Time = when.UTC().Truncate(time.Microsecond)
	want.RequestID, want.SubjectID = "r\uFFFDid", "bad\uFFFDutf8"
	if !reflect.DeepEqual(got[0].Record, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got[0].Record, want)
	}
	if got[0].Seq != 1 || !bytes.Equal(got[0].PrevHash, genesis) || !bytes.Equal(got[1].PrevHash, got[0].Hash) {
		t.Errorf("chain fields: seq %d prev %x, next prev %x hash %x", got[0].Seq, got[0].PrevHash, got[1].PrevHash, got[0].Hash)
	}
	if h, err := got[1].ComputeHash(); err != nil || !bytes.Equal(h, got[1].Hash) {
		t.Errorf("ComputeHash = %x, %v; want the stored %x", h, err, got[1].Hash)
	}
	if got[1].Time.IsZero() || got[1].ResourceIDs != nil {
		t.Errorf("defaults: time %v, ids %v", got[1].Time, got[1].ResourceIDs)
	}
	for _, bad := range []Record{{Outcome: "200"}, {Interaction: "read", Action: "X"}} {
		if err := f.log.Append(context.Background(), bad); err == nil {
			t.Errorf("Append(%+v) = nil; want an error", bad)
		}
	}
	if rep := f.verify(); !rep.OK || rep.Records != 2 || len(rep.Warnings) != 1 {
		t.Errorf("verify: %+v; want OK over 2 records with a no-checkpoint warning", rep)
	}
}

func TestAppendFailsWhenTheDatabaseCannotWrite(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{CommitTimeout: 300 * time.Millisecond})
	f.appendN(3)
	ctx := context.Background()

	// Another session holds a lock the INSERT needs: the writer gets the
	// advisory lock and reads the head, then blocks at its INSERT until
	// the batch times out and is rolled back.
	blocker, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blocker.Exec(ctx, `LOCK TABLE audit_log IN SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f.log.Append(ctx, sample(100+i)) }()
	}
	wg.Wait()
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if err == nil {
			t.Errorf("append %d while the table is locked: nil error; want one", i)
		}
	}
	if n := f.count(); n != 3 {
		t.Fatalf("%d records after the failed batch; want 3 (nothing half-written)", n)
	}
	if st := f.log.Stats(); st.Failures == 0 {
		t.Errorf("stats %+v: want failures counted", st)
	}
	// The log recovers: the chain continues where the database left it.
	f.appendN(2)
	if rep := f.verify(); !rep.OK || rep.Records != 5 {
		t.Fatalf("verify after recovery: %+v %v", rep, rep.Broken)
	}

	// An unreachable database: the pool is gone.
	other, err := database.Open(ctx, database.Config{URL: f.pool.Config().ConnString(), MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	l := f.open(other, Options{CommitTimeout: time.Second})
	other.Close()
	if err := l.Append(ctx, sample(200)); err == nil {
		t.Fatal("append with the database unreachable: nil error")
	}
	if n := f.count(); n != 5 {
		t.Fatalf("%d records; want 5", n)
	}
	// A cancelled request is refused before anything is queued.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.log.Append(cctx, sample(300)); !errors.Is(err, context.Canceled) {
		t.Fatalf("append with a cancelled context: %v", err)
	}
	// After Close, Append is refused.
	if err := f.log.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.log.Append(ctx, sample(400)); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v; want ErrClosed", err)
	}
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func TestAppendOnlyForEveryRole(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{})
	f.appendN(3)
	f.checkpoint()
	ctx := context.Background()
	stmts := []string{
		`UPDATE audit_log SET reason = 'x' WHERE seq = 2`,
		`DELETE FROM audit_log WHERE seq = 2`,
		`TRUNCATE audit_log`,
		`UPDATE audit_checkpoints SET seq = 1`,
		`DELETE FROM audit_checkpoints`,
		`TRUNCATE audit_checkpoints`,
		`UPDATE audit_log SET reason = 'x' WHERE seq = 999`, // no row: still refused
	}
	// The owner (here the superuser that migrated): the triggers refuse.
	for _, s := range stmts {
		_, err := f.pool.Exec(ctx, s)
		if err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("as the owner, %s: %v; want the append-only trigger to refuse", s, err)
		}
	}
	// The application role: privileges refuse before any trigger runs.
	for _, s := range stmts {
		err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL ROLE fhirgate_app`); err != nil {
				t.Fatal(err)
			}
			_, err := tx.Exec(ctx, s)
			return err
		})
		if sqlState(err) != "42501" || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("as fhirgate_app, %s: %v; want permission denied", s, err)
		}
	}
	var privs string
	if err := f.pool.QueryRow(ctx, `SELECT string_agg(privilege_type, ',' ORDER BY privilege_type)
		FROM information_schema.role_table_grants WHERE grantee = 'fhirgate_app' AND table_name = 'audit_log'`).Scan(&privs); err != nil {
		t.Fatal(err)
	}
	if privs != "INSERT,SELECT" {
		t.Errorf("fhirgate_app privileges on audit_log: %s; want INSERT,SELECT", privs)
	}
	// ... and those are enough to append, checkpoint and verify.
	pc := f.pool.Config().Copy()
	pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, `SET ROLE fhirgate_app`)
		return err
	}
	appPool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer appPool.Close()
	l := f.open(appPool, Options{})
	for i := 0; i < 3; i++ {
		if err := l.Append(ctx, sample(10+i)); err != nil {
			t.Fatalf("append as fhirgate_app: %v", err)
		}
	}
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatalf("checkpoint as fhirgate_app: %v", err)
	}
	rep, err := Verify(ctx, appPool, f.sink, f.signer)
	if err != nil || !rep.OK || rep.Records != 6 {
		t.Fatalf("verify as fhirgate_app: %+v %v", rep, err)
	}
}

func TestVerifyFindsTampering(t *testing.T) {
	t.Parallel()
	// Each case: 20 records, a checkpoint at 20, 5 more records (seq 21 to
	// 25, after the checkpoint), then the tampering.
	cases := []struct {
		name   string
		tamper func(f *fixture)
		seq    int64
		kind   string
	}{
		{"untouched", func(f *fixture) {}, 0, ""},
		{"edit a field", func(f *fixture) {
			f.tamper(`UPDATE audit_log SET subject_id = 'someone-else' WHERE seq = 7`)
		}, 7, BrokenEdited},
		{"edit the patient list", func(f *fixture) {
			f.tamper(`UPDATE audit_log SET patient_ids = '{}' WHERE seq = 12`)
		}, 12, BrokenEdited},
		{"edit after the checkpoint", func(f *fixture) {
			f.tamper(`UPDATE audit_log SET outcome = '403' WHERE seq = 23`)
		}, 23, BrokenEdited},
		{"delete a middle record", func(f *fixture) {
			f.tamper(`DELETE FROM audit_log WHERE seq = 9`)
		}, 9, BrokenDeleted},
		{"delete the first record", func(f *fixture) {
			f.tamper(`DELETE FROM audit_log WHERE seq = 1`)
		}, 1, BrokenDeleted},
		{"swap two records", func(f *fixture) {
			f.tamper(`UPDATE audit_log SET seq = seq + 1000000 WHERE seq IN (7, 8)`,
				`UPDATE audit_log SET seq = 8 WHERE seq = 1000007`,
				`UPDATE audit_log SET seq = 7 WHERE seq = 1000008`)
		}, 7, BrokenReordered},
		{"rewrite one record and rehash it", func(f *fixture) {
			f.rewrite(7, 7)
		}, 7, BrokenRelinked},
		{"rewrite a record and rehash the whole chain", func(f *fixture) {
			f.rewrite(7, 25)
		}, 20, BrokenRewritten},
		{"delete the tail through the checkpoint", func(f *fixture) {
			f.tamper(`DELETE FROM audit_log WHERE seq >= 18`)
		}, 18, BrokenTruncated},
		{"delete everything", func(f *fixture) {
			f.tamper(`TRUNCATE audit_log`)
		}, 1, BrokenTruncated},
		{"forge a checkpoint", func(f *fixture) {
			cp := f.checkpoint()
			cp.Seq, cp.Time = 21, cp.Time.Add(time.Second)
			if err := f.sink.Put(context.Background(), cp); err != nil {
				f.t.Fatal(err)
			}
		}, 21, BrokenCheckpoint},
		{"damage the checkpoint file", func(f *fixture) {
			file, err := os.OpenFile(f.sink.Path(), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				f.t.Fatal(err)
			}
			defer file.Close()
			if _, err := file.WriteString("{not json}\n"); err != nil {
				f.t.Fatal(err)
			}
		}, 0, BrokenCheckpoint},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Options{})
			f.appendN(20)
			if cp := f.checkpoint(); cp.Seq != 20 {
				t.Fatalf("checkpoint at %d; want 20", cp.Seq)
			}
			f.appendN(5)
			c.tamper(f)
			rep := f.verify()
			if c.kind == "" {
				if !rep.OK || rep.Records != 25 || rep.Latest == nil || rep.Latest.Seq != 20 || len(rep.Warnings) != 1 {
					t.Fatalf("untouched log: %+v (break %v)", rep, rep.Broken)
				}
				return
			}
			wantBreak(t, rep, c.seq, c.kind)
			t.Logf("%v", rep.Broken)
		})
	}
}

// rewrite changes record from's reason and recomputes the hashes of
// records from..to, as a superuser who knows the encoding would.
func (f *fixture) rewrite(from, to int64) {
	f.t.Helper()
	ctx := context.Background()
	entries, err := NewReader(f.pool, nil).Query(ctx, Filter{}, from-1, int(to-from+1))
	if err != nil {
		f.t.Fatal(err)
	}
	var stmts []string
	prev := entries[0].PrevHash
	for i := range entries {
		e := &entries[i]
		if i == 0 {
			e.Reason = "nothing to see"
		}
		e.PrevHash = prev
		h, err := e.ComputeHash()
		if err != nil {
			f.t.Fatal(err)
		}
		stmts = append(stmts, fmt.Sprintf(`UPDATE audit_log SET reason = '%s', prev_hash = '\x%x', hash = '\x%x' WHERE seq = %d`,
			e.Reason, e.PrevHash, h, e.Seq))
		prev = h
	}
	f.tamper(stmts...)
}

func TestVerifyLocatesARewriteBetweenCheckpoints(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{})
	f.appendN(10)
	f.checkpoint()
	f.appendN(10)
	f.checkpoint()
	if rep := f.verify(); !rep.OK || rep.Checkpoints != 2 || len(rep.Warnings) != 0 {
		t.Fatalf("before: %+v %v", rep, rep.Broken)
	}
	f.rewrite(15, 20)
	rep := f.verify()
	wantBreak(t, rep, 20, BrokenRewritten)
	if !strings.Contains(rep.Broken.Detail, "between seq 11 and 20") {
		t.Errorf("detail %q; want the range 11 to 20", rep.Broken.Detail)
	}
	// The tail after the newest checkpoint: deleting it cannot be told
	// from never having written it (the documented limit); deleting into
	// the checkpointed part can.
	g := newFixture(t, Options{})
	g.appendN(10)
	g.checkpoint()
	g.appendN(5)
	g.tamper(`DELETE FROM audit_log WHERE seq > 10`)
	if rep := g.verify(); !rep.OK || rep.Records != 10 {
		t.Fatalf("tail after the checkpoint deleted: %+v %v; want OK (undetectable)", rep, rep.Broken)
	}
	g.tamper(`DELETE FROM audit_log WHERE seq = 10`)
	wantBreak(t, g.verify(), 10, BrokenTruncated)
}

func TestCheckpointsAndSigner(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{CheckpointInterval: 20 * time.Millisecond})
	f.appendN(3)
	// The periodic checkpoint picks up the head.
	deadline := time.Now().Add(5 * time.Second)
	for {
		cps, err := f.sink.Checkpoints(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(cps) > 0 && cps[len(cps)-1].Seq == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no periodic checkpoint of seq 3: %+v", cps)
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.appendN(2)
	if err := f.log.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	cps, err := f.sink.Checkpoints(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	last := cps[len(cps)-1]
	if last.Seq != 5 {
		t.Fatalf("after Close the newest checkpoint is %d; want 5", last.Seq)
	}
	for i := 1; i < len(cps); i++ {
		if cps[i].Seq == cps[i-1].Seq {
			t.Errorf("checkpoint of an unmoved head written twice: %d", cps[i].Seq)
		}
	}
	var dbCopies int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_checkpoints WHERE seq = 5`).Scan(&dbCopies); err != nil || dbCopies != 1 {
		t.Errorf("database copies of checkpoint 5: %d, %v", dbCopies, err)
	}
	for _, p := range []string{f.sink.Path(), f.signer.Path()} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", p, fi.Mode(), err)
		}
	}
	// The key persists; a tampered message or another key does not verify.
	again, err := OpenEd25519File(f.signer.Path(), false)
	if err != nil || again.KeyID() != f.signer.KeyID() {
		t.Fatalf("reopen the signing key: %v (%s vs %s)", err, again.KeyID(), f.signer.KeyID())
	}
	if err := again.Verify(context.Background(), last.Message(), last.Signature); err != nil {
		t.Errorf("verify with the reopened key: %v", err)
	}
	moved := last
	moved.Seq++
	if err := again.Verify(context.Background(), moved.Message(), last.Signature); !errors.Is(err, ErrBadSignature) {
		t.Errorf("verify an altered checkpoint: %v; want ErrBadSignature", err)
	}
	otherKey, err := OpenEd25519File(filepath.Join(t.TempDir(), "k.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(context.Background(), f.pool, f.sink, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.Broken.Kind != BrokenCheckpoint {
		t.Errorf("verify with another key: %+v; want a checkpoint break", rep)
	}
	if _, err := OpenEd25519File(filepath.Join(t.TempDir(), "missing.json"), false); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("open a missing key without create: %v", err)
	}
	if err := os.Chmod(f.signer.Path(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenEd25519File(f.signer.Path(), false); err == nil {
		t.Error("a signing key readable by others was accepted")
	}
	// A torn last line (a crash mid-write) is ignored.
	file, err := os.OpenFile(f.sink.Path(), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	file.WriteString(`{"format":1,"seq":`)
	file.Close()
	if got, err := f.sink.Checkpoints(context.Background()); err != nil || len(got) != len(cps) {
		t.Errorf("torn last line: %d checkpoints, %v; want %d", len(got), err, len(cps))
	}
}

func TestQuerySealedWithPHIKeys(t *testing.T) {
	t.Parallel()
	pool := databasetest.NewPool(t)
	pol, err := phi.LoadPolicy("../../policies/phi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.Open(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	svc := phi.NewService(pol, phi.NewKeys(kr, store.New(pool), phi.KeyOptions{}))
	l, err := New(pool, Options{Sealer: svc})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	ctx := context.Background()
	const secret = "name=Zebediah&birthdate=1931-07-04"
	rec := sample(1)
	rec.Interaction, rec.Action, rec.Query = InteractionSearch, ActionExecute, secret
	if err := l.Append(ctx, rec); err != nil {
		t.Fatal(err)
	}
	var raw []byte
	var sealed bool
	if err := pool.QueryRow(ctx, `SELECT query, query_sealed FROM audit_log WHERE seq = 1`).Scan(&raw, &sealed); err != nil {
		t.Fatal(err)
	}
	if !sealed || !phi.IsSealedBlob(raw) || bytes.Contains(raw, []byte("Zebediah")) || bytes.Contains(raw, []byte("1931")) {
		t.Fatalf("stored query %q (sealed %v): want ciphertext", raw, sealed)
	}
	// The whole row, as text, holds no plaintext either.
	var row string
	if err := pool.QueryRow(ctx, `SELECT a::text FROM audit_log a`).Scan(&row); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(row, "Zebediah") {
		t.Fatal("the row holds the query's plaintext")
	}
	got, err := l.Query(ctx, Filter{}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Query != secret || !got[0].QuerySealed || got[0].QueryUnreadable {
		t.Fatalf("entry %+v; want the query opened", got)
	}
	// Without the key the entry is marked unreadable, and verification
	// needs no key.
	got, err = NewReader(pool, nil).Query(ctx, Filter{}, 0, 10)
	if err != nil || got[0].Query != "" || !got[0].QueryUnreadable {
		t.Fatalf("entry without a sealer: %+v, %v", got, err)
	}
	if rep, err := Verify(ctx, pool, nil, nil); err != nil || !rep.OK {
		t.Fatalf("verify: %+v %v", rep, err)
	}

	// PHI off: stored as given.
	plain, err := New(pool, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close(ctx)
	rec.RequestID = "plain"
	if err := plain.Append(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT query, query_sealed FROM audit_log WHERE seq = 2`).Scan(&raw, &sealed); err != nil {
		t.Fatal(err)
	}
	if sealed || string(raw) != secret {
		t.Fatalf("query with PHI off: %q sealed %v", raw, sealed)
	}
}

func TestQueryFilters(t *testing.T) {
	t.Parallel()
	pool := databasetest.NewPool(t)
	l, err := New(pool, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	ctx := context.Background()
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	yes := true
	no := false
	recs := []Record{
		{Time: base, Tenant: "t1", SubjectID: "alice", Interaction: "read", ResourceType: "Observation", PatientIDs: []string{"p1"}, Outcome: "200", Action: "R"},
		{Time: base.Add(time.Hour), Tenant: "t1", SubjectID: "bob", Interaction: "search", ResourceType: "Condition", PatientIDs: []string{"p1", "p2"}, Outcome: "200", Action: "E"},
		{Time: base.Add(2 * time.Hour), Tenant: "t1", SubjectID: "alice", Interaction: "read", ResourceType: "Patient", PatientIDs: []string{"p2"}, Outcome: "403", Action: "R"},
		{Time: base.Add(3 * time.Hour), Tenant: "t1", SubjectID: "carol", Interaction: "read", ResourceType: "Observation", PatientIDs: []string{"p3"}, Outcome: "200", Action: "R", BreakGlass: true},
		{Time: base.Add(4 * time.Hour), Tenant: "t2", SubjectID: "alice", Interaction: "hl7", ResourceType: "", PatientIDs: []string{"p1"}, Outcome: "AE", Action: "C"},
		{Time: base.Add(5 * time.Hour), Tenant: "t2", SubjectID: "emr", Interaction: "hl7", PatientIDs: []string{"p9"}, Outcome: "AA", Action: "C"},
	}
	for _, r := range recs {
		if err := l.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	seqs := func(f Filter, after int64, limit int) []int64 {
		t.Helper()
		es, err := l.Query(ctx, f, after, limit)
		if err != nil {
			t.Fatalf("query %+v: %v", f, err)
		}
		var out []int64
		for _, e := range es {
			out = append(out, e.Seq)
		}
		return out
	}
	for _, c := range []struct {
		f    Filter
		want []int64
	}{
		{Filter{}, []int64{1, 2, 3, 4, 5, 6}},
		{Filter{Tenant: "t1"}, []int64{1, 2, 3, 4}},
		{Filter{Patient: "p1"}, []int64{1, 2, 5}},
		{Filter{Tenant: "t1", Patient: "p2"}, []int64{2, 3}},
		{Filter{Agent: "alice"}, []int64{1, 3, 5}},
		{Filter{From: base.Add(time.Hour), To: base.Add(3 * time.Hour)}, []int64{2, 3}},
		{Filter{Action: "R"}, []int64{1, 3, 4}},
		{Filter{Outcome: "success"}, []int64{1, 2, 4, 6}},
		{Filter{Outcome: "failure"}, []int64{3, 5}},
		{Filter{EntityType: "Observation"}, []int64{1, 4}},
		{Filter{Interaction: "hl7"}, []int64{5, 6}},
		{Filter{BreakGlass: &yes}, []int64{4}},
		{Filter{BreakGlass: &no, Tenant: "t1", Agent: "alice", Outcome: "success"}, []int64{1}},
	} {
		if got := seqs(c.f, 0, 0); !reflect.DeepEqual(got, c.want) {
			t.Errorf("query %+v: seqs %v; want %v", c.f, got, c.want)
		}
	}
	if got := seqs(Filter{}, 2, 2); !reflect.DeepEqual(got, []int64{3, 4}) {
		t.Errorf("page after 2, limit 2: %v", got)
	}
	if _, err := l.Query(ctx, Filter{Outcome: "maybe"}, 0, 0); err == nil {
		t.Error("outcome filter maybe accepted")
	}
	// Distinct patients per subject, in the database.
	for _, c := range []struct {
		f    Filter
		want map[string]int
	}{
		{Filter{}, map[string]int{"alice": 2, "bob": 2, "carol": 1, "emr": 1}},
		{Filter{Tenant: "t1"}, map[string]int{"alice": 2, "bob": 2, "carol": 1}},
		{Filter{Outcome: "success", Tenant: "t1"}, map[string]int{"alice": 1, "bob": 2, "carol": 1}},
	} {
		got, err := l.PatientsPerSubject(ctx, c.f)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("patients per subject %+v: %v, want %v", c.f, got, c.want)
		}
	}
	for _, r := range recs {
		if Success(r.Outcome) != (r.Outcome == "200" || r.Outcome == "AA") {
			t.Errorf("Success(%q) = %v", r.Outcome, Success(r.Outcome))
		}
	}
	// Stream pages through everything in seq order.
	appendAll(t, l, 1500, func(int) Record { return Record{Tenant: "t3", Interaction: "read", Outcome: "200"} })
	var streamed []int64
	if err := l.Stream(ctx, Filter{Tenant: "t3"}, func(e Entry) error { streamed = append(streamed, e.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(streamed) != 1500 || streamed[0] != 7 || streamed[1499] != 1506 {
		t.Fatalf("streamed %d entries from %v", len(streamed), streamed[:min(3, len(streamed))])
	}
	stop := errors.New("stop")
	n := 0
	if err := l.Stream(ctx, Filter{}, func(Entry) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("stream stops at fn's error: %v after %d", err, n)
	}
}

// BenchmarkAppend appends from parallel goroutines (8 per GOMAXPROCS) and
// reports records per commit and commit latency.
func BenchmarkAppend(b *testing.B) {
	pool := databasetest.NewPool(b)
	l, err := New(pool, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close(context.Background())
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if err := l.Append(context.Background(), sample(i)); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	b.StopTimer()
	st := l.Stats()
	b.ReportMetric(st.RecordsPerCommit(), "records/commit")
	b.ReportMetric(float64(st.CommitP50.Microseconds()), "commit-p50-µs")
	b.ReportMetric(float64(st.CommitP99.Microseconds()), "commit-p99-µs")
}

// TestTwoWritersShareTheChain: two Logs over one database (two gateway
// processes) append concurrently. Each chains its batches in one round
// trip from the head it last saw; when the other moved the head, the guard
// makes the insert a no-op and the batch is rewritten from the real head.
// The chain stays contiguous and verifies.
func TestTwoWritersShareTheChain(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Options{})
	other := f.open(f.pool, Options{})
	const each = 300
	var wg sync.WaitGroup
	for _, l := range []*Log{f.log, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each / 5 { // small batches: many commits that interleave
				appendAll(t, l, 5, sample)
			}
		}()
	}
	wg.Wait()
	var n, maxSeq int64
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*), max(seq) FROM audit_log`).Scan(&n, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if n != 2*each || maxSeq != 2*each {
		t.Fatalf("%d records, max seq %d; want %d contiguous", n, maxSeq, 2*each)
	}
	a, b := f.log.Stats(), other.Stats()
	t.Logf("writer 1: %d records in %d commits; writer 2: %d in %d", a.Records, a.Commits, b.Records, b.Commits)
	if a.Commits < 20 || b.Commits < 20 {
		t.Errorf("too few commits (%d, %d) for the writers to interleave", a.Commits, b.Commits)
	}
	f.checkpoint()
	if rep := f.verify(); !rep.OK || rep.Records != 2*each {
		t.Fatalf("verify after two writers: %+v (break %v)", rep, rep.Broken)
	}
}
