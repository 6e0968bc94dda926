// Package bench is fhirgate's load generator: it replays Synthea transaction
// bundles against a running gateway (ingest), then reads and searches what
// it created, verifies that every resource sent is stored and readable, and
// can compare the ingest rate with a raw PostgreSQL COPY of the same
// resources. Its mllp phase sends HL7 v2 messages to the gateway's MLLP
// listener and measures the ACK rate and latency.
//
// It only ever sends requests to the one FHIR base URL and the one MLLP
// address it is given (loopback addresses unless explicitly allowed
// otherwise), never follows
// redirects or uses proxies, and every phase is bounded in count or time so
// a run always stops by itself. It never prints resource content: the
// corpus is synthetic, but the reports name only types, counts and timings.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fhirgate/fhirgate/internal/fhir"
)

// Report is the outcome of a run, one entry per phase run.
type Report struct {
	Phases []*PhaseReport
}

// Phase returns the report of the named phase, nil if it did not run.
func (r *Report) Phase(name string) *PhaseReport {
	for _, p := range r.Phases {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// PhaseReport is what one phase measured.
type PhaseReport struct {
	Name     string
	Elapsed  time.Duration
	Requests uint64 // HTTP requests (bundles for ingest); COPY rows for copy-baseline
	// Resources sent (ingest) or rows copied (copy-baseline).
	Resources uint64
	// Acknowledged is the number of transaction-response entries with a
	// 201 status (ingest).
	Acknowledged uint64
	// Errors counts unexpected outcomes by HTTP status; 0 is a transport
	// error or a malformed response.
	Errors map[int]uint64
	// Latency per request, overall and per kind of request where a phase
	// has several (search).
	Latency *Histogram
	ByKind  map[string]*Histogram
	// Empty counts searches that matched nothing although the resource
	// they look for was created.
	Empty uint64
	// Mismatches lists verify failures (types whose stored count did not
	// grow by exactly what was sent, ids not readable).
	Mismatches []string
	// TypesChecked and TypesMatched count the resource types verify
	// compared, and those whose stored count grew by exactly what was sent.
	TypesChecked, TypesMatched int
	// Rate is Resources (or Requests) per second.
	Rate float64
	// AckCodes counts HL7 ACKs by MSA-1 (mllp).
	AckCodes map[string]uint64
	// Unanswered counts messages sent whose ACK the end of the phase cut
	// off (mllp): the gateway may have stored them.
	Unanswered uint64
	// Connections is the number of concurrent connections (mllp).
	Connections int
	// Note says why a phase stopped early.
	Note string
}

func (p *PhaseReport) errorCount() uint64 {
	var n uint64
	for _, c := range p.Errors {
		n += c
	}
	return n
}

// Run runs the phases of cfg against the gateway, writing a progress line to
// progress about once a second and each phase's summary to out.
func Run(ctx context.Context, cfg Config, out, progress io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := newRunner(cfg, out, progress)
	defer r.client.CloseIdleConnections()
	rep := &Report{}

	var corpus []*Bundle
	if cfg.Has(PhaseIngest) || cfg.Has(PhaseCopyBaseline) {
		t0 := time.Now()
		var err error
		corpus, err = LoadCorpus(cfg.Corpus)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, b := range corpus {
			n += b.Len()
		}
		fmt.Fprintf(progress, "bench: loaded %d bundles, %d resources from %s in %.1fs\n", len(corpus), n, cfg.Corpus, time.Since(t0).Seconds())
	}
	var hl7 []*hl7Template
	if cfg.Has(PhaseMLLP) {
		var err error
		if hl7, err = loadHL7Corpus(cfg.MLLPCorpus, cfg.MLLPTypes); err != nil {
			return nil, err
		}
		byType := map[string]uint64{}
		for _, t := range hl7 {
			byType[t.typ]++
		}
		var parts []string
		for _, t := range sortedKeys(byType) {
			parts = append(parts, fmt.Sprintf("%s %d", t, byType[t]))
		}
		fmt.Fprintf(progress, "bench: loaded %d HL7 v2 messages from %s (%s)\n", len(hl7), cfg.MLLPCorpus, strings.Join(parts, ", "))
	}
	if cfg.Has(PhaseIngest) || cfg.Has(PhaseRead) || cfg.Has(PhaseSearch) || cfg.Has(PhaseVerify) {
		if err := r.checkGateway(ctx); err != nil {
			return nil, err
		}
	}

	var before map[string]int
	if cfg.Has(PhaseVerify) {
		var err error
		if before, err = r.countAll(ctx, corpusTypes(corpus)); err != nil {
			return nil, fmt.Errorf("bench: verify: counts before ingest: %w", err)
		}
	}
	plan := r.plan(corpus)
	run := func(name string, f func() *PhaseReport) {
		if !cfg.Has(name) || ctx.Err() != nil {
			return
		}
		var before *serverStats
		if cfg.StatsURL != "" && (name == PhaseRead || name == PhaseSearch || name == PhaseIngest || name == PhaseMLLP) {
			var err error
			if before, err = fetchServerStats(ctx, r.client, cfg.StatsURL); err != nil {
				fmt.Fprintf(progress, "bench: server stats: %v\n", err)
			}
		}
		p := f()
		p.Name = name
		rep.Phases = append(rep.Phases, p)
		var after *serverStats
		if before != nil {
			var err error
			if after, err = fetchServerStats(ctx, r.client, cfg.StatsURL); err != nil {
				fmt.Fprintf(progress, "bench: server stats: %v\n", err)
			}
		}
		if name == PhaseMLLP && after != nil {
			p.Mismatches = append(p.Mismatches, checkHL7Delta(p, before, after)...)
		}
		writeSummary(out, p)
		writeServerDelta(out, name, before, after)
	}
	run(PhaseIngest, func() *PhaseReport { return r.ingest(ctx, plan) })
	run(PhaseVacuum, func() *PhaseReport { return r.vacuum(ctx) })
	run(PhaseRead, func() *PhaseReport { return r.read(ctx) })
	run(PhaseSearch, func() *PhaseReport { return r.search(ctx) })
	run(PhaseVerify, func() *PhaseReport { return r.verify(ctx, before) })
	run(PhaseCopyBaseline, func() *PhaseReport { return r.copyBaseline(ctx, plan) })
	run(PhaseMLLP, func() *PhaseReport { return r.mllpPhase(ctx, hl7) })

	if ing, cp := rep.Phase(PhaseIngest), rep.Phase(PhaseCopyBaseline); ing != nil && cp != nil && cp.Rate > 0 {
		fmt.Fprintf(out, "ingest / COPY: %.3f (gateway ingest at %.0f resources/s, raw COPY at %.0f rows/s)\n", ing.Rate/cp.Rate, ing.Rate, cp.Rate)
	}
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("bench: interrupted: %w", err)
	}
	var failed []string
	for _, p := range rep.Phases {
		if p.errorCount() > 0 || len(p.Mismatches) > 0 {
			failed = append(failed, p.Name)
		}
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("bench: phases with errors: %s", strings.Join(failed, ", "))
	}
	return rep, nil
}

type runner struct {
	cfg      Config
	base     string
	client   *http.Client
	out      io.Writer
	progress io.Writer
	rw       Rewriter

	mu       sync.Mutex
	created  []string // "Type/id" of every acknowledged resource
	families []string
	obs      []obsPair
	sent     map[string]int // resources sent, by type
}

type obsPair struct {
	patient string // id of the Patient
	code    string // system|code
}

func newRunner(cfg Config, out, progress io.Writer) *runner {
	conns := max(cfg.workers(PhaseIngest), cfg.workers(PhaseRead))
	tr := &http.Transport{
		Proxy:                 nil, // only ever the given URL
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.RequestTimeout,
		DisableCompression:    true,
	}
	return &runner{
		cfg:  cfg,
		base: strings.TrimRight(cfg.URL, "/"),
		client: &http.Client{
			Transport:     tr,
			Timeout:       cfg.RequestTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		out:      out,
		progress: progress,
		rw:       NewRewriter(),
		sent:     map[string]int{},
	}
}

// do sends one request and returns the status and body; status 0 with an
// error for a transport failure.
func (r *runner) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/fhir+json")
	if r.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.cfg.Token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}

func (r *runner) checkGateway(ctx context.Context) error {
	status, _, err := r.do(ctx, http.MethodGet, "/metadata", nil)
	if err != nil {
		return fmt.Errorf("bench: gateway at %s does not answer: %w", r.cfg.URL, err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("bench: GET %s/metadata: status %d", r.cfg.URL, status)
	}
	return nil
}

// job is one bundle of one round.
type job struct {
	b     *Bundle
	round int
}

// plan lists the bundles to send: whole rounds, or until cfg.Resources is
// reached when cfg.Rounds is 0.
func (r *runner) plan(corpus []*Bundle) []job {
	if len(corpus) == 0 {
		return nil
	}
	var jobs []job
	n := 0
	for round := 1; ; round++ {
		if r.cfg.Rounds > 0 && round > r.cfg.Rounds {
			return jobs
		}
		for _, b := range corpus {
			if r.cfg.Rounds == 0 && n >= r.cfg.Resources {
				return jobs
			}
			jobs = append(jobs, job{b: b, round: round})
			n += b.Len()
		}
	}
}

// meter prints a progress line about once a second until stop is called.
type meter struct {
	phase string
	unit  string
	start time.Time
	n     atomic.Uint64
	errs  atomic.Uint64
	done  chan struct{}
	wg    sync.WaitGroup
}

func (r *runner) startMeter(phase, unit string) *meter {
	m := &meter{phase: phase, unit: unit, start: time.Now(), done: make(chan struct{})}
	tty := false
	if f, ok := r.progress.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		end := "\n"
		if tty {
			end = "\r"
		}
		for {
			select {
			case <-m.done:
				if tty {
					fmt.Fprint(r.progress, "\n")
				}
				return
			case <-t.C:
				el := time.Since(m.start).Seconds()
				n := m.n.Load()
				fmt.Fprintf(r.progress, "[%s] %5.0fs %9d %s %8.0f/s errors %d   %s", m.phase, el, n, m.unit, float64(n)/el, m.errs.Load(), end)
			}
		}
	}()
	return m
}

func (m *meter) stop() {
	close(m.done)
	m.wg.Wait()
}

// txResponse is the part of a transaction-response the bench reads.
type txResponse struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Entry        []struct {
		Response struct {
			Status   string `json:"status"`
			Location string `json:"location"`
		} `json:"response"`
	} `json:"entry"`
}

