package bench

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestBucketBounds(t *testing.T) {
	t.Parallel()
	// Every value lies in a bucket whose upper bound is >= it and within
	// 1/subCount of it; buckets are contiguous.
	for _, v := range []uint64{0, 1, 127, 128, 255, 256, 257, 1000, 1 << 20, 123456789, 1<<40 + 12345} {
		i := bucket(v)
		hi := bucketHigh(i)
		if hi < v {
			t.Errorf("bucketHigh(bucket(%d)) = %d < value", v, hi)
		}
		if float64(hi-v) > float64(v)/subCount {
			t.Errorf("bucket of %d ends at %d: more than 1/%d above", v, hi, subCount)
		}
		if i > 0 && bucketHigh(i-1) >= v {
			t.Errorf("value %d also fits the previous bucket (ends %d)", v, bucketHigh(i-1))
		}
	}
}

func TestQuantiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		samples []time.Duration
		q       []float64
		want    []time.Duration
	}{
		{
			name: "empty",
			q:    []float64{0.5, 0.99},
			want: []time.Duration{0, 0},
		},
		{
			name:    "one sample",
			samples: []time.Duration{7 * time.Millisecond},
			q:       []float64{0.5, 0.99, 1},
			// Clamped to the sample itself, not its bucket's bound.
			want: []time.Duration{7 * time.Millisecond, 7 * time.Millisecond, 7 * time.Millisecond},
		},
		{
			// 1..100 ns are below subCount: exact. Nearest rank: p50 is
			// the 50th value, p95 the 95th, p99 the 99th.
			name:    "exact small values",
			samples: seq(1, 100),
			q:       []float64{0.5, 0.95, 0.99, 1},
			want:    []time.Duration{50, 95, 99, 100},
		},
		{
			name:    "rank rounds up",
			samples: seq(1, 10),
			q:       []float64{0.01, 0.5, 0.55, 0.91},
			want:    []time.Duration{1, 5, 6, 10},
		},
		{
			// 256 and 257 share a bucket, as do 1000..1003: a quantile
			// reports its bucket's upper bound, never more than the maximum.
			name:    "bucketed values",
			samples: []time.Duration{256, 257, 1000, 2000},
			q:       []float64{0.25, 0.5, 0.75, 1},
			want:    []time.Duration{257, 257, 1003, 2000},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var h Histogram
			for _, s := range tt.samples {
				h.Record(s)
			}
			var got []time.Duration
			for _, q := range tt.q {
				got = append(got, h.Quantile(q))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("quantiles %v (-want +got):\n%s", tt.q, diff)
			}
		})
	}
}

func TestQuantileRelativeError(t *testing.T) {
	t.Parallel()
	// 1ms..1000ms in 1ms steps: the nearest-rank pXX is XX*10 ms exactly;
	// the histogram may report up to 1/subCount more.
	var h Histogram
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	for _, q := range []float64{0.5, 0.95, 0.99} {
		want := time.Duration(q*1000) * time.Millisecond
		got := h.Quantile(q)
		if got < want || float64(got-want) > float64(want)/subCount {
			t.Errorf("Quantile(%v) = %v, want %v within 1/%d above", q, got, want, subCount)
		}
	}
	if h.Max() != time.Second || h.Count() != 1000 {
		t.Errorf("Max, Count = %v, %d; want 1s, 1000", h.Max(), h.Count())
	}
	if want := 500500 * time.Microsecond; h.Mean() != want {
		t.Errorf("Mean = %v, want %v", h.Mean(), want)
	}
}

func TestMerge(t *testing.T) {
	t.Parallel()
	var a, b, all Histogram
	for i, d := range seq(1, 100) {
		all.Record(d * time.Microsecond)
		if i%3 == 0 {
			a.Record(d * time.Microsecond)
		} else {
			b.Record(d * time.Microsecond)
		}
	}
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(&Histogram{})
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 1} {
		if m.Quantile(q) != all.Quantile(q) {
			t.Errorf("merged Quantile(%v) = %v, want %v", q, m.Quantile(q), all.Quantile(q))
		}
	}
	if m.Count() != 100 || m.Max() != 100*time.Microsecond || m.Mean() != all.Mean() {
		t.Errorf("merged Count, Max, Mean = %d, %v, %v; want 100, 100µs, %v", m.Count(), m.Max(), m.Mean(), all.Mean())
	}
}

func seq(from, to int) []time.Duration {
	var out []time.Duration
	for i := from; i <= to; i++ {
		out = append(out, time.Duration(i))
	}
	return out
}
