package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fhirgate/fhirgate/internal/bench"
)

// benchCmd runs the load generator against a running gateway:
//
//	fhirgate bench -url http://127.0.0.1:8080/fhir -resources 30000 -duration 10s
//
// or, with -phi-compare, against two gateways it starts itself, PHI
// encryption off and on (see phicompare.go).
func benchCmd(ctx context.Context, args []string) error {
	cfg, pc, err := parseBenchArgs(args)
	if err != nil {
		return err
	}
	if pc.Enabled {
		return runPHICompare(ctx, cfg, pc)
	}
	_, err = bench.Run(ctx, cfg, os.Stdout, os.Stderr)
	return err
}

// parseBenchFlags turns the command line into a validated bench.Config.
func parseBenchFlags(args []string) (bench.Config, error) {
	cfg, _, err := parseBenchArgs(args)
	return cfg, err
}

// parseBenchArgs turns the command line into a validated bench.Config
// and the -phi-compare settings (validated with the targets, by
// bench.Compare, when that mode is on).
func parseBenchArgs(args []string) (bench.Config, compareFlags, error) {
	cfg := bench.DefaultConfig()
	pc := compareFlags{Rounds: 3, MaxLoss: 15, MaxForeign: 0.25, Retries: 3, QuietWait: 2 * time.Minute}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: fhirgate bench [flags]\n\nReplays Synthea transaction bundles against a running gateway, then reads,\nsearches and verifies what it created. Phases: ingest, read, search, verify,\ncopy-baseline (needs -database-url), mllp (HL7 v2 over MLLP to -mllp-addr).\n\n")
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), phiCompareUsage)
	}
	phases := strings.Join(cfg.Phases, ",")
	mllpTypes := strings.Join(cfg.MLLPTypes, ",")
	fs.StringVar(&cfg.URL, "url", cfg.URL, "FHIR base URL of the gateway under test")
	fs.StringVar(&cfg.Token, "token", os.Getenv("FHIRGATE_BENCH_TOKEN"), "bearer token sent with every request (e.g. $(fhirgate token -sub bench -scope 'system/*.cruds')); default $FHIRGATE_BENCH_TOKEN")
	fs.StringVar(&cfg.StatsURL, "stats-url", "", "the gateway's http://FHIRGATE_DEBUG_ADDR/debug/fhirgate: report policy decision latency and audit records per commit per phase")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow a -url whose host is not a loopback address")
	fs.StringVar(&cfg.Corpus, "corpus", cfg.Corpus, "directory of Synthea transaction bundles")
	fs.StringVar(&phases, "phases", phases, "comma-separated phases to run: ingest,read,search,verify,copy-baseline,mllp")
	fs.IntVar(&cfg.Rounds, "rounds", 0, "times to replay the corpus (0: enough to reach -resources)")
	fs.IntVar(&cfg.Resources, "resources", cfg.Resources, "resources to ingest when -rounds is 0 (rounded up to a whole bundle)")
	fs.IntVar(&cfg.Concurrency, "c", 0, "concurrent workers (0: 4 for ingest, verify and copy, 16 for read, search and mllp)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of the read and search phases; upper bound of the mllp phase")
	fs.IntVar(&cfg.Sample, "sample", cfg.Sample, "created resources verify reads back")
	fs.DurationVar(&cfg.RequestTimeout, "timeout", cfg.RequestTimeout, "timeout of one request")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL URL for the copy-baseline phase (adds it to the default phases)")
	fs.StringVar(&cfg.MLLPAddr, "mllp-addr", cfg.MLLPAddr, "host:port of the gateway's MLLP listener (mllp phase)")
	fs.StringVar(&cfg.MLLPCorpus, "mllp-corpus", cfg.MLLPCorpus, "directory of *.hl7 messages (mllp phase)")
	fs.IntVar(&cfg.MLLPMessages, "mllp-messages", cfg.MLLPMessages, "messages the mllp phase sends, each with a fresh MSH-10")
	fs.StringVar(&mllpTypes, "mllp-types", mllpTypes, "comma-separated message types (MSH-9.1^MSH-9.2) the mllp phase sends, * for all")
	fs.BoolVar(&pc.Enabled, "phi-compare", false, "start two gateways in this process, PHI encryption off and on, each over a fresh database, and compare them")
	fs.IntVar(&pc.Rounds, "phi-rounds", pc.Rounds, "-phi-compare: rounds per mode (the order of the modes alternates)")
	fs.Float64Var(&pc.MaxLoss, "phi-max-loss", pc.MaxLoss, "-phi-compare: the largest acceptable ingest and read throughput loss with PHI on, in percent")
	fs.Float64Var(&pc.MaxForeign, "phi-max-foreign", pc.MaxForeign, "-phi-compare: CPU (cores) other processes may use during a measured phase before its round is run again; 0: no check")
	fs.IntVar(&pc.Retries, "phi-retries", pc.Retries, "-phi-compare: at most this many disturbed rounds are run again")
	fs.DurationVar(&pc.QuietWait, "phi-quiet-wait", pc.QuietWait, "-phi-compare: before each mode's turn, wait up to this long for other processes to use less than -phi-max-foreign")
	fs.BoolVar(&pc.Keep, "keep", false, "-phi-compare: keep the two databases (fhirgate_bench_phi_off, fhirgate_bench_phi_on) afterwards")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, pc, err
		}
		return cfg, pc, fmt.Errorf("bench: %w", err)
	}
	if fs.NArg() > 0 {
		return cfg, pc, fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg.Phases = bench.ParsePhases(phases)
	cfg.MLLPTypes = bench.ParsePhases(mllpTypes)
	if pc.Enabled {
		// The gateways and their databases are the bench's own: -url and
		// -database-url (the server the databases are created on) are
		// checked when they are known.
		if !set["phases"] {
			cfg.Phases = append([]string(nil), bench.DefaultComparePhases...)
		}
		if !set["resources"] && !set["rounds"] {
			cfg.Resources = defaultCompareResources
		}
		for _, name := range []string{"url", "allow-remote", "mllp-addr"} {
			if set[name] {
				return cfg, pc, fmt.Errorf("bench: -%s cannot be used with -phi-compare: the bench starts its own gateways on loopback ports", name)
			}
		}
		return cfg, pc, nil
	}
	for _, name := range []string{"phi-rounds", "phi-max-loss", "phi-max-foreign", "phi-retries", "phi-quiet-wait", "keep"} {
		if set[name] {
			return cfg, pc, fmt.Errorf("bench: -%s needs -phi-compare", name)
		}
	}
	if !set["phases"] && cfg.DatabaseURL != "" {
		cfg.Phases = append(cfg.Phases, bench.PhaseVacuum, bench.PhaseCopyBaseline)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, pc, fmt.Errorf("bench: %w", err)
	}
	return cfg, pc, nil
}
