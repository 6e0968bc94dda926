package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fhirgate/fhirgate/internal/api"
	"github.com/fhirgate/fhirgate/internal/database"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/phi/vault"
	"github.com/fhirgate/fhirgate/internal/retrieve"
	"github.com/fhirgate/fhirgate/internal/store"
	"github.com/fhirgate/fhirgate/internal/validate"
)

// benchGateway is a gateway the bench runs in its own process (bench
// -phi-compare): the FHIR REST API over the same store, ingest and read
// path as serve, listening on a loopback port. It has no HL7 v2 intake
// (MLLP, $hl7v2, push): the comparison does not use them.
type benchGateway struct {
	URL   string
	Store *store.Store
	// PHI is the PHI service; nil when encryption is off.
	PHI *phi.Service
	// Provider is the key provider as the service sees it (counting its
	// calls); nil when encryption is off.
	Provider *countingProvider
	// KeyTTL is the key cache's lifetime.
	KeyTTL time.Duration

	close func()
}

// Close stops the listener and releases the pool and the key provider.
func (g *benchGateway) Close() { g.close() }

// ProviderCalls is the number of requests the key provider made to its
// backend: HTTP requests to Vault's transit mount for Vault (what
// vault.Provider.Calls counts), else the KeyProvider calls that reach the
// local keyring (NewDataKey, Unwrap, Rewrap, Rotate, Info,
// SetMinDecryptionVersion).
func (g *benchGateway) ProviderCalls() int64 {
	if g.Provider == nil {
		return 0
	}
	if v, ok := g.Provider.KeyProvider.(*vault.Provider); ok {
		return v.Calls()
	}
	return g.Provider.Calls()
}

// buildGateway wires a gateway over the migrated database at dbc.URL, with
// PHI encryption as pc says, and serves it on 127.0.0.1 at a free port.
// It mirrors serveCmd's wiring of the store, the PHI service, the write
// and read paths and the API.
func buildGateway(ctx context.Context, dbc database.Config, ac api.Config, pc phiConfig, logger *slog.Logger) (g *benchGateway, err error) {
	var closers []func()
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	pool, err := database.Open(ctx, dbc)
	if err != nil {
		return nil, err
	}
	closers = append(closers, pool.Close)
	st := store.New(pool)
	reader := retrieve.New(st)
	g = &benchGateway{Store: st, KeyTTL: pc.KeyTTL}
	if pc.Enabled {
		pol, err := phi.LoadPolicy(pc.Policy)
		if err != nil {
			return nil, fmt.Errorf("FHIRGATE_PHI_POLICY: %w", err)
		}
		prov, closeProv, err := openProvider(ctx, pc, logger)
		if err != nil {
			return nil, err
		}
		closers = append(closers, closeProv)
		g.Provider = &countingProvider{KeyProvider: prov}
		keys := phi.NewKeys(g.Provider, st, phi.KeyOptions{TTL: pc.KeyTTL, MaxKeys: pc.KeyCache})
		closers = append(closers, keys.Flush)
		g.PHI = phi.NewService(pol, keys)
		st.WithSealer(g.PHI)
		reader.WithProtector(g.PHI)
	}
	writer := ingest.New(st, validate.Resource)
	srv := api.New(ac, writer, reader, pool.Ping, logger)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: listen: %w", err)
	}
	hs := newHTTPServer(srv.Handler(), logger)
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Warn("bench gateway stopped serving", "error", err.Error())
		}
	}()
	closers = append(closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		<-served
	})
	g.URL = "http://" + ln.Addr().String() + "/fhir"
	g.close = cleanup
	return g, nil
}

// countingProvider counts the calls made to a key provider, by method.
type countingProvider struct {
	phi.KeyProvider
	newKey, unwrap, rewrap, admin atomic.Int64
}

// Calls is the number of calls made through the wrapper (Name excepted).
func (c *countingProvider) Calls() int64 {
	return c.newKey.Load() + c.unwrap.Load() + c.rewrap.Load() + c.admin.Load()
}

