package phi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/phi"
)

// Tampering: a sealed value opens only in the tenant, resource type,
// resource id and element it was sealed for, under its own key.

// members returns the top-level members of a compact object by name.
func members(t *testing.T, body []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, m := range fhir.Members(body) {
		out[m.Key] = m.Value
	}
	return out
}

// withMember returns body with member key's value replaced (compact JSON
// in, compact JSON out, member order kept).
func withMember(t *testing.T, body []byte, key string, val []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteByte('{')
	found := false
	for i, m := range fhir.Members(body) {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.Key)
		b.Write(k)
		b.WriteByte(':')
		if m.Key == key {
			b.Write(val)
			found = true
		} else {
			b.Write(m.Value)
		}
	}
	b.WriteByte('}')
	if !found {
		t.Fatalf("no member %s", key)
	}
	return b.Bytes()
}

// checkOpenFails opens body and checks the error: it wraps want, names
// the resource and (when given) the element path, and quotes no PHI.
func checkOpenFails(t *testing.T, svc *phi.Service, tenant, typ, id string, body []byte, want error, path string) {
	t.Helper()
	out, err := svc.Open(t.Context(), tenant, typ, id, body)
	if err == nil {
		t.Fatalf("Open(%s, %s/%s) succeeded: %s", tenant, typ, id, out)
	}
	if out != nil {
		t.Errorf("Open returned a body with its error")
	}
	if want != nil && !errors.Is(err, want) {
		t.Errorf("Open(%s, %s/%s): %v, want %v", tenant, typ, id, err, want)
	}
	msg := err.Error()
	if !strings.Contains(msg, typ+"/"+id) {
		t.Errorf("error %q does not name %s/%s", msg, typ, id)
	}
	if path != "" && !strings.Contains(msg, path) {
		t.Errorf("error %q does not name the path %s", msg, path)
	}
	for _, s := range patientSecrets {
		if strings.Contains(msg, s) {
			t.Errorf("error %q contains plaintext %q", msg, s)
		}
	}
}

func TestTamperSwapWithinResource(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	sealed := sealRes(t, e.svc, "t1", compact(t, patientJSON))
	m := members(t, sealed)
	// birthDate and the whole identifier array are single sealed values.
	swapped := withMember(t, withMember(t, sealed, "birthDate", m["identifier"]), "identifier", m["birthDate"])
	checkOpenFails(t, e.svc, "t1", "Patient", "p1", swapped, phi.ErrTampered, "")
	// The first failing element is named: identifier comes first.
	_, err := e.svc.Open(t.Context(), "t1", "Patient", "p1", swapped)
	if !strings.Contains(err.Error(), "Patient/p1 identifier") {
		t.Errorf("error %q does not name Patient/p1 identifier", err)
	}
	// Array elements are bound to their index.
	two := sealRes(t, e.svc, "t1", compact(t, `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},
		"performer":[{"reference":"Practitioner/a","display":"First Doctor"},{"reference":"Practitioner/b","display":"Second Doctor"}]}`))
	var obs struct {
		Performer []struct{ Reference, Display string }
	}
	if err := json.Unmarshal(two, &obs); err != nil {
		t.Fatal(err)
	}
	d0, _ := json.Marshal(obs.Performer[0].Display)
	d1, _ := json.Marshal(obs.Performer[1].Display)
	swappedArr := bytes.Replace(bytes.Replace(two, d0, []byte("@0@"), 1), d1, d0, 1)
	swappedArr = bytes.Replace(swappedArr, []byte("@0@"), d1, 1)
	if bytes.Equal(swappedArr, two) {
		t.Fatal("the swap changed nothing")
	}
	checkOpenFails(t, e.svc, "t1", "Observation", "o1", swappedArr, phi.ErrTampered, "performer[0].display")
}

