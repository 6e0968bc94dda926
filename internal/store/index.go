package store

import (
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fhirgate/fhirgate/internal/search"
)

var indexTables = []string{"idx_token", "idx_string", "idx_date", "idx_reference", "idx_number", "idx_quantity", "idx_uri", "idx_blind"}

// indexRows collects the index rows of a flush column-wise, so each index
// table is written by one INSERT ... SELECT FROM unnest(...).
type indexRows struct {
	tok struct {
		rid                                   []int64
		typ, param, system, code, compartment []string
	}
	str struct {
		rid                     []int64
		typ, param, norm, exact []string
	}
	date struct {
		rid                     []int64
		typ, param, compartment []string
		lo, hi                  []time.Time
	}
	ref struct {
		rid                    []int64
		typ, param, tType, tID []string
	}
	num struct {
		rid                []int64
		typ, param, lo, hi []string
	}
	qty struct {
		rid                              []int64
		typ, param, system, code, lo, hi []string
	}
	uri struct {
		rid             []int64
		typ, param, uri []string
	}
	blind struct {
		rid                     []int64
		typ, param, compartment []string
		token                   [][]byte
	}
	tenant string
}

func (x *indexRows) add(rid int64, tenant, typ string, e *search.Entries) {
	x.tenant = tenant
	// Token, date and blind rows once per patient compartment ("" when none).
	comps := e.Compartments()
	if len(comps) == 0 {
		comps = []string{""}
	}
	for _, c := range comps {
		for _, v := range e.Tokens {
			x.tok.rid = append(x.tok.rid, rid)
			x.tok.typ = append(x.tok.typ, typ)
			x.tok.param = append(x.tok.param, v.Param)
			x.tok.system = append(x.tok.system, v.System)
			x.tok.code = append(x.tok.code, v.Code)
			x.tok.compartment = append(x.tok.compartment, c)
		}
		for _, v := range e.Dates {
			x.date.rid = append(x.date.rid, rid)
			x.date.typ = append(x.date.typ, typ)
			x.date.param = append(x.date.param, v.Param)
			x.date.lo = append(x.date.lo, v.Lo)
			x.date.hi = append(x.date.hi, v.Hi)
			x.date.compartment = append(x.date.compartment, c)
		}
		for _, v := range e.Blind {
			x.blind.rid = append(x.blind.rid, rid)
			x.blind.typ = append(x.blind.typ, typ)
			x.blind.param = append(x.blind.param, v.Param)
			x.blind.token = append(x.blind.token, v.Token)
			x.blind.compartment = append(x.blind.compartment, c)
		}
	}
	for _, v := range e.Strings {
		x.str.rid = append(x.str.rid, rid)
		x.str.typ = append(x.str.typ, typ)
		x.str.param = append(x.str.param, v.Param)
		x.str.norm = append(x.str.norm, v.Norm)
		x.str.exact = append(x.str.exact, v.Exact)
	}
	for _, v := range e.References {
		x.ref.rid = append(x.ref.rid, rid)
		x.ref.typ = append(x.ref.typ, typ)
		x.ref.param = append(x.ref.param, v.Param)
		x.ref.tType = append(x.ref.tType, v.TargetType)
		x.ref.tID = append(x.ref.tID, v.TargetID)
	}
	for _, v := range e.Numbers {
		x.num.rid = append(x.num.rid, rid)
		x.num.typ = append(x.num.typ, typ)
		x.num.param = append(x.num.param, v.Param)
		x.num.lo = append(x.num.lo, v.Lo)
		x.num.hi = append(x.num.hi, v.Hi)
	}
	for _, v := range e.Quantities {
		x.qty.rid = append(x.qty.rid, rid)
		x.qty.typ = append(x.qty.typ, typ)
		x.qty.param = append(x.qty.param, v.Param)
		x.qty.system = append(x.qty.system, v.System)
		x.qty.code = append(x.qty.code, v.Code)
		x.qty.lo = append(x.qty.lo, v.Lo)
		x.qty.hi = append(x.qty.hi, v.Hi)
	}
	for _, v := range e.URIs {
		x.uri.rid = append(x.uri.rid, rid)
		x.uri.typ = append(x.uri.typ, typ)
		x.uri.param = append(x.uri.param, v.Param)
		x.uri.uri = append(x.uri.uri, v.URI)
	}
}

