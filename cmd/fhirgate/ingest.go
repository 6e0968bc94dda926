package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/fhirgate/fhirgate/internal/api"
	"github.com/fhirgate/fhirgate/internal/database"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/mapping"
	"github.com/fhirgate/fhirgate/internal/store"
	"github.com/fhirgate/fhirgate/internal/validate"
)

// ingestCmd: fhirgate ingest replay — runs the pending HL7 v2 dead letters
// through intake again with the current mappings.
func ingestCmd(ctx context.Context, args []string, logger *slog.Logger) error {
	if len(args) == 0 || args[0] != "replay" {
		return usageError("ingest: want replay")
	}
	fs := flag.NewFlagSet("ingest replay", flag.ContinueOnError)
	dir := fs.String("mappings", "mappings", "the mappings directory")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError(err.Error())
	}
	if v := os.Getenv("FHIRGATE_MAPPINGS"); v != "" && !flagSet(fs, "mappings") {
		*dir = v
	}
	dbc, err := database.ConfigFromEnv()
	if err != nil {
		return err
	}
	if dbc.URL == "" {
		return fmt.Errorf("DATABASE_URL is not set: replay needs the gateway's database")
	}
	ac, err := api.ConfigFromEnv()
	if err != nil {
		return err
	}
	engine, err := mapping.Load(*dir)
	if err != nil {
		return fmt.Errorf("-mappings %s: %w", *dir, err)
	}
	pool, err := database.Open(ctx, dbc)
	if err != nil {
		return err
	}
	defer pool.Close()
	st := store.New(pool)
	pc, err := phiConfigFromEnv(dataDirFromEnv())
	if err != nil {
		return err
	}
	if pc.Enabled {
		svc, closePHI, err := openPHI(ctx, pc, st, logger)
		if err != nil {
			return err
		}
		defer closePHI()
		st.WithSealer(svc)
	}
	intake := ingest.NewHL7(ingest.New(st, validate.Resource), st, engine, logger)
	n := 0
	accepted, rejected, err := intake.Replay(ctx, ac.Tenant, st, func(id int64, code string) {
		n++
		fmt.Fprintf(os.Stderr, "\rreplayed %d dead letters (last #%d: %s)", n, id, code)
	})
	if n > 0 {
		fmt.Fprintln(os.Stderr)
	}
	fmt.Printf("replay with mappings %s: %d accepted, %d still rejected\n", engine.Version(), accepted, rejected)
	return err
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
