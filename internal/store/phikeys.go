package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/fhirgate/fhirgate/internal/phi"
)

// PHI key storage: the store keeps wrapped data keys (phi.KeyStore) and
// knows which rows are sealed under which epoch, for `fhirgate keys`.

// TenantKeys implements phi.KeyStore.
func (s *Store) TenantKeys(ctx context.Context, tenant string) ([]phi.StoredKey, error) {
	return s.keys(ctx, `WHERE tenant = $1`, tenant)
}

// AllKeys implements phi.KeyStore.
func (s *Store) AllKeys(ctx context.Context) ([]phi.StoredKey, error) {
	return s.keys(ctx, ``)
}

func (s *Store) keys(ctx context.Context, where string, args ...any) ([]phi.StoredKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT tenant, purpose, epoch, wrapped, created FROM phi_keys `+where+` ORDER BY tenant, purpose, epoch`, args...)
	if err != nil {
		return nil, classify("store: phi keys", err)
	}
	ks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (phi.StoredKey, error) {
		var k phi.StoredKey
		err := row.Scan(&k.Tenant, &k.Purpose, &k.Epoch, &k.Wrapped, &k.Created)
		return k, err
	})
	return ks, classify("store: phi keys", err)
}

// AddKey implements phi.KeyStore.
func (s *Store) AddKey(ctx context.Context, k phi.StoredKey) (phi.StoredKey, error) {
	_, err := s.pool.Exec(ctx, `INSERT INTO phi_keys (tenant, purpose, epoch, wrapped, created) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (tenant, purpose, epoch) DO NOTHING`, k.Tenant, k.Purpose, k.Epoch, k.Wrapped, k.Created)
	if err != nil {
		return k, classify("store: add phi key", err)
	}
	var got phi.StoredKey
	err = s.pool.QueryRow(ctx, `SELECT tenant, purpose, epoch, wrapped, created FROM phi_keys
		WHERE tenant = $1 AND purpose = $2 AND epoch = $3`, k.Tenant, k.Purpose, k.Epoch).
		Scan(&got.Tenant, &got.Purpose, &got.Epoch, &got.Wrapped, &got.Created)
	return got, classify("store: add phi key", err)
}

// UpdateWrapped implements phi.KeyStore.
func (s *Store) UpdateWrapped(ctx context.Context, ks []phi.StoredKey) error {
	if len(ks) == 0 {
		return nil
	}
	tenants, purposes, wrapped := make([]string, len(ks)), make([]string, len(ks)), make([]string, len(ks))
	epochs := make([]int32, len(ks))
	for i, k := range ks {
		tenants[i], purposes[i], epochs[i], wrapped[i] = k.Tenant, k.Purpose, int32(k.Epoch), k.Wrapped
	}
	ct, err := s.pool.Exec(ctx, `UPDATE phi_keys k SET wrapped = u.wrapped
		FROM unnest($1::text[], $2::text[], $3::integer[], $4::text[]) AS u(tenant, purpose, epoch, wrapped)
		WHERE k.tenant = u.tenant AND k.purpose = u.purpose AND k.epoch = u.epoch`, tenants, purposes, epochs, wrapped)
	if err != nil {
		return classify("store: rewrap phi keys", err)
	}
	if int(ct.RowsAffected()) != len(ks) {
		return fmt.Errorf("store: rewrap phi keys: %d of %d keys updated", ct.RowsAffected(), len(ks))
	}
	return nil
}

// DestroyTenantKeys implements phi.KeyStore.
func (s *Store) DestroyTenantKeys(ctx context.Context, tenant string) (int, error) {
	ct, err := s.pool.Exec(ctx, `DELETE FROM phi_keys WHERE tenant = $1`, tenant)
	if err != nil {
		return 0, classify("store: destroy phi keys", err)
	}
	return int(ct.RowsAffected()), nil
}

// EpochCount is how many rows of a table are sealed under one epoch.
type EpochCount struct {
	Table  string
	Tenant string
	Epoch  int
	Rows   int64
}

// EpochCounts counts the sealed rows per table, tenant and epoch (epoch 0:
// stored before encryption was on, or nothing to seal).
func (s *Store) EpochCounts(ctx context.Context) ([]EpochCount, error) {
	var out []EpochCount
	for _, table := range sealedTables {
		rows, err := s.pool.Query(ctx, `SELECT tenant, phi_epoch, count(*) FROM `+table+` GROUP BY 1, 2 ORDER BY 1, 2`)
		if err != nil {
			return nil, classify("store: epoch counts", err)
		}
		cs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (EpochCount, error) {
			c := EpochCount{Table: table}
			err := row.Scan(&c.Tenant, &c.Epoch, &c.Rows)
			return c, err
		})
		if err != nil {
			return nil, classify("store: epoch counts", err)
		}
		out = append(out, cs...)
	}
	return out, nil
}

var sealedTables = []string{"resources", "resource_history", "hl7_messages", "hl7_dead_letters"}

// Tenants lists the tenants with stored data or keys.
func (s *Store) Tenants(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT tenant FROM resources UNION SELECT DISTINCT tenant FROM phi_keys
		UNION SELECT DISTINCT tenant FROM hl7_messages UNION SELECT DISTINCT tenant FROM hl7_dead_letters ORDER BY 1`)
	if err != nil {
		return nil, classify("store: tenants", err)
	}
	ts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return ts, classify("store: tenants", err)
}