func TestTamperMoved(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	sealed := sealRes(t, e.svc, "t1", compact(t, patientJSON))
	// Another id, another type.
	checkOpenFails(t, e.svc, "t1", "Patient", "p2", sealed, phi.ErrTampered, "identifier")
	checkOpenFails(t, e.svc, "t1", "Person", "p1", sealed, phi.ErrTampered, "identifier")

	// A value moved into another resource of the same tenant.
	other := sealRes(t, e.svc, "t1", compact(t, `{"resourceType":"Patient","id":"p2","birthDate":"2001-01-01"}`))
	moved := withMember(t, other, "birthDate", members(t, sealed)["birthDate"])
	checkOpenFails(t, e.svc, "t1", "Patient", "p2", moved, phi.ErrTampered, "birthDate")

	// Another tenant, under its own keys.
	sealRes(t, e.svc, "t2", compact(t, `{"resourceType":"Patient","id":"x","birthDate":"2001-01-01"}`))
	checkOpenFails(t, e.svc, "t2", "Patient", "p1", sealed, phi.ErrTampered, "identifier")
	// Another tenant holding the very same data key: the AAD alone must
	// refuse it.
	e.store.copyTenant("t1", "t3")
	if _, err := e.svc.Open(t.Context(), "t1", "Patient", "p1", sealed); err != nil {
		t.Fatal(err)
	}
	checkOpenFails(t, e.restart(t), "t3", "Patient", "p1", sealed, phi.ErrTampered, "identifier")
	// A tenant without keys.
	checkOpenFails(t, e.svc, "t4", "Patient", "p1", sealed, phi.ErrNoKey, "identifier")
}

// sealedString returns the decoded sealed string of member key.
func sealedString(t *testing.T, body []byte, key string) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(members(t, body)[key], &s); err != nil {
		t.Fatalf("member %s is not a sealed string: %v", key, err)
	}
	return s
}

func quote(s string) []byte { b, _ := json.Marshal(s); return b }

func TestTamperCiphertext(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	sealed := sealRes(t, e.svc, "t1", compact(t, patientJSON))
	v := sealedString(t, sealed, "birthDate") // "\x01fg1.1.<base64url>"
	parts := strings.SplitN(v, ".", 3)
	if len(parts) != 3 || parts[1] != "1" || len(parts[2]) < 40 {
		t.Fatalf("sealed value %q is not <marker>fg1.<epoch>.<base64>", v)
	}
	prefix, epoch, ct := parts[0], parts[1], parts[2]
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	for _, c := range []struct {
		name, value string
		want        error
	}{
		{"truncated", prefix + "." + epoch + "." + ct[:len(ct)-4], phi.ErrTampered},
		{"truncated to nothing", prefix + "." + epoch + "." + ct[:8], phi.ErrTampered},
		{"empty ciphertext", prefix + "." + epoch + ".", phi.ErrTampered},
		{"flipped byte in the ciphertext", prefix + "." + epoch + "." + flip(ct, len(ct)/2), phi.ErrTampered},
		{"flipped byte in the nonce", prefix + "." + epoch + "." + flip(ct, 2), phi.ErrTampered},
		{"flipped byte in the tag", prefix + "." + epoch + "." + flip(ct, len(ct)-3), phi.ErrTampered},
		{"appended bytes", prefix + "." + epoch + "." + ct + "AAAA", phi.ErrTampered},
		{"not base64", prefix + "." + epoch + "." + ct[:20] + "!!" + ct[22:], phi.ErrTampered},
		{"no epoch", prefix + "." + ct, phi.ErrTampered},
		{"epoch 0", prefix + ".0." + ct, phi.ErrTampered},
		{"negative epoch", prefix + ".-1." + ct, phi.ErrTampered},
		{"unknown epoch", prefix + ".9." + ct, phi.ErrNoKey},
		{"huge epoch", prefix + ".99999999999999999999." + ct, phi.ErrTampered},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := withMember(t, sealed, "birthDate", quote(c.value))
			checkOpenFails(t, e.svc, "t1", "Patient", "p1", body, c.want, "birthDate")
		})
	}
	// The untouched body still opens.
	if _, err := e.svc.Open(t.Context(), "t1", "Patient", "p1", sealed); err != nil {
		t.Fatal(err)
	}
}

func TestTamperOtherKeyring(t *testing.T) {
	a := newEnv(t, phi.KeyOptions{})
	sealed := sealRes(t, a.svc, "t1", compact(t, patientJSON))

	// Another deployment (its own keyring and key store) has its own data
	// key for the tenant: authentication fails.
	b := newEnv(t, phi.KeyOptions{})
	sealRes(t, b.svc, "t1", compact(t, `{"resourceType":"Patient","id":"x","birthDate":"2001-01-01"}`))
	checkOpenFails(t, b.svc, "t1", "Patient", "p1", sealed, phi.ErrTampered, "identifier")

	// The same key store with another keyring: the wrapped data keys do
	// not unwrap.
	c := phi.NewService(testPolicy(t), phi.NewKeys(newKeyring(t), a.store, phi.KeyOptions{}))
	_, err := c.Open(t.Context(), "t1", "Patient", "p1", sealed)
	if !errors.Is(err, phi.ErrUnwrap) {
		t.Fatalf("Open with another keyring: %v, want phi.ErrUnwrap", err)
	}
	if fhir.KindOf(err) == fhir.KindUnavailable {
		t.Errorf("a key that does not unwrap is reported as an outage: %v", err)
	}
}

