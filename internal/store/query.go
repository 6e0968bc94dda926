package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fhirgate/fhirgate/internal/search"
)

// SearchOptions describes one page of a search over current versions.
type SearchOptions struct {
	Type string
	// Where renders the search conditions over r, appending its bind
	// arguments; nil means no conditions.
	Where func(args *[]any) string
	// Sort renders the ORDER BY keys, ending with a unique tiebreaker
	// (r.id); nil sorts by id.
	Sort  func(args *[]any) []search.SortExpr
	Count int
	// After is the keyset cursor: the sort key values of the last row of
	// the previous page. Empty for the first page.
	After []any
	Total bool
}

// Page is one page of search results.
type Page struct {
	Versions []Version
	Total    int64 // -1 when not counted
	Next     []any // sort key values for the next page's cursor; nil on the last page
}

// Search returns one page of current, non-deleted resources of a type.
// Paging is by keyset on the sort keys, so a page boundary never shifts
// when other resources are created or deleted meanwhile: every resource
// present and unchanged throughout is returned exactly once.
func (s *Store) Search(ctx context.Context, tenant string, o SearchOptions) (Page, error) {
	args := []any{tenant, o.Type}
	cond := "TRUE"
	if o.Where != nil {
		cond = o.Where(&args)
	}
	base := `FROM resources r WHERE r.tenant = $1 AND r.type = $2 AND NOT r.deleted AND (` + cond + `)`

	page := Page{Total: -1}
	if o.Total {
		if err := s.pool.QueryRow(ctx, `SELECT count(*) `+base, args...).Scan(&page.Total); err != nil {
			return page, classify("store: count "+o.Type, err)
		}
	}
	if o.Count <= 0 {
		return page, nil
	}
	keys := []search.SortExpr{{SQL: "r.id"}}
	if o.Sort != nil {
		keys = o.Sort(&args)
	}
	sel := make([]string, len(keys))
	for i, k := range keys {
		sel[i] = k.SQL
	}
	keyset := "TRUE"
	if len(o.After) > 0 {
		var err error
		if keyset, err = search.After(keys, o.After, &args); err != nil {
			return page, err
		}
	}
	args = append(args, o.Count+1)
	sql := `SELECT ` + versionCols + `, ` + strings.Join(sel, ", ") + ` ` + base +
		` AND ` + keyset + ` ORDER BY ` + search.OrderBy(keys) + fmt.Sprintf(` LIMIT $%d`, len(args))
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return page, classify("store: search "+o.Type, err)
	}
	defer rows.Close()
	var last []any
	for rows.Next() {
		if len(page.Versions) == o.Count {
			page.Next = last
			break
		}
		var v Version
		vals := make([]any, len(keys))
		dest := []any{&v.Type, &v.ID, &v.Version, &v.Seq, &v.LastUpdated, &v.Deleted, &v.Method, &v.Body}
		for i := range vals {
			dest = append(dest, &vals[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return page, classify("store: search "+o.Type, err)
		}
		page.Versions = append(page.Versions, v)
		last = vals
	}
	if err := rows.Err(); err != nil {
		return page, classify("store: search "+o.Type, err)
	}
	return page, nil
}

// Visible renders an access condition over the current-version row aliased
// alias (columns rid, tenant, type, id), appending its bind arguments. The
// store ANDs it into history and include queries; nil allows everything.
type Visible func(alias string, args *[]any) string

// HistoryOptions selects versions for instance, type or system history.
type HistoryOptions struct {
	// Visible limits the versions to resources whose current version it
	// accepts (a deleted resource's history is judged by its last index
	// rows, which deletion removes: the caller re-checks each version).
	Visible Visible
	Type    string    // "" for system history
	ID      string    // "" for type or system history
	Since   time.Time // zero for no lower bound
	At      time.Time // zero for none: versions current at this instant (_at)
	Count   int
	Before  int64 // cursor: only versions with seq < Before; 0 for the first page
}

// HistoryPage is one page of history, newest first.
type HistoryPage struct {
	Versions []Version
	Next     int64 // cursor for the next page, 0 on the last page
}

// History lists versions, newest first, including tombstones.
func (s *Store) History(ctx context.Context, tenant string, o HistoryOptions) (HistoryPage, error) {
	args := []any{tenant}
	var conds []string
	if o.Type != "" {
		args = append(args, o.Type)
		conds = append(conds, fmt.Sprintf("type = $%d", len(args)))
	}
	if o.ID != "" {
		args = append(args, o.ID)
		conds = append(conds, fmt.Sprintf("id = $%d", len(args)))
	}
	if o.Before > 0 {
		args = append(args, o.Before)
		conds = append(conds, fmt.Sprintf("seq < $%d", len(args)))
	}
	if !o.Since.IsZero() {
		args = append(args, o.Since)
		conds = append(conds, fmt.Sprintf("last_updated >= $%d", len(args)))
	}
	if !o.At.IsZero() {
		args = append(args, o.At)
		conds = append(conds, fmt.Sprintf("last_updated <= $%d", len(args)))
	}
	where := "tenant = $1"
	for _, c := range conds {
		where += " AND " + c
	}
	if o.Visible != nil {
		where += " AND EXISTS (SELECT 1 FROM resources cur WHERE cur.tenant = $1 AND cur.type = h0.type AND cur.id = h0.id AND " + o.Visible("cur", &args) + ")"
	}
	args = append(args, o.Count+1)
	lim := fmt.Sprintf("$%d", len(args))
	sql := `SELECT ` + versionCols + ` FROM (
		(SELECT ` + versionCols + ` FROM resources h0 WHERE ` + where + ` ORDER BY seq DESC LIMIT ` + lim + `)
		UNION ALL
		(SELECT ` + versionCols + ` FROM resource_history h0 WHERE ` + where + ` ORDER BY seq DESC LIMIT ` + lim + `)
	) h ORDER BY seq DESC LIMIT ` + lim
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return HistoryPage{}, classify("store: history", err)
	}
	vs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Version, error) { return scanVersion(row) })
	if err != nil {
		return HistoryPage{}, classify("store: history", err)
	}
	var p HistoryPage
	if len(vs) > o.Count {
		vs = vs[:o.Count]
		if o.Count > 0 {
			p.Next = vs[len(vs)-1].Seq
		}
	}
	if !o.At.IsZero() {
		vs = currentAt(vs)
	}
	p.Versions = vs
	return p, nil
}

