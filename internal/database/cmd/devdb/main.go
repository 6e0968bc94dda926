// Command devdb prints the URL of a PostgreSQL database for development and
// tests, starting a private cluster under -dir when no server is configured
// or answering on 127.0.0.1:5432 (see database.DevURL). The cluster it starts
// keeps running after it exits so that later runs reuse it; -stop stops it.
// It prints only the URL on stdout and never prints credentials from the
// environment other than that URL.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/fhirgate/fhirgate/internal/database"
)

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	if err := realMain(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "devdb:", err)
		os.Exit(1)
	}
}

func realMain(ctx context.Context) error {
	dir := flag.String("dir", ".data/pg", "directory of the private dev cluster")
	stop := flag.Bool("stop", false, "stop the private dev cluster under -dir and exit")
	flag.Parse()
	if *stop {
		return database.StopPrivate(ctx, *dir)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	u, _, err := database.DevURL(ctx, *dir, logger)
	if err != nil {
		return err
	}
	fmt.Println(u)
	return nil
}
