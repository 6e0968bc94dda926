package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fhirgate/fhirgate/internal/access"
	"github.com/fhirgate/fhirgate/internal/api"
	"github.com/fhirgate/fhirgate/internal/audit"
	"github.com/fhirgate/fhirgate/internal/auth"
	"github.com/fhirgate/fhirgate/internal/authz"
	"github.com/fhirgate/fhirgate/internal/database/databasetest"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/mapping"
	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/phi/keyring"
	"github.com/fhirgate/fhirgate/internal/retrieve"
	"github.com/fhirgate/fhirgate/internal/store"
	"github.com/fhirgate/fhirgate/internal/validate"
)

// testMaxBody is the request body limit of the test server.
const testMaxBody = 1 << 20

// newTestServer wires the gateway exactly as serve does, over a fresh
// migrated database of the test's own.
// PHI encryption is on, as in the default configuration, with a local
// keyring of the test's own.
func newTestServer(t *testing.T) (*httptest.Server, *pgxpool.Pool) {
	t.Helper()
	return newTestServerMax(t, testMaxBody)
}

// newTestServerMax is newTestServer with another request body limit.
func newTestServerMax(t *testing.T, maxBody int64) (*httptest.Server, *pgxpool.Pool) {
	t.Helper()
	return newServer(t, maxBody, true)
}

// newPlainServer is a server with PHI encryption off (FHIRGATE_PHI=off):
// for the search-semantics tests, whose string prefixes, date
// comparators and sorts on names and birth dates blind indexes do not
// offer (see phi_test.go for search with encryption on).
func newPlainServer(t *testing.T) (*httptest.Server, *pgxpool.Pool) {
	t.Helper()
	return newServer(t, testMaxBody, false)
}

func newServer(t *testing.T, maxBody int64, protect bool) (*httptest.Server, *pgxpool.Pool) {
	t.Helper()
	pool := databasetest.NewPool(t)
	st := store.New(pool)
	reader := retrieve.New(st)
	if protect {
		svc := newPHI(t, st)
		st.WithSealer(svc)
		reader.WithProtector(svc)
	}
	var out io.Writer = io.Discard
	if os.Getenv("FHIRGATE_TEST_LOG") != "" { // the access log, to debug a failing test
		out = os.Stderr
	}
	logger := slog.New(slog.NewTextHandler(out, nil))
	engine, err := mapping.Load("../../mappings")
	if err != nil {
		t.Fatal(err)
	}
	writer := ingest.New(st, validate.Resource)
	srv := api.New(api.Config{Tenant: "test", MaxBodyBytes: maxBody},
		writer, reader, pool.Ping, logger).
		WithHL7(ingest.NewHL7(writer, st, engine, logger)).
		WithPush(ingest.NewPush(writer, func() ingest.Normalizer { return engine }))
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts, pool
}

// newPHI returns a PHI service with the shipped policy and a local keyring.
func newPHI(t testing.TB, st *store.Store) *phi.Service {
	t.Helper()
	pol, err := phi.LoadPolicy("../../policies/phi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.Open(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	return phi.NewService(pol, phi.NewKeys(kr, st, phi.KeyOptions{}))
}

// response is a fully read HTTP response.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends one request. hdr holds header name/value pairs; a body gets
// Content-Type application/fhir+json unless hdr sets one. A transport
// error fails the test and returns status 0; do is safe to call from
// goroutines.
func do(t testing.TB, method, u string, body []byte, hdr ...string) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Errorf("new request %s %s: %v", method, u, err)
		return response{}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, u, err)
		return response{}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("%s %s: read body: %v", method, u, err)
		return response{}
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// decode parses JSON with json.Number for numbers.
func decode(t testing.TB, b []byte) map[string]any {
	t.Helper()
	m, err := decodeJSON(b)
	if err != nil {
		t.Fatalf("decode %q: %v", truncate(b, 300), err)
	}
	return m
}

