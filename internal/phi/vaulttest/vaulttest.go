// Package vaulttest gives tests a real Vault: one dev server per test
// binary (`vault server -dev`, in memory, with a random root token and the
// transit engine mounted at "transit"), or the server named by
// FHIRGATE_TEST_VAULT_ADDR and FHIRGATE_TEST_VAULT_TOKEN.
//
// Packages that use it call Main from TestMain so the server is stopped
// when the tests end. Without a Vault the tests fail (never skip): build
// the binary with deploy/devvault/build.sh. It is for tests only and must
// never be imported by production code.
package vaulttest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Environment variables.
const (
	// EnvAddr and EnvToken name an already running Vault to use instead of
	// starting one; the token must be able to mount engines and manage keys.
	EnvAddr  = "FHIRGATE_TEST_VAULT_ADDR"
	EnvToken = "FHIRGATE_TEST_VAULT_TOKEN"
	// EnvBin is the path of the vault binary (default
	// <repo root>/.data/bin/vault).
	EnvBin = "FHIRGATE_VAULT_BIN"
)

// module is the module path that identifies the repository root.
const module = "github.com/fhirgate/fhirgate"

// startTimeout bounds how long a dev server may take to answer sys/health.
const startTimeout = 30 * time.Second

var (
	sharedOnce  sync.Once
	sharedAddr  string
	sharedToken string
	sharedErr   error

	procsMu sync.Mutex
	procs   = map[*server]bool{}
)

// Main runs the tests of a package and then stops every Vault server this
// package started. Call it from TestMain:
//
//	func TestMain(m *testing.M) { vaulttest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	stopAll()
	os.Exit(code)
}

// Server returns the address and root token of the test binary's shared
// Vault, starting it on first use. It fails the test if there is none.
func Server(t testing.TB) (addr, token string) {
	t.Helper()
	sharedOnce.Do(func() { sharedAddr, sharedToken, sharedErr = shared() })
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return sharedAddr, sharedToken
}

// Dedicated starts a Vault dev server for this test alone (for tests that
// damage it, e.g. by sealing it) and stops it when the test ends. It
// always needs the vault binary, even when EnvAddr is set.
func Dedicated(t testing.TB) (addr, token string) {
	t.Helper()
	s, err := start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	if err := mountTransit(s.addr, s.token); err != nil {
		t.Fatal(err)
	}
	return s.addr, s.token
}

// Client returns a client for the shared server, with its root token.
func Client(t testing.TB) *api.Client {
	t.Helper()
	addr, token := Server(t)
	c, err := newClient(addr, token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NewKey creates a transit key (aes256-gcm96) with a fresh unique name in
// the shared server's "transit" mount and returns its name.
func NewKey(t testing.TB) string {
	t.Helper()
	c := Client(t)
	name := "fhirgate-test-" + randomHex(8)
	if _, err := c.Logical().Write("transit/keys/"+name, map[string]any{"type": "aes256-gcm96"}); err != nil {
		t.Fatalf("vaulttest: create transit key %s: %v", name, err)
	}
	t.Cleanup(func() {
		// Best effort: matters only for a long-lived EnvAddr server.
		if _, err := c.Logical().Write("transit/keys/"+name+"/config", map[string]any{"deletion_allowed": true}); err == nil {
			_, _ = c.Logical().Delete("transit/keys/" + name)
		}
	})
	return name
}

// shared finds or starts the shared server and mounts transit on it.
func shared() (string, string, error) {
	addr, token := os.Getenv(EnvAddr), os.Getenv(EnvToken)
	if addr == "" || token == "" {
		s, err := start()
		if err != nil {
			return "", "", err
		}
		addr, token = s.addr, s.token
	}
	if err := mountTransit(addr, token); err != nil {
		return "", "", err
	}
	return addr, token, nil
}

// newClient returns a client for addr with token, ignoring VAULT_* in the
// environment (except TLS settings, which a dev server does not use).
func newClient(addr, token string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vaulttest: client config: %w", cfg.Error)
	}
	cfg.Address = addr
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vaulttest: client: %w", err)
	}
	c.ClearNamespace()
	c.SetToken(token)
	return c, nil
}

// mountTransit mounts the transit engine at "transit" unless it is there.
func mountTransit(addr, token string) error {
	c, err := newClient(addr, token)
	if err != nil {
		return err
	}
	mounts, err := c.Sys().ListMounts()
	if err != nil {
		return fmt.Errorf("vaulttest: list mounts on %s: %w", addr, err)
	}
	if m, ok := mounts["transit/"]; ok {
		if m.Type != "transit" {
			return fmt.Errorf("vaulttest: %s: mount transit/ has type %q", addr, m.Type)
		}
		return nil
	}
	if err := c.Sys().Mount("transit", &api.MountInput{Type: "transit"}); err != nil {
		return fmt.Errorf("vaulttest: mount transit on %s: %w", addr, err)
	}
	return nil
}

// server is a running dev server.
type server struct {
	addr, token string
	cmd         *exec.Cmd
	dir         string // temp dir: log file and HOME
	exited      chan struct{}
	once        sync.Once
}

