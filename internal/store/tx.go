package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/search"
)

// Tx is one unit of work. Writes are buffered and flushed together; any
// read through the Tx flushes first, so it sees the Tx's own writes.
// A Tx is not safe for concurrent use.
type Tx struct {
	tx      pgx.Tx
	tenant  string
	now     time.Time
	pending map[key]bool
	writes  []pendingWrite
	extra   []queued // statements sent with the next flush
	// prefetched holds current versions locked by Prefetch, for keys not
	// yet written in this Tx (a write removes its entry).
	prefetched map[key]prefetchedRow
	sealer     Sealer
}

type queued struct {
	sql  string
	args []any
}

type prefetchedRow struct {
	v     Version
	rid   int64
	found bool
}

type key struct{ typ, id string }

type pendingWrite struct {
	rid     int64 // 0 for a resource not yet in the database
	v       Version
	entries search.Entries
	stored  []byte // the body as stored: sealed when a Sealer is set
	epoch   int
}

// Now is the lastUpdated instant of every version this Tx writes.
func (t *Tx) Now() time.Time { return t.now }

// Tenant is the tenant the Tx writes for.
func (t *Tx) Tenant() string { return t.tenant }

// Current returns the current version of a resource (a tombstone
// included), locking it until the Tx ends. ok is false when the resource
// was never written.
func (t *Tx) Current(ctx context.Context, typ, id string) (v Version, ok bool, err error) {
	v, _, ok, err = t.current(ctx, typ, id)
	if err != nil || !ok {
		return v, ok, err
	}
	return t.open(ctx, v)
}

// open decrypts a version read inside the Tx: the writer sees plaintext.
func (t *Tx) open(ctx context.Context, v Version) (Version, bool, error) {
	if t.sealer == nil || v.Body == nil {
		return v, true, nil
	}
	b, err := t.sealer.Open(ctx, t.tenant, v.Type, v.ID, v.Body)
	if err != nil {
		return v, false, err
	}
	v.Body = b
	return v, true, nil
}

// Key names a resource for Prefetch.
type Key struct{ Type, ID string }

// Prefetch reads the current versions of many resources in one query, so
// that the Puts that follow need no round trip each. With lock, the rows
// are locked (in (type, id) order, so concurrent Prefetches cannot
// deadlock). Without, the writes that follow are optimistic: if another
// transaction replaced a version in between, Flush fails with ErrRetry.
// Unlocked prefetch suits writes that are mostly unchanged re-sends
// (SkipUnchanged), which then never wait for each other.
func (t *Tx) Prefetch(ctx context.Context, keys []Key, lock bool) error {
	if err := t.Flush(ctx); err != nil {
		return err
	}
	types := make([]string, len(keys))
	ids := make([]string, len(keys))
	for i, k := range keys {
		types[i], ids[i] = k.Type, k.ID
	}
	rows, err := t.tx.Query(ctx, `SELECT r.rid, r.type, r.id, r.version, r.seq, r.last_updated, r.deleted, r.method, r.body
		FROM resources r JOIN unnest($2::text[], $3::text[]) AS k(type, id) ON r.type = k.type AND r.id = k.id
		WHERE r.tenant = $1 ORDER BY r.type, r.id`+forUpdate(lock), t.tenant, types, ids)
	if err != nil {
		return classify("store: prefetch", err)
	}
	defer rows.Close()
	if t.prefetched == nil {
		t.prefetched = make(map[key]prefetchedRow, len(keys))
	}
	for _, k := range keys {
		t.prefetched[key{k.Type, k.ID}] = prefetchedRow{}
	}
	for rows.Next() {
		var p prefetchedRow
		v := &p.v
		if err := rows.Scan(&p.rid, &v.Type, &v.ID, &v.Version, &v.Seq, &v.LastUpdated, &v.Deleted, &v.Method, &v.Body); err != nil {
			return classify("store: prefetch", err)
		}
		p.found = true
		t.prefetched[key{v.Type, v.ID}] = p
	}
	return classify("store: prefetch", rows.Err())
}

// Peek returns a version Prefetch read, without using it up: ok is false
// when the key was not prefetched or the resource does not exist.
func (t *Tx) Peek(typ, id string) (Version, bool) {
	p, ok := t.prefetched[key{typ, id}]
	return p.v, ok && p.found
}

func forUpdate(lock bool) string {
	if lock {
		return " FOR UPDATE OF r"
	}
	return ""
}