func decodeJSON(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// mustJSON encodes v compactly without HTML escaping; safe in goroutines.
func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Errorf("encode: %v", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// outcome checks that r is an OperationOutcome error response with status
// and at least one issue, and returns the decoded issues.
func outcome(t testing.TB, r response, status int) []map[string]any {
	t.Helper()
	if r.Status != status {
		t.Errorf("status = %d, want %d; body %s", r.Status, status, truncate(r.Body, 400))
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
		t.Errorf("Content-Type = %q, want application/fhir+json", ct)
	}
	m, err := decodeJSON(r.Body)
	if err != nil {
		t.Errorf("body is not JSON: %v; %s", err, truncate(r.Body, 300))
		return nil
	}
	if m["resourceType"] != "OperationOutcome" {
		t.Errorf("resourceType = %v, want OperationOutcome", m["resourceType"])
	}
	raw, _ := m["issue"].([]any)
	if len(raw) == 0 {
		t.Errorf("OperationOutcome has no issue: %s", truncate(r.Body, 300))
	}
	var issues []map[string]any
	for _, is := range raw {
		if im, ok := is.(map[string]any); ok {
			issues = append(issues, im)
		}
	}
	return issues
}

// expressions lists every issue expression of an OperationOutcome.
func expressions(issues []map[string]any) []string {
	var out []string
	for _, is := range issues {
		es, _ := is["expression"].([]any)
		for _, e := range es {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// diagnostics summarizes an OperationOutcome as "diagnostics @expressions"
// per issue, for failure messages.
func diagnostics(body []byte) string {
	m, err := decodeJSON(body)
	if err != nil {
		return truncate(body, 200)
	}
	var ds []string
	is, _ := m["issue"].([]any)
	for _, i := range is {
		im, _ := i.(map[string]any)
		d, _ := im["diagnostics"].(string)
		ds = append(ds, d+" @"+strings.Join(expressions([]map[string]any{im}), ","))
	}
	return strings.Join(ds, "; ")
}

// rowCount counts the rows of the resources table (current versions and
// tombstones).
func rowCount(t testing.TB, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM resources`).Scan(&n); err != nil {
		t.Fatalf("count resources: %v", err)
	}
	return n
}

// historyRowCount counts the rows of resource_history.
func historyRowCount(t testing.TB, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM resource_history`).Scan(&n); err != nil {
		t.Fatalf("count resource_history: %v", err)
	}
	return n
}

// bundleEntries returns a Bundle's entries.
func bundleEntries(t testing.TB, b map[string]any) []map[string]any {
	t.Helper()
	if b["resourceType"] != "Bundle" {
		t.Fatalf("resourceType = %v, want Bundle", b["resourceType"])
	}
	raw, _ := b["entry"].([]any)
	out := make([]map[string]any, 0, len(raw))
	for _, e := range raw {
		out = append(out, e.(map[string]any))
	}
	return out
}

// link returns the url of a Bundle link relation, "" when absent.
func link(b map[string]any, rel string) string {
	ls, _ := b["link"].([]any)
	for _, l := range ls {
		lm, _ := l.(map[string]any)
		if lm["relation"] == rel {
			s, _ := lm["url"].(string)
			return s
		}
	}
	return ""
}

// searchIDs runs a search and returns the ids of the matches (search mode
// match only) and the decoded Bundle.
func searchIDs(t testing.TB, u string, hdr ...string) ([]string, map[string]any) {
	t.Helper()
	r := do(t, http.MethodGet, u, nil, hdr...)
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", u, r.Status, truncate(r.Body, 400))
	}
	b := decode(t, r.Body)
	return matchIDs(t, b), b
}

func matchIDs(t testing.TB, b map[string]any) []string {
	t.Helper()
	var ids []string
	for _, e := range bundleEntries(t, b) {
		if s, _ := e["search"].(map[string]any); s != nil && s["mode"] != "match" {
			continue
		}
		res, _ := e["resource"].(map[string]any)
		id, _ := res["id"].(string)
		ids = append(ids, id)
	}
	return ids
}

// create POSTs a resource and returns its server-assigned id.
func create(t testing.TB, base string, body string) string {
	t.Helper()
	m := decode(t, []byte(body))
	typ := m["resourceType"].(string)
	r := do(t, http.MethodPost, base+"/fhir/"+typ, []byte(body))
	if r.Status != http.StatusCreated {
		t.Fatalf("create %s: status %d: %s", typ, r.Status, truncate(r.Body, 400))
	}
	id, _ := decode(t, r.Body)["id"].(string)
	if id == "" {
		t.Fatalf("create %s: no id in the response", typ)
	}
	return id
}

// put PUTs a resource with its id and fails the test unless it succeeds.
func put(t testing.TB, base string, body string) response {
	t.Helper()
	m := decode(t, []byte(body))
	r := do(t, http.MethodPut, base+"/fhir/"+m["resourceType"].(string)+"/"+m["id"].(string), []byte(body))
	if r.Status != http.StatusOK && r.Status != http.StatusCreated {
		t.Fatalf("put: status %d: %s", r.Status, truncate(r.Body, 400))
	}
	return r
}

func q(s string) string { return url.QueryEscape(s) }

// secureServer is the gateway with authentication (tokens signed by its
// own dev key), the shipped OPA policies and the audit log on, as serve
// wires them.
type secureServer struct {
	URL   string
	pool  *pgxpool.Pool
	key   *auth.DevKey
	log   *audit.Log
	authn *auth.Authenticator
}

func newSecureServer(t *testing.T) *secureServer {
	t.Helper()
	pool := databasetest.NewPool(t)
	st := store.New(pool)
	svc := newPHI(t, st)
	st.WithSealer(svc)
	reader := retrieve.New(st).WithProtector(svc).WithGuard(access.Guard{})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	engine, err := mapping.Load("../../mappings")
	if err != nil {
		t.Fatal(err)
	}
	key, err := auth.NewDevKey()
	if err != nil {
		t.Fatal(err)
	}
	authn, err := auth.NewAuthenticator(auth.Config{DevKey: key})
	if err != nil {
		t.Fatal(err)
	}
	policy, err := authz.Load("../../policies", authz.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	signer, err := audit.OpenEd25519File(filepath.Join(dir, "audit-key.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	log, err := audit.New(pool, audit.Options{Signer: signer, Sink: audit.NewFileSink(filepath.Join(dir, "checkpoints.jsonl")),
		CheckpointInterval: time.Hour, Sealer: svc, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close(context.Background()) })
	writer := ingest.New(st, validate.Resource)
	srv := api.New(api.Config{Tenant: "test", MaxBodyBytes: 64 << 20}, writer, reader, pool.Ping, logger).
		WithHL7(ingest.NewHL7(writer, st, engine, logger)).
		WithPush(ingest.NewPush(writer, func() ingest.Normalizer { return engine })).
		WithSecurity(api.Security{Authn: authn, Policy: policy, Orgs: st, Audit: log, Reader: audit.NewReader(pool, svc)})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &secureServer{URL: ts.URL, pool: pool, key: key, log: log, authn: authn}
}

// token mints a token of the server's dev key.
func (s *secureServer) token(t testing.TB, c auth.Claims) string {
	t.Helper()
	tok, err := s.key.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// as sends a request with a bearer token ("" for none).
func (s *secureServer) as(t testing.TB, token, method, path string, body []byte, hdr ...string) response {
	t.Helper()
	if token != "" {
		hdr = append(hdr, "Authorization", "Bearer "+token)
	}
	return do(t, method, s.URL+path, body, hdr...)
}

// auditRecords returns the audit log's records, oldest first.
func (s *secureServer) auditRecords(t testing.TB) []audit.Entry {
	t.Helper()
	es, err := audit.NewReader(s.pool, nil).Query(context.Background(), audit.Filter{}, 0, audit.MaxLimit)
	if err != nil {
		t.Fatal(err)
	}
	return es
}