func (r *runner) ingest(ctx context.Context, plan []job) *PhaseReport {
	p := &PhaseReport{Errors: map[int]uint64{}, Latency: &Histogram{}}
	m := r.startMeter(PhaseIngest, "resources")
	jobs := make(chan job)
	var wg sync.WaitGroup
	var mu sync.Mutex // guards p
	var resources, acked atomic.Uint64
	for w := 0; w < r.cfg.workers(PhaseIngest); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &Histogram{}
			errs := map[int]uint64{}
			var reqs uint64
			for j := range jobs {
				body := r.rw.Bundle(j.b, j.round)
				t0 := time.Now()
				status, resp, err := r.do(ctx, http.MethodPost, "", body)
				if err != nil && ctx.Err() != nil {
					continue // interrupted: not the gateway's failure
				}
				h.Record(time.Since(t0))
				reqs++
				resources.Add(uint64(j.b.Len()))
				m.n.Add(uint64(j.b.Len()))
				r.countSent(j.b)
				if err != nil || status != http.StatusOK {
					errs[status]++
					m.errs.Add(1)
					continue
				}
				n, ok := r.record(j.b, resp)
				acked.Add(uint64(n))
				if !ok {
					errs[0]++
					m.errs.Add(1)
				}
			}
			mu.Lock()
			p.Latency.Merge(h)
			p.Requests += reqs
			for k, v := range errs {
				p.Errors[k] += v
			}
			mu.Unlock()
		}()
	}
	start := time.Now()