func (t *Tx) current(ctx context.Context, typ, id string) (Version, int64, bool, error) {
	if p, ok := t.prefetched[key{typ, id}]; ok {
		delete(t.prefetched, key{typ, id})
		return p.v, p.rid, p.found, nil
	}
	if err := t.Flush(ctx); err != nil {
		return Version{}, 0, false, err
	}
	var rid int64
	var v Version
	err := t.tx.QueryRow(ctx, `SELECT rid, `+versionCols+` FROM resources
		WHERE tenant = $1 AND type = $2 AND id = $3 FOR UPDATE`, t.tenant, typ, id).
		Scan(&rid, &v.Type, &v.ID, &v.Version, &v.Seq, &v.LastUpdated, &v.Deleted, &v.Method, &v.Body)
	if errors.Is(err, pgx.ErrNoRows) {
		return Version{}, 0, false, nil
	}
	if err != nil {
		return Version{}, 0, false, classify("store: current "+typ+"/"+id, err)
	}
	return v, rid, true, nil
}

// Write is one resource version to store.
type Write struct {
	Resource *fhir.Resource // with Type and ID set
	Entries  search.Entries // the search index rows of this version
	Method   string         // POST or PUT
	// New promises the id was just assigned by the server, so no current
	// version exists and none needs locking.
	New bool
	// IfMatch, when non-zero, is the version the client expects to replace.
	IfMatch int64
	// SkipUnchanged writes nothing when the resource equals its current
	// version apart from meta.versionId and meta.lastUpdated, and returns
	// the current version: re-sent messages create no new versions.
	SkipUnchanged bool
	// IfAbsent writes only when the resource does not exist (or is
	// deleted); an existing one is returned untouched.
	IfAbsent bool
}

// Put stores a new version of w.Resource, setting its meta.versionId and
// meta.lastUpdated. It returns the version as it will be committed.
func (t *Tx) Put(ctx context.Context, w Write) (Version, error) {
	r := w.Resource
	k := key{r.Type, r.ID}
	if t.pending[k] {
		return Version{}, fhir.Errorf(fhir.KindConflict, "", "%s/%s is written twice in one transaction", r.Type, r.ID).WithCode("conflict")
	}
	var rid, version int64 = 0, 1
	if !w.New {
		cur, curRid, ok, err := t.current(ctx, r.Type, r.ID)
		if err != nil {
			return Version{}, err
		}
		if ok {
			rid, version = curRid, cur.Version+1
			if (w.IfAbsent || w.SkipUnchanged) && !cur.Deleted {
				if cur, _, err = t.open(ctx, cur); err != nil {
					return Version{}, err
				}
			}
			if w.IfAbsent && !cur.Deleted {
				return cur, nil
			}
			if w.SkipUnchanged && !cur.Deleted && w.IfMatch == 0 {
				r.SetMeta(strconv.FormatInt(cur.Version, 10), cur.LastUpdated)
				if bytes.Equal(r.Bytes(), cur.Body) {
					return cur, nil
				}
			}
		}
		if w.IfMatch != 0 && (!ok || cur.Version != w.IfMatch) {
			return Version{}, fhir.Errorf(fhir.KindPreconditionFailed, "",
				"version conflict: %s/%s is not at version %d", r.Type, r.ID, w.IfMatch).WithCode("conflict")
		}
	} else if w.IfMatch != 0 {
		return Version{}, fhir.Errorf(fhir.KindPreconditionFailed, "", "If-Match given for a new resource").WithCode("conflict")
	}
	r.SetMeta(strconv.FormatInt(version, 10), t.now)
	v := Version{Type: r.Type, ID: r.ID, Version: version, LastUpdated: t.now, Method: w.Method, Body: r.Bytes()}
	pw := pendingWrite{rid: rid, v: v, entries: w.Entries, stored: v.Body}
	if t.sealer != nil {
		sealed, epoch, err := t.sealer.Seal(ctx, t.tenant, r.Type, r.ID, v.Body, &pw.entries)
		if err != nil {
			return Version{}, err
		}
		pw.stored, pw.epoch = sealed, epoch
	}
	t.pending[k] = true
	t.writes = append(t.writes, pw)
	return v, nil
}

// Delete writes a tombstone version. Deleting a resource that does not
// exist or is already deleted writes nothing and reports ok=false.
func (t *Tx) Delete(ctx context.Context, typ, id string, ifMatch int64) (v Version, ok bool, err error) {
	k := key{typ, id}
	if t.pending[k] {
		return Version{}, false, fhir.Errorf(fhir.KindConflict, "", "%s/%s is written twice in one transaction", typ, id).WithCode("conflict")
	}
	cur, rid, exists, err := t.current(ctx, typ, id)
	if err != nil {
		return Version{}, false, err
	}
	if ifMatch != 0 && (!exists || cur.Version != ifMatch) {
		return Version{}, false, fhir.Errorf(fhir.KindPreconditionFailed, "",
			"version conflict: %s/%s is not at version %d", typ, id, ifMatch).WithCode("conflict")
	}
	if !exists || cur.Deleted {
		return cur, false, nil
	}
	v = Version{Type: typ, ID: id, Version: cur.Version + 1, LastUpdated: t.now, Deleted: true, Method: "DELETE"}
	t.pending[k] = true
	t.writes = append(t.writes, pendingWrite{rid: rid, v: v})
	return v, true, nil
}

