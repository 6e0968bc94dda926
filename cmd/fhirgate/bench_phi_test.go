package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fhirgate/fhirgate/internal/api"
	"github.com/fhirgate/fhirgate/internal/bench"
	"github.com/fhirgate/fhirgate/internal/database/databasetest"
)

// smallCorpus links the two smallest patient bundles of the Synthea corpus
// into a temporary directory, so the test loads little.
func smallCorpus(t *testing.T) string {
	t.Helper()
	src := filepath.Join("..", "..", "..", "shared", "corpus", "synthea")
	paths, err := filepath.Glob(filepath.Join(src, "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no Synthea corpus in %s: %v", src, err)
	}
	type file struct {
		path string
		size int64
	}
	var fs []file
	for _, p := range paths {
		base := filepath.Base(p)
		if strings.HasPrefix(base, "hospitalInformation") || strings.HasPrefix(base, "practitionerInformation") {
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, file{p, st.Size()})
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].size < fs[j].size })
	if len(fs) < 2 {
		t.Fatalf("want at least two patient bundles in %s", src)
	}
	dir := t.TempDir()
	for _, f := range fs[:2] {
		abs, err := filepath.Abs(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(abs, filepath.Join(dir, filepath.Base(f.path))); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestPHICompare runs bench -phi-compare end to end with a local keyring:
// two in-process gateways over two fresh databases, ingest and read on
// each, and the table with both modes, the loss and the key-provider
// calls. The figures themselves are not judged here (a loaded test
// machine says nothing about throughput); the counts are.
func TestPHICompare(t *testing.T) {
	cfg, cf, err := parseBenchArgs([]string{"-phi-compare", "-corpus", smallCorpus(t), "-resources", "300",
		"-duration", "1s", "-phi-rounds", "1", "-phases", "ingest,read",
		"-phi-max-foreign", "0"}) // a loaded test machine must not make the test retry
	if err != nil {
		t.Fatal(err)
	}
	if !cf.Enabled || cf.Rounds != 1 || cf.MaxLoss != 15 {
		t.Fatalf("compare flags = %+v", cf)
	}
	server := databasetest.ServerURL()
	prefix := "fhirgate_test_phicmp_" + randomSuffix(t)
	pc, err := phiConfigFromEnv(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pc.Provider = "local" // whatever the environment says: this test needs no Vault
	pc.Policy = filepath.Join("..", "..", "policies", "phi.yaml")
	o := phiCompareOptions{compareFlags: cf, ServerURL: server, DataDir: t.TempDir(), DBPrefix: prefix,
		PHI: pc, API: api.Config{Tenant: "default", MaxBodyBytes: 64 << 20},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, progress bytes.Buffer
	rep, err := phiCompare(ctx, cfg, o, &out, &progress)
	t.Logf("table:\n%s", out.String())
	if err != nil {
		t.Fatalf("phiCompare: %v\nprogress:\n%s", err, progress.String())
	}

	for _, phase := range []string{bench.PhaseIngest, bench.PhaseRead} {
		row := rep.Row(phase)
		if row == nil {
			t.Fatalf("no %s row in the report", phase)
		}
		if row.Base.Rate <= 0 || row.Test.Rate <= 0 {
			t.Errorf("%s: rates off %.0f, on %.0f: want both > 0", phase, row.Base.Rate, row.Test.Rate)
		}
		if row.Base.Errors != 0 || row.Test.Errors != 0 {
			t.Errorf("%s: errors off %d, on %d", phase, row.Base.Errors, row.Test.Errors)
		}
		for _, mode := range []string{"off", "on", "loss"} {
			if !regexp.MustCompile(`(?m)^\s*` + phase + `\s+` + mode + `\s`).MatchString(out.String()) {
				t.Errorf("the table has no %s line for PHI %s", phase, mode)
			}
		}
	}
	ing, rd := rep.Row(bench.PhaseIngest), rep.Row(bench.PhaseRead)
	if ing.Requests == 0 {
		t.Errorf("ingest with PHI on sent nothing")
	}
	if ing.Sealed == 0 {
		t.Error("ingest with PHI on sealed no value: the PHI-on gateway did not encrypt")
	}
	if rd.Opened == 0 {
		t.Error("reads with PHI on opened no value: the PHI-on gateway did not decrypt")
	}
	var calls int64
	for _, r := range rep.Rows {
		for _, c := range r.Calls {
			calls += c
		}
	}
	// Two data keys (data and index) for the one tenant: a few calls, not
	// one per field (thousands sealed) or per request (hundreds read).
	if calls <= 0 || calls >= 20 {
		t.Errorf("key provider calls during the phases = %d, want > 0 and < 20 (sealed %d, opened %d, read requests %d)",
			calls, ing.Sealed, rd.Opened, rd.Requests)
	}
	if rd.Calls[0] != 0 {
		t.Errorf("reads made %d key provider calls, want 0 (keys cached since ingest)", rd.Calls[0])
	}
	if !strings.Contains(out.String(), "key provider called at most once per data key per cache lifetime") {
		t.Error("the table does not report the key provider check")
	}
	// The off gateway's databases never see a sealed value: its row has
	// no counters, and the table marks that with "-".
	if len(rep.Samples["off"][bench.PhaseIngest]) != 1 || rep.Samples["off"][bench.PhaseIngest][0].Delta != (bench.Counters{}) {
		t.Errorf("the PHI-off gateway has counters: %+v", rep.Samples["off"][bench.PhaseIngest])
	}

	// Both databases are dropped afterwards.
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname LIKE $1`, prefix+"%").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d bench databases %s_* left behind", n, prefix)
	}
}

func TestParseBenchArgsPHICompare(t *testing.T) {
	t.Parallel()
	cfg, cf, err := parseBenchArgs([]string{"-phi-compare"})
	if err != nil {
		t.Fatal(err)
	}
	if !cf.Enabled || cf.Rounds != 3 || cf.MaxLoss != 15 || cf.Keep || cf.MaxForeign != 0.25 || cf.Retries != 3 || cf.QuietWait != 2*time.Minute {
		t.Errorf("defaults = %+v", cf)
	}
	if strings.Join(cfg.Phases, ",") != "ingest,vacuum,read" || cfg.Resources != defaultCompareResources {
		t.Errorf("phases %v, resources %d", cfg.Phases, cfg.Resources)
	}
	for _, args := range [][]string{{"-phi-compare", "-url", "http://127.0.0.1:1/fhir"}, {"-phi-rounds", "2"}, {"-keep"}} {
		if _, _, err := parseBenchArgs(args); err == nil {
			t.Errorf("parseBenchArgs(%q): no error", args)
		}
	}
}

func randomSuffix(t *testing.T) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
