package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// This file is the A/B mode of the bench: the same phases run against two
// gateways (PHI encryption off, then on) in alternating order for several
// rounds, and one table compares the medians. Like the rest of the package
// it only talks to the URLs it is given and never prints resource content.

// Counters are a gateway's cumulative PHI counters, sampled before and
// after each phase of a comparison.
type Counters struct {
	// ProviderCalls counts calls to the key provider: HTTP requests to
	// Vault's transit mount, or KeyProvider calls for the local keyring.
	ProviderCalls int64
	// Sealed and Opened count PHI values encrypted and decrypted.
	Sealed, Opened int64
	// Keys is the number of wrapped data keys stored (a level, not a
	// count of events: deltas keep the later level).
	Keys int64
}

// delta is what happened between two samples.
func (c Counters) delta(before Counters) Counters {
	return Counters{ProviderCalls: c.ProviderCalls - before.ProviderCalls, Sealed: c.Sealed - before.Sealed,
		Opened: c.Opened - before.Opened, Keys: c.Keys}
}

// Target is one gateway of a comparison.
type Target struct {
	// Name labels the gateway in the report, e.g. "off" or "on".
	Name string
	// URL is its FHIR base (a loopback address unless Bench.AllowRemote).
	URL string
	// DatabaseURL is the gateway's own database, for the vacuum phase.
	DatabaseURL string
	// Counters samples the gateway's PHI counters; nil for a gateway
	// without PHI encryption.
	Counters func(ctx context.Context) (Counters, error)
	// KeyTTL is how long the gateway keeps an unwrapped data key: one
	// cache lifetime, in which each key may cost one provider call.
	KeyTTL time.Duration
	// Provider names the key provider for the report.
	Provider string
}

// CompareConfig is a comparison run.
type CompareConfig struct {
	// Bench configures each run of the phases; its URL and DatabaseURL
	// are replaced by each target's.
	Bench Config
	// Rounds is how many times each target runs the phases; the order of
	// the two targets alternates from one round to the next.
	Rounds int
	// MaxLoss is the largest acceptable throughput loss, in percent, of
	// the second target against the first on ingest and read.
	MaxLoss float64
	// Workload names the targets' databases: their PostgreSQL backends
	// count as the workload's CPU, every other backend's as foreign.
	Workload []string
	// MaxForeign is the CPU, in cores, that processes outside the
	// workload (other builds and tests on a shared machine) may use during
	// a measured phase; a round in which they used more is run again, up
	// to Retries times. 0 turns the check off.
	MaxForeign float64
	// Retries bounds the rounds run again because they were disturbed.
	Retries int
	// QuietWait is how long each target's turn waits for the host to be
	// quiet (foreign load under MaxForeign over a second) before it
	// starts.
	QuietWait time.Duration

	// readHost replaces sampleHost in tests.
	readHost func(dbs []string) (hostSample, error)
}

// ComparePhases are the phases a comparison may run.
var ComparePhases = []string{PhaseIngest, PhaseVacuum, PhaseRead, PhaseSearch, PhaseVerify}

// DefaultComparePhases are run when none are named: vacuum after ingest so
// that autovacuum kicking in on one database and not the other does not
// decide the read figures.
var DefaultComparePhases = []string{PhaseIngest, PhaseVacuum, PhaseRead}

// Sample is one phase of one round on one target.
type Sample struct {
	Round int
	First bool // the target ran first in its round
	Phase *PhaseReport
	Delta Counters // zero for a target without counters
	// Foreign is the CPU, in cores, that processes outside the workload
	// used during the phase; -1 when it could not be measured.
	Foreign float64
}

// CompareRow compares one phase across the two targets: medians over the
// rounds.
type CompareRow struct {
	Phase          string
	Unit           string // "res/s" or "req/s"
	Base, Test     Stat
	LossPct        float64 // throughput lost by Test against Base; negative is a gain
	Calls          []int64 // Test's provider calls per round
	Sealed, Opened int64   // Test's values sealed and opened, all rounds
	Requests       uint64  // Test's requests, all rounds
}

// Stat is the median over rounds of one target's phase figures.
type Stat struct {
	Rate     float64
	P50, P99 time.Duration
	Rates    []float64 // per round, in round order
	Foreign  []float64 // cores other processes used, per round (-1: unknown)
	Errors   uint64    // all rounds
}

// Check is one pass/fail verdict of a comparison.
type Check struct {
	Name   string
	Pass   bool
	Detail string
}

