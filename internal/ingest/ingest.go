// Package ingest is the write path. Every route that writes resources —
// the REST API's create, update and delete, transaction and batch bundles,
// and later HL7 v2 and EMR connectors — goes through Service, which parses,
// validates, indexes and stores in one database transaction, so nothing is
// half-written.
//
// It must never log resource content (PHI); it logs types, ids and tenants.
package ingest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/url"
	"time"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/search"
	"github.com/fhirgate/fhirgate/internal/store"
)

// Store is what the write path needs of the resource store.
type Store interface {
	InTx(ctx context.Context, tenant string, fn func(*store.Tx) error) error
}

// Validator checks a resource against the FHIR definitions.
type Validator func(*fhir.Resource) error

// Service is the write path.
type Service struct {
	store    Store
	validate Validator
	retries  int
}

// New returns the write path over a store.
func New(s Store, v Validator) *Service {
	return &Service{store: s, validate: v, retries: 8}
}

// Result is the outcome of one write.
type Result struct {
	Version store.Version
	// Created is true when the write created the resource (201).
	Created bool
	// Existing is true when a conditional create matched a resource and
	// nothing was written (200).
	Existing bool
	// Unchanged is true for a delete of a resource that was already gone.
	Unchanged bool
}

// inTx runs fn in a transaction, running it again when it lost a race with
// a concurrent write (two creates of one id).
func (s *Service) inTx(ctx context.Context, tenant string, fn func(*store.Tx) error) error {
	var err error
	for attempt := 0; attempt <= s.retries; attempt++ {
		if attempt > 0 {
			// Back off a little, randomly, so that racing writers of the
			// same resources do not collide again in lockstep.
			d := time.Duration(attempt) * time.Duration(1+mrand.IntN(5)) * time.Millisecond
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		err = s.store.InTx(ctx, tenant, fn)
		if !errors.Is(err, store.ErrRetry) {
			return err
		}
	}
	return fhir.Errorf(fhir.KindConflict, "", "the resource was changed concurrently; try again").Wrap(err)
}

// prepare validates a resource about to be written and derives its index.
func (s *Service) prepare(r *fhir.Resource, expr string) (search.Entries, error) {
	if s.validate != nil {
		if err := s.validate(r); err != nil {
			return search.Entries{}, prefixExpr(err, expr)
		}
	}
	return search.Extract(r.Type, r.Content), nil
}

// Create stores a new resource with a server-assigned id. With
// ifNoneExist (a search query string), it first looks for a match and
// stores nothing when exactly one exists; two or more matches are a 412.
func (s *Service) Create(ctx context.Context, tenant string, r *fhir.Resource, ifNoneExist string) (Result, error) {
	var cond *search.Query
	if ifNoneExist != "" {
		q, err := conditionQuery(r.Type, ifNoneExist, "If-None-Exist")
		if err != nil {
			return Result{}, err
		}
		cond = q
	}
	entries, err := s.prepare(r, "")
	if err != nil {
		return Result{}, err
	}
	var res Result
	err = s.inTx(ctx, tenant, func(tx *store.Tx) error {
		res = Result{}
		if cond != nil {
			existing, err := findLocked(ctx, tx, r.Type, cond, "If-None-Exist")
			if err != nil {
				return err
			}
			if existing != nil {
				res = Result{Version: *existing, Existing: true}
				return nil
			}
		}
		r.SetID(NewID())
		v, err := tx.Put(ctx, store.Write{Resource: r, Entries: entries, Method: "POST", New: true})
		res = Result{Version: v, Created: true}
		return err
	})
	return res, err
}

// Update stores a new version of typ/id; when the resource does not exist
// it is created with the client's id (update as create).
func (s *Service) Update(ctx context.Context, tenant, typ, id string, r *fhir.Resource, ifMatch int64) (Result, error) {
	if err := checkBodyID(r, typ, id); err != nil {
		return Result{}, err
	}
	entries, err := s.prepare(r, "")
	if err != nil {
		return Result{}, err
	}
	var res Result
	err = s.inTx(ctx, tenant, func(tx *store.Tx) error {
		v, err := tx.Put(ctx, store.Write{Resource: r, Entries: entries, Method: "PUT", IfMatch: ifMatch})
		res = Result{Version: v, Created: v.Version == 1}
		return err
	})
	return res, err
}

// ConditionalUpdate updates the one resource matching query: none creates
// (with the body's id if it has one, else a new id), more than one is 412.
func (s *Service) ConditionalUpdate(ctx context.Context, tenant, typ, query string, r *fhir.Resource, ifMatch int64) (Result, error) {
	if r.Type != typ {
		return Result{}, fhir.Errorf(fhir.KindInvalid, "resourceType", "resourceType %s does not match the URL's %s", r.Type, typ)
	}
	q, err := conditionQuery(typ, query, "search")
	if err != nil {
		return Result{}, err
	}
	entries, err := s.prepare(r, "")
	if err != nil {
		return Result{}, err
	}
	var res Result
	err = s.inTx(ctx, tenant, func(tx *store.Tx) error {
		existing, err := findLocked(ctx, tx, typ, q, "conditional update")
		if err != nil {
			return err
		}
		w := store.Write{Resource: r, Entries: entries, Method: "PUT", IfMatch: ifMatch}
		switch {
		case existing != nil:
			if r.ID != "" && r.ID != existing.ID {
				return fhir.Errorf(fhir.KindInvalid, typ+".id", "the body's id does not match the resource the condition found")
			}
			r.SetID(existing.ID)
		case r.ID == "":
			r.SetID(NewID())
			w.New = true
		case !fhir.ValidID(r.ID):
			return fhir.Errorf(fhir.KindInvalid, typ+".id", "id is not a valid FHIR id")
		}
		v, err := tx.Put(ctx, w)
		res = Result{Version: v, Created: v.Version == 1}
		return err
	})
	return res, err
}

// Delete writes a tombstone for typ/id.
func (s *Service) Delete(ctx context.Context, tenant, typ, id string, ifMatch int64) (Result, error) {
	var res Result
	err := s.inTx(ctx, tenant, func(tx *store.Tx) error {
		v, ok, err := tx.Delete(ctx, typ, id, ifMatch)
		res = Result{Version: v, Unchanged: !ok}
		return err
	})
	return res, err
}

// ConditionalDelete deletes the resources matching query: with multiple
// false, more than one match is a 412; with multiple true, up to max are
// deleted and more than max is a 412 (too costly).
func (s *Service) ConditionalDelete(ctx context.Context, tenant, typ, query string, multiple bool, max int) (int, error) {
	q, err := conditionQuery(typ, query, "search")
	if err != nil {
		return 0, err
	}
	limit := 2
	if multiple {
		limit = max + 1
	}
	n := 0
	err = s.inTx(ctx, tenant, func(tx *store.Tx) error {
		n = 0
		if err := tx.Lock(ctx, "cond:"+typ+"?"+q.Canonical().Encode()); err != nil {
			return err
		}
		found, err := tx.Find(ctx, q, limit)
		if err != nil {
			return err
		}
		if len(found) >= limit {
			if multiple {
				return fhir.Errorf(fhir.KindPreconditionFailed, "", "the condition matches more than %d resources", max).WithCode("too-costly")
			}
			return fhir.Errorf(fhir.KindPreconditionFailed, "", "the condition matches more than one resource").WithCode("multiple-matches")
		}
		for _, v := range found {
			if _, ok, err := tx.Delete(ctx, typ, v.ID, 0); err != nil {
				return err
			} else if ok {
				n++
			}
		}
		return nil
	})
	return n, err
}

// conditionQuery parses a conditional operation's search, strictly: an
// unknown parameter must not silently widen the match.
func conditionQuery(typ, query, what string) (*search.Query, error) {
	vals, err := url.ParseQuery(query)
	if err != nil {
		return nil, fhir.Errorf(fhir.KindInvalid, "", "%s is not a valid query string", what)
	}
	if len(vals) == 0 {
		return nil, fhir.Errorf(fhir.KindInvalid, "", "%s has no search parameters", what)
	}
	q, err := search.Parse(typ, vals, true)
	if err != nil {
		return nil, err
	}
	return q, nil
}

// findLocked serializes on the condition (so two concurrent conditional
// creates cannot both see no match) and returns the single match, nil for
// none, or a 412 for several.
func findLocked(ctx context.Context, tx *store.Tx, typ string, q *search.Query, what string) (*store.Version, error) {
	if err := tx.Lock(ctx, "cond:"+typ+"?"+q.Canonical().Encode()); err != nil {
		return nil, err
	}
	found, err := tx.Find(ctx, q, 2)
	if err != nil {
		return nil, err
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return &found[0], nil
	}
	return nil, fhir.Errorf(fhir.KindPreconditionFailed, "", "%s matches more than one %s", what, typ).WithCode("multiple-matches")
}

func checkBodyID(r *fhir.Resource, typ, id string) error {
	if r.Type != typ {
		return fhir.Errorf(fhir.KindInvalid, "resourceType", "resourceType %s does not match the URL's %s", r.Type, typ)
	}
	if !fhir.ValidID(id) {
		return fhir.Errorf(fhir.KindInvalid, "", "the URL's id is not a valid FHIR id")
	}
	if r.ID == "" {
		return fhir.Errorf(fhir.KindInvalid, typ+".id", "the resource has no id; an update must carry the id of the URL").WithCode("required")
	}
	if r.ID != id {
		return fhir.Errorf(fhir.KindInvalid, typ+".id", "the resource's id does not match the URL's id")
	}
	return nil
}

// prefixExpr rewrites the expressions of a validation error to sit under
// expr (a Bundle entry), leaving other errors alone.
func prefixExpr(err error, expr string) error {
	var fe *fhir.Error
	if expr == "" || !errors.As(err, &fe) {
		return err
	}
	out := &fhir.Error{Kind: fe.Kind, Err: fe.Err}
	for _, is := range fe.Issues {
		is2 := is
		is2.Expression = nil
		for _, e := range is.Expression {
			is2.Expression = append(is2.Expression, expr+"."+e)
		}
		if len(is2.Expression) == 0 {
			is2.Expression = []string{expr}
		}
		out.Issues = append(out.Issues, is2)
	}
	return out
}

// NewID returns a new server-assigned id: a random (version 4) UUID.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("ingest: crypto/rand failed: %v", err)) // the runtime guarantees it does not
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
