package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/fhirgate/fhirgate/internal/bench"
)

// benchCmd runs the load generator against a running gateway:
//
//	fhirgate bench -url http://127.0.0.1:8080/fhir -resources 30000 -duration 10s
func benchCmd(ctx context.Context, args []string) error {
	cfg, err := parseBenchFlags(args)
	if err != nil {
		return err
	}
	_, err = bench.Run(ctx, cfg, os.Stdout, os.Stderr)
	return err
}

// parseBenchFlags turns the command line into a validated bench.Config.
func parseBenchFlags(args []string) (bench.Config, error) {
	cfg := bench.DefaultConfig()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: fhirgate bench [flags]\n\nReplays Synthea transaction bundles against a running gateway, then reads,\nsearches and verifies what it created. Phases: ingest, read, search, verify,\ncopy-baseline (needs -database-url), mllp (HL7 v2 over MLLP to -mllp-addr).\n\n")
		fs.PrintDefaults()
	}
	phases := strings.Join(cfg.Phases, ",")
	mllpTypes := strings.Join(cfg.MLLPTypes, ",")
	fs.StringVar(&cfg.URL, "url", cfg.URL, "FHIR base URL of the gateway under test")
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
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, fmt.Errorf("bench: %w", err)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	phasesSet := false
	fs.Visit(func(f *flag.Flag) { phasesSet = phasesSet || f.Name == "phases" })
	cfg.Phases = bench.ParsePhases(phases)
	cfg.MLLPTypes = bench.ParsePhases(mllpTypes)
	if !phasesSet && cfg.DatabaseURL != "" {
		cfg.Phases = append(cfg.Phases, bench.PhaseVacuum, bench.PhaseCopyBaseline)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("bench: %w", err)
	}
	return cfg, nil
}
