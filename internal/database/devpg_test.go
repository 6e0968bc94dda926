package database

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPrivateCluster starts a private cluster with the machine's initdb,
// connects to the dev database on it, checks that a second start reuses the
// running cluster, then stops it.
func TestPrivateCluster(t *testing.T) {
	t.Parallel()
	if _, err := findPGBin(); errors.Is(err, ErrNoInitdb) {
		t.Skip("no initdb on this machine (PATH or /usr/lib/postgresql/*/bin): cannot start a private cluster")
	}
	// Not t.TempDir: its directories are 0700, and as root the server runs
	// as the postgres user, which must be able to reach the cluster.
	dir, err := os.MkdirTemp("", "fhirgate-devpg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	u, stop, err := startPrivate(ctx, dir, logger)
	if err != nil {
		t.Fatalf("startPrivate: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = stop()
		}
	})

	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("connect %s: %v", u, err)
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if db != DevDatabase {
		t.Errorf("current_database() = %q, want %q", db, DevDatabase)
	}

	u2, stop2, err := startPrivate(ctx, dir, logger)
	if err != nil {
		t.Fatalf("second startPrivate: %v", err)
	}
	if u2 != u {
		t.Errorf("second start URL = %q, want the running cluster's %q", u2, u)
	}
	if err := stop2(); err != nil {
		t.Errorf("stop of a reused cluster: %v", err)
	}
	if err := ping(ctx, u, 5*time.Second); err != nil {
		t.Errorf("the reused cluster's stop must leave it running: %v", err)
	}

	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	stopped = true
	if err := ping(ctx, u, 2*time.Second); err == nil {
		t.Error("cluster still answers after stop")
	}
}

func TestDevURLHonoursDatabaseURL(t *testing.T) {
	const want = "postgres://someone@db.invalid:5432/x"
	t.Setenv("DATABASE_URL", want)
	got, stop, err := DevURL(context.Background(), t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("DevURL = %q, want %q", got, want)
	}
	if err := stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
}
