package ingest_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// BenchmarkHL7Intake runs ADT^A01 and ORU^R01 messages, each about its own
// patient, through intake (parse, map, validate, index, store with
// Provenance and archive, ACK) from 16 goroutines against a real database,
// without MLLP: the pipeline's own ceiling.
func BenchmarkHL7Intake(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	templates := []string{
		"MSH|^~\\&|LAB|HOSP|FHIRGATE|FG|20240101120000+0000||ADT^A01^ADT_A01|%[1]s|P|2.5.1\r" +
			"EVN|A01|20240101120000+0000\r" +
			"PID|1||M%[1]s^^^HOSP^MR||Doe^Jane^Q||19800101|F|||1 Main St^^Springfield^IL^62701||555-0100\r" +
			"PV1|1|I|W^1^1||||1234^Smith^John|||||||||||V%[1]s|||||||||||||||||||||||||20240101120000\r",
		"MSH|^~\\&|LAB|HOSP|FHIRGATE|FG|20240101120000+0000||ORU^R01^ORU_R01|%[1]s|P|2.5.1\r" +
			"PID|1||M%[1]s^^^HOSP^MR||Doe^Jane||19800101|F\r" +
			"OBR|1|P%[1]s|F%[1]s|24331-1^Lipid panel^LN|||20240101100000\r" +
			"OBX|1|NM|2093-3^Cholesterol^LN||185|mg/dL|<200|N|||F|||20240101100000\r" +
			"OBX|2|NM|2571-8^Triglyceride^LN||120|mg/dL|<150|N|||F|||20240101100000\r",
	}
	var next atomic.Int64
	var failed atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	workers := 16
	if v := os.Getenv("BENCH_WORKERS"); v != "" {
		fmt.Sscanf(v, "%d", &workers)
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				m := fmt.Sprintf(templates[i%2], fmt.Sprintf("B%d", i))
				ack := e.intake.Handle(ctx, tenant, []byte(m))
				if !strings.Contains(string(ack), "MSA|AA|") {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "messages/s")
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d messages were not accepted", n)
	}
}
