package api_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fhirgate/fhirgate/internal/api"
	"github.com/fhirgate/fhirgate/internal/database/databasetest"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/mapping"
	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/phi/vault"
	"github.com/fhirgate/fhirgate/internal/phi/vaulttest"
	"github.com/fhirgate/fhirgate/internal/retrieve"
	"github.com/fhirgate/fhirgate/internal/store"
	"github.com/fhirgate/fhirgate/internal/validate"
)

func TestMain(m *testing.M) { vaulttest.Main(m) }

// vaultServer is the gateway with PHI encryption under Vault Transit.
type vaultServer struct {
	ts   *httptest.Server
	pool *pgxpool.Pool
	svc  *phi.Service
	prov *vault.Provider
}

// newVaultServer wires the gateway as serve does with
// FHIRGATE_KEY_PROVIDER=vault, over the Vault at addr (a fresh transit key
// in the shared dev server when addr is "").
func newVaultServer(t *testing.T, addr, token, tenant string, opt phi.KeyOptions, pool *pgxpool.Pool) *vaultServer {
	t.Helper()
	key := "fhirgate"
	if addr == "" {
		addr, token = vaulttest.Server(t)
		key = vaulttest.NewKey(t)
	}
	cfg := vaultapi.DefaultConfig()
	cfg.Address = addr
	cfg.MaxRetries = 0
	cfg.Timeout = 5 * time.Second
	prov, err := vault.New(context.Background(), vault.Config{API: cfg, Token: token, Key: key, EnsureKey: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Close() })
	if pool == nil {
		pool = databasetest.NewPool(t)
	}
	pol, err := phi.LoadPolicy("../../policies/phi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(pool)
	svc := phi.NewService(pol, phi.NewKeys(prov, st, opt))
	st.WithSealer(svc)
	reader := retrieve.New(st).WithProtector(svc)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	engine, err := mapping.Load("../../mappings")
	if err != nil {
		t.Fatal(err)
	}
	writer := ingest.New(st, validate.Resource)
	srv := api.New(api.Config{Tenant: tenant, MaxBodyBytes: 64 << 20}, writer, reader, pool.Ping, logger).
		WithHL7(ingest.NewHL7(writer, st, engine, logger)).
		WithPush(ingest.NewPush(writer, func() ingest.Normalizer { return engine }))
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &vaultServer{ts: ts, pool: pool, svc: svc, prov: prov}
}

// syntheaDir is the shared Synthea corpus when it is beside the checkout
// (as in CI), else the sample copied into testdata.
func syntheaDir() string {
	shared := filepath.Join("..", "..", "..", "shared", "corpus", "synthea")
	if fi, err := os.Stat(shared); err == nil && fi.IsDir() {
		return shared
	}
	return filepath.Join("testdata", "synthea")
}

// syntheaBundles returns the patient transaction bundles of the corpus.
func syntheaBundles(t *testing.T) [][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(syntheaDir(), "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Synthea bundles in %s", syntheaDir())
	}
	var out [][]byte
	for _, f := range files {
		if strings.Contains(filepath.Base(f), "practitionerInformation") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// patientPHI lists the identifying strings of the Patients in bundles:
// names, identifier values, phone numbers, street lines and birth dates.
func patientPHI(t *testing.T, bundles [][]byte) []string {
	t.Helper()
	type patient struct {
		ResourceType string `json:"resourceType"`
		Name         []struct {
			Family string   `json:"family"`
			Given  []string `json:"given"`
		} `json:"name"`
		Identifier []struct {
			Value string `json:"value"`
		} `json:"identifier"`
		Telecom []struct {
			Value string `json:"value"`
		} `json:"telecom"`
		Address []struct {
			Line []string `json:"line"`
		} `json:"address"`
		BirthDate string `json:"birthDate"`
	}
	seen := map[string]bool{}
	add := func(s string) {
		if len(s) >= 4 { // shorter strings (a 3-letter given name) match by chance
			seen[s] = true
		}
	}
	for _, b := range bundles {
		var bundle struct {
			Entry []struct {
				Resource json.RawMessage `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(b, &bundle); err != nil {
			t.Fatal(err)
		}
		for _, e := range bundle.Entry {
			var p patient
			if json.Unmarshal(e.Resource, &p) != nil || p.ResourceType != "Patient" {
				continue
			}
			for _, n := range p.Name {
				add(n.Family)
				for _, g := range n.Given {
					add(g)
				}
			}
			for _, id := range p.Identifier {
				add(id.Value)
			}
			for _, tc := range p.Telecom {
				add(tc.Value)
			}
			for _, a := range p.Address {
				for _, l := range a.Line {
					add(l)
				}
			}
			add(p.BirthDate)
		}
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// needles finds any of a set of strings in text, by their first 4 bytes.
type needles map[string][]string

func newNeedles(ss []string) needles {
	n := needles{}
	for _, s := range ss {
		n[s[:4]] = append(n[s[:4]], s)
	}
	return n
}

// A match must stand on its own: the bytes beside it must not be letters,
// digits, '-' or '_', or a 4-letter name would be "found" inside random
// base64url ciphertext (about once per 16 MB of it).
func (n needles) find(text []byte) (string, bool) {
	word := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
	}
	for i := 0; i+4 <= len(text); i++ {
		if i > 0 && word(text[i-1]) {
			continue
		}
		for _, s := range n[string(text[i:i+4])] {
			if bytes.HasPrefix(text[i:], []byte(s)) && (i+len(s) == len(text) || !word(text[i+len(s)])) {
				return s, true
			}
		}
	}
	return "", false
}

// scanDatabase reads every row of every table in the public schema as raw
// bytes (bytea as its bytes, every other value as its text form) and
// reports where a needle occurs.
func scanDatabase(t *testing.T, pool *pgxpool.Pool, n needles) (hits []string, rows int) {
	t.Helper()
	ctx := context.Background()
	var tables []string
	r, err := pool.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err = pgx.CollectRows(r, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		r, err := pool.Query(ctx, `SELECT * FROM `+pgx.Identifier{table}.Sanitize(), pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatal(err)
		}
		for r.Next() {
			rows++
			for i, raw := range r.RawValues() { // text format: bytea is \x-hex, decoded below
				v := raw
				if bytes.HasPrefix(v, []byte(`\x`)) {
					if dec, err := hex.DecodeString(string(v[2:])); err == nil {
						v = dec
					}
				}
				if s, ok := n.find(v); ok {
					where := table + "." + r.FieldDescriptions()[i].Name
					if strings.HasPrefix(table, "idx_") { // name the parameter
						where += fmt.Sprintf(" (%s %s)", r.RawValues()[2], r.RawValues()[3])
					}
					hits = append(hits, fmt.Sprintf("%s holds %q", where, s))
				}
			}
		}
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return hits, rows
}

// hl7PHI is a few HL7 v2 messages with known identifying values, one of
// which is rejected (a dead letter), and those values.
func hl7PHI() (msgs []string, values []string) {
	mk := func(ctrl, typ, mrn, family, given, dob, street, phone string, extra string) string {
		return "MSH|^~\\&|LAB|HOSP|FHIRGATE|FG|20240101120000+0000||" + typ + "|" + ctrl + "|P|2.5.1\r" +
			"PID|1||" + mrn + "^^^HOSP^MR||" + family + "^" + given + "||" + dob + "|F|||" + street + "^^Springfield^MA^01101||" + phone + "\r" +
			"PV1|1|I\r" + extra
	}
	msgs = []string{
		mk("SCAN1", "ADT^A01^ADT_A01", "MRN448811", "Quixlander", "Philippa", "19610417", "742 Evergreen Terrace", "(413)555-0199", ""),
		mk("SCAN2", "ORU^R01^ORU_R01", "MRN448812", "Brightwater", "Ottoline", "19720923", "31 Spooner Street", "(413)555-0142",
			"OBR|1|ORD1|FIL1|718-7^Hemoglobin^LN\rOBX|1|NM|718-7^Hemoglobin^LN||13.2|g/dL|||||F\r"),
		// Rejected: an unknown message type goes to the dead letters.
		mk("SCAN3", "ZZZ^Z99", "MRN448813", "Featherstonehaugh", "Wilhelmina", "19830105", "1 Acacia Avenue", "(413)555-0177", ""),
	}
	values = []string{"MRN448811", "Quixlander", "Philippa", "19610417", "1961-04-17", "742 Evergreen Terrace", "555-0199",
		"MRN448812", "Brightwater", "Ottoline", "19720923", "1972-09-23", "31 Spooner Street", "555-0142",
		"MRN448813", "Featherstonehaugh", "Wilhelmina", "19830105", "1983-01-05", "1 Acacia Avenue", "555-0177"}
	return msgs, values
}

// TestNoPlaintextPHIAtRest ingests the Synthea bundles and HL7 v2 messages
// (accepted and rejected) with PHI encryption under Vault Transit, updates
// the Patients (so history holds versions too), then reads every table and
// column of the database as raw text, and a pg_dump of it, for every
// patient's names, identifiers, phone numbers, street lines and birth
// dates: there must be none. The same scan over the same data stored with
// encryption off must find them, or the scan proves nothing.
func TestNoPlaintextPHIAtRest(t *testing.T) {
	if testing.Short() {
		t.Skip("ingests the Synthea corpus")
	}
	t.Parallel()
	bundles := syntheaBundles(t)
	msgs, hl7Values := hl7PHI()
	values := append(patientPHI(t, bundles), hl7Values...)
	n := newNeedles(values)
	t.Logf("%d bundles from %s; %d identifying strings", len(bundles), syntheaDir(), len(values))

	load := func(t *testing.T, base string) {
		var wg sync.WaitGroup
		work := make(chan []byte)
		for range 2 {
			wg.Go(func() {
				for b := range work {
					if r := do(t, "POST", base+"/fhir", b); r.Status != 200 {
						t.Errorf("POST bundle: %d %.300s", r.Status, r.Body)
					}
				}
			})
		}
		for _, b := range bundles {
			work <- b
		}
		close(work)
		wg.Wait()
		for i, m := range msgs {
			r := do(t, "POST", base+"/hl7v2", []byte(m), "Content-Type", "x-application/hl7-v2+er7")
			wantAA := i < 2
			if got := strings.Contains(string(r.Body), "MSA|AA|"); got != wantAA {
				t.Errorf("HL7 message %d: ACK %q, want accepted=%v", i, r.Body, wantAA)
			}
		}
		// Update every Patient once: the first versions move to history.
		r := do(t, "GET", base+"/fhir/Patient?_count=1000", nil)
		var bundle struct {
			Entry []struct {
				Resource map[string]any `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(r.Body, &bundle); err != nil || len(bundle.Entry) == 0 {
			t.Fatalf("Patient search: %d %.300s", r.Status, r.Body)
		}
		for _, e := range bundle.Entry {
			p := e.Resource
			p["active"] = true
			delete(p, "meta")
			b, _ := json.Marshal(p)
			if r := do(t, "PUT", base+"/fhir/Patient/"+p["id"].(string), b); r.Status != 200 {
				t.Errorf("PUT Patient: %d %.300s", r.Status, r.Body)
			}
		}
	}

	t.Run("encrypted", func(t *testing.T) {
		s := newVaultServer(t, "", "", "scan", phi.KeyOptions{}, nil)
		load(t, s.ts.URL)
		hits, rows := scanDatabase(t, s.pool, n)
		t.Logf("scanned %d rows: %d hits", rows, len(hits))
		if len(hits) > 0 {
			byPlace := map[string]int{}
			for _, h := range hits {
				byPlace[strings.SplitN(h, " holds ", 2)[0]]++
			}
			var places []string
			for p, c := range byPlace {
				places = append(places, fmt.Sprintf("%6d  %s", c, p))
			}
			sort.Strings(places)
			t.Errorf("plaintext PHI in the database (%d hits), by place:\n%s\nfirst: %s", len(hits), strings.Join(places, "\n"), hits[0])
		}
		var count int
		s.pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM resources) + (SELECT count(*) FROM resource_history) + (SELECT count(*) FROM hl7_dead_letters)`).Scan(&count)
		if count < 1000 {
			t.Errorf("only %d rows stored: the scan covered too little", count)
		}
		// pg_dump, with bytea in escape format so that unencrypted text
		// would show as text.
		cfg := s.pool.Config().ConnConfig
		cmd := exec.Command("pg_dump", "--data-only", "-h", cfg.Host, "-p", fmt.Sprint(cfg.Port), "-U", cfg.User, cfg.Database)
		cmd.Env = append(os.Environ(), "PGOPTIONS=-c bytea_output=escape")
		dump, err := cmd.Output()
		if err != nil {
			t.Fatalf("pg_dump: %v", err)
		}
		if len(dump) < 1<<20 {
			t.Errorf("pg_dump wrote only %d bytes", len(dump))
		}
		if s, ok := n.find(dump); ok {
			t.Errorf("pg_dump holds plaintext PHI %q", s)
		}
		// And the API still returns the plaintext to its caller.
		r := do(t, "GET", s.ts.URL+"/fhir/Patient?_count=1", nil)
		if _, ok := n.find(r.Body); !ok {
			t.Errorf("a Patient read back holds none of the identifying strings: %.300s", r.Body)
		}
		sealed, opened := s.svc.Counts()
		t.Logf("values sealed: %d, bodies opened: %d, Vault calls: %d", sealed, opened, s.prov.Calls())
	})

	t.Run("plaintext control", func(t *testing.T) {
		ts, pool := newServer(t, 64<<20, false)
		load(t, ts.URL)
		hits, _ := scanDatabase(t, pool, n)
		if len(hits) == 0 {
			t.Fatal("the scan finds nothing even in plaintext storage: it proves nothing")
		}
		found := map[string]bool{}
		for _, h := range hits {
			found[strings.SplitN(h, " ", 2)[0]] = true
		}
		for _, where := range []string{"resources.body", "resource_history.body", "hl7_messages.raw", "hl7_dead_letters.raw"} {
			if !found[where] {
				t.Errorf("the plaintext control found no PHI in %s, so the encrypted run does not prove that column clean", where)
			}
		}
	})
}

// TestPHISearchMatchesPlaintext stores the same Patients with encryption
// on and off and runs a search by every blind-indexed parameter on both:
// the results are the same. Values are taken from the data, in other
// spellings too (case, accents, phone punctuation, e-mail case).
func TestPHISearchMatchesPlaintext(t *testing.T) {
	t.Parallel()
	enc := newVaultServer(t, "", "", "search", phi.KeyOptions{}, nil)
	plain, _ := newPlainServer(t)
	patients := []string{
		`{"resourceType":"Patient","id":"s1","identifier":[{"system":"urn:oid:2.16.840.1.113883.4.1","value":"999-11-2222"},{"system":"http://hosp.example/mrn","value":"MRN-1"}],"name":[{"family":"Müller","given":["Anna","Maria"]}],"telecom":[{"system":"phone","value":"(555) 010-2030"},{"system":"email","value":"Anna.Mueller@Example.org"}],"gender":"female","birthDate":"1980-05-15","address":[{"line":["1 Elm St"],"city":"Boston","postalCode":"02134"}]}`,
		`{"resourceType":"Patient","id":"s2","identifier":[{"system":"http://hosp.example/mrn","value":"MRN-2"}],"name":[{"family":"Smith","given":["John"]}],"telecom":[{"system":"phone","value":"555-010-9999"}],"gender":"male","birthDate":"1975-12-01","address":[{"city":"Cambridge","postalCode":"02139"}]}`,
		`{"resourceType":"Patient","id":"s3","identifier":[{"system":"http://other.example/mrn","value":"MRN-1"}],"name":[{"family":"Smith","given":["Anna"]}],"gender":"female","birthDate":"1980-05","address":[{"city":"Boston","postalCode":"02134"}]}`,
		`{"resourceType":"Patient","id":"s4","name":[{"family":"Jones","given":["Bob"]}],"gender":"male","birthDate":"2001-01-31","telecom":[{"system":"email","value":"bob@example.org"}]}`,
		`{"resourceType":"Patient","id":"s5","name":[{"family":"Okafor","given":["Chidi"]}],"birthDate":"1980","deceasedDateTime":"2020-03-04T10:00:00Z"}`,
	}
	for _, p := range patients {
		put(t, enc.ts.URL, p)
		put(t, plain.URL, p)
	}
	// Each query: the encrypted spelling, and the plaintext query with the
	// same meaning (the plaintext server's string search is starts-with and
	// case-insensitive; values here are whole values, so they agree).
	cases := []struct{ enc, plain string }{
		{"family=Smith", "family=Smith"},
		{"family=SMITH", "family=smith"},
		{"family=muller", "family=muller"},
		{"family=Müller", "family=Müller"},
		{"given=anna", "given=anna"},
		{"name=maria", "name=maria"},
		{"name=jones,okafor", "name=jones,okafor"},
		{"family=Smith&given=Anna", "family=Smith&given=Anna"},
		{"family:missing=true", "family:missing=true"},
		{"birthdate=1980-05-15", "birthdate=1980-05-15"},
		{"birthdate=1980-05", "birthdate=1980-05"},
		{"birthdate=1980", "birthdate=1980"},
		{"birthdate=ge1980-01-01", "birthdate=ge1980-01-01"},
		{"birthdate=lt1980-01-01", "birthdate=lt1980-01-01"},
		{"birthdate=ge1975-01-01&birthdate=le1980-12-31", "birthdate=ge1975-01-01&birthdate=le1980-12-31"},
		{"death-date=2020-03-04", "death-date=2020-03-04"},
		{"identifier=MRN-1", "identifier=MRN-1"},
		{"identifier=http://hosp.example/mrn|MRN-1", "identifier=http://hosp.example/mrn|MRN-1"},
		{"identifier=urn:oid:2.16.840.1.113883.4.1|999-11-2222", "identifier=urn:oid:2.16.840.1.113883.4.1|999-11-2222"},
		{"phone=5550102030", "phone=(555)%20010-2030"},
		{"phone=555-010-2030", "phone=(555)%20010-2030"},
		{"email=anna.mueller@example.org", "email=Anna.Mueller@Example.org"},
		{"telecom=bob@example.org", "telecom=bob@example.org"},
		{"address-postalcode=02134", "address-postalcode=02134"},
		{"address-city=boston", "address-city=boston"},
		{"address=cambridge", "address=cambridge"},
		{"gender=female&birthdate=1980-05-15", "gender=female&birthdate=1980-05-15"},
	}
	for _, c := range cases {
		got := sortedIDs(t, enc.ts.URL, "Patient?"+c.enc)
		want := sortedIDs(t, plain.URL, "Patient?"+c.plain)
		if !slices.Equal(got, want) {
			t.Errorf("Patient?%s (encrypted) = %v; Patient?%s (plaintext) = %v", c.enc, got, c.plain, want)
		}
		if len(want) == 0 && !strings.Contains(c.enc, "missing") {
			t.Errorf("Patient?%s matches nothing even in plaintext: a weak case", c.plain)
		}
	}
	// What blind indexes cannot answer is refused, not answered wrongly.
	for _, q := range []string{"family:contains=mit", "family:exact=Smith", "birthdate=sa1980-01-01", "_sort=birthdate", "identifier=http://hosp.example/mrn|", "phonetic=smith"} {
		if r := do(t, "GET", enc.ts.URL+"/fhir/Patient?"+q, nil); r.Status != 400 || !strings.Contains(string(r.Body), "encrypted") {
			t.Errorf("Patient?%s with encryption on: %d %.200s, want 400 naming the encryption", q, r.Status, r.Body)
		}
	}
}

// sortedIDs is the sorted ids of a search's matches.
func sortedIDs(t *testing.T, base, query string) []string {
	t.Helper()
	ids, _ := searchIDs(t, base+"/fhir/"+query)
	if ids == nil {
		ids = []string{}
	}
	sort.Strings(ids)
	return ids
}

// TestPHIVaultDown seals a dedicated Vault under a running gateway: reads
// whose data keys are cached keep working until the cache TTL, then fail
// closed with 503; a write that needs a new data key (a new tenant) fails
// with 503 and an OperationOutcome, and writes nothing.
func TestPHIVaultDown(t *testing.T) {
	t.Parallel()
	addr, token := vaulttest.Dedicated(t)
	ttl := 3 * time.Second
	s := newVaultServer(t, addr, token, "down", phi.KeyOptions{TTL: ttl, Refresh: time.Hour}, nil)
	other := newVaultServer(t, addr, token, "newtenant", phi.KeyOptions{TTL: ttl, Refresh: time.Hour}, s.pool)
	put(t, s.ts.URL, `{"resourceType":"Patient","id":"v1","name":[{"family":"Vaultdown"}],"birthDate":"1970-01-01"}`)
	if r := do(t, "GET", s.ts.URL+"/fhir/Patient/v1", nil); r.Status != 200 {
		t.Fatalf("read before sealing: %d", r.Status)
	}
	sealedAt := time.Now()
	c, err := vaultapi.NewClient(&vaultapi.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	if err := c.Sys().Seal(); err != nil {
		t.Fatal(err)
	}
	// Cached key: reads and writes of the existing tenant go on.
	if r := do(t, "GET", s.ts.URL+"/fhir/Patient/v1", nil); r.Status != 200 || !strings.Contains(string(r.Body), "Vaultdown") {
		t.Errorf("read with a cached key while Vault is sealed: %d %.200s", r.Status, r.Body)
	}
	// A new tenant needs a new data key: 503, nothing stored.
	r := do(t, "POST", other.ts.URL+"/fhir/Patient", []byte(`{"resourceType":"Patient","name":[{"family":"Nokey"}]}`))
	if r.Status != 503 || !strings.Contains(string(r.Body), "OperationOutcome") || !strings.Contains(string(r.Body), "key provider") {
		t.Errorf("write needing a new data key with Vault sealed: %d %.300s, want 503 OperationOutcome", r.Status, r.Body)
	}
	var n int
	s.pool.QueryRow(t.Context(), `SELECT count(*) FROM resources WHERE tenant = 'newtenant'`).Scan(&n)
	if n != 0 {
		t.Errorf("%d resources stored for the tenant without a key", n)
	}
	// After the TTL: fail closed.
	time.Sleep(time.Until(sealedAt.Add(ttl + 500*time.Millisecond)))
	r = do(t, "GET", s.ts.URL+"/fhir/Patient/v1", nil)
	if r.Status != 503 || strings.Contains(string(r.Body), "Vaultdown") || strings.Contains(string(r.Body), "fg1.") {
		t.Errorf("read after the key TTL with Vault sealed: %d %.300s, want 503 without data", r.Status, r.Body)
	}
}
