package access

import (
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	t.Parallel()
	// 10 evaluations under 1µs, 80 of 2-3µs, 10 of 512-1023µs.
	b := make([]int64, 32)
	b[0], b[2], b[10] = 10, 80, 10
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.05, time.Microsecond}, {0.5, 4 * time.Microsecond}, {0.9, 4 * time.Microsecond}, {0.99, 1024 * time.Microsecond}} {
		if got := Quantile(b, c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := Quantile(make([]int64, 32), 0.5); got != 0 {
		t.Errorf("no evaluations: %v, want 0", got)
	}
}
