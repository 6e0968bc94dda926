package bench

import (
	"context"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestCompareAgainstFakes runs a comparison against two fake gateways:
// rounds alternate their order, the table has both modes and the loss,
// and the provider-call check counts what the counters report.
func TestCompareAgainstFakes(t *testing.T) {
	t.Parallel()
	off, on := httptest.NewServer(newFake()), httptest.NewServer(newFake())
	defer off.Close()
	defer on.Close()
	cfg := testConfig(t, off.URL)
	cfg.Phases = []string{PhaseIngest, PhaseRead}
	cfg.Rounds = 1

	var calls, sealed atomic.Int64
	var sampled []string
	targets := [2]Target{
		{Name: "off", URL: off.URL + "/fhir"},
		{Name: "on", URL: on.URL + "/fhir", KeyTTL: time.Hour, Provider: "fake",
			Counters: func(context.Context) (Counters, error) {
				// Two key creations on the first ingest only.
				if len(sampled) == 1 {
					calls.Add(2)
				}
				sampled = append(sampled, "x")
				sealed.Add(10)
				return Counters{ProviderCalls: calls.Load(), Sealed: sealed.Load(), Keys: min(calls.Load(), 2)}, nil
			}},
	}
	var out, progress strings.Builder
	rep, err := Compare(t.Context(), CompareConfig{Bench: cfg, Rounds: 2, MaxLoss: 100}, targets, &out, &progress)
	if err != nil {
		t.Fatalf("Compare: %v\n%s", err, progress.String())
	}
	// Round 1 runs off first, round 2 on first.
	for _, tt := range []struct {
		target string
		first  []bool
	}{{"off", []bool{true, false}}, {"on", []bool{false, true}}} {
		ss := rep.Samples[tt.target][PhaseIngest]
		if len(ss) != 2 || ss[0].First != tt.first[0] || ss[1].First != tt.first[1] {
			t.Errorf("%s ingest samples: %+v, want first = %v", tt.target, ss, tt.first)
		}
	}
	ing := rep.Row(PhaseIngest)
	if ing == nil || len(ing.Calls) != 2 || ing.Calls[0] != 2 || ing.Calls[1] != 0 || ing.Sealed != 20 {
		t.Fatalf("ingest row = %+v, want calls [2 0], sealed 20", ing)
	}
	if !rep.Pass() {
		t.Errorf("checks failed: %+v", rep.Checks)
	}
	for _, want := range []string{"ingest  loss", "read   off", "read    on", "2 (2+0)",
		"PASS  key provider called at most once per data key per cache lifetime: 2 calls", "target met"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestCompareFailsTooManyProviderCalls(t *testing.T) {
	t.Parallel()
	off, on := httptest.NewServer(newFake()), httptest.NewServer(newFake())
	defer off.Close()
	defer on.Close()
	cfg := testConfig(t, off.URL)
	cfg.Phases = []string{PhaseIngest, PhaseRead}
	cfg.Rounds = 1
	var n int64
	targets := [2]Target{
		{Name: "off", URL: off.URL + "/fhir"},
		{Name: "on", URL: on.URL + "/fhir", KeyTTL: time.Hour, Provider: "fake",
			Counters: func(context.Context) (Counters, error) {
				n += 5 // a call per request, say
				return Counters{ProviderCalls: n, Keys: 2}, nil
			}},
	}
	var out, progress strings.Builder
	rep, err := Compare(t.Context(), CompareConfig{Bench: cfg, Rounds: 1, MaxLoss: 100}, targets, &out, &progress)
	if err != nil {
		t.Fatalf("Compare: %v", err)
	}
	if rep.Pass() || !strings.Contains(out.String(), "FAIL  key provider called at most once") || !strings.Contains(out.String(), "target NOT met") {
		t.Errorf("10 calls for 2 keys passed:\n%s", out.String())
	}
}

// TestCompareRunsDisturbedRoundAgain: other processes use many cores
// during the first round (as the fake host says), so it is discarded and
// run again; the kept round is the quiet one.
func TestCompareRunsDisturbedRoundAgain(t *testing.T) {
	t.Parallel()
	off, on := httptest.NewServer(newFake()), httptest.NewServer(newFake())
	defer off.Close()
	defer on.Close()
	cfg := testConfig(t, off.URL)
	cfg.Phases = []string{PhaseIngest, PhaseRead}
	cfg.Rounds = 1
	var reads int
	var busy int64
	host := func([]string) (hostSample, error) {
		reads++
		// The probe, then a begin and an end sample per phase: 2 targets x
		// 2 phases in the first round.
		if reads <= 9 {
			busy += 10000 // 100 s of CPU between two samples: not ours
		}
		return hostSample{at: time.Now(), busy: busy}, nil
	}
	targets := [2]Target{{Name: "off", URL: off.URL + "/fhir"}, {Name: "on", URL: on.URL + "/fhir"}}
	var out, progress strings.Builder
	rep, err := Compare(t.Context(), CompareConfig{Bench: cfg, Rounds: 1, MaxLoss: 100, MaxForeign: 0.25, Retries: 2, readHost: host},
		targets, &out, &progress)
	if err != nil {
		t.Fatalf("Compare: %v", err)
	}
	if len(rep.Discarded) != 1 || len(rep.Disturbed) != 0 {
		t.Fatalf("discarded %q, disturbed %q: want one discarded round", rep.Discarded, rep.Disturbed)
	}
	for _, name := range []string{"off", "on"} {
		ss := rep.Samples[name][PhaseRead]
		if len(ss) != 1 || ss[0].Foreign != 0 {
			t.Errorf("PHI %s read samples kept: %+v, want one with no foreign load", name, ss)
		}
	}
	if !strings.Contains(out.String(), "discarded and run again: round 1: ingest with PHI off: other processes used") {
		t.Errorf("table does not name the discarded round:\n%s", out.String())
	}
}
