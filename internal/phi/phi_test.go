package phi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/phi/keyring"
	"github.com/fhirgate/fhirgate/internal/phi/vaulttest"
	"github.com/fhirgate/fhirgate/internal/search"
	"github.com/fhirgate/fhirgate/internal/spec"
)

// Shared helpers of the phi tests (package phi_test: the key providers
// import phi, so tests that use them live outside the package).

func TestMain(m *testing.M) { vaulttest.Main(m) }

const policyPath = "../../policies/phi.yaml"

var (
	policyOnce sync.Once
	policyVal  *phi.Policy
	policyErr  error
)

// testPolicy is policies/phi.yaml, loaded once.
func testPolicy(t testing.TB) *phi.Policy {
	t.Helper()
	policyOnce.Do(func() { policyVal, policyErr = phi.LoadPolicy(policyPath) })
	if policyErr != nil {
		t.Fatal(policyErr)
	}
	return policyVal
}

// memStore is an in-memory phi.KeyStore, faithful to the PostgreSQL one
// (internal/store/phikeys.go): AddKey keeps the first writer's key and
// returns the stored one; listings are ordered by tenant, purpose, epoch.
type memStore struct {
	mu   sync.Mutex
	keys map[string]phi.StoredKey // tenant \x00 purpose \x00 epoch
	adds atomic.Int64
}

func newMemStore() *memStore { return &memStore{keys: map[string]phi.StoredKey{}} }

func storeKey(tenant, purpose string, epoch int) string {
	return fmt.Sprintf("%s\x00%s\x00%d", tenant, purpose, epoch)
}

func sortKeys(ks []phi.StoredKey) []phi.StoredKey {
	slices.SortFunc(ks, func(a, b phi.StoredKey) int {
		if c := strings.Compare(a.Tenant, b.Tenant); c != 0 {
			return c
		}
		if c := strings.Compare(a.Purpose, b.Purpose); c != 0 {
			return c
		}
		return a.Epoch - b.Epoch
	})
	return ks
}

func (s *memStore) TenantKeys(ctx context.Context, tenant string) ([]phi.StoredKey, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []phi.StoredKey
	for _, k := range s.keys {
		if k.Tenant == tenant {
			out = append(out, k)
		}
	}
	return sortKeys(out), nil
}

func (s *memStore) AddKey(ctx context.Context, k phi.StoredKey) (phi.StoredKey, error) {
	if err := ctx.Err(); err != nil {
		return phi.StoredKey{}, err
	}
	s.adds.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	name := storeKey(k.Tenant, k.Purpose, k.Epoch)
	if got, ok := s.keys[name]; ok {
		return got, nil // ON CONFLICT DO NOTHING, then read the winner
	}
	s.keys[name] = k
	return k, nil
}

func (s *memStore) AllKeys(ctx context.Context) ([]phi.StoredKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]phi.StoredKey, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, k)
	}
	return sortKeys(out), nil
}

func (s *memStore) UpdateWrapped(ctx context.Context, ks []phi.StoredKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range ks {
		name := storeKey(k.Tenant, k.Purpose, k.Epoch)
		old, ok := s.keys[name]
		if !ok {
			return fmt.Errorf("memstore: no key %s/%s/%d", k.Tenant, k.Purpose, k.Epoch)
		}
		old.Wrapped = k.Wrapped
		s.keys[name] = old
	}
	return nil
}

func (s *memStore) DestroyTenantKeys(ctx context.Context, tenant string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for name, k := range s.keys {
		if k.Tenant == tenant {
			delete(s.keys, name)
			n++
		}
	}
	return n, nil
}

// copyTenant stores a copy of from's keys under tenant to (same wrapped
// keys, so the same data keys): to test that the AAD binds the tenant.
func (s *memStore) copyTenant(from, to string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range slices.Collect(maps.Values(s.keys)) {
		if k.Tenant == from {
			k.Tenant = to
			s.keys[storeKey(k.Tenant, k.Purpose, k.Epoch)] = k
		}
	}
}

func (s *memStore) count(tenant, purpose string) int {
	ks, _ := s.TenantKeys(context.Background(), tenant)
	n := 0
	for _, k := range ks {
		if k.Purpose == purpose {
			n++
		}
	}
	return n
}

// testProvider wraps a real provider: it counts calls, can be switched to
// fail as an unreachable Vault does (phi.ErrUnavailable), and records every
// plaintext data key it handed out (to check that evicted keys are zeroed).
type testProvider struct {
	phi.KeyProvider
	down             atomic.Bool
	newKeys, unwraps atomic.Int64
	unwrappedKeys    atomic.Int64
	mu               sync.Mutex
	handedOut        [][]byte
	unwrapDelay      time.Duration
	newKeyDelay      time.Duration
}

