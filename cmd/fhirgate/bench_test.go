package main

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fhirgate/fhirgate/internal/bench"
)

func TestParseBenchFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantPhases []string
		wantErr    string
	}{
		{name: "defaults", wantPhases: bench.DefaultPhases},
		{name: "database url adds copy-baseline", args: []string{"-database-url", "postgres://127.0.0.1/x"},
			wantPhases: append(append([]string{}, bench.DefaultPhases...), bench.PhaseVacuum, bench.PhaseCopyBaseline)},
		{name: "explicit phases win", args: []string{"-phases", "ingest,verify", "-database-url", "postgres://127.0.0.1/x"},
			wantPhases: []string{"ingest", "verify"}},
		{name: "remote refused", args: []string{"-url", "http://192.0.2.1/fhir"}, wantErr: "not a loopback address"},
		{name: "unknown flag", args: []string{"-bogus"}, wantErr: "flag provided but not defined"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
		{name: "bad phase", args: []string{"-phases", "ingest,nope"}, wantErr: `unknown phase "nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseBenchFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseBenchFlags(%q) error = %v, want %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseBenchFlags(%q): %v", tt.args, err)
			}
			if diff := cmp.Diff(tt.wantPhases, cfg.Phases); diff != "" {
				t.Errorf("phases (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseBenchFlagsValues(t *testing.T) {
	t.Parallel()
	cfg, err := parseBenchFlags([]string{"-url", "http://localhost:9/fhir", "-resources", "30000", "-duration", "10s", "-c", "8", "-rounds", "2", "-sample", "50"})
	if err != nil {
		t.Fatal(err)
	}
	got := []any{cfg.URL, cfg.Resources, cfg.Duration, cfg.Concurrency, cfg.Rounds, cfg.Sample}
	want := []any{"http://localhost:9/fhir", 30000, 10 * time.Second, 8, 2, 50}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}
