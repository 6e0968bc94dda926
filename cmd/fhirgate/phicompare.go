package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fhirgate/fhirgate/internal/api"
	"github.com/fhirgate/fhirgate/internal/bench"
	"github.com/fhirgate/fhirgate/internal/database"
	"github.com/fhirgate/fhirgate/internal/phi/vault"
)

// bench -phi-compare: the bench starts two gateways in its own process,
// PHI encryption off and on, each over a fresh database it creates (and
// drops) on the PostgreSQL server, and compares their ingest and read
// throughput and the calls made to the key provider.

const phiCompareUsage = `
-phi-compare starts two gateways in this process on loopback ports, PHI
encryption off and on, each over a fresh database (fhirgate_bench_phi_off,
fhirgate_bench_phi_on) on the PostgreSQL server of -database-url, else
DATABASE_URL, else the dev default. PHI on uses FHIRGATE_KEY_PROVIDER (vault:
VAULT_ADDR, VAULT_TOKEN, FHIRGATE_VAULT_TRANSIT_KEY, FHIRGATE_VAULT_ENSURE_KEY;
local: a fresh keyring in a temporary directory), FHIRGATE_PHI_POLICY,
FHIRGATE_PHI_KEY_TTL and FHIRGATE_PHI_KEY_CACHE. Both run -phases (default
ingest,vacuum,read; ingest of -resources, default 20000, read for -duration)
-phi-rounds times, and a table gives the medians, the loss, and the key
provider calls and PHI values sealed and opened per phase. On a shared
machine, a round during which other processes (builds, tests) used more than
-phi-max-foreign cores is run again, up to -phi-retries times; the table shows
the foreign load of each kept round.
`

// defaultCompareResources is -resources under -phi-compare when neither it
// nor -rounds is given: 250000 per round and mode is too long for an A/B run.
const defaultCompareResources = 20000

// compareFlags are the -phi-compare settings of the command line.
type compareFlags struct {
	Enabled    bool
	Rounds     int
	MaxLoss    float64
	MaxForeign float64
	Retries    int
	QuietWait  time.Duration
	Keep       bool
}

// phiCompareOptions is one comparison, with everything the environment
// decides resolved (so tests need not touch the environment).
type phiCompareOptions struct {
	compareFlags
	// ServerURL is a connection string to the PostgreSQL server the two
	// databases are created on ("" for the dev default).
	ServerURL string
	// DataDir is FHIRGATE_DATA_DIR, for the dev default's private server.
	DataDir string
	// DBPrefix names the databases: DBPrefix_off and DBPrefix_on.
	DBPrefix string
	// PHI configures the PHI-on gateway (Enabled is set per gateway; the
	// local keyring is always a fresh one in a temporary directory).
	PHI phiConfig
	// API is the gateways' API configuration.
	API    api.Config
	Logger *slog.Logger
}

// runPHICompare runs a comparison configured by the command line and the
// environment, printing to stdout and stderr.
func runPHICompare(ctx context.Context, cfg bench.Config, cf compareFlags) error {
	level := os.Getenv("FHIRGATE_LOG_LEVEL")
	if level == "" {
		level = "warn" // the gateways' request logs would drown the progress lines
	}
	logger, err := newLogger(level)
	if err != nil {
		return err
	}
	sc, err := serveConfigFromEnv()
	if err != nil {
		return err
	}
	if sc.DebugAddr != "" { // FHIRGATE_DEBUG_ADDR: profile the gateways as serve allows
		startDebug(sc.DebugAddr, logger)
	}
	dataDir := dataDirFromEnv()
	pc, err := phiConfigFromEnv(dataDir)
	if err != nil {
		return err
	}
	ac, err := api.ConfigFromEnv()
	if err != nil {
		return err
	}
	server := cfg.DatabaseURL
	if server == "" {
		server = os.Getenv("DATABASE_URL")
	}
	o := phiCompareOptions{compareFlags: cf, ServerURL: server, DataDir: dataDir, DBPrefix: "fhirgate_bench_phi",
		PHI: pc, API: ac, Logger: logger}
	rep, err := phiCompare(ctx, cfg, o, os.Stdout, os.Stderr)
	if err != nil {
		return err
	}
	if !rep.Pass() {
		return fmt.Errorf("bench: -phi-compare: the target is not met (see the FAIL lines)")
	}
	return nil
}

