package audit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fhirgate/fhirgate/internal/phi"
)

// Reader reads the log for auditors. Reading is itself to be audited by
// the caller (interaction audit-query).
type Reader struct {
	pool   *pgxpool.Pool
	sealer Sealer
}

// NewReader returns a Reader; sealer opens sealed queries (nil: they are
// returned as unreadable).
func NewReader(pool *pgxpool.Pool, sealer Sealer) *Reader {
	return &Reader{pool: pool, sealer: sealer}
}

// Filter selects entries; zero fields do not filter. From is inclusive,
// To exclusive.
type Filter struct {
	Tenant      string // "" : every tenant (callers serving a tenant must set it)
	Patient     string // a Patient id among the record's PatientIDs
	Agent       string // the SubjectID
	From, To    time.Time
	Action      string // C, R, U, D, E
	Outcome     string // "success" or "failure" (see Success)
	EntityType  string // the ResourceType
	Interaction string
	BreakGlass  *bool
}

// MaxLimit is the largest page Query returns.
const MaxLimit = 10000

const selectColumns = `seq, format, time, request_id, tenant, subject_id, subject_kind, client_id, token_id, ip,
	interaction, resource_type, resource_ids, patient_ids, query, query_sealed, purpose_of_use, decision_id, reason,
	break_glass, outcome, action, prev_hash, hash`

// successSQL is Success as SQL.
const successSQL = `(outcome IN ('AA', 'CA') OR outcome ~ '^[1-3][0-9][0-9]$')`

func (f Filter) where(afterSeq int64) (string, []any, error) {
	conds := []string{"seq > $1"}
	args := []any{afterSeq}
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(args))))
	}
	if f.Tenant != "" {
		add("tenant = $?", f.Tenant)
	}
	if f.Patient != "" {
		add("patient_ids @> ARRAY[$?::text]", f.Patient)
	}
	if f.Agent != "" {
		add("subject_id = $?", f.Agent)
	}
	if !f.From.IsZero() {
		add("time >= $?", f.From)
	}
	if !f.To.IsZero() {
		add("time < $?", f.To)
	}
	if f.Action != "" {
		add("action = $?", f.Action)
	}
	switch f.Outcome {
	case "":
	case "success":
		conds = append(conds, successSQL)
	case "failure":
		conds = append(conds, "NOT "+successSQL)
	default:
		return "", nil, fmt.Errorf("audit: outcome filter %q: want success or failure", f.Outcome)
	}
	if f.EntityType != "" {
		add("resource_type = $?", f.EntityType)
	}
	if f.Interaction != "" {
		add("interaction = $?", f.Interaction)
	}
	if f.BreakGlass != nil {
		add("break_glass = $?", *f.BreakGlass)
	}
	return strings.Join(conds, " AND "), args, nil
}

// Query returns up to limit entries matching f with seq above afterSeq, in
// seq order (page on with the last entry's Seq). limit <= 0 means 100; it
// is capped at MaxLimit.
func (r *Reader) Query(ctx context.Context, f Filter, afterSeq int64, limit int) ([]Entry, error) {
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, MaxLimit)
	where, args, err := f.where(afterSeq)
	if err != nil {
		return nil, err
	}
	args = append(args, limit)
	rows, err := r.pool.Query(ctx, `SELECT `+selectColumns+` FROM audit_log WHERE `+where+
		` ORDER BY seq LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("audit: query: %w", err)
	}
	entries, err := pgx.CollectRows(rows, scanEntry)
	if err != nil {
		return nil, fmt.Errorf("audit: query: %w", err)
	}
	for i := range entries {
		if err := r.open(ctx, &entries[i]); err != nil {
			return nil, err
		}
	}
	return entries, nil
}

// PatientsPerSubject counts, for every subject with entries matching f,
// the distinct patients those entries name. It is one aggregate in the
// database: nothing is read back or decrypted per entry.
func (r *Reader) PatientsPerSubject(ctx context.Context, f Filter) (map[string]int, error) {
	where, args, err := f.where(0)
	if err != nil {
		return nil, err
	}
	rows, err := r.pool.Query(ctx, `SELECT subject_id, count(DISTINCT p) FROM audit_log
		LEFT JOIN LATERAL unnest(patient_ids) AS p ON true
		WHERE `+where+` AND subject_id <> '' GROUP BY subject_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: patients per subject: %w", err)
	}
	out := map[string]int{}
	var subject string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&subject, &n}, func() error {
		out[subject] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit: patients per subject: %w", err)
	}
	return out, nil
}

// Stream calls fn for every entry matching f, in seq order, reading pages
// of 1000 (no long transaction). It stops at fn's first error and returns
// it.
func (r *Reader) Stream(ctx context.Context, f Filter, fn func(Entry) error) error {
	var after int64
	for {
		page, err := r.Query(ctx, f, after, 1000)
		if err != nil {
			return err
		}
		for _, e := range page {
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(page) < 1000 {
			return nil
		}
		after = page[len(page)-1].Seq
	}
}

// open decrypts the entry's query. A sealed query that cannot be opened
// for good (no Sealer, a destroyed key, a damaged ciphertext) leaves it
// marked unreadable; a key provider outage or a cancelled context is an
// error.
func (r *Reader) open(ctx context.Context, e *Entry) error {
	if !e.QuerySealed {
		e.Query = string(e.StoredQuery)
		return nil
	}
	if r.sealer == nil {
		e.QueryUnreadable = true
		return nil
	}
	pt, err := r.sealer.OpenBlob(ctx, e.Tenant, sealKind, e.RequestID, e.StoredQuery)
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, phi.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("audit: open the query of record %d: %w", e.Seq, err)
		}
		e.QueryUnreadable = true
		return nil
	}
	e.Query = string(pt)
	return nil
}

func scanEntry(row pgx.CollectableRow) (Entry, error) {
	var e Entry
	var format int16
	err := row.Scan(&e.Seq, &format, &e.Time, &e.RequestID, &e.Tenant, &e.SubjectID, &e.SubjectKind, &e.ClientID,
		&e.TokenID, &e.IP, &e.Interaction, &e.ResourceType, &e.ResourceIDs, &e.PatientIDs, &e.StoredQuery,
		&e.QuerySealed, &e.PurposeOfUse, &e.DecisionID, &e.Reason, &e.BreakGlass, &e.Outcome, &e.Action,
		&e.PrevHash, &e.Hash)
	e.Format = int(format)
	e.Time = e.Time.UTC()
	if len(e.ResourceIDs) == 0 {
		e.ResourceIDs = nil
	}
	if len(e.PatientIDs) == 0 {
		e.PatientIDs = nil
	}
	if e.StoredQuery == nil {
		e.StoredQuery = []byte{}
	}
	return e, err
}