feed:
	for _, j := range plan {
		select {
		case jobs <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	m.stop()
	p.Elapsed = time.Since(start)
	p.Resources, p.Acknowledged = resources.Load(), acked.Load()
	p.Rate = float64(p.Acknowledged) / p.Elapsed.Seconds()
	return p
}

func (r *runner) countSent(b *Bundle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range b.Types {
		r.sent[t]++
	}
}

// record reads a transaction-response for b and keeps what later phases
// need. It returns the number of 201 entries and whether the response was
// well formed (a transaction-response with one entry per request entry,
// each 201 with a Type/id location of the entry's type).
func (r *runner) record(b *Bundle, body []byte) (int, bool) {
	var tr txResponse
	if err := json.Unmarshal(body, &tr); err != nil || tr.ResourceType != "Bundle" || tr.Type != "transaction-response" || len(tr.Entry) != b.Len() {
		return 0, false
	}
	ok := true
	n := 0
	ids := make([]string, len(tr.Entry))
	for i, e := range tr.Entry {
		if !strings.HasPrefix(e.Response.Status, "201") {
			ok = false
			continue
		}
		n++
		ref, valid := fhir.ParseReference(e.Response.Location)
		if !valid || ref.Type != b.Types[i] {
			ok = false
			continue
		}
		ids[i] = ref.ID
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, id := range ids {
		if id != "" {
			r.created = append(r.created, b.Types[i]+"/"+id)
		}
	}
	if b.patient >= 0 && ids[b.patient] != "" {
		pid := ids[b.patient]
		if b.family != "" {
			r.families = append(r.families, b.family)
		}
		for i, code := range b.obsCodes {
			if code != "" && ids[i] != "" {
				r.obs = append(r.obs, obsPair{patient: pid, code: code})
			}
		}
	}
	return n, ok
}

// loop runs workers until the phase's duration has passed; each call of
// step makes one request and reports its kind, status and whether the
// outcome was as expected.
func (r *runner) loop(ctx context.Context, phase string, step func(ctx context.Context, rng *rand.Rand, p *stepResult)) *PhaseReport {
	p := &PhaseReport{Errors: map[int]uint64{}, Latency: &Histogram{}, ByKind: map[string]*Histogram{}}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Duration)
	defer cancel()
	m := r.startMeter(phase, "requests")
	var wg sync.WaitGroup
	var mu sync.Mutex
	seed := rand.Uint64()
	start := time.Now()
	for w := 0; w < r.cfg.workers(phase); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			h := &Histogram{}
			kinds := map[string]*Histogram{}
			errs := map[int]uint64{}
			var reqs, empty uint64
			for ctx.Err() == nil {
				var s stepResult
				t0 := time.Now()
				step(ctx, rng, &s)
				if s.err != nil && ctx.Err() != nil {
					break // the phase's time is up: not the gateway's failure
				}
				d := time.Since(t0)
				h.Record(d)
				if kinds[s.kind] == nil {
					kinds[s.kind] = &Histogram{}
				}
				kinds[s.kind].Record(d)
				reqs++
				m.n.Add(1)
				if s.status != http.StatusOK || s.err != nil {
					errs[s.status]++
					m.errs.Add(1)
				}
				if s.empty {
					empty++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			p.Latency.Merge(h)
			for k, kh := range kinds {
				if p.ByKind[k] == nil {
					p.ByKind[k] = &Histogram{}
				}
				p.ByKind[k].Merge(kh)
			}
			for k, v := range errs {
				p.Errors[k] += v
			}
			p.Requests += reqs
			p.Empty += empty
		}()
	}
	wg.Wait()
	m.stop()
	p.Elapsed = time.Since(start)
	p.Rate = float64(p.Requests) / p.Elapsed.Seconds()
	return p
}

type stepResult struct {
	kind   string
	status int
	err    error
	empty  bool
}

func (r *runner) read(ctx context.Context) *PhaseReport {
	if len(r.created) == 0 {
		return &PhaseReport{Errors: map[int]uint64{}, Latency: &Histogram{}, Mismatches: []string{"no resource was created by ingest: nothing to read"}}
	}
	return r.loop(ctx, PhaseRead, func(ctx context.Context, rng *rand.Rand, s *stepResult) {
		s.kind = "read"
		s.status, _, s.err = r.do(ctx, http.MethodGet, "/"+r.created[rng.IntN(len(r.created))], nil)
	})
}

func (r *runner) search(ctx context.Context) *PhaseReport {
	if len(r.families) == 0 || len(r.obs) == 0 {
		return &PhaseReport{Errors: map[int]uint64{}, Latency: &Histogram{}, Mismatches: []string{"ingest created no Patient with Observations: nothing to search"}}
	}
	return r.loop(ctx, PhaseSearch, func(ctx context.Context, rng *rand.Rand, s *stepResult) {
		var path string
		if rng.IntN(2) == 0 {
			s.kind = "Patient?family"
			path = "/Patient?family=" + url.QueryEscape(r.families[rng.IntN(len(r.families))])
		} else {
			s.kind = "Observation?patient&code"
			o := r.obs[rng.IntN(len(r.obs))]
			path = "/Observation?patient=" + url.QueryEscape("Patient/"+o.patient) + "&code=" + url.QueryEscape(o.code)
		}
		var body []byte
		s.status, body, s.err = r.do(ctx, http.MethodGet, path, nil)
		if s.err == nil && s.status == http.StatusOK {
			var b struct {
				ResourceType string            `json:"resourceType"`
				Entry        []json.RawMessage `json:"entry"`
			}
			if err := json.Unmarshal(body, &b); err != nil || b.ResourceType != "Bundle" {
				s.err = errors.New("search response is not a Bundle")
				s.status = 0
				return
			}
			s.empty = len(b.Entry) == 0
		}
	})
}

// count returns the number of resources of type typ the gateway holds.
func (r *runner) count(ctx context.Context, typ string) (int, error) {
	var last error
	for _, q := range []string{"?_total=accurate&_count=0", "?_summary=count"} {
		status, body, err := r.do(ctx, http.MethodGet, "/"+typ+q, nil)
		if err != nil {
			return 0, err
		}
		var b struct {
			Total *int `json:"total"`
		}
		if status == http.StatusOK && json.Unmarshal(body, &b) == nil && b.Total != nil {
			return *b.Total, nil
		}
		last = fmt.Errorf("GET %s%s: status %d, no total", typ, q, status)
	}
	return 0, last
}

func (r *runner) countAll(ctx context.Context, types []string) (map[string]int, error) {
	out := map[string]int{}
	for _, t := range types {
		n, err := r.count(ctx, t)
		if err != nil {
			return nil, err
		}
		out[t] = n
	}
	return out, nil
}

func corpusTypes(corpus []*Bundle) []string {
	seen := map[string]bool{}
	var out []string
	for _, b := range corpus {
		for _, t := range b.Types {
			if !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		}
	}
	sort.Strings(out)
	return out
}

// verify checks that each type's count grew by exactly what was sent and
// reads back a random sample of created resources.
func (r *runner) verify(ctx context.Context, before map[string]int) *PhaseReport {
	p := &PhaseReport{Errors: map[int]uint64{}, Latency: &Histogram{}}
	start := time.Now()
	types := make([]string, 0, len(before))
	for t := range before {
		types = append(types, t)
	}
	sort.Strings(types)
	after, err := r.countAll(ctx, types)
	if err != nil {
		p.Mismatches = append(p.Mismatches, fmt.Sprintf("counts after ingest: %v", err))
	}
	for _, t := range types {
		if after == nil {
			break
		}
		delta, sent := after[t]-before[t], r.sent[t]
		fmt.Fprintf(r.out, "verify: %-22s before %8d after %8d delta %8d sent %8d\n", t, before[t], after[t], delta, sent)
		p.TypesChecked++
		if delta == sent {
			p.TypesMatched++
		} else {
			p.Mismatches = append(p.Mismatches, fmt.Sprintf("%s: stored count grew by %d, sent %d", t, delta, sent))
		}
	}

	n := min(r.cfg.Sample, len(r.created))
	idx := rand.Perm(len(r.created))[:n]
	work := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := 0; w < r.cfg.workers(PhaseVerify); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				t0 := time.Now()
				status, _, err := r.do(ctx, http.MethodGet, "/"+id, nil)
				d := time.Since(t0)
				mu.Lock()
				p.Latency.Record(d)
				p.Requests++
				if err != nil || status != http.StatusOK {
					p.Errors[status]++
					p.Mismatches = append(p.Mismatches, fmt.Sprintf("GET %s: status %d", id, status))
				}
				mu.Unlock()
			}
		}()
	}
	for _, i := range idx {
		if ctx.Err() != nil {
			break
		}
		work <- r.created[i]
	}
	close(work)
	wg.Wait()
	p.Elapsed = time.Since(start)
	p.Rate = float64(p.Requests) / p.Elapsed.Seconds()
	return p
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + "ms" }