// CompareReport is the outcome of a comparison.
type CompareReport struct {
	Targets [2]string
	Samples map[string]map[string][]Sample // target -> phase -> one per round
	// Startup are the counters of each target before its first phase
	// (provider calls made while the gateway started).
	Startup map[string]Counters
	Rows    []CompareRow
	Checks  []Check
	// Elapsed is the wall time of the measured phases, all rounds.
	Elapsed time.Duration
	// Discarded describes the rounds run again because other processes
	// disturbed them; Disturbed the kept rounds that were disturbed all
	// the same (retries exhausted).
	Discarded, Disturbed []string
	// Calls, Requests and Keys are the PHI-on target's provider calls
	// and requests over the whole comparison (discarded rounds included)
	// and its stored data keys at the end.
	Calls    int64
	Requests uint64
	Keys     int64
}

// Row returns the row of a phase, nil if it has none.
func (r *CompareReport) Row(phase string) *CompareRow {
	for i := range r.Rows {
		if r.Rows[i].Phase == phase {
			return &r.Rows[i]
		}
	}
	return nil
}

// Pass reports whether every check passed.
func (r *CompareReport) Pass() bool {
	for _, c := range r.Checks {
		if !c.Pass {
			return false
		}
	}
	return true
}

// Validate checks a comparison's configuration.
func (c *CompareConfig) Validate(targets [2]Target) error {
	var errs []error
	if c.Rounds < 1 || c.Rounds > 100 {
		errs = append(errs, errors.New("-phi-rounds: must be between 1 and 100"))
	}
	if c.MaxLoss < 0 || c.MaxLoss > 100 {
		errs = append(errs, errors.New("-phi-max-loss: must be between 0 and 100"))
	}
	if c.MaxForeign < 0 || c.Retries < 0 || c.Retries > 100 || c.QuietWait < 0 {
		errs = append(errs, errors.New("-phi-max-foreign, -phi-retries and -phi-quiet-wait: must not be negative (and at most 100 retries)"))
	}
	if !c.Bench.Has(PhaseIngest) {
		errs = append(errs, errors.New("-phases: a comparison needs ingest"))
	}
	for _, p := range c.Bench.Phases {
		if !slices.Contains(ComparePhases, p) {
			errs = append(errs, fmt.Errorf("-phases: %s cannot run in a comparison (want %s)", p, strings.Join(ComparePhases, ", ")))
		}
	}
	for _, t := range targets {
		cfg := c.Bench
		cfg.URL, cfg.DatabaseURL = t.URL, t.DatabaseURL
		if err := cfg.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("target %s: %w", t.Name, err))
		}
	}
	if targets[0].Name == targets[1].Name {
		errs = append(errs, errors.New("the two targets need different names"))
	}
	return errors.Join(errs...)
}

