package bench

import (
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

// TestSampleHostSeesOwnCPU burns CPU in this process for a moment: the
// host's busy time grows by at least the process's, which grows, and the
// foreign load stays within the host's cores.
func TestSampleHostSeesOwnCPU(t *testing.T) {
	a, err := sampleHost(nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	b, err := sampleHost(nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.ours-a.ours < 10 { // 0.1 s of CPU in 0.3 s of spinning
		t.Errorf("own CPU grew by %d ticks while spinning 0.3 s (x=%d)", b.ours-a.ours, x)
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
	t0 := time.Now()
	if _, quiet := m.waitQuiet(t.Context(), 0, time.Minute); !quiet || time.Since(t0) > time.Second {
		t.Errorf("waitQuiet with no limit: quiet %v after %s, want at once", quiet, time.Since(t0))
	}
}
