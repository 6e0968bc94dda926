package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/fhirgate/fhirgate/internal/access"
)

// serverStats is what the gateway's debug listener reports at
// /debug/fhirgate (FHIRGATE_DEBUG_ADDR): policy decision latency and the
// access log's group commits.
type serverStats struct {
	Decisions struct {
		Count   int64
		Buckets []int64 // [0] <1µs, [i] < 2^i µs
	} `json:"decisions"`
	Audit struct {
		Records int64
		Commits int64
	} `json:"audit"`
	HL7 hl7Stats `json:"hl7"`
}

// hl7Stats is HL7 v2 intake's counters (ingest.HL7Stats).
type hl7Stats struct {
	Messages, Batches, Mapped, Written, Unchanged, Named int64
}

func (a hl7Stats) minus(b hl7Stats) hl7Stats {
	return hl7Stats{a.Messages - b.Messages, a.Batches - b.Batches, a.Mapped - b.Mapped,
		a.Written - b.Written, a.Unchanged - b.Unchanged, a.Named - b.Named}
}

// checkHL7Delta checks, for the mllp phase, that the gateway stored every
// message it acknowledged with AA/CA and none it refused (the phase sends
// fresh control ids, so none is a re-send; only messages whose ACK the
// phase's end cut off may go either way), and accounted for every resource
// they mapped to: written, unchanged, or existing master data named.
func checkHL7Delta(p *PhaseReport, before, after *serverStats) []string {
	d := after.HL7.minus(before.HL7)
	var out []string
	// Messages the end of the phase cut off may or may not have been stored.
	acked := int64(p.AckCodes["AA"] + p.AckCodes["CA"])
	if d.Messages < acked || d.Messages > acked+int64(p.Unanswered) {
		out = append(out, fmt.Sprintf("the gateway stored %d messages during the phase; %d were acknowledged AA/CA and %d cut off by its end", d.Messages, acked, p.Unanswered))
	}
	if d.Mapped != d.Written+d.Unchanged+d.Named {
		out = append(out, fmt.Sprintf("%d resources mapped, but %d written + %d unchanged + %d named", d.Mapped, d.Written, d.Unchanged, d.Named))
	}
	return out
}

func fetchServerStats(ctx context.Context, client *http.Client, url string) (*serverStats, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	var s serverStats
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&s); err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return &s, nil
}

// writeServerDelta prints what the server did during one phase: policy
// decisions and their p50/p99 (bucket upper bounds), and audit records
// per commit.
func writeServerDelta(w io.Writer, phase string, before, after *serverStats) {
	if before == nil || after == nil {
		return
	}
	if d := after.HL7.minus(before.HL7); d.Messages > 0 {
		fmt.Fprintf(w, "%s: server: %d HL7 v2 messages stored in %d transactions (%.1f per commit); %d resources mapped = %d written + %d unchanged + %d existing master data named\n",
			phase, d.Messages, d.Batches, float64(d.Messages)/float64(max(d.Batches, 1)), d.Mapped, d.Written, d.Unchanged, d.Named)
	}
	n := after.Decisions.Count - before.Decisions.Count
	delta := make([]int64, len(after.Decisions.Buckets))
	for i := range delta {
		delta[i] = after.Decisions.Buckets[i]
		if i < len(before.Decisions.Buckets) {
			delta[i] -= before.Decisions.Buckets[i]
		}
	}
	records := after.Audit.Records - before.Audit.Records
	commits := after.Audit.Commits - before.Audit.Commits
	perCommit := 0.0
	if commits > 0 {
		perCommit = float64(records) / float64(commits)
	}
	fmt.Fprintf(w, "%s: server: %d policy decisions, p50 <%s p99 <%s; %d audit records in %d commits (%.1f per commit)\n",
		phase, n, access.Quantile(delta, 0.5), access.Quantile(delta, 0.99), records, commits, perCommit)
}
