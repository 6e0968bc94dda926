package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
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
		phase, n, bucketQuantile(delta, 0.5), bucketQuantile(delta, 0.99), records, commits, perCommit)
}

func bucketQuantile(b []int64, q float64) time.Duration {
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
	return 0
}