// Compare runs the phases of cfg.Bench against both targets, cfg.Rounds
// times each in alternating order, writes each phase's summary to progress
// and the comparison table to out. targets[0] is the baseline (PHI off),
// targets[1] the one measured against it (PHI on). The corpus is loaded
// once. It returns an error when a phase had errors or the run was
// interrupted; failed checks are in the report, not the error.
func Compare(ctx context.Context, cfg CompareConfig, targets [2]Target, out, progress io.Writer) (*CompareReport, error) {
	if err := cfg.Validate(targets); err != nil {
		return nil, err
	}
	t0 := time.Now()
	corpus, err := LoadCorpus(cfg.Bench.Corpus)
	if err != nil {
		return nil, err
	}
	n := 0
	for _, b := range corpus {
		n += b.Len()
	}
	fmt.Fprintf(progress, "bench: loaded %d bundles, %d resources from %s in %.1fs\n", len(corpus), n, cfg.Bench.Corpus, time.Since(t0).Seconds())

	rep := &CompareReport{Targets: [2]string{targets[0].Name, targets[1].Name},
		Samples: map[string]map[string][]Sample{}, Startup: map[string]Counters{}}
	last := map[string]Counters{}
	for _, t := range targets {
		rep.Samples[t.Name] = map[string][]Sample{}
		if t.Counters != nil {
			c, err := t.Counters(ctx)
			if err != nil {
				return nil, fmt.Errorf("bench: target %s: counters: %w", t.Name, err)
			}
			rep.Startup[t.Name], last[t.Name] = c, c
		}
	}
	meter := newHostMeter(cfg.Workload, cfg.readHost)
	if meter == nil && cfg.MaxForeign > 0 {
		fmt.Fprintln(progress, "bench: other processes' CPU cannot be measured here: disturbed rounds are not detected")
	}
	start := time.Now()
	retries := 0
	var failed []string // phases with errors, discarded rounds included
	for round := 1; round <= cfg.Rounds && ctx.Err() == nil; {
		order := []int{0, 1}
		if round%2 == 0 {
			order = []int{1, 0}
		}
		got := map[string]map[string][]Sample{}
		for i, ti := range order {
			t := targets[ti]
			got[t.Name] = map[string][]Sample{}
			if f, quiet := meter.waitQuiet(ctx, cfg.MaxForeign, cfg.QuietWait); !quiet && ctx.Err() == nil {
				fmt.Fprintf(progress, "bench: the host did not become quiet within %s (other processes use %.2f cores): going on\n", cfg.QuietWait, f)
			}
			fmt.Fprintf(progress, "\n== round %d/%d: PHI %s (%s)\n", round, cfg.Rounds, t.Name, t.URL)
			c := last[t.Name]
			var h0 hostSample
			var h0ok bool
			err := runTarget(ctx, cfg.Bench, t, corpus, progress, func() { h0, h0ok = meter.sample() }, func(p *PhaseReport) error {
				s := Sample{Round: round, First: i == 0, Phase: p, Foreign: -1}
				if h1, ok := meter.sample(); ok && h0ok && p.Name != PhaseVacuum {
					// (vacuum's own backend ends before the phase does, so
					// its CPU would count as foreign: not measured.)
					s.Foreign = h0.foreign(h1)
					fmt.Fprintf(progress, "  other processes used %.2f cores during %s\n", s.Foreign, p.Name)
				}
				if t.Counters != nil {
					now, err := t.Counters(ctx)
					if err != nil {
						return fmt.Errorf("bench: target %s: counters: %w", t.Name, err)
					}
					s.Delta, c = now.delta(c), now
				}
				if ti == 1 {
					rep.Requests += p.Requests
				}
				if p.errorCount() > 0 || len(p.Mismatches) > 0 {
					failed = append(failed, fmt.Sprintf("%s (PHI %s, round %d)", p.Name, t.Name, round))
				}
				got[t.Name][p.Name] = append(got[t.Name][p.Name], s)
				return nil
			})
			last[t.Name] = c
			if err != nil {
				return rep, err
			}
		}
		var why []string
		for _, t := range targets {
			for _, ph := range rated {
				for _, s := range got[t.Name][ph.phase] {
					if cfg.MaxForeign > 0 && s.Foreign > cfg.MaxForeign {
						why = append(why, fmt.Sprintf("%s with PHI %s: other processes used %.2f cores", ph.phase, t.Name, s.Foreign))
					}
				}
			}
		}
		if len(why) > 0 && ctx.Err() == nil {
			note := fmt.Sprintf("round %d: %s", round, strings.Join(why, "; "))
			if retries < cfg.Retries {
				retries++
				rep.Discarded = append(rep.Discarded, note)
				fmt.Fprintf(progress, "bench: %s (limit %.2f): running the round again\n", note, cfg.MaxForeign)
				continue
			}
			rep.Disturbed = append(rep.Disturbed, note)
		}
		for name, byPhase := range got {
			for ph, ss := range byPhase {
				rep.Samples[name][ph] = append(rep.Samples[name][ph], ss...)
			}
		}
		round++
	}
	rep.Elapsed = time.Since(start)
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("bench: interrupted: %w", err)
	}
	if t := targets[1]; t.Counters != nil {
		end, err := t.Counters(ctx)
		if err != nil {
			return rep, fmt.Errorf("bench: target %s: counters: %w", t.Name, err)
		}
		rep.Calls, rep.Keys = end.ProviderCalls-rep.Startup[t.Name].ProviderCalls, end.Keys
	}
	rep.summarize(cfg, targets)
	rep.write(out, cfg, targets)

	if len(failed) > 0 {
		return rep, fmt.Errorf("bench: phases with errors: %s", strings.Join(failed, ", "))
	}
	return rep, nil
}

