package search

import (
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/fhirgate/fhirgate/internal/fhir"
)

// Condition renders the query's conditions as one SQL boolean expression
// over the resources table aliased "r", appending bind arguments to args
// and numbering placeholders after those already there. It returns "TRUE"
// for no conditions. args must already hold the tenant as $1 and the
// resource type as $2; the caller adds r.tenant, r.type and r.deleted.
//
// The positive conditions (a value that must be present) become one
// "r.rid IN (... INTERSECT ...)" over the index tables' (tenant, type,
// param, value, rid) lookup indexes, so the matching rids are intersected
// from index-only scans before any resource row is touched, whatever the
// planner estimates. Negative conditions (:not, :missing) and those served
// by the resources table itself (_id, _lastUpdated) filter the rows.
func (q *Query) Condition(args *[]any) string {
	if len(q.Params) == 0 {
		return "TRUE"
	}
	var parts, sets []string
	// patient=P with a token or date condition beside it: those rows are
	// looked up in P's compartment, which implies patient=P.
	compIdx, compID := q.compartment()
	implied := false
	for i := range q.Params {
		p := &q.Params[i]
		if i != compIdx && p.positive() && compIdx >= 0 && p.compartmental() {
			sets = append(sets, p.ridSet(args)+" AND i.compartment = "+bind(args, compID))
			implied = true
		}
	}
	for i := range q.Params {
		p := &q.Params[i]
		switch {
		case i == compIdx && implied:
		case compIdx >= 0 && i != compIdx && p.positive() && p.compartmental():
		case p.positive():
			sets = append(sets, p.ridSet(args))
		default:
			parts = append(parts, p.sql(args))
		}
	}
	if len(sets) > 0 {
		parts = append([]string{"r.rid IN (" + strings.Join(sets, " INTERSECT ") + ")"}, parts...)
	}
	return strings.Join(parts, " AND ")
}

// compartment finds a condition that pins the patient compartment: the
// "patient" parameter, without modifiers other than :Patient, with one
// value naming a Patient. It returns that condition's index and the
// Patient id, or -1.
func (q *Query) compartment() (int, string) {
	for i := range q.Params {
		p := &q.Params[i]
		if p.Name != CompartmentParam || p.def.Type != TypeReference || len(p.Values) != 1 ||
			(p.Modifier != "" && p.Modifier != "Patient") {
			continue
		}
		v := p.Values[0]
		onlyPatient := len(p.def.Targets) == 1 && p.def.Targets[0] == "Patient"
		if v.Missing || v.TargetID == "" || !(v.TargetType == "Patient" || (v.TargetType == "" && onlyPatient)) {
			continue
		}
		return i, Clip(v.TargetID)
	}
	return -1, ""
}

// positive reports whether the condition requires an index row to exist.
func (p *Param) positive() bool {
	return p.def.column == "" && p.Modifier != "missing" && p.Modifier != "not"
}

// compartmental reports whether the parameter's rows are stored per
// patient compartment (token, date and blind rows).
func (p *Param) compartmental() bool {
	return p.blind || p.def.Type == TypeToken || p.def.Type == TypeDate
}

// table is the index table serving the parameter.
func (p *Param) table() string {
	if p.blind {
		return "idx_blind"
	}
	return tables[p.def.Type]
}

// values renders the value conditions, ORed.
func (p *Param) values(args *[]any) string {
	if p.blind {
		return p.blindCond(args)
	}
	var ors []string
	for _, v := range p.Values {
		ors = append(ors, p.valueCond(args, v))
	}
	return or(ors)
}

// ridSet renders the rids of resources with a matching index row.
func (p *Param) ridSet(args *[]any) string {
	return "SELECT i.rid FROM " + p.table() + " i WHERE i.tenant = $1 AND i.type = $2 AND i.param = " +
		bind(args, p.def.Code) + " AND " + p.values(args)
}

func bind(args *[]any, v any) string {
	*args = append(*args, v)
	return "$" + strconv.Itoa(len(*args))
}

var tables = map[Type]string{
	TypeToken: "idx_token", TypeString: "idx_string", TypeDate: "idx_date", TypeReference: "idx_reference",
	TypeNumber: "idx_number", TypeQuantity: "idx_quantity", TypeURI: "idx_uri",
}