func (p *testProvider) record(raws ...[]byte) {
	p.mu.Lock()
	p.handedOut = append(p.handedOut, raws...)
	p.mu.Unlock()
}

func (p *testProvider) outage(op string) error {
	return fmt.Errorf("test provider: %s: dial tcp 127.0.0.1:8200: connection refused: %w", op, phi.ErrUnavailable)
}

func (p *testProvider) NewDataKey(ctx context.Context) ([]byte, string, error) {
	p.newKeys.Add(1)
	if p.newKeyDelay > 0 {
		time.Sleep(p.newKeyDelay)
	}
	if p.down.Load() {
		return nil, "", p.outage("new data key")
	}
	raw, w, err := p.KeyProvider.NewDataKey(ctx)
	if err == nil {
		p.record(raw)
	}
	return raw, w, err
}

func (p *testProvider) Unwrap(ctx context.Context, wrapped []string) ([][]byte, error) {
	p.unwraps.Add(1)
	if p.unwrapDelay > 0 {
		time.Sleep(p.unwrapDelay)
	}
	if p.down.Load() {
		return nil, p.outage("unwrap")
	}
	raws, err := p.KeyProvider.Unwrap(ctx, wrapped)
	if err == nil {
		p.unwrappedKeys.Add(int64(len(raws)))
		p.record(raws...)
	}
	return raws, err
}

func (p *testProvider) Rewrap(ctx context.Context, wrapped []string) ([]string, error) {
	if p.down.Load() {
		return nil, p.outage("rewrap")
	}
	return p.KeyProvider.Rewrap(ctx, wrapped)
}

