// Package databasetest gives each test its own real PostgreSQL database,
// copied from a template migrated once per schema version, so tests run in
// parallel without sharing state. It is for tests only and must never be
// imported by the gateway binary.
package databasetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fhirgate/fhirgate/internal/database"
)

// ServerURL is the server tests use: $TEST_DATABASE_URL, else
// $DATABASE_URL, else the local server on 127.0.0.1:5432.
func ServerURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// templateLock serializes template creation across test processes.
const templateLock = 0x74656d706c617465 // "template"

// NewURL creates a fresh, migrated database for the test and returns its
// URL; the database is dropped when the test ends. A missing server fails
// the test: a database test never silently passes.
func NewURL(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	server := ServerURL()
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		tb.Fatalf("databasetest: no PostgreSQL at the test server (set TEST_DATABASE_URL): %v", err)
	}
	defer admin.Close(context.Background())

	tmpl, err := ensureTemplate(ctx, admin, server)
	if err != nil {
		tb.Fatalf("databasetest: template: %v", err)
	}
	name := "fhirgate_test_" + randomHex(8)
	if _, err := admin.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s TEMPLATE %s`, name, tmpl)); err != nil {
		tb.Fatalf("databasetest: create %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := pgx.Connect(ctx, server)
		if err != nil {
			tb.Errorf("databasetest: drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, name)); err != nil {
			tb.Errorf("databasetest: drop %s: %v", name, err)
		}
	})
	return withDatabase(tb, server, name)
}

// NewPool is NewURL with a connected pool, closed when the test ends.
func NewPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	u := NewURL(tb)
	pool, err := database.Open(context.Background(), database.Config{URL: u, MaxConns: 8})
	if err != nil {
		tb.Fatalf("databasetest: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// ensureTemplate returns the name of a template database holding the
// current migrations, creating it if no test process has yet.
func ensureTemplate(ctx context.Context, admin *pgx.Conn, server string) (string, error) {
	ms, err := database.Migrations()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, m := range ms {
		fmt.Fprintf(h, "%d %s\n%s\n", m.Version, m.Name, m.SQL)
	}
	name := "fhirgate_tmpl_" + hex.EncodeToString(h.Sum(nil))[:16]

	if _, err := admin.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(templateLock)); err != nil {
		return "", err
	}
	defer admin.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, int64(templateLock)) //nolint:errcheck

	var isTemplate bool
	err = admin.QueryRow(ctx, `SELECT datistemplate FROM pg_database WHERE datname = $1`, name).Scan(&isTemplate)
	switch {
	case err == nil && isTemplate:
		return name, nil
	case err == nil: // left half-made by a crashed run
		if _, err := admin.Exec(ctx, fmt.Sprintf(`DROP DATABASE %s WITH (FORCE)`, name)); err != nil {
			return "", err
		}
	case err != pgx.ErrNoRows:
		return "", err
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s`, name)); err != nil {
		return "", err
	}
	c, err := pgx.Connect(ctx, withDatabaseURL(server, name))
	if err != nil {
		return "", err
	}
	_, err = database.Migrate(ctx, c)
	c.Close(context.Background())
	if err != nil {
		return "", err
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %s WITH is_template true`, name)); err != nil {
		return "", err
	}
	return name, nil
}

func withDatabase(tb testing.TB, server, name string) string {
	tb.Helper()
	u := withDatabaseURL(server, name)
	if u == "" {
		tb.Fatalf("databasetest: cannot parse the test server URL")
	}
	return u
}

func withDatabaseURL(server, name string) string {
	u, err := url.Parse(server)
	if err != nil {
		return ""
	}
	u.Path = "/" + name
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
