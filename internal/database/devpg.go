package database

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DevDatabase is the database the gateway uses in the no-configuration dev
// default on its private cluster. On a PostgreSQL server the machine runs
// (shared by every checkout), each checkout gets a database of its own,
// DevDatabase_<hash of its data directory>: the dev PHI keyring lives in
// the data directory, so two checkouts sharing one database would each
// hold keys the other's data cannot be read with.
const DevDatabase = "fhirgate"

// machineDevDatabase is the dev database of the checkout whose data
// directory is dataDir, on the machine's server.
func machineDevDatabase(dataDir string) string {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(filepath.Clean(abs)))
	return DevDatabase + "_" + hex.EncodeToString(sum[:4])
}

// DevPort is the first port tried for a private dev cluster.
const DevPort = 55432

// machineURL is the machine's own PostgreSQL, tried before starting a
// private cluster.
const machineURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// DevURL returns a PostgreSQL URL for the no-configuration dev default:
// $DATABASE_URL if set (used as is); else the server on 127.0.0.1:5432 if one
// answers within 2s; else a private cluster under dataDir, started with the
// machine's initdb and pg_ctl on a free loopback port (DevPort first), or
// reused if one is already running there. In the last two cases the database
// DevDatabase is created if missing and the URL points at it.
//
// stop stops only what this call started: it is a no-op unless this call
// started a private cluster, in which case it runs pg_ctl stop -m fast.
//
// The private cluster trusts every local connection without a password and
// listens on 127.0.0.1 and a unix socket inside dataDir only: it is for
// development on one machine and must never hold real patient data.
func DevURL(ctx context.Context, dataDir string, logger *slog.Logger) (url string, stop func() error, err error) {
	noop := func() error { return nil }
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u, noop, nil
	}
	if err := ping(ctx, machineURL, 2*time.Second); err == nil {
		name := machineDevDatabase(dataDir)
		u, err := ensureDevDatabase(ctx, machineURL, name)
		if err != nil {
			return "", nil, err
		}
		logger.InfoContext(ctx, "dev database: using the server on 127.0.0.1:5432", "database", name)
		return u, noop, nil
	}
	return startPrivate(ctx, dataDir, logger)
}

// StopPrivate stops a private dev cluster under dataDir if one is running.
func StopPrivate(ctx context.Context, dataDir string) error {
	c, err := newCluster(dataDir)
	if err != nil {
		return err
	}
	if _, ok := c.running(ctx); !ok {
		return nil
	}
	return c.stop(ctx)
}

// startPrivate starts (or reuses) the private cluster under dataDir and
// returns the URL of DevDatabase on it.
func startPrivate(ctx context.Context, dataDir string, logger *slog.Logger) (string, func() error, error) {
	c, err := newCluster(dataDir)
	if err != nil {
		return "", nil, err
	}
	if err := os.MkdirAll(c.root, 0o755); err != nil {
		return "", nil, fmt.Errorf("database: dev cluster: %w", err)
	}
	unlock, err := lockFile(filepath.Join(c.root, "lock"))
	if err != nil {
		return "", nil, err
	}
	defer unlock()

	if port, ok := c.running(ctx); ok {
		u, err := ensureDevDatabase(ctx, adminURL(port), DevDatabase)
		if err != nil {
			return "", nil, err
		}
		logger.InfoContext(ctx, "dev database: reusing private cluster", "dir", c.root, "port", port)
		return u, func() error { return nil }, nil
	}
	if err := c.prepare(ctx); err != nil {
		return "", nil, err
	}
	port, err := freePort(DevPort)
	if err != nil {
		return "", nil, err
	}
	logger.InfoContext(ctx, "dev database: starting private cluster", "dir", c.root, "port", port, "bin", c.bin)
	if err := c.start(ctx, port); err != nil {
		return "", nil, err
	}
	stop := func() error { return c.stop(context.Background()) }
	if err := ping(ctx, adminURL(port), 10*time.Second); err != nil {
		_ = stop()
		return "", nil, fmt.Errorf("database: dev cluster started but does not answer: %w", err)
	}
	u, err := ensureDevDatabase(ctx, adminURL(port), DevDatabase)
	if err != nil {
		_ = stop()
		return "", nil, err
	}
	return u, stop, nil
}

// cluster is a private PostgreSQL cluster: root/data holds the cluster,
// root/sock its unix socket, root/postgres.log the server log.
type cluster struct {
	root string
	bin  string // directory holding initdb, pg_ctl and postgres
	// runAs is the unprivileged user the server runs as when we are root
	// ("" when we are not root).
	runAs string
}

func newCluster(dataDir string) (*cluster, error) {
	root, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("database: dev cluster dir: %w", err)
	}
	bin, err := findPGBin()
	if err != nil {
		return nil, err
	}
	c := &cluster{root: root, bin: bin}
	// initdb and postgres refuse to run as root (a server compromised
	// through SQL must not own the machine). When we are root, run them as
	// the machine's "postgres" user, which Debian's postgresql packages
	// create, and give it the cluster directory.
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			return nil, errors.New("database: dev cluster: running as root and there is no \"postgres\" user to run the server as; create one (useradd --system postgres) or run as an ordinary user")
		}
		c.runAs = "postgres"
	}
	return c, nil
}

func (c *cluster) data() string { return filepath.Join(c.root, "data") }
func (c *cluster) sock() string { return filepath.Join(c.root, "sock") }
func (c *cluster) log() string  { return filepath.Join(c.root, "postgres.log") }

// command builds a command that runs tool from the cluster's bin directory,
// as c.runAs when set.
func (c *cluster) command(ctx context.Context, tool string, args ...string) *exec.Cmd {
	return c.asUser(ctx, filepath.Join(c.bin, tool), args...)
}