func exists(args *[]any, table, param, cond string) string {
	s := "EXISTS (SELECT 1 FROM " + table + " i WHERE i.rid = r.rid AND i.tenant = r.tenant AND i.type = r.type AND i.param = " + bind(args, param)
	if cond != "" {
		s += " AND (" + cond + ")"
	}
	return s + ")"
}

func (p *Param) sql(args *[]any) string {
	d := p.def
	if p.Modifier == "missing" {
		var ors []string
		for _, v := range p.Values {
			if d.column != "" { // _id and _lastUpdated are never missing
				if v.Missing {
					ors = append(ors, "FALSE")
				} else {
					ors = append(ors, "TRUE")
				}
				continue
			}
			e := exists(args, p.table(), d.Code, "")
			if v.Missing {
				e = "NOT " + e
			}
			ors = append(ors, e)
		}
		return or(ors)
	}
	switch d.column {
	case "id":
		ids := make([]string, len(p.Values))
		for i, v := range p.Values {
			ids[i] = v.Code
		}
		return "r.id = ANY(" + bind(args, ids) + "::text[])"
	case "last_updated":
		var ors []string
		for _, v := range p.Values {
			ors = append(ors, dateCond(args, v, "r.last_updated", "r.last_updated"))
		}
		return or(ors)
	}
	cond := p.values(args)
	if p.Modifier == "not" {
		return "NOT " + exists(args, p.table(), d.Code, cond)
	}
	return exists(args, p.table(), d.Code, cond)
}

func or(parts []string) string {
	if len(parts) == 1 {
		return parts[0]
	}
	return "(" + strings.Join(parts, " OR ") + ")"
}

func (p *Param) valueCond(args *[]any, v Value) string {
	switch p.def.Type {
	case TypeToken:
		switch {
		case v.AnySystem:
			return "i.code = " + bind(args, Clip(v.Code))
		case v.AnyCode:
			return "i.system = " + bind(args, Clip(v.System))
		default:
			return "(i.code = " + bind(args, Clip(v.Code)) + " AND i.system = " + bind(args, Clip(v.System)) + ")"
		}
	case TypeString:
		switch p.Modifier {
		case "exact":
			return "i.exact = " + bind(args, Clip(v.Code))
		case "contains":
			return "i.norm LIKE " + bind(args, "%"+escapeLike(Clip(Normalize(v.Code)))+"%")
		}
		return prefixCond(args, "i.norm", Clip(Normalize(v.Code)))
	case TypeURI:
		switch p.Modifier {
		case "below":
			return prefixCond(args, "i.uri", Clip(v.Code))
		case "above":
			return "starts_with(" + bind(args, v.Code) + ", i.uri)"
		}
		return "i.uri = " + bind(args, Clip(v.Code))
	case TypeDate:
		return dateCond(args, v, "i.lo", "i.hi")
	case TypeReference:
		if v.TargetType == "" {
			return "i.target_id = " + bind(args, Clip(v.TargetID))
		}
		return "(i.target_id = " + bind(args, Clip(v.TargetID)) + " AND i.target_type = " + bind(args, v.TargetType) + ")"
	case TypeNumber:
		return numberCond(args, v)
	case TypeQuantity:
		c := numberCond(args, v)
		if v.System != "" {
			c += " AND i.system = " + bind(args, Clip(v.System))
		}
		if v.Code != "" {
			c += " AND i.code = " + bind(args, Clip(v.Code))
		}
		return "(" + c + ")"
	}
	return "FALSE"
}

// prefixCond is a starts-with test written as a range, so that the
// text_pattern_ops index serves it even in a generic plan: every string
// with the prefix lies in [prefix, prefix+U+10FFFF).
func prefixCond(args *[]any, col, prefix string) string {
	if prefix == "" {
		return "TRUE"
	}
	return "(" + col + " ~>=~ " + bind(args, prefix) + " AND " + col + " ~<~ " + bind(args, prefix+"\U0010FFFF") + ")"
}

