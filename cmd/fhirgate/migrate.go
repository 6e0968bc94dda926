package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/fhirgate/fhirgate/internal/database"
)

func migrateCmd(ctx context.Context, args []string, logger *slog.Logger) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	cfg, err := database.ConfigFromEnv()
	if err != nil {
		return err
	}
	if cfg.URL == "" {
		return fmt.Errorf("DATABASE_URL is not set: migrate needs the database to change")
	}
	return migrate(ctx, cfg.URL, logger)
}

func migrate(ctx context.Context, url string, logger *slog.Logger) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("migrate: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	done, err := database.Migrate(ctx, conn)
	if err != nil {
		return err
	}
	logger.Info("migrations applied", "versions", done)
	return nil
}
