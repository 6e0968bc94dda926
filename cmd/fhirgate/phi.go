package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/phi/keyring"
	"github.com/fhirgate/fhirgate/internal/phi/vault"
	"github.com/fhirgate/fhirgate/internal/store"
)

// phiConfig configures PHI encryption.
type phiConfig struct {
	Enabled    bool          // FHIRGATE_PHI: on (default) or off
	Policy     string        // FHIRGATE_PHI_POLICY: the PHI policy file
	Provider   string        // FHIRGATE_KEY_PROVIDER: local (default) or vault
	Keyring    string        // FHIRGATE_KEYRING: the local keyring file
	AllowLocal bool          // FHIRGATE_ALLOW_LOCAL_KEYRING: permit the local keyring in production
	Production bool          // FHIRGATE_ENV=production
	KeyTTL     time.Duration // FHIRGATE_PHI_KEY_TTL: how long unwrapped keys stay in memory
	KeyCache   int           // FHIRGATE_PHI_KEY_CACHE: at most this many unwrapped keys
	EnsureKey  bool          // FHIRGATE_VAULT_ENSURE_KEY: create the transit key if missing (dev)
}

func phiConfigFromEnv(dataDir string) (phiConfig, error) {
	c := phiConfig{Enabled: true, Policy: "policies/phi.yaml", Provider: "local",
		Keyring: filepath.Join(dataDir, "keys", "keyring.json"), KeyTTL: 10 * time.Minute, KeyCache: 4096}
	switch v := os.Getenv("FHIRGATE_PHI"); v {
	case "", "on":
	case "off":
		c.Enabled = false
	default:
		return c, fmt.Errorf("FHIRGATE_PHI=%q: want on or off", v)
	}
	if v := os.Getenv("FHIRGATE_PHI_POLICY"); v != "" {
		c.Policy = v
	}
	switch v := os.Getenv("FHIRGATE_KEY_PROVIDER"); v {
	case "", "local":
	case "vault":
		c.Provider = v
	default:
		return c, fmt.Errorf("FHIRGATE_KEY_PROVIDER=%q: want local or vault", v)
	}
	if v := os.Getenv("FHIRGATE_KEYRING"); v != "" {
		c.Keyring = v
	}
	var err error
	if c.AllowLocal, err = envBool("FHIRGATE_ALLOW_LOCAL_KEYRING"); err != nil {
		return c, err
	}
	if c.EnsureKey, err = envBool("FHIRGATE_VAULT_ENSURE_KEY"); err != nil {
		return c, err
	}
	if c.Production, err = envProduction(); err != nil {
		return c, err
	}
	if v := os.Getenv("FHIRGATE_PHI_KEY_TTL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("FHIRGATE_PHI_KEY_TTL=%q: want a positive duration such as 10m", v)
		}
		c.KeyTTL = d
	}
	if v := os.Getenv("FHIRGATE_PHI_KEY_CACHE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return c, fmt.Errorf("FHIRGATE_PHI_KEY_CACHE=%q: want a positive number of keys", v)
		}
		c.KeyCache = n
	}
	if c.Enabled && c.Production && c.Provider == "local" && !c.AllowLocal {
		return c, fmt.Errorf("FHIRGATE_ENV=production with FHIRGATE_KEY_PROVIDER=local: the local keyring keeps its wrapping keys in a file next to the data; " +
			"use FHIRGATE_KEY_PROVIDER=vault, or set FHIRGATE_ALLOW_LOCAL_KEYRING=true to accept that")
	}
	if !c.Enabled && c.Production {
		return c, fmt.Errorf("FHIRGATE_PHI=off is refused with FHIRGATE_ENV=production")
	}
	return c, nil
}

// dataDirFromEnv is FHIRGATE_DATA_DIR as serve reads it.
func dataDirFromEnv() string {
	if v := os.Getenv("FHIRGATE_DATA_DIR"); v != "" {
		return v
	}
	return ".data"
}

// envProduction reads FHIRGATE_ENV: production, or development (the
// default). internal/auth reads the same variable for its own refusals.
func envProduction() (bool, error) {
	switch v := os.Getenv("FHIRGATE_ENV"); v {
	case "", "development":
		return false, nil
	case "production":
		return true, nil
	default:
		return false, fmt.Errorf("FHIRGATE_ENV=%q: want development or production", v)
	}
}

func envBool(name string) (bool, error) {
	switch v := os.Getenv(name); v {
	case "", "false", "0", "no":
		return false, nil
	case "true", "1", "yes":
		return true, nil
	default:
		return false, fmt.Errorf("%s=%q: want true or false", name, v)
	}
}

// openProvider opens the configured key provider; close releases it.
func openProvider(ctx context.Context, c phiConfig, logger *slog.Logger) (p phi.KeyProvider, close func(), err error) {
	switch c.Provider {
	case "vault":
		vc, err := vault.ConfigFromEnv()
		if err != nil {
			return nil, nil, err
		}
		vc.EnsureKey = c.EnsureKey
		vp, err := vault.New(ctx, vc, vault.WithLogger(logger))
		if err != nil {
			return nil, nil, fmt.Errorf("FHIRGATE_KEY_PROVIDER=vault: %w", err)
		}
		return vp, func() { _ = vp.Close() }, nil
	default:
		kr, err := keyring.Open(c.Keyring)
		if err != nil {
			return nil, nil, fmt.Errorf("FHIRGATE_KEYRING=%s: %w", c.Keyring, err)
		}
		return kr, func() {}, nil
	}
}

// openPHI loads the policy and the key provider and returns the PHI
// service over the store's key table.
func openPHI(ctx context.Context, c phiConfig, st *store.Store, logger *slog.Logger) (*phi.Service, func(), error) {
	pol, err := phi.LoadPolicy(c.Policy)
	if err != nil {
		return nil, nil, fmt.Errorf("FHIRGATE_PHI_POLICY: %w", err)
	}
	prov, closeProv, err := openProvider(ctx, c, logger)
	if err != nil {
		return nil, nil, err
	}
	keys := phi.NewKeys(prov, st, phi.KeyOptions{TTL: c.KeyTTL, MaxKeys: c.KeyCache})
	svc := phi.NewService(pol, keys)
	logger.Info("PHI encryption on", "provider", prov.Name(), "policy", c.Policy, "policy_digest", pol.Digest,
		"key_ttl", c.KeyTTL.String())
	return svc, func() { keys.Flush(); closeProv() }, nil
}
