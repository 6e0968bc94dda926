// Package store keeps FHIR resources in PostgreSQL: the current version of
// each resource, every prior version, tombstones for deletes, and the search
// index rows derived from each current version.
//
// Writes are buffered per transaction and flushed as one round trip of
// set-based statements, so a transaction bundle of hundreds of resources
// costs a handful of statements, not one per resource. The store trusts its
// callers (ingest, retrieve) to have validated and authorized the request;
// it must never log resource bodies, which hold PHI.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/search"
)

// Store is the PostgreSQL resource store. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	now    func() time.Time
	sealer Sealer
}

// New returns a store over a migrated database.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, now: time.Now}
}

// Sealer encrypts PHI before it is stored (internal/phi). With a Sealer,
// every body and raw message is sealed on write; the store's own read
// methods (Read, Search, History, ...) return sealed bodies, which the
// read path opens only after its access decision. Bodies a Tx returns to
// its writer are plaintext.
type Sealer interface {
	// Seal encrypts the PHI elements of body and turns the index entries
	// of parameters reading them into blind tokens. epoch is the data key
	// used, 0 when nothing was sealed.
	Seal(ctx context.Context, tenant, typ, id string, body []byte, e *search.Entries) (sealed []byte, epoch int, err error)
	Open(ctx context.Context, tenant, typ, id string, body []byte) ([]byte, error)
	SealBlob(ctx context.Context, tenant, kind, id string, b []byte) (sealed []byte, epoch int, err error)
	OpenBlob(ctx context.Context, tenant, kind, id string, b []byte) ([]byte, error)
	// Blinder computes the blind tokens of search values (conditional
	// operations search inside a Tx).
	Blinder(ctx context.Context, tenant string) search.Blinder
	// Prepare loads (or creates) the tenant's keys before a transaction
	// begins, so that sealing inside it needs no second connection.
	Prepare(ctx context.Context, tenant string) error
}

// WithSealer turns PHI encryption on.
func (s *Store) WithSealer(sl Sealer) *Store {
	s.sealer = sl
	return s
}

// Pool returns the connection pool (for tools: key status, re-encryption).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Version is one stored version of a resource.
type Version struct {
	Type        string
	ID          string
	Version     int64
	Seq         int64
	LastUpdated time.Time
	Deleted     bool
	Method      string // POST, PUT or DELETE
	Body        []byte // compact JSON; nil for a tombstone
}

// ErrRetry marks a write that lost a race (two creates of one id); the
// caller may run the whole unit of work again.
var ErrRetry = errors.New("store: concurrent write, retry")

const versionCols = `type, id, version, seq, last_updated, deleted, method, body`

func scanVersion(row pgx.Row) (Version, error) {
	var v Version
	err := row.Scan(&v.Type, &v.ID, &v.Version, &v.Seq, &v.LastUpdated, &v.Deleted, &v.Method, &v.Body)
	return v, err
}

// Read returns the current version of a resource, a tombstone included.
// A resource never written is a KindNotFound error.
func (s *Store) Read(ctx context.Context, tenant, typ, id string) (Version, error) {
	v, err := scanVersion(s.pool.QueryRow(ctx,
		`SELECT `+versionCols+` FROM resources WHERE tenant = $1 AND type = $2 AND id = $3`, tenant, typ, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return v, fhir.Errorf(fhir.KindNotFound, "", "%s/%s is not known", typ, id)
	}
	if err != nil {
		return v, fmt.Errorf("store: read %s/%s: %w", typ, id, err)
	}
	return v, nil
}

// VRead returns one version of a resource.
func (s *Store) VRead(ctx context.Context, tenant, typ, id string, version int64) (Version, error) {
	v, err := scanVersion(s.pool.QueryRow(ctx, `
		SELECT `+versionCols+` FROM resources WHERE tenant = $1 AND type = $2 AND id = $3 AND version = $4
		UNION ALL
		SELECT `+versionCols+` FROM resource_history WHERE tenant = $1 AND type = $2 AND id = $3 AND version = $4`,
		tenant, typ, id, version))
	if errors.Is(err, pgx.ErrNoRows) {
		return v, fhir.Errorf(fhir.KindNotFound, "", "%s/%s has no version %d", typ, id, version)
	}
	if err != nil {
		return v, fmt.Errorf("store: vread %s/%s/%d: %w", typ, id, version, err)
	}
	return v, nil
}

// InTx runs fn in one database transaction: everything fn writes commits
// together or not at all. Buffered writes are flushed before commit.
func (s *Store) InTx(ctx context.Context, tenant string, fn func(*Tx) error) error {
	if s.sealer != nil {
		if err := s.sealer.Prepare(ctx, tenant); err != nil {
			return err
		}
	}
	return pgx.BeginFunc(ctx, s.pool, func(ptx pgx.Tx) error {
		tx := &Tx{tx: ptx, tenant: tenant, now: s.now().UTC().Truncate(time.Microsecond), pending: map[key]bool{}, sealer: s.sealer}
		if err := fn(tx); err != nil {
			return err
		}
		return tx.Flush(ctx)
	})
}

// classify turns database errors into error kinds callers understand.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505", "40001", "40P01": // unique violation, serialization failure, deadlock
			return fmt.Errorf("%s: %w (%s)", op, ErrRetry, pe.Code)
		case "57014": // query canceled (statement timeout)
			return fhir.Errorf(fhir.KindUnavailable, "", "the database did not answer in time").Wrap(err)
		}
	}
	var fe *fhir.Error
	if errors.As(err, &fe) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if pgconn.SafeToRetry(err) || isConnError(err) {
		return fhir.Errorf(fhir.KindUnavailable, "", "the database is unavailable").Wrap(err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func isConnError(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce)
}