// newKeyring opens a fresh local keyring in a temporary directory.
func newKeyring(t testing.TB) *keyring.Keyring {
	t.Helper()
	k, err := keyring.Open(filepath.Join(t.TempDir(), "k.json"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// env is a Service over a keyring, a memStore and a testProvider.
type env struct {
	svc   *phi.Service
	store *memStore
	prov  *testProvider
	opt   phi.KeyOptions
}

func newEnv(t testing.TB, opt phi.KeyOptions) *env {
	t.Helper()
	e := &env{store: newMemStore(), prov: &testProvider{KeyProvider: newKeyring(t)}, opt: opt}
	e.svc = phi.NewService(testPolicy(t), phi.NewKeys(e.prov, e.store, opt))
	return e
}

// restart returns a Service as another process (or this one after a
// restart) would have it: same store and provider, cold cache.
func (e *env) restart(t testing.TB) *phi.Service {
	return phi.NewService(testPolicy(t), phi.NewKeys(e.prov, e.store, e.opt))
}

// compact compacts JSON text, failing the test on an error.
func compact(t testing.TB, s string) []byte {
	t.Helper()
	b, err := fhir.Compact([]byte(s))
	if err != nil {
		t.Fatalf("compact %s: %v", s, err)
	}
	return b
}

// sealRes seals a compact resource body, reading its type and id.
func sealRes(t testing.TB, svc *phi.Service, tenant string, body []byte) []byte {
	t.Helper()
	r, err := fhir.ParseCompacted(body)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := svc.Seal(t.Context(), tenant, r.Type, r.ID, body, nil)
	if err != nil {
		t.Fatalf("Seal %s/%s: %v", r.Type, r.ID, err)
	}
	return out
}

// isSealedString reports whether a decoded JSON value is a sealed value.
func isSealedString(v any) bool {
	s, ok := v.(string)
	if !ok {
		return false
	}
	b, _ := json.Marshal(s)
	return phi.Sealed(b) && bytes.HasPrefix(b, []byte(`"\u00`))
}

// leaks walks a sealed body (decoded: member names unescaped) and returns
// the paths of PHI elements, by the policy, that are not sealed values. It
// is independent of the sealer: it decides by Policy.ElementPHI from each
// resource's root, re-rooting at contained resources and Bundle entries.
func leaks(pol *phi.Policy, sealed []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(sealed))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var out []string
	rt, _ := v["resourceType"].(string)
	walkResource(pol, v, rt, rt, &out)
	return out, nil
}

func walkResource(pol *phi.Policy, obj map[string]any, rt, path string, out *[]string) {
	for _, k := range sortedKeys(obj) {
		walkMember(pol, rt, nil, k, obj[k], path, out)
	}
}

func walkMember(pol *phi.Policy, rt string, steps []string, name string, v any, path string, out *[]string) {
	if name == "resourceType" && steps == nil {
		return
	}
	base := strings.TrimPrefix(name, "_")
	s2 := append(slices.Clip(steps), base)
	path += "." + name
	if pol.ElementPHI(rt, s2) {
		if v != nil && !isSealedString(v) {
			*out = append(*out, path)
		}
		return
	}
	if !known(rt, s2) {
		return // kept as it is by the sealer; validation refuses unknown elements before Seal
	}
	walkValue(pol, rt, s2, name, v, path, false, out)
}

// known reports whether steps (member names from the root of a resource
// of type rt) name an element.
func known(rt string, steps []string) bool {
	st, ok := spec.StructOf(rt)
	for _, name := range steps {
		if !ok || st == nil {
			return false
		}
		m, found := st.Member(name)
		if !found {
			return false
		}
		st, ok = m.Struct, m.Struct != nil
	}
	return true
}

// resourceMembers are the members whose values are resources (contained,
// Bundle.entry.resource, Parameters.parameter.resource, ...outcome).
var resourceMembers = map[string]bool{"contained": true, "resource": true, "outcome": true}

func walkValue(pol *phi.Policy, rt string, steps []string, name string, v any, path string, inArray bool, out *[]string) {
	switch x := v.(type) {
	case []any:
		for i, el := range x {
			walkValue(pol, rt, steps, name, el, fmt.Sprintf("%s[%d]", path, i), true, out)
		}
	case map[string]any:
		if t, ok := x["resourceType"].(string); ok && spec.IsResourceType(t) && resourceMembers[name] {
			walkResource(pol, x, t, path+"("+t+")", out)
			return
		}
		if inArray && (name == "extension" || name == "modifierExtension") {
			if u, ok := x["url"].(string); ok && pol.Extension(u) {
				*out = append(*out, path+" (extension "+u+")")
				return
			}
		}
		for _, k := range sortedKeys(x) {
			walkMember(pol, rt, steps, k, x[k], path, out)
		}
	}
}

func sortedKeys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

// --- Policy ---

func TestPolicyFile(t *testing.T) {
	p := testPolicy(t)
	if p.Version != 1 || p.TokenBytes != 12 || p.MinYear != 1850 || len(p.Digest) != 16 {
		t.Fatalf("policy: version %d, token bytes %d, min year %d, digest %q", p.Version, p.TokenBytes, p.MinYear, p.Digest)
	}
	for _, dt := range []string{"HumanName", "Address", "ContactPoint", "Attachment", "Narrative", "Annotation"} {
		if !p.Datatype(dt) {
			t.Errorf("datatype %s is not PHI", dt)
		}
	}
	for _, dt := range []string{"Coding", "Reference", "Identifier", "Period"} {
		if p.Datatype(dt) {
			t.Errorf("datatype %s is PHI everywhere", dt)
		}
	}
	if !p.Extension("http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName") || p.Extension("http://example.org/x") {
		t.Error("extension URLs")
	}
	for _, c := range []struct {
		typ   string
		steps []string
		want  bool
	}{
		{"Patient", []string{"name", "family"}, true},
		{"Patient", []string{"birthDate"}, true},
		{"Patient", []string{"deceasedDateTime"}, true},
		{"Patient", []string{"deceasedBoolean"}, true},
		{"Patient", []string{"multipleBirthInteger"}, true},
		{"Patient", []string{"contact", "relationship"}, true},
		{"Patient", []string{"identifier", "value"}, true},
		{"Patient", []string{"gender"}, false},
		{"Patient", []string{"active"}, false},
		{"Patient", []string{"managingOrganization", "reference"}, false},
		{"Patient", []string{"managingOrganization", "display"}, true},
		{"Patient", []string{"extension", "valueAddress", "city"}, true},
		{"Patient", []string{"extension", "valueCode"}, false},
		{"Observation", []string{"valueString"}, true},
		{"Observation", []string{"valueQuantity"}, false},
		{"Observation", []string{"code", "coding", "code"}, false},
		{"Observation", []string{"subject", "display"}, true},
		{"Observation", []string{"note", "text"}, true},
		{"Observation", []string{"nosuch"}, false},
		{"NoSuchType", []string{"name"}, false},
	} {
		if got := p.ElementPHI(c.typ, c.steps); got != c.want {
			t.Errorf("ElementPHI(%s, %v) = %v, want %v", c.typ, c.steps, got, c.want)
		}
	}
	if _, err := phi.LoadPolicy(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("LoadPolicy of a missing file: %v", err)
	}
}

func TestParsePolicyErrors(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"unknown datatype", "version: 1\ndatatypes: [HumanNam]\n", []string{"datatypes", `"HumanNam"`}},
		{"primitive datatype", "version: 1\ndatatypes: [string]\n", []string{"datatypes", `"string"`}},
		{"unknown resource type", "version: 1\nresources:\n  Patien: [birthDate]\n", []string{"resources", `"Patien"`}},
		{"datatype as resource", "version: 1\nresources:\n  HumanName: [family]\n", []string{"resources", `"HumanName"`}},
		{"unknown element", "version: 1\nresources:\n  Patient: [birthdate]\n", []string{"resources.Patient", `"birthdate"`}},
		{"not a choice", "version: 1\nresources:\n  Patient: [\"gender[x]\"]\n", []string{"resources.Patient", `"gender[x]"`}},
		{"unknown datatype element", "version: 1\ndatatype_elements:\n  Reference: [displayName]\n", []string{"datatype_elements.Reference", `"displayName"`}},
		{"unknown datatype owner", "version: 1\ndatatype_elements:\n  Referenc: [display]\n", []string{"datatype_elements", `"Referenc"`}},
		{"bad version", "version: 2\n", []string{"version", "2"}},
		{"no version", "datatypes: [HumanName]\n", []string{"version", "0"}},
		{"unknown key", "version: 1\nresource:\n  Patient: [birthDate]\n", []string{"resource"}},
		{"unknown nested key", "version: 1\nblind_index:\n  token_byte: 12\n", []string{"token_byte"}},
		{"short tokens", "version: 1\nblind_index:\n  token_bytes: 4\n", []string{"blind_index.token_bytes", "4"}},
		{"long tokens", "version: 1\nblind_index:\n  token_bytes: 33\n", []string{"blind_index.token_bytes", "33"}},
		{"min year", "version: 1\nblind_index:\n  min_year: 3000\n", []string{"blind_index.min_year", "3000"}},
		{"refuse an unknown parameter", "version: 1\nblind_index:\n  refuse: [phonetik]\n", []string{"blind_index.refuse", "phonetik"}},
		{"relative extension", "version: 1\nextensions: [patient-mothersMaidenName]\n", []string{"extensions", `"patient-mothersMaidenName"`}},
		{"not yaml", "version: [1\n", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := phi.ParsePolicy([]byte(c.yaml))
			if err == nil {
				t.Fatalf("ParsePolicy accepted %q", c.yaml)
			}
			if p != nil {
				t.Error("a policy was returned with the error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// The smallest valid policy and its defaults.
	p, err := phi.ParsePolicy([]byte("version: 1\n"))
	if err != nil || p.TokenBytes != 12 || p.MinYear != 1850 {
		t.Fatalf("minimal policy: %+v, %v", p, err)
	}
	p, err = phi.ParsePolicy([]byte("version: 1\nresources:\n  Patient: [\"deceased[x]\"]\nextensions: [\"urn:oid:1.2.3\"]\n"))
	if err != nil || !p.ElementPHI("Patient", []string{"deceasedBoolean"}) || !p.Extension("urn:oid:1.2.3") {
		t.Fatalf("choice element and urn extension: %v", err)
	}
}

// --- Protection ---

func TestProtection(t *testing.T) {
	svc := newEnv(t, phi.KeyOptions{}).svc
	for _, c := range []struct {
		typ, code string
		want      search.Protection
	}{
		{"Patient", "family", search.Blind},
		{"Patient", "given", search.Blind},
		{"Patient", "name", search.Blind},
		{"Patient", "phonetic", search.Hidden}, // not an exact name match in disguise: refused
		{"RelatedPerson", "phonetic", search.Hidden},
		{"Patient", "birthdate", search.Blind},
		{"Patient", "identifier", search.Blind},
		{"Patient", "phone", search.Blind},
		{"Patient", "email", search.Blind},
		{"Patient", "telecom", search.Blind},
		{"Patient", "address", search.Blind},
		{"Patient", "address-postalcode", search.Blind},
		{"Patient", "address-city", search.Blind},
		{"Patient", "address-state", search.Blind},
		{"Patient", "death-date", search.Blind},
		{"Patient", "gender", search.Plain},
		{"Patient", "active", search.Plain},
		{"Patient", "general-practitioner", search.Plain},
		{"Patient", "address-use", search.Hidden},
		{"Observation", "code", search.Plain},
		{"Observation", "patient", search.Plain},
		{"Observation", "subject", search.Plain},
		{"Observation", "date", search.Blind}, // effective[x] is PHI (a date related to the person)
		{"Observation", "value-quantity", search.Plain},
		{"Practitioner", "name", search.Blind},
		{"Practitioner", "address-use", search.Hidden},
		{"RelatedPerson", "birthdate", search.Blind},
		{"Patient", "no-such-param", search.Plain},
	} {
		// Twice: the second answer comes from the cache.
		for range 2 {
			if got := svc.Protection(c.typ, c.code); got != c.want {
				t.Errorf("Protection(%s, %s) = %v, want %v", c.typ, c.code, got, c.want)
			}
		}
	}
	// Patient "deceased" (a boolean token over deceased[x], which is PHI)
	// is not compiled (its FHIRPath uses !=), so it has no index rows at
	// all and cannot be searched: nothing of it can leak through the index.
	if p := search.Lookup("Patient", "deceased"); p == nil || p.Unsupported == "" || len(p.Paths()) != 0 {
		t.Fatalf("Patient deceased is now a supported parameter: its protection must be Hidden; update this test")
	}
	if got := svc.Protection("Patient", "deceased"); got == search.Blind {
		t.Errorf("Protection(Patient, deceased) = Blind: a boolean must never be blind-indexed")
	}
}

// --- Sealing: round trip and placement ---

func TestRoundTripExamples(t *testing.T) {
	files, err := filepath.Glob("../api/testdata/fhir-examples/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 649 {
		t.Fatalf("%d example files, want the 649 official R4 examples", len(files))
	}
	e := newEnv(t, phi.KeyOptions{})
	pol := testPolicy(t)
	ctx := t.Context()
	withSealed, values := 0, int64(0)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		body, err := fhir.Compact(raw)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		r, err := fhir.ParseCompacted(body)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		id := r.ID
		if id == "" {
			id = "no-id"
		}
		entries := search.Extract(r.Type, r.Content)
		sealed, epoch, err := e.svc.Seal(ctx, "examples", r.Type, id, body, &entries)
		if err != nil {
			t.Fatalf("%s: Seal: %v", f, err)
		}
		if (epoch != 0) != phi.Sealed(sealed) || (epoch == 0 && !bytes.Equal(sealed, body)) {
			t.Fatalf("%s: epoch %d, sealed %v, unchanged %v", f, epoch, phi.Sealed(sealed), bytes.Equal(sealed, body))
		}
		if epoch != 0 {
			withSealed++
			if !json.Valid(sealed) {
				t.Fatalf("%s: the sealed body is not valid JSON", f)
			}
		}
		if l, err := leaks(pol, sealed); err != nil || len(l) > 0 {
			t.Errorf("%s: PHI left in plaintext at %v (%v)", f, l, err)
		}
		checkEntries(t, f, e.svc, r.Type, &entries)
		opened, err := e.svc.Open(ctx, "examples", r.Type, id, sealed)
		if err != nil {
			t.Fatalf("%s: Open: %v", f, err)
		}
		if !bytes.Equal(opened, body) {
			t.Fatalf("%s: Open(Seal(body)) differs from body", f)
		}
	}
	sealedVals, openedBodies := e.svc.Counts()
	values = sealedVals
	t.Logf("%d of %d examples had PHI sealed (%d values); %d bodies opened", withSealed, len(files), values, openedBodies)
	// Most examples name a patient, practitioner or organisation somewhere
	// (narrative alone is PHI), but terminology and conformance resources
	// carry none.
	if withSealed < len(files)/2 || withSealed == len(files) {
		t.Errorf("%d of %d examples had PHI sealed: not plausible", withSealed, len(files))
	}
	if int(openedBodies) != withSealed {
		t.Errorf("Counts: %d bodies opened, want %d", openedBodies, withSealed)
	}
}

// checkEntries checks index entries after Seal applied the blind index:
// no plaintext rows of protected parameters remain, and blind tokens
// belong to Blind parameters only.
func checkEntries(t *testing.T, where string, svc *phi.Service, typ string, e *search.Entries) {
	t.Helper()
	plain := func(kind, param string) {
		if p := svc.Protection(typ, param); p != search.Plain {
			t.Errorf("%s: %s row of %s parameter %s left in plaintext", where, kind, protName(p), param)
		}
	}
	for _, x := range e.Tokens {
		plain("token", x.Param)
	}
	for _, x := range e.Strings {
		plain("string", x.Param)
	}
	for _, x := range e.Dates {
		plain("date", x.Param)
	}
	for _, x := range e.References {
		plain("reference", x.Param)
	}
	for _, x := range e.Numbers {
		plain("number", x.Param)
	}
	for _, x := range e.Quantities {
		plain("quantity", x.Param)
	}
	for _, x := range e.URIs {
		plain("uri", x.Param)
	}
	for _, b := range e.Blind {
		if p := svc.Protection(typ, b.Param); p != search.Blind || len(b.Token) != 12 {
			t.Errorf("%s: blind token of %s parameter %s, %d bytes", where, protName(p), b.Param, len(b.Token))
		}
	}
}

func protName(p search.Protection) string {
	return [...]string{"plain", "blind", "hidden"}[p]
}

const patientJSON = `{"resourceType":"Patient","id":"p1","meta":{"versionId":"1","lastUpdated":"2024-01-02T03:04:05Z"},
 "identifier":[{"system":"http://hospital.example/mrn","value":"MRN-77123"}],
 "active":true,
 "name":[{"use":"official","family":"Chalmersworth","given":["Peterius","James"]}],
 "telecom":[{"system":"phone","value":"+1 (555) 867-5309","use":"home"},{"system":"email","value":"peterius@example.org"}],
 "gender":"male",
 "birthDate":"1974-12-25",
 "address":[{"use":"home","line":["534 Erewhon St"],"city":"Pleasantville","postalCode":"3999","country":"Australia"}],
 "managingOrganization":{"reference":"Organization/1"}}`

var patientSecrets = []string{"MRN-77123", "Chalmersworth", "Peterius", "867-5309", "peterius@example.org", "1974-12-25", "534 Erewhon", "Pleasantville", "3999", "hospital.example"}

func TestSealPatient(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	body := compact(t, patientJSON)
	r, _ := fhir.ParseCompacted(body)
	entries := search.Extract("Patient", r.Content)
	sealed, epoch, err := e.svc.Seal(t.Context(), "t1", "Patient", "p1", body, &entries)
	if err != nil || epoch != 1 {
		t.Fatalf("Seal: epoch %d, %v", epoch, err)
	}
	for _, s := range patientSecrets {
		if bytes.Contains(sealed, []byte(s)) {
			t.Errorf("the sealed body contains %q", s)
		}
	}
	for _, s := range []string{`"gender":"male"`, `"active":true`, `"managingOrganization":{"reference":"Organization/1"}`, `"id":"p1"`, `"versionId":"1"`} {
		if !bytes.Contains(sealed, []byte(s)) {
			t.Errorf("the sealed body lost plaintext %s", s)
		}
	}
	if l, err := leaks(testPolicy(t), sealed); err != nil || len(l) > 0 {
		t.Errorf("PHI left in plaintext at %v (%v)", l, err)
	}
	opened, err := e.svc.Open(t.Context(), "t1", "Patient", "p1", sealed)
	if err != nil || !bytes.Equal(opened, body) {
		t.Fatalf("Open: %v\n%s", err, opened)
	}

	// Index entries: no plaintext of PHI, tokens that the same tenant's
	// Blinder computes again (after a restart too), other tenants differ.
	checkEntries(t, "Patient", e.svc, "Patient", &entries)
	for _, s := range entries.Strings {
		t.Errorf("string row left: %+v", s)
	}
	var genderRow bool
	for _, tok := range entries.Tokens {
		genderRow = genderRow || (tok.Param == "gender" && tok.Code == "male")
		if tok.Param != "gender" && tok.Param != "active" {
			t.Errorf("token row left: %+v", tok)
		}
	}
	if !genderRow {
		t.Error("the gender row was dropped")
	}
	if len(entries.Dates) != 0 {
		t.Errorf("date rows left: %+v", entries.Dates)
	}
	byParam := map[string][][]byte{}
	for _, b := range entries.Blind {
		byParam[b.Param] = append(byParam[b.Param], b.Token)
	}
	for _, want := range []struct {
		param, canon string
	}{
		{"family", "s:chalmersworth"},
		{"name", "s:peterius"},
		{"birthdate", "D:1974-12-25"},
		{"birthdate", "Y:1974"},
		{"identifier", "sc:http://hospital.example/mrn|MRN-77123"},
		{"identifier", "c:MRN-77123"},
		{"phone", "c:15558675309"},
		{"email", "c:peterius@example.org"},
		{"address-city", "s:pleasantville"},
	} {
		for i, svc := range []*phi.Service{e.svc, e.restart(t)} {
			tok, err := svc.Blinder(t.Context(), "t1").Tokens("Patient", want.param, []string{want.canon})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(byParam[want.param], func(b []byte) bool { return bytes.Equal(b, tok[0]) }) {
				t.Errorf("service %d: no blind token of %s %q among the entries", i, want.param, want.canon)
			}
		}
		other, err := e.svc.Blinder(t.Context(), "t2").Tokens("Patient", want.param, []string{want.canon})
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(byParam[want.param], func(b []byte) bool { return bytes.Equal(b, other[0]) }) {
			t.Errorf("tenant t2's token of %s %q equals tenant t1's", want.param, want.canon)
		}
	}
	// Per-parameter keys: the same canonical value under two parameters
	// gives unrelated tokens.
	b := e.svc.Blinder(t.Context(), "t1")
	f, _ := b.Tokens("Patient", "family", []string{"s:x"})
	g, _ := b.Tokens("Patient", "given", []string{"s:x"})
	if bytes.Equal(f[0], g[0]) {
		t.Error("family and given tokens of one value are equal")
	}
}

// TestSealPlacement checks that PHI is found wherever it occurs.
func TestSealPlacement(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	for _, c := range []struct {
		name    string
		body    string
		secrets []string // must not appear in the sealed body
		plain   []string // must still appear
	}{
		{"contained Patient",
			`{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},
			  "contained":[{"resourceType":"Patient","id":"cp","name":[{"family":"Containedsurname"}],"birthDate":"1961-04-12","gender":"female"}],
			  "subject":{"reference":"#cp"},"valueQuantity":{"value":72,"unit":"/min"}}`,
			[]string{"Containedsurname", "1961-04-12"},
			[]string{`"resourceType":"Patient","id":"cp"`, `"gender":"female"`, `"code":"8867-4"`, `"value":72`, `"reference":"#cp"`}},
		{"Bundle entry",
			`{"resourceType":"Bundle","id":"b1","type":"collection","entry":[
			  {"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient","id":"bp","birthDate":"1955-01-31","identifier":[{"value":"SSN-998877"}]}},
			  {"fullUrl":"urn:uuid:2","resource":{"resourceType":"Observation","id":"bo","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:1","display":"Bundlepatient Name"},"valueString":"lives with Bundlecarer"}}]}`,
			[]string{"1955-01-31", "SSN-998877", "Bundlepatient", "Bundlecarer"},
			[]string{`"fullUrl":"urn:uuid:1"`, `"reference":"urn:uuid:1"`, `"status":"final"`}},
		{"primitive extension",
			`{"resourceType":"Patient","id":"p2","birthDate":"1970-03-30","_birthDate":{"extension":[{"url":"http://example.org/unlisted-birth-time","valueDateTime":"1970-03-30T14:35:45-05:00"}]},
			  "gender":"other","_gender":{"extension":[{"url":"http://example.org/gender-note","valueCode":"plaincode"}]}}`,
			[]string{"1970-03-30", "unlisted-birth-time", "14:35:45"},
			[]string{`"gender":"other"`, "plaincode", "http://example.org/gender-note"}},
		{"extension by URL",
			`{"resourceType":"Patient","id":"p3","extension":[{"url":"http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName","valueString":"Maidenvalue"},
			  {"url":"http://example.org/plain","valueCode":"keepme"}],"active":false}`,
			[]string{"Maidenvalue", "patient-mothersMaidenName"},
			[]string{"keepme", "http://example.org/plain", `"active":false`}},
		{"nested listed extension",
			`{"resourceType":"Observation","id":"o3","status":"final","code":{"text":"x"},"extension":[{"url":"http://example.org/outer","extension":[
			  {"url":"http://hl7.org/fhir/StructureDefinition/patient-birthPlace","valueAddress":{"city":"Birthtown"}},{"url":"inner","valueString":"innerplain"}]}]}`,
			[]string{"Birthtown", "patient-birthPlace"},
			[]string{"http://example.org/outer", "innerplain"}},
		{"PHI datatype in an unlisted extension",
			`{"resourceType":"Organization","id":"org","name":"Acme","extension":[{"url":"http://example.org/home","valueAddress":{"line":["1 Secret Lane"],"city":"Hiddenville"}},
			  {"url":"http://example.org/contact","valueContactPoint":{"system":"phone","value":"0412 555 001"}},{"url":"http://example.org/who","valueHumanName":{"family":"Extfamily"}}]}`,
			[]string{"Secret Lane", "Hiddenville", "0412 555 001", "Extfamily"},
			[]string{"http://example.org/home", "http://example.org/contact", `"name":"Acme"`}},
		{"Reference.display",
			`{"resourceType":"Observation","id":"o4","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/p1","display":"Displayname Person"},
			  "performer":[{"reference":"Practitioner/pr","display":"Dr Performername"}]}`,
			[]string{"Displayname", "Performername"},
			[]string{`"reference":"Patient/p1"`, `"reference":"Practitioner/pr"`, `"text":"Heart rate"`}},
		{"narrative and notes",
			`{"resourceType":"Condition","id":"c1","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">Narrativename</div>"},
			  "subject":{"reference":"Patient/p1"},"note":[{"text":"Notetext about the patient"}],"code":{"text":"Asthma"}}`,
			[]string{"Narrativename", "Notetext"},
			[]string{`"text":"Asthma"`}},
		{"choice and backbone elements",
			`{"resourceType":"Patient","id":"p5","deceasedDateTime":"2015-02-14T13:42:00+10:00","multipleBirthInteger":2,
			  "contact":[{"relationship":[{"text":"Contactrel"}],"name":{"family":"Contactfamily"}}],"photo":[{"data":"UGhvdG9kYXRh"}]}`,
			[]string{"2015-02-14", "Contactrel", "Contactfamily", "UGhvdG9kYXRh", `"multipleBirthInteger":2`},
			[]string{`"multipleBirthInteger":`, `"deceasedDateTime":`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := compact(t, c.body)
			sealed := sealRes(t, e.svc, "t1", body)
			for _, s := range c.secrets {
				if bytes.Contains(sealed, []byte(s)) {
					t.Errorf("the sealed body contains %q:\n%s", s, sealed)
				}
			}
			for _, s := range c.plain {
				if !bytes.Contains(sealed, []byte(s)) {
					t.Errorf("the sealed body lost plaintext %s:\n%s", s, sealed)
				}
			}
			if l, err := leaks(testPolicy(t), sealed); err != nil || len(l) > 0 {
				t.Errorf("PHI left in plaintext at %v (%v)", l, err)
			}
			r, _ := fhir.ParseCompacted(body)
			opened, err := e.svc.Open(t.Context(), "t1", r.Type, r.ID, sealed)
			if err != nil || !bytes.Equal(opened, body) {
				t.Fatalf("Open: %v\n%s", err, opened)
			}
		})
	}
}

// TestSealEscapedNames: JSON member names may be written with escapes
// ("birth\u0044ate" is birthDate to every JSON reader, and fhir.Parse
// keeps the client's spelling); they must be sealed all the same.
func TestSealEscapedNames(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	body := compact(t, `{"resourceType":"Patient","id":"p1","birth\u0044ate":"1974-12-25","\u006eame":[{"family":"Escapedname"}],
		"extension":[{"ur\u006c":"http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName","valueString":"Escapedmaiden"}],
		"contained":[{"resource\u0054ype":"Patient","id":"c","telecom":[{"value":"Escapedphone"}]}]}`)
	sealed := sealRes(t, e.svc, "t1", body)
	for _, s := range []string{"1974-12-25", "Escapedname", "Escapedmaiden", "Escapedphone"} {
		if bytes.Contains(sealed, []byte(s)) {
			t.Errorf("the sealed body contains %q:\n%s", s, sealed)
		}
	}
	if l, err := leaks(testPolicy(t), sealed); err != nil || len(l) > 0 {
		t.Errorf("PHI left in plaintext at %v (%v)", l, err)
	}
	opened, err := e.svc.Open(t.Context(), "t1", "Patient", "p1", sealed)
	if err != nil || !bytes.Equal(opened, body) {
		t.Fatalf("Open: %v\n%s", err, opened)
	}
}

func TestSealNothingToSeal(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	body := compact(t, `{"resourceType":"Basic","id":"b","code":{"text":"plain"}}`)
	out, epoch, err := e.svc.Seal(t.Context(), "t1", "Basic", "b", body, nil)
	if err != nil || epoch != 0 || !bytes.Equal(out, body) {
		t.Fatalf("Seal of a body without PHI: epoch %d, %v, %s", epoch, err, out)
	}
	opened, err := e.svc.Open(t.Context(), "t1", "Basic", "b", body)
	if err != nil || !bytes.Equal(opened, body) {
		t.Fatalf("Open of a plaintext body: %v", err)
	}
	if _, _, err := e.svc.Seal(t.Context(), "t1", "NoSuchType", "b", body, nil); err == nil || !strings.Contains(err.Error(), "NoSuchType") {
		t.Fatalf("Seal of an unknown type: %v", err)
	}
}

// TestSealRefusesMarker: a client body that already holds the sealed-value
// marker is refused (400), so a stored value is sealed iff Seal sealed it.
func TestSealRefusesMarker(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	good := sealRes(t, e.svc, "t1", compact(t, patientJSON))
	// A client replays a sealed value into a non-PHI element.
	var m map[string]any
	if err := json.Unmarshal(good, &m); err != nil {
		t.Fatal(err)
	}
	replay, _ := json.Marshal(map[string]any{"resourceType": "Patient", "id": "p1", "gender": m["birthDate"]})
	body := compact(t, string(replay))
	_, _, err := e.svc.Seal(t.Context(), "t1", "Patient", "p1", body, nil)
	if fhir.KindOf(err) != fhir.KindInvalid {
		t.Fatalf("Seal of a body holding a sealed value: %v, want a 400", err)
	}
}

// TestErrorsCarryNoPHI: every error text the package can produce for a
// sealed Patient names where, never what.
func TestErrorsCarryNoPHI(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	sealed := sealRes(t, e.svc, "t1", compact(t, patientJSON))
	var errs []error
	_, err := e.svc.Open(t.Context(), "t1", "Patient", "p2", sealed)
	errs = append(errs, err)
	_, err = e.svc.Open(t.Context(), "t1", "Person", "p1", sealed)
	errs = append(errs, err)
	e.prov.down.Store(true)
	e.svc.Keys().Flush()
	_, err = e.svc.Open(t.Context(), "t1", "Patient", "p1", sealed)
	errs = append(errs, err)
	for _, err := range errs {
		if err == nil {
			t.Fatal("no error")
		}
		for _, s := range patientSecrets {
			if strings.Contains(err.Error(), s) {
				t.Errorf("error %q contains %q", err, s)
			}
		}
	}
}
