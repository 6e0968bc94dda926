package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fhirgate/fhirgate/internal/api"
	"github.com/fhirgate/fhirgate/internal/audit"
	"github.com/fhirgate/fhirgate/internal/auth"
	"github.com/fhirgate/fhirgate/internal/authz"
	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/store"
)

// securityConfig: where the access policies are (authentication and audit
// settings are read by their packages' ConfigFromEnv).
type securityConfig struct {
	Policies string // FHIRGATE_POLICIES: directory of the Rego policies (default "policies")
	// Off (FHIRGATE_SECURITY=off): no authentication, authorization or
	// access log at all — for measuring what they cost; refused with
	// FHIRGATE_ENV=production.
	Off bool
}

func securityConfigFromEnv() (securityConfig, error) {
	c := securityConfig{Policies: "policies"}
	if v := os.Getenv("FHIRGATE_POLICIES"); v != "" {
		c.Policies = v
	}
	switch v := os.Getenv("FHIRGATE_SECURITY"); v {
	case "", "on":
	case "off":
		prod, err := envProduction()
		if err != nil {
			return c, err
		}
		if prod {
			return c, fmt.Errorf("FHIRGATE_SECURITY=off is refused with FHIRGATE_ENV=production")
		}
		c.Off = true
	default:
		return c, fmt.Errorf("FHIRGATE_SECURITY=%q: want on or off", v)
	}
	return c, nil
}

// security is the authentication, authorization and audit of a serving
// gateway.
type security struct {
	api    api.Security
	authn  *auth.Authenticator
	engine *authz.Engine
	log    *audit.Log
	close  func(context.Context) error
	// devToken is a clinician token minted with the dev key, printed by
	// serve to try the API (empty unless the dev key is trusted).
	devToken string
}

// openSecurity loads the policies, the authenticator and the audit log.
func openSecurity(ctx context.Context, sc securityConfig, dataDir string, pool *pgxpool.Pool, st *store.Store, svc *phi.Service, logger *slog.Logger) (*security, error) {
	ac, err := auth.ConfigFromEnv()
	if err != nil {
		return nil, err
	}
	if ac.DataDir == "" {
		ac.DataDir = dataDir
	}
	ac.Logger = logger
	var devKey *auth.DevKey
	if !ac.Production && !ac.Disabled && ac.JWKSURL == "" && ac.KeysFile == "" && len(ac.StaticKeys) == 0 {
		if devKey, err = auth.LoadOrCreateDevKey(ac.DataDir); err != nil {
			return nil, fmt.Errorf("FHIRGATE_DATA_DIR: the dev token key: %w", err)
		}
		ac.DevKey = devKey
	}
	authn, err := auth.NewAuthenticator(ac)
	if err != nil {
		return nil, err
	}
	if err := authn.Warm(ctx); err != nil {
		logger.Warn("token keys could not be fetched at start-up; retrying on demand", "error", err.Error())
	}
	engine, err := authz.Load(sc.Policies)
	if err != nil {
		return nil, fmt.Errorf("FHIRGATE_POLICIES=%s: %w", sc.Policies, err)
	}
	acfg, err := auditConfigFromEnv(dataDir)
	if err != nil {
		return nil, err
	}
	log, closeLog, err := openAuditLog(pool, svc, acfg, logger)
	if err != nil {
		return nil, err
	}
	s := &security{
		api:    api.Security{Authn: authn, Policy: engine, Orgs: st, Audit: log, Reader: log},
		authn:  authn,
		engine: engine,
		log:    log,
		close:  closeLog,
	}
	if devKey != nil {
		s.devToken, err = devKey.Mint(auth.Claims{Subject: "dev-clinician", Roles: []string{auth.RoleClinician},
			Organization: "dev-org", Scope: "user/*.cruds"})
		if err != nil {
			return nil, err
		}
	}
	logger.Info("access control on", "policies", sc.Policies, "policy", engine.Digest(), "auth_disabled", authn.Disabled())
	return s, nil
}

// reloadPoliciesOnHUP reloads the Rego policies on SIGHUP; a policy that
// fails to compile is refused and the running one kept.
func reloadPoliciesOnHUP(ctx context.Context, dir string, e *authz.Engine, logger *slog.Logger) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				if err := e.Reload(dir); err != nil {
					logger.Error("policy reload refused: keeping the running policies", "error", err.Error())
					continue
				}
				logger.Info("policies reloaded", "policy", e.Digest())
			}
		}
	}()
}
