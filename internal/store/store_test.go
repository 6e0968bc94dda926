package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fhirgate/fhirgate/internal/database/databasetest"
	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/search"
	"github.com/fhirgate/fhirgate/internal/store"
)

func parse(t *testing.T, s string) *fhir.Resource {
	t.Helper()
	r, err := fhir.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func put(t *testing.T, st *store.Store, body string, w store.Write) store.Version {
	t.Helper()
	var v store.Version
	err := st.InTx(context.Background(), "t", func(tx *store.Tx) error {
		w.Resource = parse(t, body)
		w.Method = "PUT"
		var err error
		v, err = tx.Put(context.Background(), w)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVersionsHistoryAndTombstones(t *testing.T) {
	t.Parallel()
	st := store.New(databasetest.NewPool(t))
	ctx := context.Background()
	put(t, st, `{"resourceType":"Patient","id":"p","active":true}`, store.Write{})
	v2 := put(t, st, `{"resourceType":"Patient","id":"p","active":false}`, store.Write{})
	if v2.Version != 2 {
		t.Fatalf("second write is version %d, want 2", v2.Version)
	}
	if err := st.InTx(ctx, "t", func(tx *store.Tx) error {
		_, ok, err := tx.Delete(ctx, "Patient", "p", 0)
		if !ok {
			t.Error("Delete of an existing resource reported nothing deleted")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	cur, err := st.Read(ctx, "t", "Patient", "p")
	if err != nil || !cur.Deleted || cur.Version != 3 || cur.Body != nil {
		t.Fatalf("after delete: %+v, %v; want a version 3 tombstone", cur, err)
	}
	v1, err := st.VRead(ctx, "t", "Patient", "p", 1)
	if err != nil || string(v1.Body) == "" || v1.Deleted {
		t.Fatalf("vread 1 = %+v, %v", v1, err)
	}
	h, err := st.History(ctx, "t", store.HistoryOptions{Type: "Patient", ID: "p", Count: 10})
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, v := range h.Versions {
		got = append(got, v.Version)
	}
	if len(got) != 3 || got[0] != 3 || got[1] != 2 || got[2] != 1 {
		t.Errorf("history versions = %v, want [3 2 1] (newest first)", got)
	}
	if _, err := st.Read(ctx, "other-tenant", "Patient", "p"); fhir.KindOf(err) != fhir.KindNotFound {
		t.Errorf("another tenant reads the resource: %v", err)
	}
}

func TestSkipUnchangedAndIfAbsent(t *testing.T) {
	t.Parallel()
	st := store.New(databasetest.NewPool(t))
	body := `{"resourceType":"Practitioner","id":"d","name":[{"family":"Smith"}]}`
	put(t, st, body, store.Write{})
	if v := put(t, st, body, store.Write{SkipUnchanged: true}); v.Version != 1 {
		t.Errorf("an unchanged write with SkipUnchanged made version %d", v.Version)
	}
	if v := put(t, st, `{"resourceType":"Practitioner","id":"d","name":[{"family":"SMITH"}]}`, store.Write{IfAbsent: true}); v.Version != 1 {
		t.Errorf("IfAbsent overwrote an existing resource (version %d)", v.Version)
	}
	if v := put(t, st, `{"resourceType":"Practitioner","id":"d","name":[{"family":"SMITH"}]}`, store.Write{SkipUnchanged: true}); v.Version != 2 {
		t.Errorf("a changed write with SkipUnchanged made version %d, want 2", v.Version)
	}
}

// TestOptimisticPrefetchDetectsConcurrentWrite: a version read without a
// lock and replaced by another transaction before the flush fails the
// write with ErrRetry instead of overwriting it.
func TestOptimisticPrefetchDetectsConcurrentWrite(t *testing.T) {
	t.Parallel()
	st := store.New(databasetest.NewPool(t))
	ctx := context.Background()
	put(t, st, `{"resourceType":"Patient","id":"x","active":true}`, store.Write{})
	err := st.InTx(ctx, "t", func(tx *store.Tx) error {
		if err := tx.Prefetch(ctx, []store.Key{{Type: "Patient", ID: "x"}}, false); err != nil {
			return err
		}
		// Another writer replaces version 1 meanwhile.
		put(t, st, `{"resourceType":"Patient","id":"x","active":false}`, store.Write{})
		r := parse(t, `{"resourceType":"Patient","id":"x","gender":"other"}`)
		_, err := tx.Put(ctx, store.Write{Resource: r, Method: "PUT", Entries: search.Extract(r.Type, r.Content)})
		return err
	})
	if !errors.Is(err, store.ErrRetry) {
		t.Fatalf("InTx = %v, want ErrRetry", err)
	}
	cur, _ := st.Read(ctx, "t", "Patient", "x")
	if cur.Version != 2 || string(cur.Body) == "" || !strings.Contains(string(cur.Body), `"active":false`) {
		t.Errorf("the concurrent writer's version was overwritten: %+v %s", cur, cur.Body)
	}
}
