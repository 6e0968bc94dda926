package bench

import (
	"context"
	"testing"
	"time"
)

func TestOwnPostgres(t *testing.T) {
	t.Parallel()
	dbs := []string{"fhirgate_bench_phi_off", "fhirgate_bench_phi_on"}
	for _, tt := range []struct {
		title string
		want  bool
	}{
		{"postgres: 15/main: postgres fhirgate_bench_phi_on 127.0.0.1(55312) idle", true},
		{"postgres: 15/main: postgres fhirgate_bench_phi_on_x 127.0.0.1(55312) idle", false},
		{"postgres: 15/main: postgres fhirgate_test_0123 127.0.0.1(55330) SELECT", false},
		{"postgres: 15/main: checkpointer", true},
		{"postgres: 15/main: walwriter", true},
		{"/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main", true},
	} {
		if got := ownPostgres(tt.title+" ", dbs); got != tt.want {
			t.Errorf("ownPostgres(%q) = %v, want %v", tt.title, got, tt.want)
		}
	}
}

// TestSampleHostSeesOwnCPU burns CPU in this process until the host's
// samples show it (at least 0.1 s of CPU): the host's busy time grows by at
// least the process's, and the foreign load stays within the host's cores.
// It waits for the CPU, not for a time: a loaded machine only makes it
// spin longer.
func TestSampleHostSeesOwnCPU(t *testing.T) {
	a, err := sampleHost(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := a
	x := 0
	for spins := 0; b.ours-a.ours < 10; spins++ { // 10 ticks: 0.1 s of CPU
		if spins == 1000 { // 1000 × 50 ms of spinning without 0.1 s of CPU
			t.Fatalf("own CPU grew by %d ticks in %d spins (x=%d): the samples do not see this process", b.ours-a.ours, spins, x)
		}
		for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
			x++
		}
		if b, err = sampleHost(nil); err != nil {
			t.Fatal(err)
		}
	}
	if b.busy < a.busy || b.ours < a.ours {
		t.Errorf("samples went backwards: %+v then %+v", a, b)
	}
	if f := a.foreign(b); f < -0.5 || f > 64 {
		t.Errorf("foreign load %.2f cores: implausible", f)
	}
}

func TestWaitQuietOff(t *testing.T) {
	t.Parallel()
	m := newHostMeter(nil, nil)
	// With no limit there is nothing to wait for: it answers quiet without
	// sampling, so even a cancelled context (which ends any wait with
	// "not quiet") does not matter.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, quiet := m.waitQuiet(ctx, 0, time.Minute); !quiet {
		t.Error("waitQuiet with no limit: not quiet, want quiet at once")
	}
}
