package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// MaxIncluded bounds the resources one page may pull in by _include and
// _revinclude, so a search cannot be turned into a bulk export.
const MaxIncluded = 1000

// Included returns the current resources that the resources typ/ids refer
// to through reference parameter param (targetType "" for any type).
func (s *Store) Included(ctx context.Context, tenant, typ string, ids []string, param, targetType string, visible Visible) ([]Version, error) {
	args := []any{tenant, typ, ids, param, targetType, MaxIncluded}
	vis := "TRUE"
	if visible != nil {
		vis = visible("t", &args)
	}
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT ON (t.rid) t.type, t.id, t.version, t.seq, t.last_updated, t.deleted, t.method, t.body
		FROM resources r
		JOIN idx_reference i ON i.rid = r.rid AND i.param = $4
		JOIN resources t ON t.tenant = r.tenant AND t.type = i.target_type AND t.id = i.target_id
		WHERE r.tenant = $1 AND r.type = $2 AND r.id = ANY($3) AND NOT t.deleted
			AND ($5 = '' OR t.type = $5) AND (`+vis+`)
		ORDER BY t.rid LIMIT $6`, args...)
	if err != nil {
		return nil, classify("store: include", err)
	}
	vs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Version, error) { return scanVersion(row) })
	return vs, classify("store: include", err)
}

// RevIncluded returns the current resources of sourceType that refer to
// typ/ids through reference parameter param.
func (s *Store) RevIncluded(ctx context.Context, tenant, typ string, ids []string, sourceType, param string, visible Visible) ([]Version, error) {
	args := []any{tenant, typ, ids, sourceType, param, MaxIncluded}
	vis := "TRUE"
	if visible != nil {
		vis = visible("r", &args)
	}
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT ON (r.rid) r.type, r.id, r.version, r.seq, r.last_updated, r.deleted, r.method, r.body
		FROM idx_reference i JOIN resources r ON r.rid = i.rid
		WHERE i.tenant = $1 AND i.type = $4 AND i.param = $5 AND i.target_type = $2 AND i.target_id = ANY($3)
			AND NOT r.deleted AND (`+vis+`)
		ORDER BY r.rid LIMIT $6`, args...)
	if err != nil {
		return nil, classify("store: revinclude", err)
	}
	vs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Version, error) { return scanVersion(row) })
	return vs, classify("store: revinclude", err)
}

// PatientOrganizations returns the managingOrganization id of each of the
// given Patients that has one (for access decisions by organization).
func (s *Store) PatientOrganizations(ctx context.Context, tenant string, patientIDs []string) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT p.id, o.target_id FROM resources p
		JOIN idx_reference o ON o.rid = p.rid AND o.param = 'organization' AND o.target_type = 'Organization'
		WHERE p.tenant = $1 AND p.type = 'Patient' AND p.id = ANY($2) AND NOT p.deleted`, tenant, patientIDs)
	if err != nil {
		return nil, classify("store: patient organizations", err)
	}
	defer rows.Close()
	out := make(map[string]string, len(patientIDs))
	for rows.Next() {
		var p, o string
		if err := rows.Scan(&p, &o); err != nil {
			return nil, classify("store: patient organizations", err)
		}
		out[p] = o
	}
	return out, classify("store: patient organizations", rows.Err())
}