// runTarget runs the phases once against one target, with a fresh runner
// (so fresh ids and a fresh list of created resources), calling begin
// before and done after each phase.
func runTarget(ctx context.Context, base Config, t Target, corpus []*Bundle, progress io.Writer, begin func(), done func(*PhaseReport) error) error {
	cfg := base
	cfg.URL, cfg.DatabaseURL = t.URL, t.DatabaseURL
	r := newRunner(cfg, progress, progress)
	defer r.client.CloseIdleConnections()
	if err := r.checkGateway(ctx); err != nil {
		return err
	}
	var before map[string]int
	if cfg.Has(PhaseVerify) {
		var err error
		if before, err = r.countAll(ctx, corpusTypes(corpus)); err != nil {
			return fmt.Errorf("bench: verify: counts before ingest: %w", err)
		}
	}
	plan := r.plan(corpus)
	phases := []struct {
		name string
		run  func() *PhaseReport
	}{
		{PhaseIngest, func() *PhaseReport { return r.ingest(ctx, plan) }},
		{PhaseVacuum, func() *PhaseReport { return r.vacuum(ctx) }},
		{PhaseRead, func() *PhaseReport { return r.read(ctx) }},
		{PhaseSearch, func() *PhaseReport { return r.search(ctx) }},
		{PhaseVerify, func() *PhaseReport { return r.verify(ctx, before) }},
	}
	for _, ph := range phases {
		if !cfg.Has(ph.name) || ctx.Err() != nil {
			continue
		}
		begin()
		p := ph.run()
		p.Name = ph.name
		writeSummary(progress, p)
		if err := done(p); err != nil {
			return err
		}
	}
	return nil
}

// rated are the phases the table compares, with their unit.
var rated = []struct{ phase, unit string }{{PhaseIngest, "res/s"}, {PhaseRead, "req/s"}, {PhaseSearch, "req/s"}, {PhaseVerify, "req/s"}}

func (r *CompareReport) summarize(cfg CompareConfig, targets [2]Target) {
	base, test := targets[0].Name, targets[1].Name
	for _, ph := range rated {
		bs, ts := r.Samples[base][ph.phase], r.Samples[test][ph.phase]
		if len(bs) == 0 || len(ts) == 0 {
			continue
		}
		row := CompareRow{Phase: ph.phase, Unit: ph.unit, Base: stat(bs), Test: stat(ts)}
		if row.Base.Rate > 0 {
			row.LossPct = (row.Base.Rate - row.Test.Rate) / row.Base.Rate * 100
		}
		for _, s := range ts {
			row.Calls = append(row.Calls, s.Delta.ProviderCalls)
			row.Sealed += s.Delta.Sealed
			row.Opened += s.Delta.Opened
			row.Requests += s.Phase.Requests
		}
		r.Rows = append(r.Rows, row)
	}
	for _, ph := range []string{PhaseIngest, PhaseRead} {
		row := r.Row(ph)
		if row == nil {
			continue
		}
		r.Checks = append(r.Checks, Check{
			Name: fmt.Sprintf("%s throughput loss <= %s %%", ph, strconv.FormatFloat(cfg.MaxLoss, 'f', -1, 64)),
			Pass: row.LossPct <= cfg.MaxLoss && row.Base.Rate > 0,
			Detail: fmt.Sprintf("%.1f %% (median %.0f %s with PHI %s, %.0f %s with PHI %s)",
				row.LossPct, row.Base.Rate, row.Unit, base, row.Test.Rate, row.Unit, test),
		})
	}
	t := targets[1]
	if t.Counters == nil {
		return
	}
	// Every phase of every round, vacuum and discarded rounds included:
	// a call is a call.
	calls, keys, reqs := r.Calls, r.Keys, r.Requests
	lifetimes := int64(1)
	if t.KeyTTL > 0 {
		lifetimes += int64(r.Elapsed / t.KeyTTL)
	}
	bound := keys * lifetimes
	r.Checks = append(r.Checks, Check{
		Name: "key provider called at most once per data key per cache lifetime",
		Pass: calls <= bound && keys > 0,
		Detail: fmt.Sprintf("%d calls to %s during %d requests in %s; %d data keys stored, key cache TTL %s: at most %d calls allowed (%d startup calls not counted)",
			calls, t.Provider, reqs, r.Elapsed.Round(time.Second), keys, t.KeyTTL, bound, r.Startup[test].ProviderCalls),
	})
}

// stat returns the medians over rounds of a target's phase figures.
func stat(ss []Sample) Stat {
	var st Stat
	var p50, p99 []float64
	for _, s := range ss {
		st.Rates = append(st.Rates, s.Phase.Rate)
		st.Foreign = append(st.Foreign, s.Foreign)
		st.Errors += s.Phase.errorCount()
		if s.Phase.Latency != nil && s.Phase.Latency.Count() > 0 {
			p50 = append(p50, float64(s.Phase.Latency.Quantile(0.50)))
			p99 = append(p99, float64(s.Phase.Latency.Quantile(0.99)))
		}
	}
	st.Rate = median(st.Rates)
	st.P50, st.P99 = time.Duration(median(p50)), time.Duration(median(p99))
	return st
}

