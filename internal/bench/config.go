package bench

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Phase names, in the order they run.
const (
	PhaseIngest       = "ingest"
	PhaseVacuum       = "vacuum"
	PhaseRead         = "read"
	PhaseSearch       = "search"
	PhaseVerify       = "verify"
	PhaseCopyBaseline = "copy-baseline"
	PhaseMLLP         = "mllp"
)

var allPhases = []string{PhaseIngest, PhaseVacuum, PhaseRead, PhaseSearch, PhaseVerify, PhaseCopyBaseline, PhaseMLLP}

// DefaultPhases are the phases run when none are named.
var DefaultPhases = []string{PhaseIngest, PhaseRead, PhaseSearch, PhaseVerify}

// Config is what one bench run does.
type Config struct {
	// URL is the gateway's FHIR base, e.g. http://127.0.0.1:8080/fhir.
	URL string
	// Token is sent as a bearer token with every request (fhirgate token).
	Token string
	// StatsURL is the gateway's /debug/fhirgate (FHIRGATE_DEBUG_ADDR): read
	// before and after the read and search phases to report policy
	// decision latency and audit records per commit.
	StatsURL string
	// AllowRemote permits a URL whose host is not a loopback address.
	AllowRemote bool
	// Corpus is the directory of transaction bundles to replay.
	Corpus string
	// Phases to run; they always run in the order of allPhases.
	Phases []string
	// Rounds is how many times the corpus is replayed; 0 means as many as
	// needed to send Resources resources (stopping at the first bundle that
	// reaches it).
	Rounds int
	// Resources is the ingest target when Rounds is 0.
	Resources int
	// Concurrency overrides the per-phase default number of workers (4 for
	// ingest and copy-baseline, 16 for read, search and mllp) when > 0.
	Concurrency int
	// Duration bounds the read, search and mllp phases.
	Duration time.Duration
	// Sample is how many created resources verify reads back.
	Sample int
	// RequestTimeout bounds each HTTP request.
	RequestTimeout time.Duration
	// DatabaseURL is the PostgreSQL the copy-baseline phase writes to.
	DatabaseURL string `json:"-"`
	// MLLPAddr is the gateway's MLLP listener (host:port) for the mllp
	// phase.
	MLLPAddr string
	// MLLPCorpus is the directory of *.hl7 messages the mllp phase sends.
	MLLPCorpus string
	// MLLPMessages is how many messages the mllp phase sends (cycling
	// through the corpus, each with a fresh MSH-10).
	MLLPMessages int
	// MLLPTypes are the message types (MSH-9.1^MSH-9.2) taken from the
	// corpus; "*" takes all.
	MLLPTypes []string
}

// DefaultConfig returns the defaults the fhirgate bench command starts from.
func DefaultConfig() Config {
	return Config{
		URL:            "http://127.0.0.1:8080/fhir",
		Corpus:         "../shared/corpus/synthea",
		Phases:         slices.Clone(DefaultPhases),
		Resources:      250000,
		Duration:       30 * time.Second,
		Sample:         1000,
		RequestTimeout: 2 * time.Minute,
		MLLPAddr:       "127.0.0.1:2575",
		MLLPCorpus:     "../shared/corpus/hl7v2/messages",
		MLLPMessages:   50000,
		MLLPTypes:      slices.Clone(DefaultMLLPTypes),
	}
}

