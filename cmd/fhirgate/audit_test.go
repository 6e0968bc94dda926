package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/fhirgate/fhirgate/internal/audit"
	"github.com/fhirgate/fhirgate/internal/database"
	"github.com/fhirgate/fhirgate/internal/database/databasetest"
)

// TestAuditVerifyCommand: `fhirgate audit verify` passes on a fresh log
// written as serve writes it, and fails precisely on a tampered one;
// `fhirgate audit checkpoint` anchors the head and refuses a broken log.
func TestAuditVerifyCommand(t *testing.T) {
	dbURL := databasetest.NewURL(t)
	dataDir := t.TempDir()
	for k, v := range map[string]string{
		"DATABASE_URL": dbURL, "FHIRGATE_DB_MAX_CONNS": "4", "FHIRGATE_DB_MIN_CONNS": "1", "FHIRGATE_DATA_DIR": dataDir,
		"FHIRGATE_AUDIT_CHECKPOINT_FILE": "", "FHIRGATE_AUDIT_SIGNING_KEY": "", "FHIRGATE_AUDIT_CHECKPOINT_INTERVAL": "",
	} {
		t.Setenv(k, v)
	}
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := runAudit(ctx, args, logger, &out, &errOut)
		return out.String() + errOut.String(), err
	}

	// An empty log verifies; there is nothing to checkpoint.
	if out, err := run("verify"); err != nil || !strings.Contains(out, "audit log: OK") {
		t.Fatalf("verify an empty log: %v\n%s", err, out)
	}

	pool, err := database.Open(ctx, database.Config{URL: dbURL, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	cfg, err := auditConfigFromEnv(dataDirFromEnv())
	if err != nil {
		t.Fatal(err)
	}
	l, closeLog, err := openAuditLog(pool, nil, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		rec := audit.Record{RequestID: fmt.Sprint(i), Tenant: "t", SubjectID: "u", Interaction: audit.InteractionRead,
			ResourceType: "Patient", ResourceIDs: []string{"p"}, PatientIDs: []string{"p"}, Outcome: "200", Action: audit.ActionRead}
		if err := l.Append(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := closeLog(ctx); err != nil { // writes the final checkpoint
		t.Fatal(err)
	}

	out, err := run("verify")
	if err != nil || !strings.Contains(out, "audit log: OK") || !strings.Contains(out, "newest: seq 10") {
		t.Fatalf("verify a fresh log: %v\n%s", err, out)
	}
	out, err = run("verify", "-json", "-require-checkpoint")
	var rep verifyJSON
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || !rep.OK || rep.Records != 10 || rep.Latest == nil || rep.Latest.Seq != 10 {
		t.Fatalf("verify -json: %v\n%s", err, out)
	}
	if out, err := run("checkpoint"); err != nil || !strings.Contains(out, "already checkpointed") {
		t.Fatalf("checkpoint of a checkpointed head: %v\n%s", err, out)
	}

	// Two more records without a checkpoint: a warning, then the
	// checkpoint command anchors them.
	l2, closeLog2, err := openAuditLog(pool, nil, auditConfig{CheckpointFile: t.TempDir() + "/other.jsonl", SigningKey: cfg.SigningKey}, logger)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := l2.Append(ctx, audit.Record{Interaction: audit.InteractionLoginFailed, Outcome: "401"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := closeLog2(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := run("verify"); err != nil || !strings.Contains(out, "warning: 2 records after the newest checkpoint") {
		t.Fatalf("verify with an unanchored tail: %v\n%s", err, out)
	}
	if out, err := run("checkpoint"); err != nil || !strings.Contains(out, "checkpoint: seq 12") {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}

	// Tamper as a superuser bypassing the triggers: verify names the seq.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE audit_log SET subject_id = 'nobody' WHERE seq = 4`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err = run("verify")
	if err == nil || !strings.Contains(err.Error(), "seq 4") || !strings.Contains(out, "BROKEN at seq 4 (edited)") {
		t.Fatalf("verify a tampered log: %v\n%s", err, out)
	}
	if strings.Contains(out, "nobody") {
		t.Errorf("the report prints record contents:\n%s", out)
	}
	if out, err := run("checkpoint"); err == nil || !strings.Contains(out, "BROKEN") {
		t.Fatalf("checkpoint of a tampered log: %v\n%s", err, out)
	}

	// Configuration and usage errors.
	t.Setenv("FHIRGATE_AUDIT_CHECKPOINT_INTERVAL", "often")
	if _, err := run("verify"); err == nil || !strings.Contains(err.Error(), "FHIRGATE_AUDIT_CHECKPOINT_INTERVAL") {
		t.Errorf("bad interval: %v", err)
	}
	if _, err := run("frobnicate"); err == nil {
		t.Error("unknown audit command accepted")
	}
}
