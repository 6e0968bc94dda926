package vault

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/hashicorp/vault/api"
)

// Environment variables read by ConfigFromEnv, besides the standard VAULT_*
// variables that api.DefaultConfig reads (VAULT_ADDR, VAULT_CACERT,
// VAULT_CAPATH, VAULT_CLIENT_CERT, VAULT_CLIENT_KEY, VAULT_SKIP_VERIFY,
// VAULT_TLS_SERVER_NAME, VAULT_CLIENT_TIMEOUT, VAULT_MAX_RETRIES, ...).
const (
	EnvToken        = "VAULT_TOKEN"
	EnvNamespace    = "VAULT_NAMESPACE"
	EnvTransitMount = "FHIRGATE_VAULT_TRANSIT_MOUNT"
	EnvTransitKey   = "FHIRGATE_VAULT_TRANSIT_KEY"
	EnvRoleID       = "FHIRGATE_VAULT_ROLE_ID"
	EnvSecretID     = "FHIRGATE_VAULT_SECRET_ID"
	EnvSecretIDFile = "FHIRGATE_VAULT_SECRET_ID_FILE"
	EnvAppRoleMount = "FHIRGATE_VAULT_APPROLE_MOUNT"
)

// Defaults.
const (
	DefaultTransitMount = "transit"
	DefaultTransitKey   = "fhirgate"
	DefaultAppRoleMount = "approle"
	// DefaultBatchSize is the number of items sent in one batch_input.
	DefaultBatchSize = 250
)

// Config configures a Provider. Credentials are either Token, or RoleID
// with SecretID or SecretIDFile (AppRole); when RoleID is set, AppRole is
// used and Token is ignored.
type Config struct {
	// API is the Vault client configuration (address, TLS, timeout,
	// retries). nil means api.DefaultConfig(), which reads the standard
	// VAULT_* variables. New takes ownership of it: do not share one
	// api.Config between Providers or clients. Its Timeout bounds each
	// request to Vault.
	API *api.Config
	// Namespace is the Vault Enterprise namespace (VAULT_NAMESPACE).
	Namespace string

	// Token is a Vault token (VAULT_TOKEN).
	Token string
	// RoleID, SecretID and SecretIDFile are AppRole credentials
	// (FHIRGATE_VAULT_ROLE_ID, FHIRGATE_VAULT_SECRET_ID,
	// FHIRGATE_VAULT_SECRET_ID_FILE). SecretIDFile is read at every login.
	RoleID       string
	SecretID     string
	SecretIDFile string
	// AppRoleMount is the AppRole auth mount path (default "approle").
	AppRoleMount string

	// TransitMount is the Transit secrets engine mount (default "transit").
	TransitMount string
	// Key is the Transit key name (default "fhirgate").
	Key string
	// EnsureKey creates the Transit key (type aes256-gcm96) if it is
	// missing. For development and tests; production keys are created by
	// the operator.
	EnsureKey bool

	// BatchSize is the number of items per batch_input call (default 250).
	BatchSize int
}

// ConfigFromEnv builds a Config from the environment: the standard VAULT_*
// variables plus the FHIRGATE_VAULT_* ones. Errors name the setting.
func ConfigFromEnv() (Config, error) {
	apiCfg := api.DefaultConfig()
	if apiCfg.Error != nil {
		// api's errors name the VAULT_* variable that failed to parse.
		return Config{}, fmt.Errorf("vault config: %w", apiCfg.Error)
	}
	c := Config{
		API:          apiCfg,
		Namespace:    os.Getenv(EnvNamespace),
		Token:        os.Getenv(EnvToken),
		RoleID:       os.Getenv(EnvRoleID),
		SecretID:     os.Getenv(EnvSecretID),
		SecretIDFile: os.Getenv(EnvSecretIDFile),
		AppRoleMount: os.Getenv(EnvAppRoleMount),
		TransitMount: os.Getenv(EnvTransitMount),
		Key:          os.Getenv(EnvTransitKey),
	}
	c.setDefaults()
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func (c *Config) setDefaults() {
	if c.TransitMount == "" {
		c.TransitMount = DefaultTransitMount
	}
	if c.Key == "" {
		c.Key = DefaultTransitKey
	}
	if c.AppRoleMount == "" {
		c.AppRoleMount = DefaultAppRoleMount
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	c.TransitMount = strings.Trim(c.TransitMount, "/")
	c.AppRoleMount = strings.Trim(c.AppRoleMount, "/")
}

var (
	keyNameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	mountPathRE = regexp.MustCompile(`^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$`)
)

// useAppRole reports whether the config logs in with AppRole.
func (c *Config) useAppRole() bool { return c.RoleID != "" }

// validate checks a Config with defaults applied; errors name the setting.
func (c *Config) validate() error {
	if !keyNameRE.MatchString(c.Key) {
		return fmt.Errorf("vault config: %s: invalid transit key name %q", EnvTransitKey, c.Key)
	}
	if !mountPathRE.MatchString(c.TransitMount) || strings.Contains(c.TransitMount, "..") {
		return fmt.Errorf("vault config: %s: invalid mount path %q", EnvTransitMount, c.TransitMount)
	}
	if !mountPathRE.MatchString(c.AppRoleMount) || strings.Contains(c.AppRoleMount, "..") {
		return fmt.Errorf("vault config: %s: invalid mount path %q", EnvAppRoleMount, c.AppRoleMount)
	}
	if c.BatchSize < 1 {
		return fmt.Errorf("vault config: BatchSize must be positive, got %d", c.BatchSize)
	}
	if c.API != nil && c.API.Address == "" {
		return errors.New("vault config: VAULT_ADDR: no Vault address")
	}
	switch {
	case c.useAppRole():
		if c.SecretID != "" && c.SecretIDFile != "" {
			return fmt.Errorf("vault config: set only one of %s and %s", EnvSecretID, EnvSecretIDFile)
		}
		if c.SecretID == "" && c.SecretIDFile == "" {
			return fmt.Errorf("vault config: %s is set but neither %s nor %s is", EnvRoleID, EnvSecretID, EnvSecretIDFile)
		}
		if c.SecretIDFile != "" {
			if _, err := c.secretID(); err != nil {
				return err
			}
		}
	case c.SecretID != "" || c.SecretIDFile != "":
		return fmt.Errorf("vault config: %s or %s is set without %s", EnvSecretID, EnvSecretIDFile, EnvRoleID)
	case c.Token == "":
		return fmt.Errorf("vault config: no Vault credentials: set %s, or %s with %s (or %s)", EnvToken, EnvRoleID, EnvSecretID, EnvSecretIDFile)
	}
	return nil
}

// secretID returns the AppRole secret id, reading SecretIDFile if set.
func (c *Config) secretID() (string, error) {
	if c.SecretIDFile == "" {
		return c.SecretID, nil
	}
	b, err := os.ReadFile(c.SecretIDFile)
	if err != nil {
		return "", fmt.Errorf("vault config: %s: %w", EnvSecretIDFile, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("vault config: %s: %s is empty", EnvSecretIDFile, c.SecretIDFile)
	}
	return s, nil
}