func escapeLike(s string) string {
	if !strings.ContainsAny(s, `\%_`) {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

// now is the clock for the ap prefix; tests replace it.
var now = time.Now

// dateCond compares an entry range [lo, hi] with the search range [S, E]
// per the FHIR R4 prefix rules:
//
//	eq  lo >= S and hi <= E (the search range contains the entry)
//	ne  not eq
//	gt  hi > E          lt  lo < S
//	ge  gt or eq        le  lt or eq
//	sa  lo > E          eb  hi < S
//	ap  the ranges overlap once the search range is widened by 10% of its
//	    distance from now (at least one day) on each side
func dateCond(args *[]any, v Value, lo, hi string) string {
	s, e := v.Lo, v.Hi
	switch v.Prefix {
	case "", "eq":
		return "(" + lo + " >= " + bind(args, s) + " AND " + hi + " <= " + bind(args, e) + ")"
	case "ne":
		return "(" + lo + " < " + bind(args, s) + " OR " + hi + " > " + bind(args, e) + ")"
	case "gt":
		return hi + " > " + bind(args, e)
	case "lt":
		return lo + " < " + bind(args, s)
	case "ge":
		return "(" + hi + " > " + bind(args, e) + " OR (" + lo + " >= " + bind(args, s) + " AND " + hi + " <= " + bind(args, e) + "))"
	case "le":
		return "(" + lo + " < " + bind(args, s) + " OR (" + lo + " >= " + bind(args, s) + " AND " + hi + " <= " + bind(args, e) + "))"
	case "sa":
		return lo + " > " + bind(args, e)
	case "eb":
		return hi + " < " + bind(args, s)
	case "ap":
		t := now()
		mid := s.Add(e.Sub(s) / 2)
		gap := t.Sub(mid)
		if gap < 0 {
			gap = -gap
		}
		gap /= 10
		if gap < 24*time.Hour {
			gap = 24 * time.Hour
		}
		return "(" + lo + " <= " + bind(args, e.Add(gap)) + " AND " + hi + " >= " + bind(args, s.Add(-gap)) + ")"
	}
	return "FALSE"
}

// numberCond compares an entry's value, the midpoint of [i.lo, i.hi], with
// the search value per the FHIR R4 rules: eq matches values inside the
// search value's precision range [S, E); gt, lt, ge, le, sa (as gt), eb (as
// lt) compare with the value itself; ap allows ±10% of it. The redundant
// bounds on i.lo and i.hi let the lookup index narrow the scan.
func numberCond(args *[]any, v Value) string {
	const mid = "(i.lo + i.hi) / 2"
	s, e, _ := decimalRange(v.Number)
	n := func(x string) string { return bind(args, x) + "::numeric" }
	switch v.Prefix {
	case "", "eq":
		return "(i.lo < " + n(e) + " AND " + mid + " >= " + n(s) + " AND " + mid + " < " + n(e) + ")"
	case "ne":
		return "(" + mid + " < " + n(s) + " OR " + mid + " >= " + n(e) + ")"
	case "gt", "sa":
		return "(i.hi > " + n(v.Number) + " AND " + mid + " > " + n(v.Number) + ")"
	case "lt", "eb":
		return "(i.lo < " + n(v.Number) + " AND " + mid + " < " + n(v.Number) + ")"
	case "ge":
		return "(i.hi >= " + n(v.Number) + " AND " + mid + " >= " + n(v.Number) + ")"
	case "le":
		return "(i.lo <= " + n(v.Number) + " AND " + mid + " <= " + n(v.Number) + ")"
	case "ap":
		r, ok := new(big.Rat).SetString(v.Number)
		if !ok {
			return "FALSE"
		}
		d := new(big.Rat).Abs(r)
		d.Quo(d, big.NewRat(10, 1))
		lo := new(big.Rat).Sub(r, d).FloatString(20)
		hi := new(big.Rat).Add(r, d).FloatString(20)
		return "(" + mid + " >= " + n(lo) + " AND " + mid + " <= " + n(hi) + ")"
	}
	return "FALSE"
}

// SortExpr is one ORDER BY key.
type SortExpr struct {
	SQL      string // expression over r
	Desc     bool
	Nullable bool // NULL for a resource without the parameter
}

// SortSQL returns the ORDER BY keys for the query's sort, always ending
// with r.id ascending as the tiebreaker, appending the bind arguments they
// need to args. A parameter sort is a scalar subquery over the index table:
// the least value (min lo, min norm, min code) ascending, the greatest (max
// hi, max norm, max code) descending. Resources without the parameter sort
// last in both directions (NULLS LAST).
//
// For keyset pagination the store selects the same expressions as columns,
// orders by OrderBy(keys), keeps the last row's key values (Cursor encodes
// them for a next link) and filters the next page with After.
func (q *Query) SortSQL(args *[]any) []SortExpr {
	keys := make([]SortExpr, 0, len(q.Sort)+1)
	for _, k := range q.Sort {
		p := Lookup(q.Type, k.Param)
		var expr string
		switch {
		case p.column == "id":
			expr = "r.id"
		case p.column == "last_updated":
			expr = "r.last_updated"
		default:
			agg, col, table := "min", "", tables[p.Type]
			if k.Desc {
				agg = "max"
			}
			switch p.Type {
			case TypeDate:
				col = "lo"
				if k.Desc {
					col = "hi"
				}
			case TypeString:
				col = `norm COLLATE "C"`
			case TypeToken:
				col = `code COLLATE "C"`
			}
			expr = "(SELECT " + agg + "(i." + col + ") FROM " + table + " i WHERE i.rid = r.rid AND i.param = " + bind(args, p.Code) + ")"
		}
		keys = append(keys, SortExpr{SQL: expr, Desc: k.Desc, Nullable: p.column == ""})
	}
	return append(keys, SortExpr{SQL: "r.id"})
}

// OrderBy renders keys as an ORDER BY list (without the keywords).
func OrderBy(keys []SortExpr) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		dir := " ASC NULLS LAST"
		if k.Desc {
			dir = " DESC NULLS LAST"
		}
		parts[i] = k.SQL + dir
	}
	return strings.Join(parts, ", ")
}