// phiCompare starts the two gateways, runs the comparison and tears
// everything down (the databases stay with Keep).
func phiCompare(ctx context.Context, cfg bench.Config, o phiCompareOptions, out, progress io.Writer) (rep *bench.CompareReport, resErr error) {
	logger := o.Logger
	server := o.ServerURL
	if server == "" {
		url, stop, err := database.DevURL(ctx, filepath.Join(o.DataDir, "pg"), logger)
		if err != nil {
			return nil, fmt.Errorf("bench: no DATABASE_URL and no local PostgreSQL could be found or started: %w", err)
		}
		if stop != nil {
			defer func() {
				if err := stop(); err != nil {
					logger.Warn("stopping the private PostgreSQL failed", "error", err.Error())
				}
			}()
		}
		server = url
	}
	var gws [2]*benchGateway
	var targets [2]bench.Target
	var names []string
	for i, mode := range []string{"off", "on"} {
		name := o.DBPrefix + "_" + mode
		names = append(names, name)
		dbURL, drop, err := createDatabase(ctx, server, name)
		if err != nil {
			return nil, err
		}
		if o.Keep {
			fmt.Fprintf(progress, "bench: database %s is kept (-keep)\n", name)
		} else {
			defer func() {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
				defer cancel()
				if derr := drop(dctx); derr != nil && resErr == nil {
					resErr = derr
				}
			}()
		}
		if err := migrate(ctx, dbURL, logger); err != nil {
			return nil, fmt.Errorf("bench: database %s: %w", name, err)
		}
		dbc, err := poolSize(dbURL)
		if err != nil {
			return nil, err
		}
		pc := o.PHI
		pc.Enabled = mode == "on"
		if pc.Enabled && pc.Provider != "vault" {
			dir, err := os.MkdirTemp("", "fhirgate-bench-keyring-")
			if err != nil {
				return nil, fmt.Errorf("bench: keyring directory: %w", err)
			}
			defer os.RemoveAll(dir)
			pc.Keyring = filepath.Join(dir, "keyring.json")
		}
		g, err := buildGateway(ctx, dbc, o.API, pc, logger)
		if err != nil {
			return nil, fmt.Errorf("bench: gateway with PHI %s: %w", mode, err)
		}
		defer g.Close() // before the database is dropped: defers run last first
		gws[i] = g
		targets[i] = bench.Target{Name: mode, URL: g.URL, DatabaseURL: dbURL}
		fmt.Fprintf(progress, "bench: gateway with PHI %s at %s over database %s\n", mode, g.URL, name)
	}
	on := gws[1]
	targets[1].KeyTTL = on.KeyTTL
	targets[1].Provider = on.Provider.Name()
	if _, ok := on.Provider.KeyProvider.(*vault.Provider); ok {
		targets[1].Provider += " (counting HTTP requests to Vault transit)"
	} else {
		targets[1].Provider += " (counting KeyProvider calls)"
	}
	targets[1].Counters = func(ctx context.Context) (bench.Counters, error) {
		keys, err := on.Store.AllKeys(ctx)
		if err != nil {
			return bench.Counters{}, err
		}
		sealed, opened := on.PHI.Counts()
		return bench.Counters{ProviderCalls: on.ProviderCalls(), Sealed: sealed, Opened: opened, Keys: int64(len(keys))}, nil
	}
	cc := bench.CompareConfig{Bench: cfg, Rounds: o.Rounds, MaxLoss: o.MaxLoss, Workload: names,
		MaxForeign: o.MaxForeign, Retries: o.Retries, QuietWait: o.QuietWait}
	rep, err := bench.Compare(ctx, cc, targets, out, progress)
	if rep != nil {
		fmt.Fprintf(out, "key provider calls with PHI on, whole run (startup included), by KeyProvider method: %s", on.Provider.ByMethod())
		if _, ok := on.Provider.KeyProvider.(*vault.Provider); ok {
			fmt.Fprintf(out, "; HTTP requests to Vault transit: %d", on.ProviderCalls())
		}
		fmt.Fprintln(out)
	}
	return rep, err
}
