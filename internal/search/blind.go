package search

import (
	"fmt"
	"strings"
	"time"
)

// Blind indexes. When the elements a search parameter reads are encrypted
// (internal/phi), the parameter cannot keep plaintext index rows. Instead
// its values are written as blind tokens: keyed HMACs of a canonical form
// of each value, computed by a Blinder that holds the tenant's index key.
// A search computes the same tokens from the query values and matches
// them by equality, without decrypting anything. This file owns the
// canonical forms, so the write side and the query side cannot drift:
//
//	string values   "s:" + Normalize(value)         (case and accents folded)
//	token values    "c:" + code and "sc:" + system + "|" + code (system
//	                "" for values without one), where
//	                e-mail codes are lower-cased and phone-like codes
//	                reduced to their digits
//	date values     "D:2024-03-15", "M:2024-03", "Y:2024": every calendar
//	                unit (UTC) that wholly contains the value's range
//
// Blind tokens support equality only: string parameters match whole
// normalized values (no starts-with, :contains or :exact), tokens match
// code or system|code (not system|), and dates match eq/ge/gt/le/lt by
// expanding the query range into whole days, months and years.

// Protection says how a parameter's index is kept.
type Protection uint8

const (
	// Plain parameters keep plaintext index rows.
	Plain Protection = iota
	// Blind parameters keep only blind tokens.
	Blind
	// Hidden parameters read encrypted elements whose values cannot be
	// blind-indexed (references, numbers, quantities, URIs): they keep no
	// index rows and cannot be searched.
	Hidden
)

// Blinder decides which parameters are protected and computes their
// tokens. It is per tenant.
type Blinder interface {
	Protection(resourceType, code string) Protection
	// Tokens returns the blind token of each canonical value, in order.
	Tokens(resourceType, code string, canon []string) ([][]byte, error)
	// MinYear is where open date ranges start ("birthdate=lt1950");
	// they end with next year.
	MinYear() int
}

// BlindToken is an idx_blind row.
type BlindToken struct {
	Param string
	Token []byte
}

// ElementPath is an element a parameter reads: JSON member names from the
// resource root, and the FHIR type of the selected elements.
type ElementPath struct {
	Steps []string
	Leaf  string
}

// Paths returns the elements the parameter reads.
func (p *Parameter) Paths() []ElementPath {
	out := make([]ElementPath, 0, len(p.paths))
	for _, cp := range p.paths {
		names := make([]string, len(cp.steps))
		for i, st := range cp.steps {
			names[i] = st.Name
		}
		out = append(out, ElementPath{Steps: names, Leaf: cp.leafType})
	}
	return out
}

// ApplyBlind replaces the index rows of protected parameters by blind
// tokens (Blind) or drops them (Hidden).
func (e *Entries) ApplyBlind(resourceType string, b Blinder) error {
	prot := func(code string) Protection { return b.Protection(resourceType, code) }
	var canon []string
	var params []string
	e.Tokens = filter(e.Tokens, func(t Token) bool {
		switch prot(t.Param) {
		case Blind:
			for _, c := range tokenCanon(t.System, t.Code, true) {
				canon, params = append(canon, c), append(params, t.Param)
			}
			return false
		case Hidden:
			return false
		}
		return true
	})
	e.Strings = filter(e.Strings, func(s String) bool {
		switch prot(s.Param) {
		case Blind:
			canon, params = append(canon, "s:"+s.Norm), append(params, s.Param)
			return false
		case Hidden:
			return false
		}
		return true
	})
	e.Dates = filter(e.Dates, func(d Date) bool {
		switch prot(d.Param) {
		case Blind:
			for _, c := range dateUnits(d.Lo, d.Hi) {
				canon, params = append(canon, c), append(params, d.Param)
			}
			return false
		case Hidden:
			return false
		}
		return true
	})
	keep := func(param string) bool { return prot(param) == Plain }
	e.References = filter(e.References, func(r Reference) bool { return keep(r.Param) })
	e.Numbers = filter(e.Numbers, func(n Number) bool { return keep(n.Param) })
	e.Quantities = filter(e.Quantities, func(q Quantity) bool { return keep(q.Param) })
	e.URIs = filter(e.URIs, func(u URI) bool { return keep(u.Param) })
	e.Blind = e.Blind[:0]
	// One Tokens call per parameter.
	for i := 0; i < len(canon); {
		j := i
		for j < len(canon) && params[j] == params[i] {
			j++
		}
		toks, err := b.Tokens(resourceType, params[i], canon[i:j])
		if err != nil {
			return err
		}
		for _, t := range toks {
			e.Blind = appendUniqueToken(e.Blind, BlindToken{Param: params[i], Token: t})
		}
		i = j
	}
	return nil
}

