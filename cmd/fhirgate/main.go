// Command fhirgate is the FHIR R4 ingestion and normalization gateway.
//
//	fhirgate serve          run the gateway (the no-configuration dev default)
//	fhirgate migrate        apply database migrations and exit
//	fhirgate convert        map HL7 v2 messages to FHIR without storing; score the mappings
//	fhirgate ingest replay  re-run HL7 v2 dead letters after a mapping fix
//	fhirgate bench          load-test a running gateway
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/fhirgate/fhirgate/internal/api"
)

// Set at build time: -ldflags '-X main.version=... -X main.commit=...'.
var version, commit = "dev", "unknown"

func main() {
	api.Version = version + "+" + commit
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger, err := newLogger(os.Getenv("FHIRGATE_LOG_LEVEL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fhirgate:", err)
		os.Exit(2)
	}
	slog.SetDefault(logger)
	if err := realMain(ctx, os.Args[1:], logger); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "fhirgate:", err)
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		logger.Error("fhirgate failed", "error", err.Error())
		os.Exit(1)
	}
}

const usage = `usage: fhirgate <command> [flags]

commands:
  serve     run the gateway (no configuration needed in development)
  migrate   apply database migrations and exit
  convert   hl7v2 FILE...: print the FHIR Bundle HL7 v2 messages map to (nothing is stored)
            score: score the mappings against the reference corpus
  ingest    replay: re-run HL7 v2 dead letters after a mapping fix
  bench     load-test a running gateway (fhirgate bench -h)
  keys      status | rotate | reencrypt | shred: manage the PHI encryption keys (fhirgate keys -h)
  audit     verify | checkpoint: verify the access log's hash chain against its signed checkpoints (fhirgate audit -h)
  token     mint a signed dev token for a role, user, patient and purpose (fhirgate token -h)
`

type usageError string

func (e usageError) Error() string { return string(e) }

func realMain(ctx context.Context, args []string, logger *slog.Logger) error {
	if len(args) == 0 {
		return usageError("no command given")
	}
	switch args[0] {
	case "serve":
		return serveCmd(ctx, args[1:], logger)
	case "migrate":
		return migrateCmd(ctx, args[1:], logger)
	case "bench":
		return benchCmd(ctx, args[1:])
	case "convert":
		return convertCmd(ctx, args[1:])
	case "ingest":
		return ingestCmd(ctx, args[1:], logger)
	case "keys":
		return keysCmd(ctx, args[1:], logger)
	case "audit":
		return auditCmd(ctx, args[1:], logger)
	case "token":
		return tokenCmd(args[1:])
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	}
	return usageError(fmt.Sprintf("unknown command %q", args[0]))
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	switch strings.ToLower(level) {
	case "", "info":
		l = slog.LevelInfo
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return nil, fmt.Errorf("FHIRGATE_LOG_LEVEL=%q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
