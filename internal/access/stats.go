package access

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Decision latency: every policy evaluation a request asks for (filters,
// including cached ones, and single-resource decisions), in power-of-two
// microsecond buckets, process-wide. For operators and the bench tool.
var decisions struct {
	n       atomic.Int64
	total   atomic.Int64 // nanoseconds
	buckets [32]atomic.Int64
}

func observe(d time.Duration) {
	us := uint64(d.Microseconds())
	b := bits.Len64(us) // 0: <1µs, 1: 1µs, 2: 2-3µs, ...
	if b >= len(decisions.buckets) {
		b = len(decisions.buckets) - 1
	}
	decisions.buckets[b].Add(1)
	decisions.n.Add(1)
	decisions.total.Add(int64(d))
}

// DecisionStats summarizes the policy evaluations so far.
type DecisionStats struct {
	Count int64
	Mean  time.Duration
	// P50 and P99 are upper bounds of their power-of-two buckets.
	P50, P99 time.Duration
	Buckets  []int64 // counts per bucket: [0] <1µs, [i] < 2^i µs
}

// Decisions returns the decision-latency statistics.
func Decisions() DecisionStats {
	s := DecisionStats{Count: decisions.n.Load(), Buckets: make([]int64, len(decisions.buckets))}
	for i := range decisions.buckets {
		s.Buckets[i] = decisions.buckets[i].Load()
	}
	if s.Count > 0 {
		s.Mean = time.Duration(decisions.total.Load() / s.Count)
	}
	s.P50, s.P99 = Quantile(s.Buckets, 0.5), Quantile(s.Buckets, 0.99)
	return s
}

// Quantile is the upper bound of the bucket holding quantile q of counts
// per power-of-two microsecond bucket (DecisionStats.Buckets, or the
// difference of two of them), 0 when there are none.
func Quantile(b []int64, q float64) time.Duration {
	var total int64
	for _, c := range b {
		total += c
	}
	if total == 0 {
		return 0
	}
	want := int64(q*float64(total) + 0.5)
	var seen int64
	for i, c := range b {
		seen += c
		if seen >= want {
			return time.Duration(1<<uint(i)) * time.Microsecond
		}
	}
	return time.Duration(1<<uint(len(b)-1)) * time.Microsecond
}