// currentAt keeps, per resource, only the newest version (the list is
// newest first), for _at: what each resource looked like at that instant.
func currentAt(vs []Version) []Version {
	seen := map[key]bool{}
	out := vs[:0]
	for _, v := range vs {
		k := key{v.Type, v.ID}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, v)
	}
	return out
}

// Find returns up to limit current, non-deleted resources of typ matching
// where, within the Tx (for conditional create, update, delete and
// conditional references).
func (t *Tx) Find(ctx context.Context, q *search.Query, limit int) ([]Version, error) {
	if err := t.Flush(ctx); err != nil {
		return nil, err
	}
	typ := q.Type
	if t.sealer != nil {
		if err := q.ApplyBlind(t.sealer.Blinder(ctx, t.tenant), t.now); err != nil {
			return nil, err
		}
	}
	args := []any{t.tenant, typ}
	cond := q.Condition(&args)
	args = append(args, limit)
	rows, err := t.tx.Query(ctx, `SELECT `+versionCols+` FROM resources r
		WHERE r.tenant = $1 AND r.type = $2 AND NOT r.deleted AND (`+cond+`)
		ORDER BY r.id LIMIT $`+fmt.Sprint(len(args)), args...)
	if err != nil {
		return nil, classify("store: find "+typ, err)
	}
	vs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Version, error) { return scanVersion(row) })
	if err != nil {
		return nil, classify("store: find "+typ, err)
	}
	for i := range vs {
		if vs[i], _, err = t.open(ctx, vs[i]); err != nil {
			return nil, err
		}
	}
	return vs, nil
}