// start starts a dev server and waits until it is unsealed and active.
func start() (*server, error) {
	bin, err := binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "fhirgate-vaulttest-")
	if err != nil {
		return nil, fmt.Errorf("vaulttest: %w", err)
	}
	port, err := freePortPair()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &server{
		addr:   "http://127.0.0.1:" + strconv.Itoa(port),
		token:  "devroot-" + randomHex(16),
		dir:    dir,
		exited: make(chan struct{}),
	}
	logPath := filepath.Join(dir, "vault.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("vaulttest: %w", err)
	}
	s.cmd = exec.Command(bin, "server", "-dev",
		"-dev-root-token-id="+s.token,
		"-dev-listen-address=127.0.0.1:"+strconv.Itoa(port),
		"-dev-no-store-token")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.Dir = dir
	s.cmd.Env = childEnv(dir)
	s.cmd.SysProcAttr = sysProcAttr()

	// With Pdeathsig, the child is killed when the OS thread that started
	// it ends; lock that thread to a goroutine that lives as long as the
	// child, so the child dies with the test binary and not before.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := s.cmd.Start(); err != nil {
			runtime.UnlockOSThread()
			started <- err
			return
		}
		started <- nil
		_ = s.cmd.Wait()
		logf.Close()
		close(s.exited)
	}()
	if err := <-started; err != nil {
		logf.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("vaulttest: start %s: %w", bin, err)
	}
	procsMu.Lock()
	procs[s] = true
	procsMu.Unlock()

	if err := s.waitReady(); err != nil {
		tail := s.logTail(40)
		s.stop()
		return nil, fmt.Errorf("vaulttest: Vault dev server at %s: %w\n--- vault log (last lines) ---\n%s", s.addr, err, tail)
	}
	return s, nil
}

// waitReady polls sys/health until the server is initialized, unsealed and
// active, the process exits, or startTimeout passes.
func (s *server) waitReady() error {
	c, err := newClient(s.addr, s.token)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var last error
	for {
		hctx, hcancel := context.WithTimeout(ctx, 2*time.Second)
		h, err := c.Sys().HealthWithContext(hctx)
		hcancel()
		switch {
		case err != nil:
			last = err
		case !h.Initialized || h.Sealed || h.Standby:
			last = fmt.Errorf("not ready: initialized=%t sealed=%t standby=%t", h.Initialized, h.Sealed, h.Standby)
		default:
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("vault exited before it was ready (%v)", s.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %v", startTimeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop kills the server and removes its directory.
func (s *server) stop() {
	s.once.Do(func() {
		procsMu.Lock()
		delete(procs, s)
		procsMu.Unlock()
		// A dev server keeps everything in memory: nothing to shut down
		// gracefully.
		_ = s.cmd.Process.Kill()
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
		}
		os.RemoveAll(s.dir)
	})
}

// stopAll stops every server still running.
func stopAll() {
	procsMu.Lock()
	all := make([]*server, 0, len(procs))
	for s := range procs {
		all = append(all, s)
	}
	procsMu.Unlock()
	for _, s := range all {
		s.stop()
	}
}

// logTail returns the last n lines of the server's log, with the root
// token and unseal key removed.
func (s *server) logTail(n int) string {
	b, err := os.ReadFile(filepath.Join(s.dir, "vault.log"))
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.ReplaceAll(sc.Text(), s.token, "<root token>")
		if strings.Contains(line, "Unseal Key") {
			line = "Unseal Key: <redacted>"
		}
		lines = append(lines, line)
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// childEnv is the environment without VAULT_* variables, which could point
// the dev server elsewhere, and with HOME in dir.
func childEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+dir)
}

// errNoVault is the failure when there is neither a server nor a binary.
var errNoVault = errors.New("no Vault dev server: run deploy/devvault/build.sh (see README)")

// binary returns the vault binary: EnvBin, else <repo root>/.data/bin/vault.
func binary() (string, error) {
	if bin := os.Getenv(EnvBin); bin != "" {
		if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%w (%s=%s is not an executable file)", errNoVault, EnvBin, bin)
		}
		return bin, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", fmt.Errorf("%w (%v)", errNoVault, err)
	}
	bin := filepath.Join(root, ".data", "bin", "vault")
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%w (no executable %s; or set %s and %s, or %s)", errNoVault, bin, EnvAddr, EnvToken, EnvBin)
	}
	return bin, nil
}

// repoRoot walks up from the working directory to the directory whose
// go.mod declares module github.com/fhirgate/fhirgate.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath(b) == module {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod for module %s above the working directory", module)
		}
		dir = parent
	}
}

// modulePath returns the module path declared in a go.mod file.
func modulePath(gomod []byte) string {
	for line := range strings.Lines(string(gomod)) {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "module"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			rest, _, _ = strings.Cut(rest, "//")
			return strings.Trim(strings.TrimSpace(rest), `"`+"`")
		}
	}
	return ""
}

// freePortPair returns a port p such that p and p+1 (the dev server's
// cluster port) are free on 127.0.0.1.
func freePortPair() (int, error) {
	for range 50 {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("vaulttest: find a free port: %w", err)
		}
		p := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l1.Close()
		if err == nil {
			l2.Close()
			return p, nil
		}
	}
	return 0, errors.New("vaulttest: no free pair of adjacent ports on 127.0.0.1")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
