package vault_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/phi/providertest"
	"github.com/fhirgate/fhirgate/internal/phi/vault"
	"github.com/fhirgate/fhirgate/internal/phi/vaulttest"
)

func TestMain(m *testing.M) { vaulttest.Main(m) }

// apiConfig returns a client configuration for addr without retries, so
// that failures are reported at once.
func apiConfig(t testing.TB, addr string) *api.Config {
	t.Helper()
	c := api.DefaultConfig()
	if c.Error != nil {
		t.Fatal(c.Error)
	}
	c.Address = addr
	c.MaxRetries = 0
	c.Timeout = 10 * time.Second
	return c
}

// newProvider connects to the shared server with its root token, using a
// fresh transit key unless key is given.
func newProvider(t testing.TB, key string) *vault.Provider {
	t.Helper()
	addr, token := vaulttest.Server(t)
	if key == "" {
		key = vaulttest.NewKey(t)
	}
	p, err := vault.New(t.Context(), vault.Config{API: apiConfig(t, addr), Token: token, Key: key})
	if err != nil {
		t.Fatalf("vault.New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestConformance(t *testing.T) {
	providertest.Run(t, func(t *testing.T) phi.KeyProvider { return newProvider(t, "") })
}

func TestCalls(t *testing.T) {
	p := newProvider(t, "")
	ctx := t.Context()
	c0 := p.Calls()
	var wrapped []string
	for range 300 {
		_, w, err := p.NewDataKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wrapped = append(wrapped, w)
	}
	if got := p.Calls() - c0; got != 300 {
		t.Fatalf("300 NewDataKey calls made %d requests, want 300", got)
	}
	c1 := p.Calls()
	if _, err := p.Unwrap(ctx, wrapped); err != nil {
		t.Fatal(err)
	}
	if got := p.Calls() - c1; got != 2 {
		t.Fatalf("Unwrap of 300 keys made %d requests, want 2 (batches of 250)", got)
	}
	c2 := p.Calls()
	if _, err := p.Rewrap(ctx, wrapped); err != nil {
		t.Fatal(err)
	}
	if got := p.Calls() - c2; got != 2 {
		t.Fatalf("Rewrap of 300 keys made %d requests, want 2", got)
	}
	c3 := p.Calls()
	if _, err := p.Unwrap(ctx, wrapped[:250]); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unwrap(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// Malformed keys are rejected without a request.
	if _, err := p.Unwrap(ctx, []string{"garbage"}); !errors.Is(err, phi.ErrUnwrap) {
		t.Fatalf("Unwrap(garbage): %v", err)
	}
	if got := p.Calls() - c3; got != 1 {
		t.Fatalf("Unwrap of 250 keys, of none and of one malformed key made %d requests, want 1", got)
	}
}

func TestEnsureKey(t *testing.T) {
	addr, token := vaulttest.Server(t)
	key := fmt.Sprintf("ensure-%d", time.Now().UnixNano())
	cfg := func() vault.Config {
		return vault.Config{API: apiConfig(t, addr), Token: token, Key: key, EnsureKey: true}
	}
	// Without EnsureKey, a missing key is an error that says so.
	p0, err := vault.New(t.Context(), vault.Config{API: apiConfig(t, addr), Token: token, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	defer p0.Close()
	if _, _, err := p0.NewDataKey(t.Context()); err == nil {
		t.Fatal("NewDataKey with a missing transit key: no error")
	}
	for i := range 2 { // creates the key, then finds it
		p, err := vault.New(t.Context(), cfg())
		if err != nil {
			t.Fatalf("New #%d with EnsureKey: %v", i, err)
		}
		defer p.Close()
		ki, err := p.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if ki.LatestVersion != 1 || ki.Name != "vault-transit:"+key {
			t.Fatalf("Info = %+v", ki)
		}
		pt, w, err := p.NewDataKey(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.Unwrap(t.Context(), []string{w})
		if err != nil || !bytes.Equal(got[0], pt) {
			t.Fatalf("Unwrap: %v", err)
		}
	}
	s, err := vaulttest.Client(t).Logical().Read("transit/keys/" + key)
	if err != nil || s == nil {
		t.Fatalf("read key: %v", err)
	}
	if typ := s.Data["type"]; typ != "aes256-gcm96" {
		t.Fatalf("EnsureKey created a key of type %v, want aes256-gcm96", typ)
	}
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// appRole enables AppRole auth at a fresh mount with a policy for key
// (rotate allowed only if canRotate) and a role with the given token TTLs,
// and returns the mount, role id and a secret id.
func appRole(t *testing.T, key string, canRotate bool, ttl, maxTTL string) (mount, roleID, secretID string) {
	t.Helper()
	c := vaulttest.Client(t)
	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	mount = "approle-" + suffix
	if err := c.Sys().EnableAuthWithOptions(mount, &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatalf("enable approle: %v", err)
	}
	policy := fmt.Sprintf(`
path "transit/datakey/plaintext/%[1]s" { capabilities = ["update"] }
path "transit/decrypt/%[1]s" { capabilities = ["update"] }
path "transit/rewrap/%[1]s" { capabilities = ["update"] }
path "transit/keys/%[1]s" { capabilities = ["read"] }
path "transit/keys/%[1]s/config" { capabilities = ["update"] }
`, key)
	if canRotate {
		policy += fmt.Sprintf(`path "transit/keys/%s/rotate" { capabilities = ["update"] }`, key)
	}
	policyName := "fhirgate-" + suffix
	if err := c.Sys().PutPolicy(policyName, policy); err != nil {
		t.Fatalf("put policy: %v", err)
	}
	role := "auth/" + mount + "/role/fhirgate"
	if _, err := c.Logical().Write(role, map[string]any{
		"token_policies": policyName,
		"token_ttl":      ttl,
		"token_max_ttl":  maxTTL,
	}); err != nil {
		t.Fatalf("create role: %v", err)
	}
	s, err := c.Logical().Read(role + "/role-id")
	if err != nil || s == nil {
		t.Fatalf("read role id: %v", err)
	}
	roleID, _ = s.Data["role_id"].(string)
	s, err = c.Logical().Write(role+"/secret-id", nil)
	if err != nil || s == nil {
		t.Fatalf("create secret id: %v", err)
	}
	secretID, _ = s.Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		t.Fatal("AppRole returned no role id or secret id")
	}
	return mount, roleID, secretID
}

func TestAppRole(t *testing.T) {
	addr, _ := vaulttest.Server(t)
	key := vaulttest.NewKey(t)
	mount, roleID, secretID := appRole(t, key, false, "1h", "2h")
	var logs logBuffer
	p, err := vault.New(t.Context(), vault.Config{
		API: apiConfig(t, addr), RoleID: roleID, SecretID: secretID, AppRoleMount: mount, Key: key,
	}, vault.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatalf("New with AppRole: %v", err)
	}
	defer p.Close()
	pt, w, err := p.NewDataKey(t.Context())
	if err != nil {
		t.Fatalf("NewDataKey with an AppRole token: %v", err)
	}
	got, err := p.Unwrap(t.Context(), []string{w})
	if err != nil || !bytes.Equal(got[0], pt) {
		t.Fatalf("Unwrap with an AppRole token: %v", err)
	}
	if _, err := p.Info(t.Context()); err != nil {
		t.Fatalf("Info with an AppRole token: %v", err)
	}
	// The policy does not allow rotation.
	if err := p.Rotate(t.Context()); !errors.Is(err, phi.ErrDenied) {
		t.Fatalf("Rotate without the capability: %v, want phi.ErrDenied", err)
	}
	if strings.Contains(logs.String(), secretID) {
		t.Fatal("the log contains the secret id")
	}

	// Wrong credentials are denied.
	_, err = vault.New(t.Context(), vault.Config{
		API: apiConfig(t, addr), RoleID: roleID, SecretID: "00000000-0000-0000-0000-000000000000", AppRoleMount: mount, Key: key,
	})
	if !errors.Is(err, phi.ErrDenied) {
		t.Fatalf("New with a wrong secret id: %v, want phi.ErrDenied", err)
	}
}

// TestAppRoleRelogin uses tokens that live 3 seconds at most: the provider
// must log in again when renewal ends and keep working after the first
// token has expired.
func TestAppRoleRelogin(t *testing.T) {
	t.Parallel()
	addr, _ := vaulttest.Server(t)
	key := vaulttest.NewKey(t)
	mount, roleID, secretID := appRole(t, key, true, "2s", "3s")
	file := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(file, []byte(secretID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	start := time.Now()
	p, err := vault.New(t.Context(), vault.Config{
		API: apiConfig(t, addr), RoleID: roleID, SecretIDFile: file, AppRoleMount: mount, Key: key,
	}, vault.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatalf("New with AppRole: %v", err)
	}
	defer p.Close()
	for !strings.Contains(logs.String(), "logged in again") {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("no re-login within 15s; log:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Make sure the first token (max TTL 3s) is gone.
	if d := 4*time.Second - time.Since(start); d > 0 {
		time.Sleep(d)
	}
	pt, w, err := p.NewDataKey(t.Context())
	if err != nil {
		t.Fatalf("NewDataKey after the first token expired: %v\nlog:\n%s", err, logs.String())
	}
	got, err := p.Unwrap(t.Context(), []string{w})
	if err != nil || !bytes.Equal(got[0], pt) {
		t.Fatalf("Unwrap after re-login: %v", err)
	}
	if strings.Contains(logs.String(), secretID) {
		t.Fatal("the log contains the secret id")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBadToken(t *testing.T) {
	addr, _ := vaulttest.Server(t)
	_, err := vault.New(t.Context(), vault.Config{API: apiConfig(t, addr), Token: "not-a-token", Key: "k"})
	if !errors.Is(err, phi.ErrDenied) {
		t.Fatalf("New with a bad token: %v, want phi.ErrDenied", err)
	}
	if strings.Contains(err.Error(), "not-a-token") {
		t.Fatalf("error %q contains the token", err)
	}
}

func TestNobodyListening(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	l.Close()
	_, err = vault.New(t.Context(), vault.Config{API: apiConfig(t, addr), Token: "whatever", Key: "k"})
	if !errors.Is(err, phi.ErrUnavailable) {
		t.Fatalf("New against %s: %v, want phi.ErrUnavailable", addr, err)
	}
	if !strings.Contains(err.Error(), "refused") {
		t.Fatalf("error %q does not say the connection was refused", err)
	}
}

// TestSealed seals a dedicated dev server under a working provider.
func TestSealed(t *testing.T) {
	t.Parallel()
	addr, token := vaulttest.Dedicated(t)
	p, err := vault.New(t.Context(), vault.Config{API: apiConfig(t, addr), Token: token, Key: "sealed-test", EnsureKey: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, w, err := p.NewDataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(apiConfig(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	if err := c.Sys().Seal(); err != nil {
		t.Fatalf("seal: %v", err)
	}
	checks := map[string]error{}
	_, _, checks["NewDataKey"] = p.NewDataKey(t.Context())
	_, checks["Unwrap"] = p.Unwrap(t.Context(), []string{w})
	_, checks["Rewrap"] = p.Rewrap(t.Context(), []string{w})
	_, checks["Info"] = p.Info(t.Context())
	checks["Rotate"] = p.Rotate(t.Context())
	for op, err := range checks {
		if !errors.Is(err, phi.ErrUnavailable) {
			t.Errorf("%s on a sealed Vault: %v, want phi.ErrUnavailable", op, err)
		} else if !strings.Contains(err.Error(), "sealed") {
			t.Errorf("%s on a sealed Vault: error %q does not say sealed", op, err)
		}
	}
}

func TestTimeout(t *testing.T) {
	// A listener that accepts connections and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	cfg := apiConfig(t, "http://"+l.Addr().String())
	cfg.Timeout = 300 * time.Millisecond
	_, err = vault.New(t.Context(), vault.Config{API: cfg, Token: "whatever", Key: "k"})
	if !errors.Is(err, phi.ErrUnavailable) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("New against a server that never answers: %v, want phi.ErrUnavailable, timed out", err)
	}
}

func TestConfigFromEnv(t *testing.T) {
	vars := []string{"VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE", "VAULT_SKIP_VERIFY", "VAULT_CACERT",
		"VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY", "VAULT_MAX_RETRIES", "VAULT_CLIENT_TIMEOUT",
		vault.EnvTransitMount, vault.EnvTransitKey, vault.EnvRoleID, vault.EnvSecretID, vault.EnvSecretIDFile, vault.EnvAppRoleMount}
	reset := func(t *testing.T) {
		for _, v := range vars {
			t.Setenv(v, "")
		}
	}
	t.Run("Defaults", func(t *testing.T) {
		reset(t)
		t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
		t.Setenv("VAULT_TOKEN", "tok")
		t.Setenv("VAULT_NAMESPACE", "ns1")
		c, err := vault.ConfigFromEnv()
		if err != nil {
			t.Fatal(err)
		}
		if c.TransitMount != "transit" || c.Key != "fhirgate" || c.AppRoleMount != "approle" || c.Token != "tok" ||
			c.Namespace != "ns1" || c.API == nil || c.API.Address != "http://127.0.0.1:1" || c.BatchSize != 250 {
			t.Fatalf("ConfigFromEnv = mount %q key %q approle %q namespace %q batch %d", c.TransitMount, c.Key, c.AppRoleMount, c.Namespace, c.BatchSize)
		}
	})
	t.Run("AppRole", func(t *testing.T) {
		reset(t)
		file := filepath.Join(t.TempDir(), "sid")
		if err := os.WriteFile(file, []byte("sid\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv(vault.EnvRoleID, "rid")
		t.Setenv(vault.EnvSecretIDFile, file)
		t.Setenv(vault.EnvAppRoleMount, "/custom/")
		t.Setenv(vault.EnvTransitMount, "kms/transit")
		t.Setenv(vault.EnvTransitKey, "phi-kek")
		c, err := vault.ConfigFromEnv()
		if err != nil {
			t.Fatal(err)
		}
		if c.RoleID != "rid" || c.SecretIDFile != file || c.AppRoleMount != "custom" || c.TransitMount != "kms/transit" || c.Key != "phi-kek" {
			t.Fatalf("ConfigFromEnv = %+v", c)
		}
	})
	errCases := []struct {
		name, want string
		env        map[string]string
	}{
		{"NoCredentials", "VAULT_TOKEN", nil},
		{"RoleWithoutSecret", vault.EnvSecretID, map[string]string{vault.EnvRoleID: "r"}},
		{"SecretWithoutRole", vault.EnvRoleID, map[string]string{vault.EnvSecretID: "s"}},
		{"SecretTwice", vault.EnvSecretIDFile, map[string]string{vault.EnvRoleID: "r", vault.EnvSecretID: "s", vault.EnvSecretIDFile: "/x"}},
		{"MissingSecretFile", vault.EnvSecretIDFile, map[string]string{vault.EnvRoleID: "r", vault.EnvSecretIDFile: "/nonexistent/secret-id"}},
		{"BadKeyName", vault.EnvTransitKey, map[string]string{"VAULT_TOKEN": "t", vault.EnvTransitKey: "a/b"}},
		{"BadMount", vault.EnvTransitMount, map[string]string{"VAULT_TOKEN": "t", vault.EnvTransitMount: "a/../b"}},
		{"BadSkipVerify", "VAULT_SKIP_VERIFY", map[string]string{"VAULT_TOKEN": "t", "VAULT_SKIP_VERIFY": "maybe"}},
	}
	for _, c := range errCases {
		t.Run(c.name, func(t *testing.T) {
			reset(t)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			_, err := vault.ConfigFromEnv()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ConfigFromEnv: %v, want an error naming %s", err, c.want)
			}
		})
	}
}

func TestConfigReuse(t *testing.T) {
	addr, token := vaulttest.Server(t)
	cfg := vault.Config{API: apiConfig(t, addr), Token: token, Key: "k"}
	p, err := vault.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := vault.New(t.Context(), cfg); err == nil {
		t.Fatal("second New with the same api.Config: no error")
	}
}

// TestItemIndexAcrossChunks checks that a failing item in a later batch
// chunk is named by its index in the whole input.
func TestItemIndexAcrossChunks(t *testing.T) {
	p := newProvider(t, "")
	other := newProvider(t, "")
	_, w, err := p.NewDataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, foreign, err := other.NewDataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	in := make([]string, 300)
	for i := range in {
		in[i] = w
	}
	in[270] = foreign
	for op, f := range map[string]func() error{
		"Unwrap": func() error { _, err := p.Unwrap(t.Context(), in); return err },
		"Rewrap": func() error { _, err := p.Rewrap(t.Context(), in); return err },
	} {
		err := f()
		if !errors.Is(err, phi.ErrUnwrap) || !strings.Contains(err.Error(), "item 270") {
			t.Fatalf("%s with a foreign key at index 270: %v, want phi.ErrUnwrap naming item 270", op, err)
		}
	}
}
