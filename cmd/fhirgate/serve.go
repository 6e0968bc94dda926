package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/fhirgate/fhirgate/internal/access"
	"github.com/fhirgate/fhirgate/internal/api"
	"github.com/fhirgate/fhirgate/internal/database"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/mapping"
	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/retrieve"
	"github.com/fhirgate/fhirgate/internal/store"
	"github.com/fhirgate/fhirgate/internal/validate"
)

type serveConfig struct {
	Addr            string        // FHIRGATE_ADDR
	Migrate         string        // FHIRGATE_MIGRATE: auto or off
	DataDir         string        // FHIRGATE_DATA_DIR: where the dev default keeps its private database
	ShutdownTimeout time.Duration // FHIRGATE_SHUTDOWN_TIMEOUT
	DebugAddr       string        // FHIRGATE_DEBUG_ADDR: pprof listener, off by default
	// TLS: FHIRGATE_TLS_CERT and FHIRGATE_TLS_KEY serve HTTPS; with
	// FHIRGATE_TLS_CLIENT_CA, client certificates are verified when
	// presented and identify EMR senders (mutual TLS), beside bearer tokens.
	TLS      *tls.Config
	devToken string // a dev token to print (not configuration)
}

func serveConfigFromEnv() (serveConfig, error) {
	c := serveConfig{Addr: "127.0.0.1:8080", Migrate: "auto", DataDir: ".data", ShutdownTimeout: 30 * time.Second}
	if v := os.Getenv("FHIRGATE_ADDR"); v != "" {
		if _, _, err := net.SplitHostPort(v); err != nil {
			return c, fmt.Errorf("FHIRGATE_ADDR=%q: want host:port", v)
		}
		c.Addr = v
	}
	if v := os.Getenv("FHIRGATE_MIGRATE"); v != "" {
		if v != "auto" && v != "off" {
			return c, fmt.Errorf("FHIRGATE_MIGRATE=%q: want auto or off", v)
		}
		c.Migrate = v
	}
	if v := os.Getenv("FHIRGATE_DATA_DIR"); v != "" {
		c.DataDir = v
	}
	if v := os.Getenv("FHIRGATE_DEBUG_ADDR"); v != "" {
		host, _, err := net.SplitHostPort(v)
		if err != nil {
			return c, fmt.Errorf("FHIRGATE_DEBUG_ADDR=%q: want host:port", v)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return c, fmt.Errorf("FHIRGATE_DEBUG_ADDR=%q: the profiling listener may only bind a loopback address", v)
		}
		c.DebugAddr = v
	}
	tc, err := serverTLS(os.Getenv("FHIRGATE_TLS_CERT"), os.Getenv("FHIRGATE_TLS_KEY"), os.Getenv("FHIRGATE_TLS_CLIENT_CA"),
		"FHIRGATE_TLS_CERT", "FHIRGATE_TLS_KEY", "FHIRGATE_TLS_CLIENT_CA", tls.VerifyClientCertIfGiven)
	if err != nil {
		return c, err
	}
	c.TLS = tc
	if v := os.Getenv("FHIRGATE_SHUTDOWN_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("FHIRGATE_SHUTDOWN_TIMEOUT=%q: want a positive duration such as 30s", v)
		}
		c.ShutdownTimeout = d
	}
	return c, nil
}