// median of xs (the mean of the middle two for an even count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

func pct(base, test time.Duration) string {
	if base <= 0 {
		return "-"
	}
	return fmt.Sprintf("%+.1f %%", float64(test-base)/float64(base)*100)
}

func (r *CompareReport) write(out io.Writer, cfg CompareConfig, targets [2]Target) {
	base, test := targets[0], targets[1]
	fmt.Fprintf(out, "\nPHI encryption %s vs %s: %d round(s), order alternating; per round and mode: ingest of %d resources",
		test.Name, base.Name, cfg.Rounds, cfg.Bench.Resources)
	if cfg.Bench.Has(PhaseRead) || cfg.Bench.Has(PhaseSearch) {
		fmt.Fprintf(out, ", %s per read/search phase", cfg.Bench.Duration)
	}
	fmt.Fprintf(out, "; key provider %s\n", test.Provider)
	fmt.Fprintf(out, "figures are medians over rounds; latency is per bundle for ingest, per request otherwise; loss = (off - on) / off\n\n")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tPHI\trate\tunit\tp50\tp99\terrors\tper round\tother cores\tprovider calls\tsealed\topened\t")
	for _, row := range r.Rows {
		line := func(mode string, s Stat, calls, sealed, opened string) {
			var rounds, foreign []string
			for i, v := range s.Rates {
				rounds = append(rounds, strconv.FormatFloat(v, 'f', 0, 64))
				if f := s.Foreign[i]; f >= 0 {
					foreign = append(foreign, strconv.FormatFloat(f, 'f', 2, 64))
				} else {
					foreign = append(foreign, "?")
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", row.Phase, mode, s.Rate, row.Unit,
				ms(s.P50), ms(s.P99), s.Errors, strings.Join(rounds, " "), strings.Join(foreign, " "), calls, sealed, opened)
		}
		line(base.Name, row.Base, "-", "-", "-")
		calls, sealed, opened := "-", "-", "-"
		if test.Counters != nil {
			var parts []string
			var total int64
			for _, c := range row.Calls {
				parts = append(parts, strconv.FormatInt(c, 10))
				total += c
			}
			calls = fmt.Sprintf("%d (%s)", total, strings.Join(parts, "+"))
			sealed, opened = strconv.FormatInt(row.Sealed, 10), strconv.FormatInt(row.Opened, 10)
		}
		line(test.Name, row.Test, calls, sealed, opened)
		fmt.Fprintf(tw, "%s\tloss\t%.1f %%\t\t%s\t%s\t\t\t\t\t\t\t\n", row.Phase, row.LossPct, pct(row.Base.P50, row.Test.P50), pct(row.Base.P99, row.Test.P99))
	}
	tw.Flush()
	if s := r.Samples[test.Name][PhaseVacuum]; len(s) > 0 {
		var calls int64
		for _, x := range s {
			calls += x.Delta.ProviderCalls
		}
		fmt.Fprintf(out, "(vacuum phases: %d provider calls)\n", calls)
	}
	if cfg.MaxForeign > 0 {
		fmt.Fprintf(out, "rounds in which other processes used more than %.2f cores during a measured phase are run again (at most %d times)\n", cfg.MaxForeign, cfg.Retries)
	}
	for _, d := range r.Discarded {
		fmt.Fprintf(out, "discarded and run again: %s\n", d)
	}
	for _, d := range r.Disturbed {
		fmt.Fprintf(out, "WARNING: kept although disturbed (no retry left): %s\n", d)
	}
	fmt.Fprintln(out)
	for _, c := range r.Checks {
		v := "PASS"
		if !c.Pass {
			v = "FAIL"
		}
		fmt.Fprintf(out, "%s  %s: %s\n", v, c.Name, c.Detail)
	}
	if r.Pass() {
		fmt.Fprintf(out, "target met: ingest and read lose at most %s %% with PHI %s, and the key provider is not called per field or per request\n",
			strconv.FormatFloat(cfg.MaxLoss, 'f', -1, 64), test.Name)
	} else {
		fmt.Fprintln(out, "target NOT met")
	}
}
