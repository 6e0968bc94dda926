// Package database owns the PostgreSQL connection pool, the embedded schema
// migrations and the helpers that give tests their own database.
//
// It knows nothing of FHIR: domain packages (store, search) bring their SQL.
// It must never log connection strings (they may hold passwords).
package database

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Config is the database configuration, read from the environment.
type Config struct {
	URL             string        `json:"-"` // DATABASE_URL; may hold a password
	MaxConns        int32         // FHIRGATE_DB_MAX_CONNS
	MinConns        int32         // FHIRGATE_DB_MIN_CONNS
	MaxConnLifetime time.Duration // FHIRGATE_DB_MAX_CONN_LIFETIME
}

// ConfigFromEnv reads the configuration; it reports the first setting that
// does not parse, naming the variable.
func ConfigFromEnv() (Config, error) {
	// Four connections per core: enough to keep PostgreSQL busy while
	// requests wait on the network, few enough that its backends do not
	// fight the gateway for the cores (16 on 2 cores raised read p99 by half).
	c := Config{URL: os.Getenv("DATABASE_URL"), MaxConns: int32(4 * runtime.GOMAXPROCS(0)), MinConns: 2, MaxConnLifetime: time.Hour}
	if v := os.Getenv("FHIRGATE_DB_MAX_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return c, fmt.Errorf("FHIRGATE_DB_MAX_CONNS=%q: want an integer from 1 to 1000", v)
		}
		c.MaxConns = int32(n)
	}
	if v := os.Getenv("FHIRGATE_DB_MIN_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || int32(n) > c.MaxConns {
			return c, fmt.Errorf("FHIRGATE_DB_MIN_CONNS=%q: want an integer from 0 to FHIRGATE_DB_MAX_CONNS", v)
		}
		c.MinConns = int32(n)
	}
	if v := os.Getenv("FHIRGATE_DB_MAX_CONN_LIFETIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("FHIRGATE_DB_MAX_CONN_LIFETIME=%q: want a positive duration such as 1h", v)
		}
		c.MaxConnLifetime = d
	}
	return c, nil
}

// Open connects a pool and checks that the server answers.
func Open(ctx context.Context, c Config) (*pgxpool.Pool, error) {
	if c.URL == "" {
		return nil, errors.New("database: DATABASE_URL is empty")
	}
	pc, err := pgxpool.ParseConfig(c.URL)
	if err != nil {
		// The parse error may echo the URL: do not wrap it.
		return nil, errors.New("database: DATABASE_URL is not a valid PostgreSQL connection string")
	}
	if c.MaxConns > 0 {
		pc.MaxConns = c.MaxConns
	}
	pc.MinConns = c.MinConns
	if c.MaxConnLifetime > 0 {
		pc.MaxConnLifetime = c.MaxConnLifetime
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("database: connect: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database: ping %s:%d: %w", pc.ConnConfig.Host, pc.ConnConfig.Port, err)
	}
	return pool, nil
}

// WarnSettings logs server settings that undermine the gateway: with
// autovacuum off, tables are never analyzed or vacuumed, so search plans
// run on default statistics and index-only scans visit the heap.
func WarnSettings(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) {
	var autovacuum string
	if err := pool.QueryRow(ctx, `SHOW autovacuum`).Scan(&autovacuum); err != nil {
		logger.Warn("could not read PostgreSQL settings", "error", err.Error())
		return
	}
	if autovacuum != "on" {
		logger.Warn("PostgreSQL autovacuum is off: search slows down as data grows unless VACUUM (ANALYZE) runs regularly; enable autovacuum in postgresql.conf")
	}
}
