package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*Config)
		want   string // "" for valid; else a substring of the error
	}{
		{"defaults", func(*Config) {}, ""},
		{"localhost", func(c *Config) { c.URL = "http://localhost:9000/fhir" }, ""},
		{"ipv6 loopback", func(c *Config) { c.URL = "http://[::1]:8080/fhir" }, ""},
		{"remote refused", func(c *Config) { c.URL = "http://10.1.2.3:8080/fhir" }, "not a loopback address"},
		{"remote name refused", func(c *Config) { c.URL = "https://fhir.example.org/fhir" }, "not a loopback address"},
		{"remote allowed", func(c *Config) { c.URL = "https://fhir.example.org/fhir"; c.AllowRemote = true }, ""},
		{"bad scheme", func(c *Config) { c.URL = "ftp://127.0.0.1/fhir" }, "scheme must be http or https"},
		{"no host", func(c *Config) { c.URL = "http:///fhir" }, "no host"},
		{"query", func(c *Config) { c.URL = "http://127.0.0.1:8080/fhir?x=1" }, "without query"},
		{"unknown phase", func(c *Config) { c.Phases = []string{"ingest", "soak"} }, `unknown phase "soak"`},
		{"no phase", func(c *Config) { c.Phases = nil }, "no phase"},
		{"read without ingest", func(c *Config) { c.Phases = []string{"read"} }, "read needs ingest"},
		{"verify without ingest", func(c *Config) { c.Phases = []string{"verify"} }, "verify needs ingest"},
		{"copy without url", func(c *Config) { c.Phases = []string{"copy-baseline"} }, "needs -database-url"},
		{"copy alone", func(c *Config) { c.Phases = []string{"copy-baseline"}; c.DatabaseURL = "postgres://x" }, ""},
		{"negative rounds", func(c *Config) { c.Rounds = -1 }, "-rounds"},
		{"no target", func(c *Config) { c.Resources = 0 }, "-resources"},
		{"rounds without target", func(c *Config) { c.Resources = 0; c.Rounds = 2 }, ""},
		{"too many workers", func(c *Config) { c.Concurrency = 5000 }, "-c:"},
		{"zero duration", func(c *Config) { c.Duration = 0 }, "-duration"},
		{"unbounded duration", func(c *Config) { c.Duration = 2 * time.Hour }, "-duration"},
		{"zero duration without timed phases", func(c *Config) { c.Duration = 0; c.Phases = []string{"ingest"} }, ""},
		{"no timeout", func(c *Config) { c.RequestTimeout = 0 }, "-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := DefaultConfig()
			tt.change(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestParsePhases(t *testing.T) {
	t.Parallel()
	got := ParsePhases(" ingest, read,,verify ")
	if diff := cmp.Diff([]string{"ingest", "read", "verify"}, got); diff != "" {
		t.Errorf("ParsePhases (-want +got):\n%s", diff)
	}
}

func TestWorkers(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	got := []int{c.workers(PhaseIngest), c.workers(PhaseRead), c.workers(PhaseSearch), c.workers(PhaseVerify)}
	if diff := cmp.Diff([]int{4, 16, 16, 4}, got); diff != "" {
		t.Errorf("default workers (-want +got):\n%s", diff)
	}
	c.Concurrency = 3
	if c.workers(PhaseRead) != 3 {
		t.Errorf("-c 3: read workers = %d, want 3", c.workers(PhaseRead))
	}
}
