package phi_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/search"
)

// syntheaResources reads the resources of the Synthea bundle the API tests
// keep, compacted, with their index entries.
func syntheaResources(b testing.TB) (bodies [][]byte, types, ids []string, entries []search.Entries) {
	raw, err := os.ReadFile("../api/testdata/synthea/Gustavo_Mejia_59a8543c-e24f-4a01-b28b-47ccde6bc11d.json")
	if err != nil {
		b.Fatal(err)
	}
	var bundle struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &bundle); err != nil {
		b.Fatal(err)
	}
	for _, e := range bundle.Entry {
		r, err := fhir.Parse(e.Resource)
		if err != nil {
			b.Fatal(err)
		}
		bodies = append(bodies, r.Bytes())
		types = append(types, r.Type)
		ids = append(ids, r.ID)
		entries = append(entries, search.Extract(r.Type, r.Content))
	}
	return
}

// BenchmarkSealSynthea seals one Synthea patient's resources (with their
// index entries turned into blind tokens) per op; ns/op / resources is
// the per-resource cost the ingest path pays for encryption.
func BenchmarkSealSynthea(b *testing.B) {
	bodies, types, ids, entries := syntheaResources(b)
	e := newEnv(b, phi.KeyOptions{})
	ctx := context.Background()
	if err := e.svc.Prepare(ctx, "t"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for i := range bodies {
			en := entries[i]
			en.Tokens = append([]search.Token(nil), en.Tokens...)
			en.Strings = append([]search.String(nil), en.Strings...)
			en.Dates = append([]search.Date(nil), en.Dates...)
			if _, _, err := e.svc.Seal(ctx, "t", types[i], ids[i], bodies[i], &en); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(bodies)), "ns/resource")
}

// BenchmarkOpenSynthea opens one Synthea patient's sealed resources per op.
func BenchmarkOpenSynthea(b *testing.B) {
	bodies, types, ids, entries := syntheaResources(b)
	e := newEnv(b, phi.KeyOptions{})
	ctx := context.Background()
	sealed := make([][]byte, len(bodies))
	for i := range bodies {
		s, _, err := e.svc.Seal(ctx, "t", types[i], ids[i], bodies[i], &entries[i])
		if err != nil {
			b.Fatal(err)
		}
		sealed[i] = s
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for i := range sealed {
			if _, err := e.svc.Open(ctx, "t", types[i], ids[i], sealed[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(bodies)), "ns/resource")
}