// ParsePhases splits a comma-separated phase list.
func ParsePhases(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Validate checks c and names the flag at fault.
func (c *Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.URL)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("-url: %w", err))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("-url: scheme must be http or https, got %q", u.Scheme))
	case u.Host == "":
		errs = append(errs, errors.New("-url: no host"))
	case u.RawQuery != "" || u.Fragment != "":
		errs = append(errs, errors.New("-url: must be the FHIR base, without query or fragment"))
	case !c.AllowRemote && !isLoopback(u.Hostname()):
		errs = append(errs, fmt.Errorf("-url: host %q is not a loopback address; a load generator only targets a remote gateway with -allow-remote", u.Hostname()))
	}
	if len(c.Phases) == 0 {
		errs = append(errs, errors.New("-phases: no phase"))
	}
	for _, p := range c.Phases {
		if !slices.Contains(allPhases, p) {
			errs = append(errs, fmt.Errorf("-phases: unknown phase %q (want %s)", p, strings.Join(allPhases, ", ")))
		}
	}
	needsIngest := []string{PhaseRead, PhaseSearch, PhaseVerify}
	for _, p := range needsIngest {
		if c.Has(p) && !c.Has(PhaseIngest) {
			errs = append(errs, fmt.Errorf("-phases: %s needs ingest in the same run (it uses the resources ingest created)", p))
		}
	}
	if c.Has(PhaseCopyBaseline) && c.DatabaseURL == "" {
		errs = append(errs, errors.New("-phases: copy-baseline needs -database-url"))
	}
	if c.Has(PhaseVacuum) && c.DatabaseURL == "" {
		errs = append(errs, errors.New("-phases: vacuum needs -database-url"))
	}
	if c.Corpus == "" && (c.Has(PhaseIngest) || c.Has(PhaseCopyBaseline)) {
		errs = append(errs, errors.New("-corpus: empty"))
	}
	if c.Rounds < 0 {
		errs = append(errs, errors.New("-rounds: must be >= 0"))
	}
	if c.Rounds == 0 && c.Resources <= 0 {
		errs = append(errs, errors.New("-resources: must be > 0 when -rounds is 0"))
	}
	if c.Concurrency < 0 || c.Concurrency > 1024 {
		errs = append(errs, errors.New("-c: must be between 0 (phase default) and 1024"))
	}
	if c.Has(PhaseMLLP) {
		errs = append(errs, c.validateMLLP()...)
	}
	if (c.Has(PhaseRead) || c.Has(PhaseSearch) || c.Has(PhaseMLLP)) && (c.Duration <= 0 || c.Duration > time.Hour) {
		errs = append(errs, errors.New("-duration: must be > 0 and at most 1h"))
	}
	if c.Has(PhaseVerify) && c.Sample < 0 {
		errs = append(errs, errors.New("-sample: must be >= 0"))
	}
	if c.RequestTimeout <= 0 {
		errs = append(errs, errors.New("-timeout: must be > 0"))
	}
	return errors.Join(errs...)
}

// Has reports whether phase p is selected.
func (c *Config) Has(p string) bool { return slices.Contains(c.Phases, p) }

func (c *Config) workers(phase string) int {
	if c.Concurrency > 0 {
		return c.Concurrency
	}
	if phase == PhaseRead || phase == PhaseSearch || phase == PhaseMLLP {
		return 16
	}
	return 4
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *Config) validateMLLP() []error {
	var errs []error
	host, port, err := net.SplitHostPort(c.MLLPAddr)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("-mllp-addr: %w", err))
	case port == "":
		errs = append(errs, errors.New("-mllp-addr: no port"))
	case !c.AllowRemote && !isLoopback(host):
		errs = append(errs, fmt.Errorf("-mllp-addr: host %q is not a loopback address; a load generator only targets a remote gateway with -allow-remote", host))
	}
	if c.MLLPCorpus == "" {
		errs = append(errs, errors.New("-mllp-corpus: empty"))
	}
	if c.MLLPMessages <= 0 {
		errs = append(errs, errors.New("-mllp-messages: must be > 0"))
	}
	if len(c.MLLPTypes) == 0 {
		errs = append(errs, errors.New("-mllp-types: no message type"))
	}
	for _, t := range c.MLLPTypes {
		if t != "*" && (strings.Count(t, "^") != 1 || strings.HasPrefix(t, "^") || strings.HasSuffix(t, "^")) {
			errs = append(errs, fmt.Errorf("-mllp-types: %q is not CODE^EVENT (e.g. ADT^A01) or *", t))
		}
	}
	return errs
}
