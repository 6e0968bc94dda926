package bench

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// sampleHost reads the host's busy CPU time and the CPU time of the
// workload: this process (the bench and its gateways) and the PostgreSQL
// processes that serve it (backends of the databases named in dbs and the
// server's background processes). Other PostgreSQL backends, and every
// other process, are foreign.
func sampleHost(dbs []string) (hostSample, error) {
	s := hostSample{at: time.Now()}
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, err
	}
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return s, errors.New("bench: /proc/stat: unexpected format")
	}
	// user nice system idle iowait irq softirq steal ...: busy is user,
	// nice, system and steal. Interrupt time is left out: most of it is
	// the loopback traffic between the bench and its gateways, which no
	// process is charged for.
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i == 5 || i == 6 || i >= 8 {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return s, errors.New("bench: /proc/stat: unexpected format")
		}
		s.busy += n
	}
	self, _, ok := procTimes("/proc/self")
	if !ok {
		return s, errors.New("bench: /proc/self/stat: unexpected format")
	}
	s.ours = self
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		ticks, comm, ok := procTimes(d)
		if !ok || comm != "postgres" {
			continue
		}
		cmd, err := os.ReadFile(d + "/cmdline")
		if err != nil {
			continue
		}
		if ownPostgres(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})), dbs) {
			s.ours += ticks
		}
	}
	return s, nil
}

// procTimes returns a process's user+system CPU ticks and its name.
func procTimes(dir string) (int64, string, bool) {
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return 0, "", false
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return 0, "", false
	}
	f := strings.Fields(string(b[end+1:]))
	// After comm: state(0) ppid(1) ... utime(11) stime(12).
	if len(f) < 13 {
		return 0, "", false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, "", false
	}
	return u + st, string(b[open+1 : end]), true
}

// postgresBackground are the titles of a PostgreSQL server's own
// processes, which work for every database (the workload's included).
var postgresBackground = []string{"checkpointer", "background writer", "walwriter", "autovacuum", "logical replication",
	"stats collector", "archiver", "walsender", "startup", "-D "}

// ownPostgres reports whether a postgres process, by its title, works for
// the workload: a backend of one of dbs, or a background process.
func ownPostgres(title string, dbs []string) bool {
	for _, db := range dbs {
		if strings.Contains(title, " "+db+" ") {
			return true
		}
	}
	for _, bg := range postgresBackground {
		if strings.Contains(title, bg) {
			return true
		}
	}
	return false
}