// asUser builds a command that runs path as c.runAs (runuser, else su).
func (c *cluster) asUser(ctx context.Context, path string, args ...string) *exec.Cmd {
	if c.runAs == "" {
		return exec.CommandContext(ctx, path, args...)
	}
	if rp, err := exec.LookPath("runuser"); err == nil {
		return exec.CommandContext(ctx, rp, append([]string{"-u", c.runAs, "--", path}, args...)...)
	}
	quoted := make([]string, 0, len(args)+1)
	for _, a := range append([]string{path}, args...) {
		quoted = append(quoted, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
	}
	return exec.CommandContext(ctx, "su", c.runAs, "-s", "/bin/sh", "-c", strings.Join(quoted, " "))
}

func (c *cluster) run(ctx context.Context, tool string, args ...string) error {
	out, err := c.command(ctx, tool, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("database: dev cluster: %s: %w: %s", tool, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// prepare runs initdb when the cluster does not exist yet and hands the
// directory to runAs.
func (c *cluster) prepare(ctx context.Context) error {
	for _, d := range []string{c.sock()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("database: dev cluster: %w", err)
		}
	}
	if err := c.chown(); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(c.data(), "PG_VERSION")); err == nil {
		return nil
	}
	if err := c.run(ctx, "initdb", "-D", c.data(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-instructions"); err != nil {
		return err
	}
	// Listen on loopback and on the socket inside the cluster directory
	// only; the port is chosen at each start.
	conf := fmt.Sprintf("\n# fhirgate dev cluster\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n", c.sock())
	f, err := os.OpenFile(filepath.Join(c.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("database: dev cluster: %w", err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("database: dev cluster: %w", err)
	}
	return c.chown()
}

// chown gives the cluster directory to runAs, and checks that runAs can
// reach it (every parent must be searchable by that user).
func (c *cluster) chown() error {
	if c.runAs == "" {
		return nil
	}
	u, err := user.Lookup(c.runAs)
	if err != nil {
		return fmt.Errorf("database: dev cluster: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	err = filepath.Walk(c.root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		return fmt.Errorf("database: dev cluster: chown %s: %w", c.root, err)
	}
	if out, err := c.command(context.Background(), "pg_ctl", "--version").CombinedOutput(); err != nil {
		return fmt.Errorf("database: dev cluster: cannot run pg_ctl as %s: %w: %s", c.runAs, err, strings.TrimSpace(string(out)))
	}
	if err := c.asUser(context.Background(), "test", "-w", c.root).Run(); err != nil {
		return fmt.Errorf("database: dev cluster: user %s cannot write %s; make its parent directories searchable (chmod o+x)", c.runAs, c.root)
	}
	return nil
}

func (c *cluster) start(ctx context.Context, port int) error {
	return c.run(ctx, "pg_ctl", "start", "-D", c.data(), "-l", c.log(), "-w", "-t", "60",
		"-o", "-p "+strconv.Itoa(port))
}

func (c *cluster) stop(ctx context.Context) error {
	return c.run(ctx, "pg_ctl", "stop", "-D", c.data(), "-m", "fast", "-w", "-t", "60")
}

// running reports whether the cluster's server is up and the port it
// listens on, from postmaster.pid (line 4 is the port).
func (c *cluster) running(ctx context.Context) (int, bool) {
	if _, err := os.Stat(filepath.Join(c.data(), "PG_VERSION")); err != nil {
		return 0, false
	}
	if err := c.command(ctx, "pg_ctl", "status", "-D", c.data()).Run(); err != nil {
		return 0, false
	}
	f, err := os.Open(filepath.Join(c.data(), "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for i := 1; sc.Scan(); i++ {
		if i == 4 {
			port, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
			if err != nil {
				return 0, false
			}
			return port, ping(ctx, adminURL(port), 5*time.Second) == nil
		}
	}
	return 0, false
}

// findPGBin finds the directory holding initdb and pg_ctl: initdb on PATH
// first, then the newest /usr/lib/postgresql/<version>/bin (Debian's layout,
// which keeps them off PATH).
func findPGBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoInitdb
}

// ErrNoInitdb means no PostgreSQL server binaries were found on the machine.
var ErrNoInitdb = errors.New("database: no initdb found on PATH or in /usr/lib/postgresql/*/bin; install PostgreSQL or set DATABASE_URL")

// freePort returns the first port from first on that is free on 127.0.0.1,
// or one the kernel picks.
func freePort(first int) (int, error) {
	for p := first; p < first+100; p++ {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err == nil {
			l.Close()
			return p, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("database: dev cluster: no free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func adminURL(port int) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
}

// ping connects to u and pings it within timeout.
func ping(ctx context.Context, u string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

// ensureDevDatabase creates database name on the server at admin (a URL of
// its postgres database) if missing and returns its URL.
func ensureDevDatabase(ctx context.Context, admin, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", fmt.Errorf("database: dev: connect: %w", err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", fmt.Errorf("database: dev: look up %s: %w", name, err)
	}
	if !exists {
		_, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
		var pgErr *pgconn.PgError
		if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42P04") { // duplicate_database: a concurrent caller won
			return "", fmt.Errorf("database: dev: create %s: %w", name, err)
		}
	}
	pu, err := url.Parse(admin)
	if err != nil {
		return "", fmt.Errorf("database: dev: %w", err)
	}
	pu.Path = "/" + name
	return pu.String(), nil
}

// lockFile takes an exclusive flock on path so that two processes do not
// initialise or start the same cluster at once.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("database: dev cluster lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("database: dev cluster lock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
