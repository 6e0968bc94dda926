package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// vacuum runs VACUUM (ANALYZE) on the gateway's database between ingest and
// the read phases: what autovacuum does within a minute or so of a bulk
// load on a production server. Without it the planner has no statistics
// and index-only scans visit the heap, so reads measured right after a
// bulk load on a server with autovacuum off say little about steady state.
func (r *runner) vacuum(ctx context.Context) *PhaseReport {
	p := &PhaseReport{Errors: map[int]uint64{}, Latency: &Histogram{}}
	start := time.Now()
	conn, err := pgx.Connect(ctx, r.cfg.DatabaseURL)
	if err != nil {
		p.Errors[0]++
		p.Mismatches = append(p.Mismatches, fmt.Sprintf("connect: %v", err))
		return p
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "VACUUM (ANALYZE)"); err != nil {
		p.Errors[0]++
		p.Mismatches = append(p.Mismatches, fmt.Sprintf("vacuum: %v", err))
	}
	p.Elapsed = time.Since(start)
	return p
}

// copyBaseline COPYs the same rewritten resources the ingest plan sends into
// a scratch table bench_copy(body jsonb), to show what the database alone
// can take. The table is dropped afterwards.
func (r *runner) copyBaseline(ctx context.Context, plan []job) *PhaseReport {
	p := &PhaseReport{Errors: map[int]uint64{}, Latency: &Histogram{}}
	fail := func(err error) *PhaseReport {
		p.Errors[0]++
		p.Mismatches = append(p.Mismatches, err.Error())
		return p
	}
	conn, err := pgx.Connect(ctx, r.cfg.DatabaseURL)
	if err != nil {
		return fail(fmt.Errorf("connect: %w", err))
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS bench_copy; CREATE TABLE bench_copy (body jsonb NOT NULL)"); err != nil {
		return fail(fmt.Errorf("create bench_copy: %w", err))
	}
	defer conn.Exec(context.Background(), "DROP TABLE IF EXISTS bench_copy")

	// Rewrite in one goroutine while COPY streams in another, as ingest's
	// workers rewrite while they wait for the gateway.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rows := make(chan [][]byte, 8)
	go func() {
		defer close(rows)
		for _, j := range plan {
			select {
			case rows <- r.rw.Resources(j.b, j.round):
			case <-ctx.Done():
				return
			}
		}
	}()
	m := r.startMeter(PhaseCopyBaseline, "rows")
	var batch [][]byte
	start := time.Now()
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"bench_copy"}, []string{"body"}, pgx.CopyFromFunc(func() ([]any, error) {
		for len(batch) == 0 {
			b, ok := <-rows
			if !ok {
				return nil, nil
			}
			batch = b
		}
		row := batch[0]
		batch = batch[1:]
		m.n.Add(1)
		return []any{json.RawMessage(row)}, nil
	}))
	p.Elapsed = time.Since(start)
	m.stop()
	if err != nil {
		return fail(fmt.Errorf("COPY: %w", err))
	}
	p.Resources = uint64(n)
	p.Requests = uint64(n)
	p.Rate = float64(n) / p.Elapsed.Seconds()
	return p
}
