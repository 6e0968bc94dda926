package authz

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// latencies records each operation's duration and reports p50 and p99 as
// benchmark metrics (ns): a decision's cost matters per request.
type latencies []time.Duration

func (l *latencies) time(f func()) {
	t := time.Now()
	f()
	*l = append(*l, time.Since(t))
}

func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	b.ReportMetric(float64(l[len(l)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(l[len(l)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkDecide: one decision on one resource (a read by id or a write),
// the shipped policy, the matrix's subjects, interactions and resources in
// turn, filters cached (the default).
func BenchmarkDecide(b *testing.B) {
	e := loadShipped(b)
	ctx := context.Background()
	env := Env{Time: time.Now(), ClientIP: "10.0.0.1"}
	b.ReportAllocs()
	var lat latencies
	i := 0
	for b.Loop() {
		c := matrix[i%len(matrix)]
		i++
		res := resources[c.resource]
		lat.time(func() {
			if _, err := e.Decide(ctx, subjects[c.subject], Action{Interaction: c.interaction, Type: res.Type, ID: res.ID}, res, env); err != nil {
				b.Fatal(err)
			}
		})
	}
	lat.report(b)
}

// BenchmarkDecideClinicianRead: the common case alone, with the filter
// cached and without (every decision evaluates the subject's grants too).
func BenchmarkDecideClinicianRead(b *testing.B) {
	res := resources["obs-org1"]
	act := Action{Interaction: Read, Type: "Observation", ID: res.ID}
	benchCachedAndNot(b, func(ctx context.Context, e *Engine) {
		d, err := e.Decide(ctx, clinician, act, res, Env{})
		if err != nil || !d.Allow {
			b.Fatal(d, err)
		}
	})
}

// BenchmarkFilter: cached (the same subject and type again, as in a
// session) and uncached (every call evaluates the policy).
func BenchmarkFilter(b *testing.B) {
	act := Action{Interaction: Search, Type: "Observation"}
	benchCachedAndNot(b, func(ctx context.Context, e *Engine) {
		f, err := e.Filter(ctx, clinician, act, Env{})
		if err != nil || !f.Decision.Allow {
			b.Fatal(f, err)
		}
	})
}

// benchCachedAndNot runs op against the shipped policies with the filter
// cache on and off, reporting allocations and latency quantiles.
func benchCachedAndNot(b *testing.B, op func(context.Context, *Engine)) {
	for _, cached := range []bool{true, false} {
		b.Run(fmt.Sprintf("cached=%v", cached), func(b *testing.B) {
			var opts []Option
			if !cached {
				opts = append(opts, WithFilterCache(0, 0))
			}
			e := loadShipped(b, opts...)
			ctx := context.Background()
			b.ReportAllocs()
			var lat latencies
			for b.Loop() {
				lat.time(func() { op(ctx, e) })
			}
			lat.report(b)
		})
	}
}

// BenchmarkAllows: the Go evaluation of a filter on one resource.
func BenchmarkAllows(b *testing.B) {
	e := loadShipped(b)
	f, err := e.Filter(context.Background(), clinician, Action{Interaction: Search, Type: "Observation"}, Env{})
	if err != nil {
		b.Fatal(err)
	}
	res := resources["obs-org1"]
	for b.Loop() {
		if !f.Allows(res) {
			b.Fatal("denied")
		}
	}
}

// BenchmarkAttributes: extracting the attributes of a stored body.
func BenchmarkAttributes(b *testing.B) {
	body := []byte(`{"resourceType":"Observation","id":"o1","status":"final",
		"meta":{"source":"emr-a","security":[{"code":"R"}]},
		"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],
		"code":{"coding":[{"system":"http://loinc.org","code":"1234-5"}]},"subject":{"reference":"Patient/p1"},
		"effectiveDateTime":"2024-01-01T10:00:00Z","valueQuantity":{"value":1.5,"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"}}`)
	b.ReportAllocs()
	for b.Loop() {
		if r := Attributes("Observation", "o1", body); len(r.Patients) != 1 {
			b.Fatal(r)
		}
	}
}