func latencyLine(h *Histogram) string {
	if h == nil || h.Count() == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s  p95 %s  p99 %s  max %s  (n=%d)", ms(h.Quantile(0.50)), ms(h.Quantile(0.95)), ms(h.Quantile(0.99)), ms(h.Max()), h.Count())
}

func writeSummary(w io.Writer, p *PhaseReport) {
	switch p.Name {
	case PhaseIngest:
		fmt.Fprintf(w, "ingest: %d resources sent in %d bundles, %d acknowledged (201), %.1fs: %.0f resources/s, %.1f bundles/s\n",
			p.Resources, p.Requests, p.Acknowledged, p.Elapsed.Seconds(), p.Rate, float64(p.Requests)/p.Elapsed.Seconds())
		fmt.Fprintf(w, "  latency per bundle: %s\n", latencyLine(p.Latency))
	case PhaseVerify:
		fmt.Fprintf(w, "verify: %d of %d types grew by exactly what was sent; read back %d created resources in %.1fs: %.0f requests/s\n",
			p.TypesMatched, p.TypesChecked, p.Requests, p.Elapsed.Seconds(), p.Rate)
		fmt.Fprintf(w, "  latency: %s\n", latencyLine(p.Latency))
	case PhaseVacuum:
		fmt.Fprintf(w, "vacuum: VACUUM (ANALYZE) of the gateway's database in %.1fs\n", p.Elapsed.Seconds())
	case PhaseCopyBaseline:
		fmt.Fprintf(w, "copy-baseline: %d rows COPYed into bench_copy(jsonb) in %.1fs: %.0f rows/s\n", p.Resources, p.Elapsed.Seconds(), p.Rate)
	case PhaseMLLP:
		writeMLLPSummary(w, p)
	default:
		fmt.Fprintf(w, "%s: %d requests in %.1fs: %.0f requests/s\n", p.Name, p.Requests, p.Elapsed.Seconds(), p.Rate)
		fmt.Fprintf(w, "  latency: %s\n", latencyLine(p.Latency))
		kinds := make([]string, 0, len(p.ByKind))
		for k := range p.ByKind {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		if len(kinds) > 1 {
			for _, k := range kinds {
				fmt.Fprintf(w, "  %-26s %s\n", k+":", latencyLine(p.ByKind[k]))
			}
		}
		if p.Name == PhaseSearch {
			fmt.Fprintf(w, "  searches that matched nothing: %d\n", p.Empty)
		}
	}
	if len(p.Errors) == 0 {
		fmt.Fprintf(w, "  errors: none\n")
	} else {
		codes := make([]int, 0, len(p.Errors))
		for c := range p.Errors {
			codes = append(codes, c)
		}
		sort.Ints(codes)
		var parts []string
		for _, c := range codes {
			name := strconv.Itoa(c)
			if c == 0 {
				name = "transport/malformed"
			}
			parts = append(parts, fmt.Sprintf("%s: %d", name, p.Errors[c]))
		}
		fmt.Fprintf(w, "  errors: %s\n", strings.Join(parts, ", "))
	}
	const maxShown = 10
	for i, m := range p.Mismatches {
		if i == maxShown {
			fmt.Fprintf(w, "  ... and %d more\n", len(p.Mismatches)-maxShown)
			break
		}
		fmt.Fprintf(w, "  FAIL %s\n", m)
	}
}
