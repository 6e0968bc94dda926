package ingest_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fhirgate/fhirgate/internal/database/databasetest"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/store"
	"github.com/fhirgate/fhirgate/internal/validate"
)

var syntheaDir = flag.String("synthea", "../../../shared/corpus/synthea", "folder of Synthea transaction bundles")

// BenchmarkIngestSynthea runs Synthea transaction bundles through the write
// path (parse, validate, index, store) against a real database, with four
// bundles in flight, and reports resources per second.
func BenchmarkIngestSynthea(b *testing.B) {
	files, _ := filepath.Glob(filepath.Join(*syntheaDir, "*.json"))
	if len(files) == 0 {
		b.Skipf("no Synthea bundles in %s (set -synthea)", *syntheaDir)
	}
	sort.Strings(files)
	var bodies [][]byte
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		bodies = append(bodies, body)
	}
	pool := databasetest.NewPool(b)
	if sql := os.Getenv("BENCH_SQL"); sql != "" {
		if _, err := pool.Exec(context.Background(), sql); err != nil {
			b.Fatal(err)
		}
	}
	svc := ingest.New(store.New(pool), validate.Resource)
	ctx := context.Background()
	var resources atomic.Int64
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				bundle, err := ingest.ParseBundle(bodies[int(i)%len(bodies)])
				if err != nil {
					b.Error(err)
					return
				}
				res, err := svc.Process(ctx, "bench", bundle)
				if err != nil {
					b.Error(err)
					return
				}
				resources.Add(int64(len(res)))
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(resources.Load())/b.Elapsed().Seconds(), "resources/s")
}