func appendUniqueToken(s []BlindToken, t BlindToken) []BlindToken {
	for _, x := range s {
		if x.Param == t.Param && string(x.Token) == string(t.Token) {
			return s
		}
	}
	return append(s, t)
}

func filter[T any](s []T, keep func(T) bool) []T {
	out := s[:0]
	for _, v := range s {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}

// tokenCanon returns the canonical forms of a token value. With withCode,
// the code alone is included (a value matches "code" and "system|code").
// A value without a system has "sc:|code", which "|code" searches for.
func tokenCanon(system, code string, withCode bool) []string {
	c := canonCode(code)
	out := make([]string, 0, 2)
	if withCode {
		out = append(out, "c:"+c)
	}
	return append(out, "sc:"+system+"|"+c)
}

// canonCode folds the codes whose spelling varies: e-mail addresses
// (case-insensitive) and phone numbers (punctuation).
func canonCode(code string) string {
	code = strings.TrimSpace(code)
	if strings.Contains(code, "@") {
		return strings.ToLower(strings.TrimPrefix(strings.ToLower(code), "mailto:"))
	}
	digits := 0
	for _, r := range code {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case strings.ContainsRune(" +-().x/", r):
		default:
			return code
		}
	}
	if digits < 4 {
		return code
	}
	var b strings.Builder
	for _, r := range code {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

const dayLen = 24 * time.Hour

// dateUnits lists the calendar units (UTC) that wholly contain [lo, hi].
// Open periods (MinTime/MaxTime ends) have none.
func dateUnits(lo, hi time.Time) []string {
	if !lo.After(MinTime) || !hi.Before(MaxTime) || hi.Before(lo) {
		return nil
	}
	lo, hi = lo.UTC(), hi.UTC()
	var out []string
	if lo.Year() != hi.Year() {
		return nil
	}
	out = append(out, "Y:"+lo.Format("2006"))
	if lo.Month() != hi.Month() {
		return out
	}
	out = append(out, "M:"+lo.Format("2006-01"))
	if lo.Day() != hi.Day() {
		return out
	}
	return append(out, "D:"+lo.Format("2006-01-02"))
}

// dateQueryUnits expands the closed range [lo, hi] into the fewest whole
// days, months and years it contains, within [minYear, maxYear] when the
// range is open (starts at MinTime or ends at MaxTime).
func dateQueryUnits(lo, hi time.Time, minYear, maxYear int) []string {
	floor := time.Date(minYear, 1, 1, 0, 0, 0, 0, time.UTC)
	ceil := time.Date(maxYear+1, 1, 1, 0, 0, 0, 0, time.UTC) // exclusive
	lo, hi = lo.UTC(), hi.UTC()
	// [a, b): whole days only.
	a := time.Date(lo.Year(), lo.Month(), lo.Day(), 0, 0, 0, 0, time.UTC)
	if a.Before(lo) {
		a = a.Add(dayLen)
	}
	b := time.Date(hi.Year(), hi.Month(), hi.Day(), 0, 0, 0, 0, time.UTC).Add(dayLen)
	if b.Add(-time.Microsecond).After(hi) {
		b = b.Add(-dayLen)
	}
	if !lo.After(MinTime) || !hi.Before(MaxTime) { // open: bounded; closed (eq) spans a year at most
		if a.Before(floor) {
			a = floor
		}
		if b.After(ceil) {
			b = ceil
		}
	}
	var out []string
	for a.Before(b) {
		switch {
		case a.YearDay() == 1 && !a.AddDate(1, 0, 0).After(b):
			out = append(out, "Y:"+a.Format("2006"))
			a = a.AddDate(1, 0, 0)
		case a.Day() == 1 && !a.AddDate(0, 1, 0).After(b):
			out = append(out, "M:"+a.Format("2006-01"))
			a = a.AddDate(0, 1, 0)
		default:
			out = append(out, "D:"+a.Format("2006-01-02"))
			a = a.Add(dayLen)
		}
	}
	return out
}

// ApplyBlind turns the conditions on protected parameters into blind-token
// conditions. A condition the blind index cannot answer is a 400 naming
// the parameter; so is a search or sort by a Hidden parameter.
func (q *Query) ApplyBlind(b Blinder, now time.Time) error {
	for _, k := range q.Sort {
		if b.Protection(q.Type, k.Param) != Plain {
			return invalid("_sort", "cannot sort by %q: its values are encrypted", k.Param)
		}
	}
	for i := range q.Params {
		p := &q.Params[i]
		if p.def.column != "" {
			continue
		}
		switch b.Protection(q.Type, p.def.Code) {
		case Plain:
			continue
		case Hidden:
			return invalid(p.Name, "cannot search: the elements it reads are encrypted and its values are not blind-indexed")
		}
		p.blind = true
		if p.Modifier == "missing" {
			continue
		}
		if p.Modifier != "" && p.Modifier != "not" {
			return invalid(p.Name+":"+p.Modifier, "the :%s modifier is not available: the parameter's values are encrypted and match only whole values", p.Modifier)
		}
		var canon []string
		for _, v := range p.Values {
			switch p.def.Type {
			case TypeString:
				canon = append(canon, "s:"+Clip(Normalize(v.Code)))
			case TypeToken:
				switch {
				case v.AnyCode:
					return invalid(p.Name, "searching by system alone is not available on an encrypted parameter")
				case v.AnySystem:
					canon = append(canon, "c:"+canonCode(Clip(v.Code)))
				default: // "system|code", or "|code": values without a system
					canon = append(canon, tokenCanon(Clip(v.System), Clip(v.Code), false)...)
				}
			case TypeDate:
				lo, hi := v.Lo, v.Hi
				switch v.Prefix {
				case "", "eq":
				case "ge":
					hi = MaxTime
				case "gt":
					lo, hi = v.Hi.Add(time.Microsecond), MaxTime
				case "le":
					lo = MinTime
				case "lt":
					lo, hi = MinTime, v.Lo.Add(-time.Microsecond)
				default:
					return invalid(p.Name, "prefix %q is not available on an encrypted date (use eq, ge, gt, le or lt)", v.Prefix)
				}
				canon = append(canon, dateQueryUnits(lo, hi, b.MinYear(), now.Year()+1)...)
			default:
				return invalid(p.Name, "cannot search: its values are encrypted")
			}
		}
		if len(canon) == 0 {
			p.tokens = [][]byte{} // matches nothing
			continue
		}
		toks, err := b.Tokens(q.Type, p.def.Code, canon)
		if err != nil {
			return err
		}
		p.tokens = toks
	}
	return nil
}

func (p *Param) blindCond(args *[]any) string {
	return "i.token = ANY(" + bind(args, p.tokens) + "::bytea[])"
}

// String for tests and logs: never the tokens themselves.
func (t BlindToken) String() string { return fmt.Sprintf("blind(%s)", t.Param) }
