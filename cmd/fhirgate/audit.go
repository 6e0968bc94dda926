package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fhirgate/fhirgate/internal/audit"
	"github.com/fhirgate/fhirgate/internal/database"
	"github.com/fhirgate/fhirgate/internal/phi"
)

// fhirgate audit: verify the access log's hash chain against the external
// checkpoints, and write a checkpoint. It reads the same configuration as
// serve (DATABASE_URL, FHIRGATE_DATA_DIR, FHIRGATE_AUDIT_*) and prints no
// record contents: seqs, hashes and what is broken.

const auditUsage = `usage: fhirgate audit <command> [flags]

commands:
  verify [-json] [-require-checkpoint]
        recompute the audit log's hash chain from the first record, check it
        against every signed checkpoint in the checkpoint file, and report
        the first broken record (edited, deleted, reordered, rewritten and
        rehashed, truncated); exits 1 when the log does not verify
  checkpoint [-no-verify]
        verify the log, then sign its head and append the checkpoint to the
        checkpoint file (the gateway also does this every
        FHIRGATE_AUDIT_CHECKPOINT_INTERVAL and when it stops)

environment:
  FHIRGATE_AUDIT_CHECKPOINT_FILE      default <data dir>/audit/checkpoints.jsonl
  FHIRGATE_AUDIT_CHECKPOINT_INTERVAL  default 1m
  FHIRGATE_AUDIT_SIGNING_KEY          default <data dir>/keys/audit-signing.json
`

// auditConfig configures the audit log's checkpoints.
type auditConfig struct {
	CheckpointFile string        // FHIRGATE_AUDIT_CHECKPOINT_FILE
	Interval       time.Duration // FHIRGATE_AUDIT_CHECKPOINT_INTERVAL
	SigningKey     string        // FHIRGATE_AUDIT_SIGNING_KEY: the Ed25519 key file
}

func auditConfigFromEnv(dataDir string) (auditConfig, error) {
	c := auditConfig{
		CheckpointFile: filepath.Join(dataDir, "audit", "checkpoints.jsonl"),
		Interval:       time.Minute,
		SigningKey:     filepath.Join(dataDir, "keys", "audit-signing.json"),
	}
	if v := os.Getenv("FHIRGATE_AUDIT_CHECKPOINT_FILE"); v != "" {
		c.CheckpointFile = v
	}
	if v := os.Getenv("FHIRGATE_AUDIT_SIGNING_KEY"); v != "" {
		c.SigningKey = v
	}
	if v := os.Getenv("FHIRGATE_AUDIT_CHECKPOINT_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			return c, fmt.Errorf("FHIRGATE_AUDIT_CHECKPOINT_INTERVAL=%q: want a duration of at least 1s, such as 1m", v)
		}
		c.Interval = d
	}
	return c, nil
}

// openAuditLog starts the audit log for serve: group commit over pool,
// queries sealed with svc (nil: PHI encryption off), checkpoints signed with
// the Ed25519 key file (created on first use) to the checkpoint file every
// c.Interval. close flushes the log, writes a final checkpoint and closes
// the file.
func openAuditLog(pool *pgxpool.Pool, svc *phi.Service, c auditConfig, logger *slog.Logger) (*audit.Log, func(context.Context) error, error) {
	signer, err := audit.OpenEd25519File(c.SigningKey, true)
	if err != nil {
		return nil, nil, fmt.Errorf("FHIRGATE_AUDIT_SIGNING_KEY: %w", err)
	}
	sink := audit.NewFileSink(c.CheckpointFile)
	opt := audit.Options{Signer: signer, Sink: sink, CheckpointInterval: c.Interval, Logger: logger}
	if svc != nil {
		opt.Sealer = svc // not a typed nil in the interface
	}
	l, err := audit.New(pool, opt)
	if err != nil {
		return nil, nil, err
	}
	logger.Info("audit log on", "checkpoint_file", c.CheckpointFile, "checkpoint_interval", c.Interval.String(),
		"signing_key_id", signer.KeyID(), "query_sealed", svc != nil)
	return l, func(ctx context.Context) error {
		return errors.Join(l.Close(ctx), sink.Close())
	}, nil
}

