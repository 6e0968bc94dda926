package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fhirgate/fhirgate/internal/audit"
	"github.com/fhirgate/fhirgate/internal/database"
	"github.com/fhirgate/fhirgate/internal/database/databasetest"
	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/phi/vault"
	"github.com/fhirgate/fhirgate/internal/phi/vaulttest"
	"github.com/fhirgate/fhirgate/internal/store"
	"github.com/fhirgate/fhirgate/internal/validate"
)

// The Vault dev server started by these tests is stopped when they end.
func TestMain(m *testing.M) { vaulttest.Main(m) }

// keysFixture is a gateway's write path with PHI encryption through a real
// Vault (a fresh transit key) over a fresh database, and the environment
// that makes `fhirgate keys` use the same database and key.
type keysFixture struct {
	t    *testing.T
	pool *pgxpool.Pool
	st   *store.Store
	prov *vault.Provider
	pol  *phi.Policy
	w    *ingest.Service

	mu      sync.Mutex
	written map[string][][]byte // tenant/id -> body of each version (1-based: index v-1)
}

// newKeysFixture sets the environment (so it cannot run in parallel): the
// keys commands read it as serve does. refresh is how often the writer
// re-reads a tenant's newest epoch.
func newKeysFixture(t *testing.T, refresh time.Duration) *keysFixture {
	t.Helper()
	dbURL := databasetest.NewURL(t)
	addr, token := vaulttest.Server(t)
	key := vaulttest.NewKey(t)
	for k, v := range map[string]string{
		"DATABASE_URL": dbURL, "FHIRGATE_DB_MAX_CONNS": "4", "FHIRGATE_DB_MIN_CONNS": "1",
		"FHIRGATE_PHI": "on", "FHIRGATE_ENV": "", "FHIRGATE_PHI_POLICY": "../../policies/phi.yaml",
		"FHIRGATE_KEY_PROVIDER": "vault", "VAULT_ADDR": addr, "VAULT_TOKEN": token, "VAULT_NAMESPACE": "",
		"VAULT_MAX_RETRIES": "0", "FHIRGATE_VAULT_TRANSIT_KEY": key, "FHIRGATE_VAULT_TRANSIT_MOUNT": "",
		"FHIRGATE_VAULT_ROLE_ID": "", "FHIRGATE_VAULT_SECRET_ID": "", "FHIRGATE_VAULT_SECRET_ID_FILE": "",
		"FHIRGATE_VAULT_ENSURE_KEY": "", "FHIRGATE_DATA_DIR": t.TempDir(),
	} {
		t.Setenv(k, v)
	}
	pool, err := database.Open(t.Context(), database.Config{URL: dbURL, MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	f := &keysFixture{t: t, pool: pool, st: store.New(pool), prov: keysTestProvider(t, addr, token, key), written: map[string][][]byte{}}
	if f.pol, err = phi.LoadPolicy("../../policies/phi.yaml"); err != nil {
		t.Fatal(err)
	}
	f.st.WithSealer(phi.NewService(f.pol, phi.NewKeys(f.prov, f.st, phi.KeyOptions{Refresh: refresh})))
	f.w = ingest.New(f.st, validate.Resource)
	return f
}

func keysTestProvider(t *testing.T, addr, token, key string) *vault.Provider {
	t.Helper()
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		t.Fatal(cfg.Error)
	}
	cfg.Address, cfg.MaxRetries, cfg.Timeout = addr, 0, 10*time.Second
	p, err := vault.New(t.Context(), vault.Config{API: cfg, Token: token, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func keysPatient(id string, n int) *fhir.Resource {
	body := fmt.Sprintf(`{"resourceType":"Patient",%s"name":[{"family":"Doe%d","given":["Jane"]}],"gender":"female",`+
		`"birthDate":"19%02d-01-02","identifier":[{"system":"urn:mrn","value":"MRN-%d"}],"active":true}`,
		map[bool]string{true: `"id":"` + id + `",`, false: ""}[id != ""], n, n%100, n)
	r, err := fhir.Parse([]byte(body))
	if err != nil {
		panic(err)
	}
	return r
}

// create writes a new Patient and returns its id.
func (f *keysFixture) create(ctx context.Context, tenant string, n int) (string, error) {
	res, err := f.w.Create(ctx, tenant, keysPatient("", n), "")
	if err != nil {
		return "", err
	}
	f.record(tenant, res.Version)
	return res.Version.ID, nil
}

// update writes a new version of a Patient.
func (f *keysFixture) update(ctx context.Context, tenant, id string, n int) error {
	res, err := f.w.Update(ctx, tenant, "Patient", id, keysPatient(id, n), 0)
	if err != nil {
		return err
	}
	f.record(tenant, res.Version)
	return nil
}

func (f *keysFixture) record(tenant string, v store.Version) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := tenant + "/" + v.ID
	vs := f.written[k]
	for int64(len(vs)) < v.Version {
		vs = append(vs, nil)
	}
	vs[v.Version-1] = v.Body
	f.written[k] = vs
}

// seed writes n Patients for tenant and updates every third one twice.
func (f *keysFixture) seed(tenant string, n int) []string {
	f.t.Helper()
	ctx := f.t.Context()
	var ids []string
	for i := range n {
		id, err := f.create(ctx, tenant, i)
		if err != nil {
			f.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for i := 0; i < n; i += 3 {
		for u := 1; u <= 2; u++ {
			if err := f.update(ctx, tenant, ids[i], 1000*u+i); err != nil {
				f.t.Fatal(err)
			}
		}
	}
	return ids
}

// freshService is a PHI service with an empty key cache: it unwraps the
// keys as they are stored now.
func (f *keysFixture) freshService() *phi.Service {
	return phi.NewService(f.pol, phi.NewKeys(f.prov, f.st, phi.KeyOptions{}))
}

// verify reads back every version written for tenant through a fresh key
// manager and compares it with what was written; the database holds
// exactly the resources and versions written.
func (f *keysFixture) verify(tenant string) {
	f.t.Helper()
	ctx := f.t.Context()
	svc := f.freshService()
	f.mu.Lock()
	defer f.mu.Unlock()
	ids, versions := 0, 0
	for k, vs := range f.written {
		tn, id, _ := strings.Cut(k, "/")
		if tn != tenant {
			continue
		}
		ids++
		for i, want := range vs {
			versions++
			if want == nil {
				f.t.Fatalf("%s: version %d was never recorded", k, i+1)
			}
			v, err := f.st.VRead(ctx, tenant, "Patient", id, int64(i+1))
			if err != nil {
				f.t.Fatalf("%s/_history/%d: %v", k, i+1, err)
			}
			if !phi.Sealed(v.Body) {
				f.t.Errorf("%s/_history/%d is stored without sealed values", k, i+1)
			}
			got, err := svc.Open(ctx, tenant, "Patient", id, v.Body)
			if err != nil {
				f.t.Fatalf("open %s/_history/%d: %v", k, i+1, err)
			}
			if !bytes.Equal(got, want) {
				f.t.Fatalf("%s/_history/%d reads back\n%s\nwant\n%s", k, i+1, got, want)
			}
		}
		cur, err := f.st.Read(ctx, tenant, "Patient", id)
		if err != nil || cur.Version != int64(len(vs)) {
			f.t.Fatalf("%s: current version %d (%v), want %d", k, cur.Version, err, len(vs))
		}
	}
	var nres, nhist int
	if err := f.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM resources WHERE tenant = $1), (SELECT count(*) FROM resource_history WHERE tenant = $1)`,
		tenant).Scan(&nres, &nhist); err != nil {
		f.t.Fatal(err)
	}
	if nres != ids || nhist != versions-ids {
		f.t.Fatalf("tenant %s: %d resources and %d history rows stored, want %d and %d", tenant, nres, nhist, ids, versions-ids)
	}
}

// epochs returns the rows per epoch of a tenant, all tables together, and
// checks that every table has rows only under the epochs in it.
func (f *keysFixture) epochs(tenant string) map[int]int64 {
	f.t.Helper()
	cs, err := f.st.EpochCounts(f.t.Context())
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[int]int64{}
	for _, c := range cs {
		if c.Tenant == tenant {
			out[c.Epoch] += c.Rows
		}
	}
	return out
}

// keys runs `fhirgate keys args...` in-process.
func keysRun(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = runKeys(t.Context(), args, slog.New(slog.NewTextHandler(io.Discard, nil)), &o, &e)
	return o.String(), e.String(), err
}

func keysMust(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := keysRun(t, args...)
	if err != nil {
		t.Fatalf("keys %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func keysStatusJSON(t *testing.T) keysStatus {
	t.Helper()
	var s keysStatus
	if err := json.Unmarshal([]byte(keysMust(t, "status", "-json")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func rowsOf(s keysStatus, table, tenant string, epoch int) int64 {
	for _, r := range s.Rows {
		if r.Table == table && r.Tenant == tenant && r.Epoch == epoch {
			return r.Rows
		}
	}
	return 0
}

// TestKeysStatusRotateReencrypt runs status, rotate, reencrypt and a raise
// of min_decryption_version over stored PHI, and reads everything back.
func TestKeysStatusRotateReencrypt(t *testing.T) {
	f := newKeysFixture(t, 0)
	f.seed("t1", 12) // 12 resources, 8 history rows
	f.seed("t2", 3)  // 3 resources, 2 history rows

	s := keysStatusJSON(t)
	if s.Provider.LatestVersion != 1 || s.Provider.MinDecryptionVersion != 1 || !strings.HasPrefix(s.Provider.Name, "vault-transit:") {
		t.Fatalf("status provider = %+v", s.Provider)
	}
	if len(s.Keys) != 4 { // per tenant: data epoch 1 and the index key
		t.Fatalf("status lists %d keys, want 4: %+v", len(s.Keys), s.Keys)
	}
	for _, k := range s.Keys {
		if k.KEKVersion != 1 || k.Epoch != 1 || k.Created.IsZero() {
			t.Errorf("key %+v: want epoch 1 under KEK v1", k)
		}
	}
	if got := rowsOf(s, "resources", "t1", 1); got != 12 {
		t.Errorf("status: t1 resources on epoch 1 = %d, want 12", got)
	}
	if got := rowsOf(s, "resource_history", "t1", 1); got != 8 {
		t.Errorf("status: t1 resource_history on epoch 1 = %d, want 8", got)
	}
	if !s.AllKeysOnLatest || s.CanRaiseMinDecryption {
		t.Errorf("status with one KEK version: all_on_latest=%t can_raise=%t, want true, false", s.AllKeysOnLatest, s.CanRaiseMinDecryption)
	}
	human := keysMust(t, "status")
	for _, re := range []string{`(?m)^\s+resources\s+t1\s+1\s+12\s*$`, `(?m)^\s+resource_history\s+t1\s+1\s+8\s*$`,
		`(?m)^\s+t1\s+data\s+1\s+v1\s`, `latest KEK version:\s+1`, `min_decryption_version:\s+1`} {
		if !regexp.MustCompile(re).MatchString(human) {
			t.Errorf("status output does not match %s:\n%s", re, human)
		}
	}

	out := keysMust(t, "rotate")
	if !strings.Contains(out, "v1 -> v2") || !strings.Contains(out, "rewrapped 4 of 4 stored keys under v2") {
		t.Errorf("rotate output:\n%s", out)
	}
	// The rotation is audited with an outcome the reports count as a
	// success (not "ok", which they read as a refusal).
	var outcome string
	if err := f.pool.QueryRow(context.Background(), `SELECT outcome FROM audit_log WHERE interaction = 'key-rotate' ORDER BY seq DESC LIMIT 1`).Scan(&outcome); err != nil {
		t.Fatalf("the rotation's audit record: %v", err)
	}
	if !audit.Success(outcome) {
		t.Errorf("the rotation is audited with outcome %q, which audit reports count as a failure", outcome)
	}
	s = keysStatusJSON(t)
	for _, k := range s.Keys {
		if k.KEKVersion != 2 {
			t.Errorf("after rotate, key %+v is not under KEK v2", k)
		}
	}
	if s.Provider.LatestVersion != 2 || !s.AllKeysOnLatest || !s.CanRaiseMinDecryption || s.KeysBehind != 0 {
		t.Errorf("status after rotate: %+v", s)
	}
	human = keysMust(t, "status")
	t.Logf("keys status after rotate:\n%s", human)
	if !strings.Contains(human, "can be raised from 1 to 2") {
		t.Errorf("status after rotate does not say min_decryption_version can be raised:\n%s", human)
	}
	f.verify("t1")

	out = keysMust(t, "reencrypt", "-settle", "0", "-batch", "7")
	if !strings.Contains(out, "tenant t1: 20 rows re-encrypted to data-key epoch 2") || !strings.Contains(out, "tenant t2: 5 rows re-encrypted to data-key epoch 2") {
		t.Errorf("reencrypt output:\n%s", out)
	}
	for _, tn := range []string{"t1", "t2"} {
		if e := f.epochs(tn); len(e) != 1 || e[2] == 0 {
			t.Errorf("tenant %s rows per epoch after reencrypt: %v, want all on epoch 2", tn, e)
		}
		f.verify(tn)
	}
	s = keysStatusJSON(t)
	for _, tn := range s.Tenants {
		if tn.NewestEpoch != 2 || tn.RowsOnOlderEpochs != 0 {
			t.Errorf("status tenant after reencrypt: %+v", tn)
		}
	}
	out = keysMust(t, "rotate", "-rewrap-only", "-min-decryption-version")
	if !strings.Contains(out, "raised from 1 to 2") {
		t.Errorf("rotate -rewrap-only -min-decryption-version output:\n%s", out)
	}
	if info, err := f.prov.Info(t.Context()); err != nil || info.MinDecryptionVersion != 2 || info.LatestVersion != 2 {
		t.Fatalf("provider after the raise: %+v, %v", info, err)
	}
	f.verify("t1")
	f.verify("t2")
}

// TestKeysConcurrentReencryptAndRotate: while reencrypt and rotate run, a
// writer keeps creating and updating Patients; afterwards nothing is lost,
// everything reads back as written, and after a final reencrypt -resume no
// row is left on an old epoch.
func TestKeysConcurrentReencryptAndRotate(t *testing.T) {
	f := newKeysFixture(t, 100*time.Millisecond)
	ids := f.seed("t1", 60)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		keysDone   atomic.Bool
		writes     atomic.Int64
		duringKeys atomic.Int64
		writerErr  error
		started    = make(chan struct{})
		writerDone = make(chan struct{})
	)
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			if (i >= 200 && keysDone.Load()) || i >= 3000 {
				return
			}
			var err error
			if i%3 == 0 {
				var id string
				if id, err = f.create(ctx, "t1", 5000+i); err == nil {
					ids = append(ids, id)
				}
			} else {
				err = f.update(ctx, "t1", ids[(i*7)%len(ids)], 9000+i)
			}
			if err != nil {
				writerErr = fmt.Errorf("write %d: %w", i, err)
				return
			}
			writes.Add(1)
			if !keysDone.Load() {
				duringKeys.Add(1)
			}
			if i == 20 {
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case <-writerDone:
		t.Fatalf("the writer stopped early: %v", writerErr)
	}

	var wg sync.WaitGroup
	var reErr, rotErr error
	var reOut, rotOut string
	wg.Add(2)
	go func() {
		defer wg.Done()
		var e string
		reOut, e, reErr = keysRun(t, "reencrypt", "-settle", "0", "-batch", "10")
		if reErr != nil {
			reErr = fmt.Errorf("%w\n%s", reErr, e)
		}
	}()
	go func() {
		defer wg.Done()
		rotOut, _, rotErr = keysRun(t, "rotate")
	}()
	wg.Wait()
	keysDone.Store(true)
	<-writerDone
	if writerErr != nil {
		t.Fatal(writerErr)
	}
	if reErr != nil || rotErr != nil {
		t.Fatalf("reencrypt: %v\nrotate: %v", reErr, rotErr)
	}
	t.Logf("%d writes, %d while the keys commands ran\nreencrypt: %srotate: %s", writes.Load(), duringKeys.Load(), reOut, rotOut)
	if duringKeys.Load() == 0 {
		t.Fatal("no write ran while reencrypt and rotate ran: the test did not test concurrency")
	}

	out := keysMust(t, "reencrypt", "-resume", "-settle", "0")
	if !strings.Contains(out, "to data-key epoch 2") {
		t.Errorf("reencrypt -resume did not continue to epoch 2:\n%s", out)
	}
	if e := f.epochs("t1"); len(e) != 1 || e[2] == 0 {
		t.Errorf("rows per epoch after the final reencrypt -resume: %v, want all on epoch 2", e)
	}
	// Rewrap what the concurrent rotate may have missed (a key made while
	// it ran), raise the minimum, and read everything back through it.
	keysMust(t, "rotate", "-rewrap-only", "-min-decryption-version")
	f.verify("t1")
}

// TestKeysShred destroys one tenant's keys: its data no longer opens
// (ErrNoKey), another tenant's still does, and the warning tells how to
// make the wrapped keys in backups useless.
func TestKeysShred(t *testing.T) {
	f := newKeysFixture(t, 0)
	f.seed("t1", 4)
	f.seed("t2", 4)
	ctx := t.Context()

	if _, _, err := keysRun(t, "shred", "-tenant", "t1"); !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "-yes") {
		t.Fatalf("shred without -yes = %v, want a usage error asking for -yes", err)
	}
	if _, _, err := keysRun(t, "shred", "-tenant", "nobody", "-yes"); err == nil || !strings.Contains(err.Error(), "no keys") {
		t.Fatalf("shred of an unknown tenant = %v, want an error", err)
	}
	out, warn, err := keysRun(t, "shred", "-tenant", "t1", "-yes")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "destroyed 2 keys of tenant t1") {
		t.Errorf("shred output: %s", out)
	}
	if !strings.Contains(warn, "backups") || !strings.Contains(warn, "fhirgate keys rotate -min-decryption-version") {
		t.Errorf("shred warning does not explain backups and the KEK rotation:\n%s", warn)
	}

	svc := f.freshService()
	for k, vs := range f.written {
		tn, id, _ := strings.Cut(k, "/")
		v, err := f.st.Read(ctx, tn, "Patient", id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := svc.Open(ctx, tn, "Patient", id, v.Body)
		switch tn {
		case "t1":
			if !errors.Is(err, phi.ErrNoKey) {
				t.Errorf("open %s after shred = %v, want ErrNoKey", k, err)
			}
		default:
			if err != nil || !bytes.Equal(got, vs[len(vs)-1]) {
				t.Errorf("open %s of the other tenant after shred = %v", k, err)
			}
		}
	}

	s := keysStatusJSON(t)
	missing := false
	for _, r := range s.Rows {
		if r.Tenant == "t1" && r.Epoch == 1 {
			missing = r.KeyMissing
		}
	}
	if !missing {
		t.Errorf("status does not mark t1's epoch-1 rows as having no key: %+v", s.Rows)
	}
	// reencrypt of every tenant skips the shredded one (it would not bring
	// its data back) and still re-encrypts the others.
	out, errOut, err := keysRun(t, "reencrypt", "-settle", "0")
	if err != nil {
		t.Fatalf("reencrypt after shred: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "skipping tenant t1") || !strings.Contains(out, "tenant t2: 8 rows re-encrypted to data-key epoch 2") {
		t.Errorf("reencrypt after shred:\nstdout:\n%s\nstderr:\n%s", out, errOut)
	}
	if keys, err := f.st.TenantKeys(ctx, "t1"); err != nil || len(keys) != 0 {
		t.Errorf("reencrypt made keys for the shredded tenant: %+v, %v", keys, err)
	}
	f.verify("t2")
}

// TestKeysUsageAndConfigErrors: bad commands are usage errors, and bad
// configuration names the setting.
func TestKeysUsageAndConfigErrors(t *testing.T) {
	newKeysFixture(t, 0)
	for _, args := range [][]string{{}, {"bogus"}, {"status", "extra"}, {"reencrypt", "-batch", "0"}, {"shred"}} {
		if _, _, err := keysRun(t, args...); !errors.As(err, new(usageError)) {
			t.Errorf("keys %q = %v, want a usage error", args, err)
		}
	}
	t.Setenv("FHIRGATE_KEY_PROVIDER", "hsm")
	if _, _, err := keysRun(t, "status"); err == nil || !strings.Contains(err.Error(), "FHIRGATE_KEY_PROVIDER") {
		t.Errorf("keys status with FHIRGATE_KEY_PROVIDER=hsm = %v", err)
	}
	t.Setenv("FHIRGATE_KEY_PROVIDER", "vault")
	t.Setenv("VAULT_TOKEN", "")
	if _, _, err := keysRun(t, "rotate"); err == nil || !strings.Contains(err.Error(), "VAULT_TOKEN") {
		t.Errorf("keys rotate without VAULT_TOKEN = %v", err)
	}
	t.Setenv("DATABASE_URL", "")
	if _, _, err := keysRun(t, "status"); err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Errorf("keys status without DATABASE_URL = %v", err)
	}
}
