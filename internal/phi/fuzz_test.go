package phi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/phi"
)

// fuzzEnv is one Service shared by the fuzz iterations, with tenant t1's
// keys made (so inputs reach decryption, not just the key lookup).
func fuzzEnv(f *testing.F) *env {
	e := newEnv(f, phi.KeyOptions{})
	if _, _, err := e.svc.Seal(context.Background(), "t1", "Patient", "p1", compact(f, patientJSON), nil); err != nil {
		f.Fatal(err)
	}
	return e
}

// FuzzOpen: arbitrary bytes as a stored body or blob never panic, and
// what does not hold the marker comes back unchanged.
func FuzzOpen(f *testing.F) {
	e := fuzzEnv(f)
	ctx := context.Background()
	sealed, _, err := e.svc.Seal(ctx, "t1", "Patient", "p1", compact(f, patientJSON), nil)
	if err != nil {
		f.Fatal(err)
	}
	blob, _, err := e.svc.SealBlob(ctx, "t1", "hl7", "p1", []byte("MSH|^~\\&|A"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed)
	f.Add(sealed[:len(sealed)/2])
	f.Add(sealed[:len(sealed)-2])
	f.Add(blob)
	f.Add(blob[:len(blob)-3])
	f.Add([]byte(`"\u0001fg1.`))
	f.Add([]byte(`{"a":"\u0001fg1.`))
	f.Add([]byte(`{"a":"\u0001fg1.1.AAAA`))
	f.Add([]byte(`["\u0001fg1.1.","\u0001fg1.x"]`))
	f.Add([]byte(`{"a":{"b":["\u0001fg1.2.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]}}`))
	f.Add([]byte("fg1.1."))
	f.Add([]byte("fg1."))
	f.Add([]byte("fg1.99999999999999999999999.AAAA"))
	f.Add([]byte(`{  "a" : [ 1 , "\u0001fg1.1.Q" ] , "b":`))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		out, err := e.svc.Open(ctx, "t1", "Patient", "p1", b)
		if !bytes.Equal(b, in) {
			t.Fatal("Open modified its input")
		}
		if !phi.Sealed(b) && (err != nil || !bytes.Equal(out, b)) {
			t.Fatalf("Open of a body without sealed values: %v, %q", err, out)
		}
		if err != nil && out != nil {
			t.Fatal("Open returned a body with its error")
		}
		out, err = e.svc.OpenBlob(ctx, "t1", "hl7", "p1", b)
		if !phi.IsSealedBlob(b) && (err != nil || !bytes.Equal(out, b)) {
			t.Fatalf("OpenBlob of a plaintext blob: %v", err)
		}
		if err != nil && out != nil {
			t.Fatal("OpenBlob returned a value with its error")
		}
		_ = phi.BlobEpoch(b)
	})
}

// FuzzSealRoundTrip: any Patient that fhir.Parse accepts opens to exactly
// what was sealed, the sealed body is valid JSON, and no PHI element (by
// the policy, read with decoded member names) is left in plaintext.
func FuzzSealRoundTrip(f *testing.F) {
	e := fuzzEnv(f)
	pol := testPolicy(f)
	ctx := context.Background()
	f.Add([]byte(patientJSON))
	f.Add([]byte(`{"resourceType":"Patient"}`))
	f.Add([]byte(`{"resourceType":"Patient","id":"x","birth\u0044ate":"1970","_birthDate":null}`))
	f.Add([]byte(`{"resourceType":"Patient","contained":[{"resourceType":"Patient","name":[{"text":"a"}]}],"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/patient-birthPlace","valueString":"x"}]}`))
	f.Add([]byte(`{"resourceType":"Patient","name":"notanarray","telecom":{},"address":[null,1,"x"],"_gender":[{"extension":1}],"extension":{"url":"u"}}`))
	f.Add([]byte(`{"resourceType":"Patient","gender":"\u0001fg1.1.AAAA"}`))
	files, _ := filepath.Glob("../api/testdata/fhir-examples/Patient-*.json")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := fhir.Parse(b)
		if err != nil || r.Type != "Patient" {
			return
		}
		body := r.Bytes()
		id := r.ID
		if !fhir.ValidID(id) {
			id = "p1"
		}
		sealed, epoch, err := e.svc.Seal(ctx, "t1", "Patient", id, body, nil)
		if phi.Sealed(body) {
			if fhir.KindOf(err) != fhir.KindInvalid {
				t.Fatalf("Seal of a body holding the marker: %v, want a 400", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		if !json.Valid(sealed) {
			t.Fatalf("the sealed body is not valid JSON:\n%s", sealed)
		}
		if epoch == 0 && !bytes.Equal(sealed, body) {
			t.Fatal("epoch 0 but the body changed")
		}
		l, err := leaks(pol, sealed)
		if err != nil {
			t.Fatal(err)
		}
		if len(l) > 0 {
			t.Fatalf("PHI left in plaintext at %v:\n%s", l, sealed)
		}
		opened, err := e.svc.Open(ctx, "t1", "Patient", id, sealed)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !bytes.Equal(opened, body) {
			t.Fatalf("round trip differs:\n in: %s\nout: %s", body, opened)
		}
	})
}