// ByMethod describes the calls by method, for the report.
func (c *countingProvider) ByMethod() string {
	return fmt.Sprintf("NewDataKey %d, Unwrap %d, Rewrap %d, other %d", c.newKey.Load(), c.unwrap.Load(), c.rewrap.Load(), c.admin.Load())
}

func (c *countingProvider) NewDataKey(ctx context.Context) ([]byte, string, error) {
	c.newKey.Add(1)
	return c.KeyProvider.NewDataKey(ctx)
}

func (c *countingProvider) Unwrap(ctx context.Context, wrapped []string) ([][]byte, error) {
	c.unwrap.Add(1)
	return c.KeyProvider.Unwrap(ctx, wrapped)
}

func (c *countingProvider) Rewrap(ctx context.Context, wrapped []string) ([]string, error) {
	c.rewrap.Add(1)
	return c.KeyProvider.Rewrap(ctx, wrapped)
}

func (c *countingProvider) Rotate(ctx context.Context) error {
	c.admin.Add(1)
	return c.KeyProvider.Rotate(ctx)
}

func (c *countingProvider) Info(ctx context.Context) (phi.KeyInfo, error) {
	c.admin.Add(1)
	return c.KeyProvider.Info(ctx)
}

func (c *countingProvider) SetMinDecryptionVersion(ctx context.Context, v int) error {
	c.admin.Add(1)
	return c.KeyProvider.SetMinDecryptionVersion(ctx, v)
}

// createDatabase (re)creates database name on the server that serverURL
// points to and returns the new database's connection string and a
// function that drops it. An existing database of that name (a run with
// -keep) is dropped first; one still in use is not, and fails the call.
func createDatabase(ctx context.Context, serverURL, name string) (dbURL string, drop func(context.Context) error, err error) {
	dbURL, err = withDatabaseName(serverURL, name)
	if err != nil {
		return "", nil, err
	}
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		// The error may echo the connection string: name only the step.
		return "", nil, fmt.Errorf("bench: connect to the PostgreSQL server to create %s: %w", name, redact(err))
	}
	defer admin.Close(context.WithoutCancel(ctx))
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident); err != nil {
		return "", nil, fmt.Errorf("bench: drop the earlier %s: %w", name, err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", nil, fmt.Errorf("bench: create database %s: %w", name, err)
	}
	drop = func(ctx context.Context) error {
		c, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			return fmt.Errorf("bench: connect to drop %s: %w", name, redact(err))
		}
		defer c.Close(context.WithoutCancel(ctx))
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("bench: drop database %s: %w", name, err)
		}
		return nil
	}
	return dbURL, drop, nil
}

// withDatabaseName returns the connection string u with its database
// replaced by name; u is a postgres:// URL or a key=value string.
func withDatabaseName(u, name string) (string, error) {
	if strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://") {
		pu, err := url.Parse(u)
		if err != nil {
			return "", errors.New("bench: DATABASE_URL is not a valid URL")
		}
		pu.Path = "/" + name
		pu.RawPath = ""
		return pu.String(), nil
	}
	if _, err := pgx.ParseConfig(u); err != nil {
		return "", errors.New("bench: DATABASE_URL is not a valid PostgreSQL connection string")
	}
	return u + " dbname=" + name, nil // a later key wins
}

// redact drops a connection error's text when it may hold the connection
// string (pgconn puts the host, user and database in it, not the password,
// but parse errors echo the string).
func redact(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return errors.New("invalid connection string")
	}
	return err
}

// poolSize is the pool configuration of a bench gateway: serve's, from
// the environment, over the given database.
func poolSize(dbURL string) (database.Config, error) {
	dbc, err := database.ConfigFromEnv()
	if err != nil {
		return dbc, err
	}
	dbc.URL = dbURL
	return dbc, nil
}