// Reencrypt moves up to limit of a tenant's rows sealed under an epoch
// other than target (0 included: plaintext from before encryption was
// on) to the sealer's current key, and reports how many it moved. Each
// row is re-sealed from its own plaintext and updated only if it did not
// change meanwhile, so it runs beside live reads and writes; it is
// resumable because it always picks up what is left. Search-index tokens
// are unaffected (the index key does not change with the epoch).
func (s *Store) Reencrypt(ctx context.Context, tenant string, target, limit int) (int, error) {
	if s.sealer == nil {
		return 0, errors.New("store: re-encryption needs PHI encryption on")
	}
	moved := 0
	// Current versions.
	n, err := s.reencryptRows(ctx, `SELECT rid::text, type, id, version, body FROM resources
		WHERE tenant = $1 AND phi_epoch <> $2 AND body IS NOT NULL ORDER BY rid LIMIT $3`,
		`UPDATE resources SET body = $1, phi_epoch = $2 WHERE rid = $3::bigint AND version = $4 AND tenant = $5 AND type = $6 AND id = $7`, tenant, target, limit)
	moved += n
	if err != nil || moved >= limit {
		return moved, err
	}
	n, err = s.reencryptRows(ctx, `SELECT version::text, type, id, version, body FROM resource_history
		WHERE tenant = $1 AND phi_epoch <> $2 AND body IS NOT NULL LIMIT $3`,
		`UPDATE resource_history SET body = $1, phi_epoch = $2 WHERE version = $3::bigint AND version = $4 AND tenant = $5 AND type = $6 AND id = $7`, tenant, target, limit-moved)
	moved += n
	if err != nil || moved >= limit {
		return moved, err
	}
	for _, table := range []string{"hl7_messages", "hl7_dead_letters"} {
		n, err := s.reencryptRaw(ctx, table, tenant, target, limit-moved)
		moved += n
		if err != nil || moved >= limit {
			return moved, err
		}
	}
	return moved, nil
}

func (s *Store) reencryptRows(ctx context.Context, sel, upd, tenant string, target, limit int) (int, error) {
	type row struct {
		key, typ, id string
		version      int64
		body         []byte
	}
	rows, err := s.pool.Query(ctx, sel, tenant, target, limit)
	if err != nil {
		return 0, classify("store: reencrypt", err)
	}
	rs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.key, &x.typ, &x.id, &x.version, &x.body)
		return x, err
	})
	if err != nil {
		return 0, classify("store: reencrypt", err)
	}
	b := &pgx.Batch{}
	for _, x := range rs {
		plain, err := s.sealer.Open(ctx, tenant, x.typ, x.id, x.body)
		if err != nil {
			return 0, err
		}
		sealed, epoch, err := s.sealer.Seal(ctx, tenant, x.typ, x.id, plain, nil)
		if err != nil {
			return 0, err
		}
		if epoch == 0 {
			epoch = target // nothing to seal: the row is done
		}
		b.Queue(upd, sealed, epoch, x.key, x.version, tenant, x.typ, x.id)
	}
	if len(rs) == 0 {
		return 0, nil
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return 0, classify("store: reencrypt", err)
	}
	return len(rs), nil
}

func (s *Store) reencryptRaw(ctx context.Context, table, tenant string, target, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	type row struct {
		sender, control string
		raw             []byte
		ctid            string
	}
	rows, err := s.pool.Query(ctx, `SELECT sender, control_id, raw, ctid::text FROM `+table+`
		WHERE tenant = $1 AND phi_epoch <> $2 LIMIT $3`, tenant, target, limit)
	if err != nil {
		return 0, classify("store: reencrypt", err)
	}
	rs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.sender, &x.control, &x.raw, &x.ctid)
		return x, err
	})
	if err != nil {
		return 0, classify("store: reencrypt", err)
	}
	b := &pgx.Batch{}
	for _, x := range rs {
		plain, err := openRaw(ctx, s.sealer, tenant, table, x.sender, x.control, x.raw)
		if err != nil {
			return 0, err
		}
		sealed, epoch, err := sealRaw(ctx, s.sealer, tenant, table, x.sender, x.control, plain)
		if err != nil {
			return 0, err
		}
		b.Queue(`UPDATE `+table+` SET raw = $1, phi_epoch = $2 WHERE ctid = $3::tid AND raw = $4`, sealed, epoch, x.ctid, x.raw)
	}
	if len(rs) == 0 {
		return 0, nil
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return 0, classify("store: reencrypt", err)
	}
	return len(rs), nil
}