func TestBlob(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	ctx := t.Context()
	msg := []byte("MSH|^~\\&|LAB|HOSP|||20240101||ADT^A01|1|P|2.5\rPID|1||MRN-77123||Chalmersworth^Peterius||19741225|M\r")
	blob, epoch, err := e.svc.SealBlob(ctx, "t1", "hl7", "m1", msg)
	if err != nil || epoch != 1 {
		t.Fatalf("SealBlob: epoch %d, %v", epoch, err)
	}
	if !phi.IsSealedBlob(blob) || phi.BlobEpoch(blob) != 1 || !bytes.HasPrefix(blob, []byte("fg1.1.")) {
		t.Fatalf("blob %q: sealed %v, epoch %d", blob, phi.IsSealedBlob(blob), phi.BlobEpoch(blob))
	}
	for _, s := range []string{"MRN-77123", "Chalmersworth", "19741225", "PID"} {
		if bytes.Contains(blob, []byte(s)) {
			t.Errorf("blob contains %q", s)
		}
	}
	for _, svc := range []*phi.Service{e.svc, e.restart(t)} {
		got, err := svc.OpenBlob(ctx, "t1", "hl7", "m1", blob)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("OpenBlob: %v, %q", err, got)
		}
	}
	// Plaintext stored before encryption was on is returned as it is.
	if got, err := e.svc.OpenBlob(ctx, "t1", "hl7", "m1", msg); err != nil || !bytes.Equal(got, msg) || phi.BlobEpoch(msg) != 0 {
		t.Fatalf("OpenBlob of plaintext: %v", err)
	}
	sealRes(t, e.svc, "t2", compact(t, `{"resourceType":"Patient","id":"x","birthDate":"2001-01-01"}`))
	flipped := bytes.Clone(blob)
	flipped[len(flipped)/2] ^= 1
	for _, c := range []struct {
		name, tenant, kind, id string
		blob                   []byte
		want                   error
	}{
		{"another id", "t1", "hl7", "m2", blob, phi.ErrTampered},
		{"another kind", "t1", "hl7-dead", "m1", blob, phi.ErrTampered},
		{"another tenant", "t2", "hl7", "m1", blob, phi.ErrTampered},
		{"truncated", "t1", "hl7", "m1", blob[:len(blob)-5], phi.ErrTampered},
		{"cut to the header", "t1", "hl7", "m1", []byte("fg1.1."), phi.ErrTampered},
		{"flipped", "t1", "hl7", "m1", flipped, phi.ErrTampered},
		{"unknown epoch", "t1", "hl7", "m1", append([]byte("fg1.7."), blob[6:]...), phi.ErrNoKey},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := e.svc.OpenBlob(ctx, c.tenant, c.kind, c.id, c.blob)
			if !errors.Is(err, c.want) || got != nil {
				t.Fatalf("OpenBlob: %v, want %v", err, c.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.kind) || !strings.Contains(msg, c.id) {
				t.Errorf("error %q does not name %s %s", msg, c.kind, c.id)
			}
			for _, s := range []string{"MRN-77123", "Chalmersworth", "PID"} {
				if strings.Contains(msg, s) {
					t.Errorf("error %q contains plaintext %q", msg, s)
				}
			}
		})
	}
}

func TestSealedFormat(t *testing.T) {
	e := newEnv(t, phi.KeyOptions{})
	body := compact(t, patientJSON)
	a := sealRes(t, e.svc, "t1", body)
	b := sealRes(t, e.svc, "t1", body)
	if bytes.Equal(a, b) {
		t.Fatal("sealing twice gave the same bytes: nonces are not fresh")
	}
	if !phi.Sealed(a) || phi.Sealed(body) {
		t.Fatal("Sealed")
	}
	// A sealed body is valid JSON, and casts to PostgreSQL jsonb (which
	// refuses \u0000).
	if !json.Valid(a) || bytes.Contains(a, []byte(`\u0000`)) {
		t.Fatalf("sealed body is not storable JSON: %s", a)
	}
	for _, c := range []struct {
		w string
		v int
	}{{"vault:v3:abc", 3}, {"local:v12:x", 12}, {"vault:v:x", 0}, {"vault:3:x", 0}, {"novers", 0}, {"a:v1", 0}, {"a:vx:1", 0}, {"", 0}} {
		if got := phi.KeyVersion(c.w); got != c.v {
			t.Errorf("KeyVersion(%q) = %d, want %d", c.w, got, c.v)
		}
	}
}