// After renders the keyset predicate selecting the rows that sort after a
// row whose key values are last (as scanned: time.Time, string or nil for
// NULL), appending bind arguments to args.
func After(keys []SortExpr, last []any, args *[]any) (string, error) {
	if len(last) != len(keys) {
		return "", fhir.Errorf(fhir.KindInvalid, "", "invalid page cursor")
	}
	var ors []string
	var eqs []string
	for i, k := range keys {
		if last[i] == nil {
			// Only NULLs follow a NULL: no strictly-after tier at this key.
			eqs = append(eqs, k.SQL+" IS NULL")
			continue
		}
		op := " > "
		if k.Desc {
			op = " < "
		}
		ph := bind(args, last[i])
		after := k.SQL + op + ph
		if k.Nullable {
			after = "(" + after + " OR " + k.SQL + " IS NULL)"
		}
		tier := append(append([]string(nil), eqs...), after)
		ors = append(ors, "("+strings.Join(tier, " AND ")+")")
		eqs = append(eqs, k.SQL+" = "+ph)
	}
	if len(ors) == 0 {
		return "FALSE", nil
	}
	return "(" + strings.Join(ors, " OR ") + ")", nil
}

type cursorValue struct {
	T *int64  `json:"t,omitempty"` // time.Time as Unix microseconds
	S *string `json:"s,omitempty"`
}

// Cursor encodes a row's sort key values (time.Time, string or nil) as an
// opaque URL-safe token. It holds the key values, which may be PHI (a
// sorted name): callers should not log it.
func Cursor(values []any) (string, error) {
	out := make([]cursorValue, len(values))
	for i, v := range values {
		switch t := v.(type) {
		case nil:
		case time.Time:
			us := t.UnixMicro()
			out[i].T = &us
		case string:
			out[i].S = &t
		default:
			return "", fhir.Errorf(fhir.KindInternal, "", "sort key of unsupported type")
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ParseCursor decodes a Cursor token.
func ParseCursor(s string) ([]any, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	var in []cursorValue
	if err == nil {
		err = json.Unmarshal(b, &in)
	}
	if err != nil {
		return nil, fhir.Errorf(fhir.KindInvalid, "", "invalid page cursor")
	}
	out := make([]any, len(in))
	for i, v := range in {
		switch {
		case v.T != nil:
			out[i] = time.UnixMicro(*v.T).UTC()
		case v.S != nil:
			out[i] = *v.S
		}
	}
	return out, nil
}