// Lock takes a transaction-scoped advisory lock on name, serializing
// conditional operations that test-then-write (If-None-Exist).
func (t *Tx) Lock(ctx context.Context, name string) error {
	if err := t.Flush(ctx); err != nil {
		return err
	}
	_, err := t.tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, t.tenant+"/"+name)
	return classify("store: lock", err)
}

// Flush writes the buffered versions in one round trip.
func (t *Tx) Flush(ctx context.Context) error {
	if len(t.writes) == 0 {
		if len(t.extra) == 0 {
			return nil
		}
		b := &pgx.Batch{}
		for _, q := range t.extra {
			b.Queue(q.sql, q.args...)
		}
		t.extra = nil
		return classify("store: write", t.tx.SendBatch(ctx, b).Close())
	}
	ws := t.writes
	t.writes = nil
	rows, err := t.tx.Query(ctx, `SELECT nextval('resource_seq') FROM generate_series(1, $1)`, len(ws))
	if err != nil {
		return classify("store: allocate seq", err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return classify("store: allocate seq", err)
	}

	var upd, ins cols
	var ix indexRows
	for i := range ws {
		w := &ws[i]
		w.v.Seq = seqs[i]
		if w.rid == 0 {
			w.rid = seqs[i]
			ins.add(w.rid, w)
		} else {
			upd.add(w.rid, w)
		}
		if !w.v.Deleted {
			ix.add(w.rid, t.tenant, w.v.Type, &w.entries)
		}
	}

	b := &pgx.Batch{}
	if len(upd.rid) > 0 {
		b.Queue(`INSERT INTO resource_history (tenant, type, id, version, seq, last_updated, deleted, method, body, phi_epoch)
			SELECT tenant, type, id, version, seq, last_updated, deleted, method, body, phi_epoch
			FROM resources WHERE rid = ANY($1)`, upd.rid)
		for _, tbl := range indexTables {
			b.Queue(`DELETE FROM `+tbl+` WHERE rid = ANY($1)`, upd.rid)
		}
		// version = u.version - 1 makes the update optimistic: a version
		// read without a lock (Prefetch) that another transaction has
		// replaced since updates nothing, and the Tx is retried.
		updated := len(upd.rid)
		b.Queue(`UPDATE resources r SET version = u.version, seq = u.seq, last_updated = u.lu,
				deleted = u.deleted, method = u.method, body = u.body, phi_epoch = u.epoch
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[], $5::boolean[], $6::text[], $7::bytea[], $8::integer[])
				AS u(rid, version, seq, lu, deleted, method, body, epoch)
			WHERE r.rid = u.rid AND r.version = u.version - 1`,
			upd.rid, upd.version, upd.seq, upd.lu, upd.deleted, upd.method, upd.body, upd.epoch).Exec(func(ct pgconn.CommandTag) error {
			if int(ct.RowsAffected()) != updated {
				return fmt.Errorf("store: %d of %d resources changed concurrently: %w", updated-int(ct.RowsAffected()), updated, ErrRetry)
			}
			return nil
		})
	}
	if len(ins.rid) > 0 {
		b.Queue(`INSERT INTO resources (rid, tenant, type, id, version, seq, last_updated, deleted, method, body, phi_epoch)
			SELECT u.rid, $1, u.type, u.id, u.version, u.seq, u.lu, u.deleted, u.method, u.body, u.epoch
			FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::timestamptz[], $8::boolean[], $9::text[], $10::bytea[], $11::integer[])
				AS u(rid, type, id, version, seq, lu, deleted, method, body, epoch)`,
			t.tenant, ins.rid, ins.typ, ins.id, ins.version, ins.seq, ins.lu, ins.deleted, ins.method, ins.body, ins.epoch)
	}
	ix.queue(b)
	for _, q := range t.extra {
		b.Queue(q.sql, q.args...)
	}
	t.extra = nil
	if err := t.tx.SendBatch(ctx, b).Close(); err != nil {
		if errors.Is(err, ErrRetry) {
			return err
		}
		return classify("store: write", err)
	}
	return nil
}

type cols struct {
	rid, version, seq []int64
	typ, id, method   []string
	lu                []time.Time
	deleted           []bool
	body              [][]byte
	epoch             []int32
}

func (c *cols) add(rid int64, w *pendingWrite) {
	v := &w.v
	c.rid = append(c.rid, rid)
	c.typ = append(c.typ, v.Type)
	c.id = append(c.id, v.ID)
	c.version = append(c.version, v.Version)
	c.seq = append(c.seq, v.Seq)
	c.lu = append(c.lu, v.LastUpdated)
	c.deleted = append(c.deleted, v.Deleted)
	c.method = append(c.method, v.Method)
	c.body = append(c.body, w.stored)
	c.epoch = append(c.epoch, int32(w.epoch))
}

func (t *Tx) String() string { return fmt.Sprintf("store.Tx(%s, %d pending)", t.tenant, len(t.writes)) }