func (x *indexRows) queue(b *pgx.Batch) {
	if len(x.tok.rid) > 0 {
		b.Queue(`INSERT INTO idx_token (rid, tenant, type, param, system, code, compartment)
			SELECT u.rid, $1, u.type, u.param, u.system, u.code, u.compartment
			FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS u(rid, type, param, system, code, compartment)`,
			x.tenant, x.tok.rid, x.tok.typ, x.tok.param, x.tok.system, x.tok.code, x.tok.compartment)
	}
	if len(x.str.rid) > 0 {
		b.Queue(`INSERT INTO idx_string (rid, tenant, type, param, norm, exact)
			SELECT u.rid, $1, u.type, u.param, u.norm, u.exact
			FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(rid, type, param, norm, exact)`,
			x.tenant, x.str.rid, x.str.typ, x.str.param, x.str.norm, x.str.exact)
	}
	if len(x.date.rid) > 0 {
		b.Queue(`INSERT INTO idx_date (rid, tenant, type, param, lo, hi, compartment)
			SELECT u.rid, $1, u.type, u.param, u.lo, u.hi, u.compartment
			FROM unnest($2::bigint[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::text[]) AS u(rid, type, param, lo, hi, compartment)`,
			x.tenant, x.date.rid, x.date.typ, x.date.param, x.date.lo, x.date.hi, x.date.compartment)
	}
	if len(x.ref.rid) > 0 {
		b.Queue(`INSERT INTO idx_reference (rid, tenant, type, param, target_type, target_id)
			SELECT u.rid, $1, u.type, u.param, u.tt, u.tid
			FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(rid, type, param, tt, tid)`,
			x.tenant, x.ref.rid, x.ref.typ, x.ref.param, x.ref.tType, x.ref.tID)
	}
	if len(x.num.rid) > 0 {
		b.Queue(`INSERT INTO idx_number (rid, tenant, type, param, lo, hi)
			SELECT u.rid, $1, u.type, u.param, u.lo::numeric, u.hi::numeric
			FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(rid, type, param, lo, hi)`,
			x.tenant, x.num.rid, x.num.typ, x.num.param, x.num.lo, x.num.hi)
	}
	if len(x.qty.rid) > 0 {
		b.Queue(`INSERT INTO idx_quantity (rid, tenant, type, param, system, code, lo, hi)
			SELECT u.rid, $1, u.type, u.param, u.system, u.code, u.lo::numeric, u.hi::numeric
			FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
				AS u(rid, type, param, system, code, lo, hi)`,
			x.tenant, x.qty.rid, x.qty.typ, x.qty.param, x.qty.system, x.qty.code, x.qty.lo, x.qty.hi)
	}
	if len(x.uri.rid) > 0 {
		b.Queue(`INSERT INTO idx_uri (rid, tenant, type, param, uri)
			SELECT u.rid, $1, u.type, u.param, u.uri
			FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[]) AS u(rid, type, param, uri)`,
			x.tenant, x.uri.rid, x.uri.typ, x.uri.param, x.uri.uri)
	}
	if len(x.blind.rid) > 0 {
		b.Queue(`INSERT INTO idx_blind (rid, tenant, type, param, token, compartment)
			SELECT u.rid, $1, u.type, u.param, u.token, u.compartment
			FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bytea[], $6::text[]) AS u(rid, type, param, token, compartment)`,
			x.tenant, x.blind.rid, x.blind.typ, x.blind.param, x.blind.token, x.blind.compartment)
	}
}