func serveCmd(ctx context.Context, args []string, logger *slog.Logger) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	sc, err := serveConfigFromEnv()
	if err != nil {
		return err
	}
	tuneGC()
	dbc, err := database.ConfigFromEnv()
	if err != nil {
		return err
	}
	ac, err := api.ConfigFromEnv()
	if err != nil {
		return err
	}
	hc, err := hl7ConfigFromEnv()
	if err != nil {
		return err
	}
	pc, err := phiConfigFromEnv(sc.DataDir)
	if err != nil {
		return err
	}
	engine, err := mapping.Load(hc.Mappings)
	if err != nil {
		return fmt.Errorf("FHIRGATE_MAPPINGS=%s: %w", hc.Mappings, err)
	}
	if dbc.URL == "" {
		// The no-configuration dev default: a local server, or a private one.
		url, stop, err := database.DevURL(ctx, sc.DataDir+"/pg", logger)
		if err != nil {
			return fmt.Errorf("no DATABASE_URL and no local PostgreSQL could be found or started: %w", err)
		}
		if stop != nil {
			defer func() {
				if err := stop(); err != nil {
					logger.Warn("stopping the private PostgreSQL failed", "error", err.Error())
				}
			}()
		}
		dbc.URL = url
	}
	if sc.Migrate == "auto" {
		if err := migrate(ctx, dbc.URL, logger); err != nil {
			return err
		}
	}
	pool, err := database.Open(ctx, dbc)
	if err != nil {
		return err
	}
	defer pool.Close()
	database.WarnSettings(ctx, pool, logger)

	st := store.New(pool)
	reader := retrieve.New(st)
	var svc *phi.Service
	if pc.Enabled {
		var closePHI func()
		svc, closePHI, err = openPHI(ctx, pc, st, logger)
		if err != nil {
			return err
		}
		defer closePHI()
		// Fail fast on a key provider that cannot unwrap the keys already
		// stored (another keyring, another Vault key): otherwise every
		// request would fail closed with 503.
		if err := svc.Prepare(ctx, ac.Tenant); err != nil {
			return fmt.Errorf("PHI keys of tenant %s: %w (FHIRGATE_KEY_PROVIDER=%s: is it the provider that wrapped the keys in this database?)", ac.Tenant, err, pc.Provider)
		}
		st.WithSealer(svc)
		reader.WithProtector(svc)
	} else {
		logger.Warn("PHI encryption is OFF (FHIRGATE_PHI=off): resources are stored in plaintext")
	}
	writer := ingest.New(st, validate.Resource)
	intake := ingest.NewHL7(writer, st, engine, logger)
	var current atomic.Pointer[mapping.Engine]
	current.Store(engine)
	push := ingest.NewPush(writer, func() ingest.Normalizer { return current.Load() })
	reloadMappingsOnHUP(ctx, hc.Mappings, func(e *mapping.Engine) { intake.SetMapper(e); current.Store(e) }, logger)
	logger.Info("hl7v2 mappings loaded", "dir", hc.Mappings, "version", engine.Version())
	secCfg, err := securityConfigFromEnv()
	if err != nil {
		return err
	}
	var auditLog api.AuditLog
	var secAPI *api.Security
	if secCfg.Off {
		logger.Warn("SECURITY IS OFF (FHIRGATE_SECURITY=off): no authentication, no authorization, no access log")
		if sc.DebugAddr != "" {
			startDebugStats(sc.DebugAddr, func() any { return map[string]any{"hl7": intake.Stats()} }, logger)
		}
	} else {
		sec, err := openSecurity(ctx, secCfg, sc.DataDir, pool, st, svc, logger)
		if err != nil {
			return err
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := sec.close(cctx); err != nil {
				logger.Error("closing the audit log", "error", err.Error())
			}
		}()
		reloadPoliciesOnHUP(ctx, secCfg.Policies, sec.engine, logger)
		if sc.DebugAddr != "" {
			startDebugStats(sc.DebugAddr, func() any {
				st := sec.log.Stats()
				return map[string]any{"decisions": access.Decisions(), "audit": st, "audit_records_per_commit": st.RecordsPerCommit(),
					"hl7": intake.Stats()}
			}, logger)
		}
		reader.WithGuard(access.Guard{})
		ac.Issuer = sec.authn.Issuer()
		secAPI = &sec.api
		sc.devToken = sec.devToken
		auditLog = sec.log
	}
	// Built once, after security: its CapabilityStatement names the
	// token issuer.
	srv := api.New(ac, writer, reader, pool.Ping, logger).WithHL7(intake).WithPush(push)
	if secAPI != nil {
		srv = srv.WithSecurity(*secAPI)
	}
	if hc.MLLPAddr != "off" {
		stop, err := startMLLP(ctx, hc, ac.Tenant, intake, auditLog, logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	return listenAndServe(ctx, sc, srv.Handler(), logger)
}

// listenAndServe serves until ctx is cancelled, then stops accepting and
// lets in-flight requests finish within the shutdown timeout.
func listenAndServe(ctx context.Context, sc serveConfig, h http.Handler, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", sc.Addr)
	if err != nil {
		return fmt.Errorf("listen on FHIRGATE_ADDR %s: %w", sc.Addr, err)
	}
	return serveOn(ctx, sc, ln, h, logger)
}

// newHTTPServer is the gateway's HTTP server: bounded header, body and
// idle times and header size, errors to the structured log.
func newHTTPServer(h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       5 * time.Minute,
		WriteTimeout:      5 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// serveOn serves h on ln (with TLS when sc.TLS is set) until ctx ends,
// then stops accepting and finishes in-flight requests.
func serveOn(ctx context.Context, sc serveConfig, ln net.Listener, h http.Handler, logger *slog.Logger) error {
	hs := newHTTPServer(h, logger)
	scheme := "http"
	if sc.TLS != nil {
		ln = tls.NewListener(ln, sc.TLS)
		scheme = "https"
	}
	base := scheme + "://" + ln.Addr().String() + "/fhir"
	logger.Info("fhirgate listening", "addr", ln.Addr().String(), "base", base)
	auth := ""
	if sc.devToken != "" {
		fmt.Fprintf(os.Stderr, "\na dev token (clinician, 1h; mint others with `fhirgate token -h`):\n  export TOKEN=%s\n", sc.devToken)
		auth = "-H \"Authorization: Bearer $TOKEN\" "
	}
	fmt.Fprintf(os.Stderr, "\nfhirgate is listening on %s\ntry:\n  curl -s %s/metadata | head -c 300; echo\n"+
		"  curl -s %s-X POST -H 'Content-Type: application/fhir+json' -d '{\"resourceType\":\"Patient\",\"managingOrganization\":{\"reference\":\"Organization/dev-org\"},\"name\":[{\"family\":\"Chalmers\",\"given\":[\"Peter\"]}],\"gender\":\"male\",\"birthDate\":\"1974-12-25\"}' %s/Patient\n"+
		"  curl -s %s'%s/Patient?family=chalmers'\n\n", base, base, auth, base, auth, base)

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down: finishing in-flight requests", "timeout", sc.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), sc.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	logger.Info("stopped")
	return nil
}

// serveGCPercent is the collector's target when GOGC is not set. The
// gateway's live heap is small (tens of MB: caches, pools, prepared
// policies) and its garbage is per request and per message, so letting the
// heap grow to 5× the live heap instead of 2× between collections buys
// CPU for a few hundred MB at most: BenchmarkHL7Intake gained ~10 %
// (GOGC=100 vs 400, alternating runs). GOGC, and GOMEMLIMIT for a hard
// ceiling, override it as the Go runtime documents.
const serveGCPercent = 400

func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serveGCPercent)
	}
}