// auditCmd: fhirgate audit verify|checkpoint.
func auditCmd(ctx context.Context, args []string, logger *slog.Logger) error {
	return runAudit(ctx, args, logger, os.Stdout, os.Stderr)
}

func runAudit(ctx context.Context, args []string, logger *slog.Logger, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError("audit: want verify or checkpoint (fhirgate audit -h)")
	}
	switch args[0] {
	case "verify":
		return auditVerifyCmd(ctx, args[1:], stdout, stderr)
	case "checkpoint":
		return auditCheckpointCmd(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, auditUsage)
		return nil
	}
	return usageError(fmt.Sprintf("audit: unknown command %q: want verify or checkpoint", args[0]))
}

// auditEnv is what the audit commands work on.
type auditEnv struct {
	cfg    auditConfig
	pool   *pgxpool.Pool
	sink   *audit.FileSink
	signer audit.Signer // nil when the key file does not exist and createKey was false
}

func openAuditEnv(ctx context.Context, what string, createKey bool) (*auditEnv, error) {
	cfg, err := auditConfigFromEnv(dataDirFromEnv())
	if err != nil {
		return nil, err
	}
	dbc, err := database.ConfigFromEnv()
	if err != nil {
		return nil, err
	}
	if dbc.URL == "" {
		return nil, fmt.Errorf("DATABASE_URL is not set: audit %s needs the gateway's database", what)
	}
	env := &auditEnv{cfg: cfg, sink: audit.NewFileSink(cfg.CheckpointFile)}
	signer, err := audit.OpenEd25519File(cfg.SigningKey, createKey)
	switch {
	case err == nil:
		env.signer = signer
	case errors.Is(err, fs.ErrNotExist):
		// verify: fine as long as there are no checkpoints to check
	default:
		return nil, fmt.Errorf("FHIRGATE_AUDIT_SIGNING_KEY: %w", err)
	}
	if env.pool, err = database.Open(ctx, dbc); err != nil {
		return nil, err
	}
	return env, nil
}

func (e *auditEnv) close() {
	e.sink.Close()
	e.pool.Close()
}

func auditFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("audit "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// verifyJSON is `audit verify -json`.
type verifyJSON struct {
	OK          bool            `json:"ok"`
	Records     int64           `json:"records"`
	HeadSeq     int64           `json:"head_seq"`
	HeadHash    string          `json:"head_hash,omitempty"`
	Checkpoints int             `json:"checkpoints"`
	Latest      *checkpointJSON `json:"latest_checkpoint,omitempty"`
	Broken      *brokenJSON     `json:"broken,omitempty"`
	Warnings    []string        `json:"warnings,omitempty"`
}

type checkpointJSON struct {
	Seq   int64     `json:"seq"`
	Hash  string    `json:"hash"`
	Time  time.Time `json:"time"`
	KeyID string    `json:"key_id"`
}

type brokenJSON struct {
	Seq    int64  `json:"seq"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

func cpJSON(c *audit.Checkpoint) *checkpointJSON {
	if c == nil {
		return nil
	}
	return &checkpointJSON{Seq: c.Seq, Hash: hex.EncodeToString(c.Hash), Time: c.Time, KeyID: c.KeyID}
}

func auditVerifyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := auditFlags("verify", stderr)
	asJSON := fs.Bool("json", false, "print JSON for machines")
	requireCP := fs.Bool("require-checkpoint", false, "fail when there is no external checkpoint to check the chain against")
	if err := parseKeysFlags(fs, args); err != nil {
		return err
	}
	env, err := openAuditEnv(ctx, "verify", false)
	if err != nil {
		return err
	}
	defer env.close()
	rep, err := audit.Verify(ctx, env.pool, env.sink, env.signer)
	if err != nil {
		return err
	}
	if *requireCP && rep.OK && rep.Latest == nil && rep.Head.Seq > 0 {
		rep.OK = false
		rep.Broken = &audit.Break{Kind: audit.BrokenCheckpoint, Detail: "no external checkpoint in " + env.cfg.CheckpointFile}
	}
	if *asJSON {
		out := verifyJSON{OK: rep.OK, Records: rep.Records, HeadSeq: rep.Head.Seq, Checkpoints: rep.Checkpoints,
			Latest: cpJSON(rep.Latest), Warnings: rep.Warnings}
		if rep.Head.Seq > 0 {
			out.HeadHash = hex.EncodeToString(rep.Head.Hash)
		}
		if rep.Broken != nil {
			out.Broken = &brokenJSON{Seq: rep.Broken.Seq, Kind: rep.Broken.Kind, Detail: rep.Broken.Detail}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		printReport(stdout, rep, env.cfg.CheckpointFile)
	}
	if !rep.OK {
		return fmt.Errorf("audit log verification failed at seq %d (%s)", rep.Broken.Seq, rep.Broken.Kind)
	}
	return nil
}

func printReport(w io.Writer, rep audit.Report, file string) {
	if rep.OK {
		fmt.Fprintln(w, "audit log: OK")
	} else {
		fmt.Fprintf(w, "audit log: BROKEN at seq %d (%s): %s\n", rep.Broken.Seq, rep.Broken.Kind, rep.Broken.Detail)
	}
	if rep.Head.Seq > 0 {
		fmt.Fprintf(w, "records checked: %d (up to seq %d, hash %x)\n", rep.Records, rep.Head.Seq, rep.Head.Hash)
	} else {
		fmt.Fprintf(w, "records checked: %d\n", rep.Records)
	}
	if rep.Latest != nil {
		fmt.Fprintf(w, "checkpoints: %d in %s, newest: seq %d signed %s by %s\n", rep.Checkpoints, file,
			rep.Latest.Seq, rep.Latest.Time.Format(time.RFC3339), rep.Latest.KeyID)
	} else {
		fmt.Fprintf(w, "checkpoints: none in %s\n", file)
	}
	for _, warn := range rep.Warnings {
		fmt.Fprintln(w, "warning:", warn)
	}
}

func auditCheckpointCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := auditFlags("checkpoint", stderr)
	noVerify := fs.Bool("no-verify", false, "sign the database's head without verifying the chain first")
	if err := parseKeysFlags(fs, args); err != nil {
		return err
	}
	env, err := openAuditEnv(ctx, "checkpoint", true)
	if err != nil {
		return err
	}
	defer env.close()
	var head audit.Head
	var latest *audit.Checkpoint
	if *noVerify {
		if head, err = audit.ReadHead(ctx, env.pool); err != nil {
			return err
		}
	} else {
		rep, err := audit.Verify(ctx, env.pool, env.sink, env.signer)
		if err != nil {
			return err
		}
		if !rep.OK {
			printReport(stdout, rep, env.cfg.CheckpointFile)
			return fmt.Errorf("audit log verification failed at seq %d (%s): no checkpoint written", rep.Broken.Seq, rep.Broken.Kind)
		}
		head, latest = rep.Head, rep.Latest
	}
	if head.Seq == 0 {
		fmt.Fprintln(stdout, "audit log is empty: nothing to checkpoint")
		return nil
	}
	if latest != nil && latest.Seq == head.Seq && bytes.Equal(latest.Hash, head.Hash) {
		fmt.Fprintf(stdout, "seq %d is already checkpointed (signed %s)\n", head.Seq, latest.Time.Format(time.RFC3339))
		return nil
	}
	cp, err := audit.WriteCheckpoint(ctx, env.pool, env.signer, env.sink, head)
	if cp.Signature != nil {
		fmt.Fprintf(stdout, "checkpoint: seq %d hash %x signed %s by %s, appended to %s\n",
			cp.Seq, cp.Hash, cp.Time.Format(time.RFC3339), cp.KeyID, env.cfg.CheckpointFile)
	}
	return err
}
