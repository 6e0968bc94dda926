package search

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fhirgate/fhirgate/internal/fhir"
)

// fakeBlinder protects parameters by a fixed table and computes tokens as
// an HMAC under a fixed key: ApplyBlind is a pure function of it.
type fakeBlinder struct {
	prot    map[string]Protection // type.code
	calls   map[string]int        // Tokens calls per type.code
	canon   map[string][]string   // canonical values seen per type.code
	failFor string
}

func newFakeBlinder() *fakeBlinder {
	b := &fakeBlinder{prot: map[string]Protection{}, calls: map[string]int{}, canon: map[string][]string{}}
	for _, c := range []string{"family", "given", "name", "birthdate", "identifier", "phone", "email", "telecom", "address", "address-city", "death-date"} {
		b.prot["Patient."+c] = Blind
	}
	b.prot["Patient.address-use"] = Hidden
	b.prot["Patient.general-practitioner"] = Hidden // a Hidden reference, to see it dropped
	return b
}

func (b *fakeBlinder) Protection(typ, code string) Protection { return b.prot[typ+"."+code] }
func (b *fakeBlinder) MinYear() int                           { return 1850 }

func (b *fakeBlinder) Tokens(typ, code string, canon []string) ([][]byte, error) {
	b.calls[typ+"."+code]++
	b.canon[typ+"."+code] = append(b.canon[typ+"."+code], canon...)
	if code == b.failFor {
		return nil, errors.New("fake blinder: provider down")
	}
	out := make([][]byte, len(canon))
	for i, c := range canon {
		out[i] = fakeToken(typ, code, c)
	}
	return out, nil
}

func fakeToken(typ, code, canon string) []byte {
	m := hmac.New(sha256.New, []byte("fixed test key"))
	m.Write([]byte(typ + "." + code + "\x00" + canon))
	return m.Sum(nil)[:12]
}

func day(s string) time.Time {
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		panic(err)
	}
	return t
}

// endOf returns the last microsecond of the range DateRange gives s.
func rangeOf(t *testing.T, s string) (time.Time, time.Time) {
	t.Helper()
	lo, hi, ok := DateRange(s)
	if !ok {
		t.Fatalf("DateRange(%q) failed", s)
	}
	return lo, hi
}

func TestDateQueryUnits(t *testing.T) {
	mk := func(from, to string) (time.Time, time.Time) {
		lo, _ := rangeOf(t, from)
		_, hi := rangeOf(t, to)
		return lo, hi
	}
	years := func(from, to int) []string {
		var out []string
		for y := from; y <= to; y++ {
			out = append(out, fmt.Sprintf("Y:%d", y))
		}
		return out
	}
	type tc struct {
		name   string
		lo, hi time.Time
		want   []string
	}
	var cases []tc
	add := func(name, from, to string, want ...string) {
		lo, hi := mk(from, to)
		cases = append(cases, tc{name, lo, hi, want})
	}
	add("month and year", "1974-12-01", "1975-12-31", "M:1974-12", "Y:1975")
	add("full year", "1975", "1975", "Y:1975")
	add("full year by days", "1975-01-01", "1975-12-31", "Y:1975")
	add("one day", "1975-03-15", "1975-03-15", "D:1975-03-15")
	add("one month", "1975-03", "1975-03", "M:1975-03")
	add("leap February", "2024-02-01", "2024-02-29", "M:2024-02")
	add("February without its last day", "2023-02-01", "2023-02-27", days("2023-02-01", "2023-02-27")...)
	add("days around a month end", "1975-02-27", "1975-03-02", "D:1975-02-27", "D:1975-02-28", "D:1975-03-01", "D:1975-03-02")
	add("days, months, years, months, days", "1998-11-30", "2001-02-02",
		"D:1998-11-30", "M:1998-12", "Y:1999", "Y:2000", "M:2001-01", "D:2001-02-01", "D:2001-02-02")
	// Partial days at the ends are left out: only whole units count.
	lo := time.Date(1975, 3, 15, 12, 0, 0, 0, time.UTC)
	hi := time.Date(1975, 3, 17, 11, 0, 0, 0, time.UTC)
	cases = append(cases, tc{"partial days", lo, hi, []string{"D:1975-03-16"}})
	cases = append(cases, tc{"within one day", lo, lo.Add(time.Hour), nil})
	cases = append(cases, tc{"empty", hi, lo, nil})
	// Open ranges start at MinYear and end with next year (maxYear).
	_, e1851 := rangeOf(t, "1851")
	cases = append(cases, tc{"open start", MinTime, e1851, []string{"Y:1850", "Y:1851"}})
	cases = append(cases, tc{"open start before MinYear", MinTime, day("1849-06-30"), nil})
	s2025 := day("2025-06-01")
	cases = append(cases, tc{"open end", s2025, MaxTime, append([]string{"M:2025-06", "M:2025-07", "M:2025-08", "M:2025-09", "M:2025-10", "M:2025-11", "M:2025-12"}, years(2026, 2027)...)})
	cases = append(cases, tc{"everything", MinTime, MaxTime, years(1850, 2027)})
	cases = append(cases, tc{"after maxYear", day("2030-01-01"), MaxTime, nil})
	cases = append(cases, tc{"closed range across MinYear", day("1848-01-01"), e1851, []string{"Y:1848", "Y:1849", "Y:1850", "Y:1851"}})
	cases = append(cases, tc{"open end starting before MinYear", day("1848-01-01"), MaxTime, years(1850, 2027)})
	// Closed ranges (eq searches) are not bounded: they span a year at most.
	add("closed, before MinYear", "1849-05-01", "1849-05-01", "D:1849-05-01")
	add("closed, after maxYear", "2030", "2030", "Y:2030")
	for _, c := range cases {
		got := dateQueryUnits(c.lo, c.hi, 1850, 2027)
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("%s: dateQueryUnits(%s, %s) (-want +got):\n%s", c.name, c.lo, c.hi, diff)
		}
	}
}

func days(from, to string) []string {
	var out []string
	for d := day(from); !d.After(day(to)); d = d.AddDate(0, 0, 1) {
		out = append(out, "D:"+d.Format("2006-01-02"))
	}
	return out
}

func TestDateUnits(t *testing.T) {
	for _, c := range []struct {
		value string
		want  []string
	}{
		{"1975-03-15", []string{"Y:1975", "M:1975-03", "D:1975-03-15"}},
		{"1975-03", []string{"Y:1975", "M:1975-03"}},
		{"1975", []string{"Y:1975"}},
		{"2015-02-14T13:42:00Z", []string{"Y:2015", "M:2015-02", "D:2015-02-14"}},
		{"2015-02-14T13:42:00.123+10:00", []string{"Y:2015", "M:2015-02", "D:2015-02-14"}},
		{"1975-03-15T23:30:00-05:00", []string{"Y:1975", "M:1975-03", "D:1975-03-16"}}, // UTC
		{"1999-12-31T23:30:00-01:00", []string{"Y:2000", "M:2000-01", "D:2000-01-01"}},
	} {
		lo, hi := rangeOf(t, c.value)
		if diff := cmp.Diff(c.want, dateUnits(lo, hi)); diff != "" {
			t.Errorf("dateUnits(%s) (-want +got):\n%s", c.value, diff)
		}
	}
	// Periods: open ends and spans across units have no unit that
	// wholly contains them (beyond the year they share).
	for _, c := range []struct {
		name   string
		lo, hi time.Time
		want   []string
	}{
		{"open start", MinTime, day("1975-03-15"), nil},
		{"open end", day("1975-03-15"), MaxTime, nil},
		{"open both", MinTime, MaxTime, nil},
		{"across years", day("1975-12-31"), day("1976-01-01"), nil},
		{"across months", day("1975-01-31"), day("1975-02-01"), []string{"Y:1975"}},
		{"across days", day("1975-01-30"), day("1975-01-31"), []string{"Y:1975", "M:1975-01"}},
		{"reversed", day("1975-01-31"), day("1975-01-30"), nil},
	} {
		if diff := cmp.Diff(c.want, dateUnits(c.lo, c.hi)); diff != "" {
			t.Errorf("dateUnits %s (-want +got):\n%s", c.name, diff)
		}
	}
}

func TestCanonCode(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		// Phone numbers: digits only.
		{"+1 (555) 867-5309", "15558675309"},
		{"555-1234", "5551234"},
		{"(03) 5555 6473", "0355556473"},
		{"555.1234", "5551234"},
		{"1.2.3", "1.2.3"}, // three digits: left alone
		{"555 x12", "55512"},
		{" 0412 555 001 ", "0412555001"},
		{"12-3", "12-3"}, // fewer than 4 digits: left alone
		// E-mail: lower-cased, mailto: stripped.
		{"John.Doe@Example.COM", "john.doe@example.com"},
		{"mailto:John@Example.com", "john@example.com"},
		{"MAILTO:john@example.com", "john@example.com"},
		{" x@y.org ", "x@y.org"},
		// Identifiers and codes: unchanged.
		{"MRN-77123", "MRN-77123"},
		{"A1234567", "A1234567"},
		{"male", "male"},
		{"urn:oid:1.2.36.146.595.217.0.1", "urn:oid:1.2.36.146.595.217.0.1"},
		{"Ünïcode-ID", "Ünïcode-ID"},
		{"", ""},
	} {
		if got := canonCode(c.in); got != c.want {
			t.Errorf("canonCode(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestTokenCanon(t *testing.T) {
	for _, c := range []struct {
		system, code string
		withCode     bool
		want         []string
	}{
		{"http://x", "A", true, []string{"c:A", "sc:http://x|A"}},
		{"", "A", true, []string{"c:A", "sc:|A"}},
		{"http://x", "A", false, []string{"sc:http://x|A"}},
		{"", "A", false, []string{"sc:|A"}},
		{"urn:tel", "+1 555 123 4567", true, []string{"c:15551234567", "sc:urn:tel|15551234567"}},
	} {
		if diff := cmp.Diff(c.want, tokenCanon(c.system, c.code, c.withCode)); diff != "" {
			t.Errorf("tokenCanon(%q, %q, %v) (-want +got):\n%s", c.system, c.code, c.withCode, diff)
		}
	}
}

// parse parses a Patient search.
func parse(t *testing.T, query string) *Query {
	t.Helper()
	v, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	q, err := Parse("Patient", v, true)
	if err != nil {
		t.Fatalf("Parse(%s): %v", query, err)
	}
	return q
}

var testNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestQueryApplyBlindRefusals(t *testing.T) {
	for _, c := range []struct {
		query string
		names []string // the error must name these
	}{
		{"family:contains=chal", []string{"family:contains"}},
		{"family:exact=Chalmers", []string{"family:exact"}},
		{"name:contains=x", []string{"name:contains"}},
		{"birthdate=sa1970", []string{"birthdate", "sa"}},
		{"birthdate=eb1970", []string{"birthdate", "eb"}},
		{"birthdate=ap1970", []string{"birthdate", "ap"}},
		{"birthdate=ne1970-01-01", []string{"birthdate", "ne"}},
		{"death-date=ne2015", []string{"death-date", "ne"}},
		{"_sort=family", []string{"_sort", "family"}},
		{"_sort=gender,-birthdate", []string{"_sort", "birthdate"}},
		{"address-use=home", []string{"address-use"}},
		{"address-use:missing=true", []string{"address-use"}},
		{"identifier=http://hospital.example/mrn|", []string{"identifier"}},
		{"gender=male&family:contains=x", []string{"family:contains"}},
	} {
		t.Run(c.query, func(t *testing.T) {
			q := parse(t, c.query)
			err := q.ApplyBlind(newFakeBlinder(), testNow)
			if err == nil {
				t.Fatal("accepted")
			}
			if fhir.KindOf(err) != fhir.KindInvalid {
				t.Errorf("%v: kind %d, want a 400", err, fhir.KindOf(err))
			}
			for _, n := range c.names {
				if !strings.Contains(err.Error(), n) {
					t.Errorf("error %q does not name %q", err, n)
				}
			}
			for _, secret := range []string{"chal", "Chalmers", "1970", "hospital.example"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q quotes the search value %q", err, secret)
				}
			}
		})
	}
	// Allowed: plain parameters untouched, :not, :missing, sorting by plain
	// parameters, _id and _lastUpdated.
	q := parse(t, "gender=male&family=Chalmers&identifier:not=X1&phone:missing=false&_sort=gender,-_lastUpdated&_id=p1&_lastUpdated=gt2020&general-practitioner:missing=true")
	b := newFakeBlinder()
	b.prot["Patient.general-practitioner"] = Plain
	if err := q.ApplyBlind(b, testNow); err != nil {
		t.Fatal(err)
	}
	for _, p := range q.Params {
		blind := b.Protection("Patient", p.Name) == Blind
		if p.blind != blind {
			t.Errorf("%s: blind %v, want %v", p.Name, p.blind, blind)
		}
		if (p.tokens != nil) != (blind && p.Modifier != "missing") {
			t.Errorf("%s:%s: %d tokens", p.Name, p.Modifier, len(p.tokens))
		}
	}
	// A range wholly before MinYear matches nothing (an empty, non-nil
	// token list), rather than everything.
	q = parse(t, "birthdate=lt1800")
	if err := q.ApplyBlind(newFakeBlinder(), testNow); err != nil {
		t.Fatal(err)
	}
	if p := q.Params[0]; !p.blind || p.tokens == nil || len(p.tokens) != 0 {
		t.Fatalf("birthdate=lt1800: blind %v, tokens %v", p.blind, p.tokens)
	}
	// The blinder's error is returned.
	b = newFakeBlinder()
	b.failFor = "family"
	if err := parse(t, "family=x").ApplyBlind(b, testNow); err == nil {
		t.Fatal("the Blinder's error was dropped")
	}
}

// writeTokens indexes a Patient as the write side does and returns its
// blind tokens of param.
func writeTokens(t *testing.T, patient, param string) [][]byte {
	t.Helper()
	var content map[string]any
	d := json.NewDecoder(strings.NewReader(patient))
	d.UseNumber()
	if err := d.Decode(&content); err != nil {
		t.Fatal(err)
	}
	e := Extract("Patient", content)
	if err := e.ApplyBlind("Patient", newFakeBlinder()); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, b := range e.Blind {
		if b.Param == param {
			out = append(out, b.Token)
		}
	}
	return out
}

// queryTokens computes the query side's tokens of a one-parameter search.
func queryTokens(t *testing.T, query string) [][]byte {
	t.Helper()
	q := parse(t, query)
	if err := q.ApplyBlind(newFakeBlinder(), testNow); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	if len(q.Params) != 1 || !q.Params[0].blind {
		t.Fatalf("%s: not one blind parameter", query)
	}
	return q.Params[0].tokens
}

func intersect(a, b [][]byte) bool {
	for _, x := range a {
		if slices.ContainsFunc(b, func(y []byte) bool { return bytes.Equal(x, y) }) {
			return true
		}
	}
	return false
}

// TestBlindAgreementStrings: a string search matches a value's tokens
// exactly when their normalized forms are equal (blind strings match
// whole values: no starts-with).
func TestBlindAgreementStrings(t *testing.T) {
	values := []string{"Chalmers", "Müller", "van der Berg", "O'Brien", "Zoë", "Chalmersworth"}
	queries := []string{"chalmers", "CHALMERS", "Chalmers", "muller", "MÜLLER", "Mull", "Chal", "van der berg", "vanderberg", "o'brien", "zoe", "Zoë", "chalmersworth"}
	for _, v := range values {
		w := writeTokens(t, fmt.Sprintf(`{"resourceType":"Patient","name":[{"family":%q}]}`, v), "family")
		if len(w) != 1 {
			t.Fatalf("%s: %d family tokens", v, len(w))
		}
		for _, q := range queries {
			want := Normalize(v) == Normalize(q)
			if got := intersect(w, queryTokens(t, "family="+url.QueryEscape(q))); got != want {
				t.Errorf("family %q, search %q: match %v, want %v", v, q, got, want)
			}
		}
	}
}

// TestBlindAgreementTokens: token searches (code, system|code, |code)
// match exactly when the plaintext comparison would, codes compared in
// their canonical form (phone digits, e-mail case).
func TestBlindAgreementTokens(t *testing.T) {
	type ident struct{ system, value string }
	values := []ident{{"http://hospital.example/mrn", "MRN-1"}, {"", "MRN-2"}, {"urn:ssn", "123-45-6789"}, {"http://hospital.example/mrn", "mrn-1"}}
	queries := []string{"MRN-1", "http://hospital.example/mrn|MRN-1", "http://other.example|MRN-1", "|MRN-1", "|MRN-2", "MRN-2",
		"http://hospital.example/mrn|MRN-2", "urn:ssn|123456789", "123-45-6789", "mrn-1", "http://hospital.example/mrn|mrn-1"}
	for _, v := range values {
		body, _ := json.Marshal(map[string]any{"resourceType": "Patient", "identifier": []any{map[string]any{"system": v.system, "value": v.value}}})
		if v.system == "" {
			body, _ = json.Marshal(map[string]any{"resourceType": "Patient", "identifier": []any{map[string]any{"value": v.value}}})
		}
		w := writeTokens(t, string(body), "identifier")
		for _, q := range queries {
			sys, code, hasSys := strings.Cut(q, "|")
			if !hasSys {
				code = sys
			}
			want := canonCode(code) == canonCode(v.value) && (!hasSys || sys == v.system)
			if got := intersect(w, queryTokens(t, "identifier="+url.QueryEscape(q))); got != want {
				t.Errorf("identifier %s|%s, search %q: match %v, want %v", v.system, v.value, q, got, want)
			}
		}
	}
	// Telecom: phone digits and e-mail case fold on both sides.
	patient := `{"resourceType":"Patient","telecom":[{"system":"phone","value":"+1 (555) 867-5309"},{"system":"email","value":"John.Doe@Example.com"}]}`
	phone, email := writeTokens(t, patient, "phone"), writeTokens(t, patient, "email")
	for _, c := range []struct {
		tokens [][]byte
		query  string
		want   bool
	}{
		{phone, "phone=15558675309", true},
		{phone, "phone=" + url.QueryEscape("+1-555-867-5309"), true},
		{phone, "phone=" + url.QueryEscape("(555) 867-5309"), false},
		{phone, "phone=8675309", false},
		{email, "email=john.doe@example.com", true},
		{email, "email=" + url.QueryEscape("mailto:JOHN.DOE@EXAMPLE.COM"), true},
		{email, "email=john@example.com", false},
	} {
		if got := intersect(c.tokens, queryTokens(t, c.query)); got != c.want {
			t.Errorf("%s: match %v, want %v", c.query, got, c.want)
		}
	}
}

// dateMatches is the plaintext date comparison (sql.go's dateCond) of the
// entry range [lo, hi] with a search value.
func dateMatches(prefix string, lo, hi, s, e time.Time) bool {
	eq := !lo.Before(s) && !hi.After(e)
	switch prefix {
	case "", "eq":
		return eq
	case "gt":
		return hi.After(e)
	case "lt":
		return lo.Before(s)
	case "ge":
		return hi.After(e) || eq
	case "le":
		return lo.Before(s) || eq
	}
	panic(prefix)
}

// precision ranks a date string: 1 year, 2 month, 3 day, 4 time.
func precision(s string) int {
	switch {
	case len(s) == 4:
		return 1
	case len(s) == 7:
		return 2
	case len(s) == 10:
		return 3
	}
	return 4
}

// TestBlindAgreementDates compares blind date matching with the plaintext
// comparison over a grid of values and searches. Blind matching is
// containment in whole calendar units, so it never matches what the
// plaintext comparison would not (sound); and it matches everything the
// plaintext comparison does (complete) when the value is at least as
// precise as the search and within [MinYear, next year]. (A value less
// precise than the search that straddles its bound, e.g. birthdate 1975
// and birthdate=lt1975-03-15, is not found: see TestBlindDateLimits.)
func TestBlindAgreementDates(t *testing.T) {
	values := []string{"1975", "1975-03", "1975-03-15", "1975-03-14", "1975-03-16", "1975-02-28", "1975-12-31", "1976-01-01",
		"1974-12-31", "2000-02-29", "2026-11-26", "1850-01-01",
		"1975-03-15T10:20:30Z", "1975-03-15T23:30:00-05:00", "1975-03-14T22:00:00-03:00"}
	anchors := []string{"1975", "1975-03", "1975-03-15", "1975-03-16", "1975-02", "1976", "1975-12-31", "2000-02-29", "1850", "2026-11"}
	prefixes := []string{"eq", "ge", "gt", "le", "lt"}
	checked, complete := 0, 0
	for _, v := range values {
		param := "birthdate"
		if precision(v) == 4 {
			param = "death-date"
		}
		var body string
		if param == "birthdate" {
			body = fmt.Sprintf(`{"resourceType":"Patient","birthDate":%q}`, v)
		} else {
			body = fmt.Sprintf(`{"resourceType":"Patient","deceasedDateTime":%q}`, v)
		}
		w := writeTokens(t, body, param)
		if len(w) == 0 {
			t.Fatalf("%s: no tokens", v)
		}
		lo, hi := rangeOf(t, v)
		for _, a := range anchors {
			s, e := rangeOf(t, a)
			for _, p := range prefixes {
				want := dateMatches(p, lo, hi, s, e)
				got := intersect(w, queryTokens(t, param+"="+p+a))
				checked++
				if got && !want {
					t.Errorf("%s %s, search %s%s: blind matches, plaintext does not", param, v, p, a)
				}
				if precision(v) >= precision(a) {
					complete++
					if want && !got {
						t.Errorf("%s %s, search %s%s: plaintext matches, blind does not", param, v, p, a)
					}
				}
			}
		}
	}
	t.Logf("%d value/search pairs, %d checked for completeness", checked, complete)
}

// TestBlindDateLimits pins the documented limits of blind dates.
func TestBlindDateLimits(t *testing.T) {
	for _, c := range []struct {
		body, param, query string
	}{
		// Less precise than the search bound, straddling it.
		{`{"resourceType":"Patient","birthDate":"1975"}`, "birthdate", "birthdate=lt1975-03-15"},
		{`{"resourceType":"Patient","birthDate":"1975-03"}`, "birthdate", "birthdate=ge1975-03-15"},
		// Bounds finer than a day are cut to whole days.
		{`{"resourceType":"Patient","deceasedDateTime":"2015-02-14T13:42:00Z"}`, "death-date", "death-date=ge2015-02-14T08:00"},
		// Before MinYear, or after next year, open ranges do not reach.
		{`{"resourceType":"Patient","birthDate":"1849-05-01"}`, "birthdate", "birthdate=lt1900"},
		{`{"resourceType":"Patient","deceasedDateTime":"2031-01-01T00:00:00Z"}`, "death-date", "death-date=gt2020"},
	} {
		if intersect(writeTokens(t, c.body, c.param), queryTokens(t, c.query)) {
			t.Errorf("%s matches %s: the documented limit changed; update the package comment and this test", c.query, c.body)
		}
	}
	// But an equality search on the value's own unit finds it.
	if !intersect(writeTokens(t, `{"resourceType":"Patient","birthDate":"1849-05-01"}`, "birthdate"), queryTokens(t, "birthdate=1849-05-01")) {
		t.Error("birthdate=1849-05-01 does not find 1849-05-01")
	}
}

func TestEntriesApplyBlind(t *testing.T) {
	e := Entries{
		Tokens: []Token{
			{Param: "address-use", Code: "home"},
			{Param: "gender", Code: "male"},
			{Param: "identifier", System: "http://x", Code: "A1"},
			{Param: "identifier", System: "http://y", Code: "A1"},
		},
		Strings: []String{
			{Param: "family", Norm: "chalmers", Exact: "Chalmers"},
			{Param: "family", Norm: "chalmers", Exact: "CHALMERS"}, // same token
			{Param: "given", Norm: "peter", Exact: "Peter"},
			{Param: "phonetic", Norm: "plain", Exact: "plain"},
		},
		Dates: []Date{
			{Param: "birthdate", Lo: day("1974-12-25"), Hi: day("1974-12-25").Add(dayLen - time.Microsecond)},
			{Param: "death-date", Lo: MinTime, Hi: day("2000-01-01")}, // open: no units
		},
		References: []Reference{{Param: "general-practitioner", TargetType: "Practitioner", TargetID: "1"}, {Param: "organization", TargetType: "Organization", TargetID: "1"}},
		Numbers:    []Number{{Param: "address-use", Lo: "1", Hi: "2"}},
		Quantities: []Quantity{{Param: "address-use", Lo: "1", Hi: "2"}},
		URIs:       []URI{{Param: "address-use", URI: "http://x"}, {Param: "link", URI: "http://y"}},
	}
	b := newFakeBlinder()
	if err := e.ApplyBlind("Patient", b); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Token{{Param: "gender", Code: "male"}}, e.Tokens); diff != "" {
		t.Errorf("tokens (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]String{{Param: "phonetic", Norm: "plain", Exact: "plain"}}, e.Strings); diff != "" {
		t.Errorf("strings (-want +got):\n%s", diff)
	}
	if len(e.Dates) != 0 || len(e.Numbers) != 0 || len(e.Quantities) != 0 {
		t.Errorf("rows of protected parameters left: %+v %+v %+v", e.Dates, e.Numbers, e.Quantities)
	}
	if diff := cmp.Diff([]Reference{{Param: "organization", TargetType: "Organization", TargetID: "1"}}, e.References); diff != "" {
		t.Errorf("references (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]URI{{Param: "link", URI: "http://y"}}, e.URIs); diff != "" {
		t.Errorf("uris (-want +got):\n%s", diff)
	}
	var got []string
	for _, tok := range e.Blind {
		got = append(got, tok.String())
		if len(tok.Token) != 12 {
			t.Errorf("token of %d bytes", len(tok.Token))
		}
	}
	// identifier: c:A1 (once), sc:http://x|A1, sc:http://y|A1; family once;
	// given; birthdate Y, M, D; death-date none.
	want := []string{"blind(identifier)", "blind(identifier)", "blind(identifier)", "blind(family)", "blind(given)", "blind(birthdate)", "blind(birthdate)", "blind(birthdate)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("blind tokens (-want +got):\n%s", diff)
	}
	wantCanon := map[string][]string{
		"Patient.identifier": {"c:A1", "sc:http://x|A1", "c:A1", "sc:http://y|A1"},
		"Patient.family":     {"s:chalmers", "s:chalmers"},
		"Patient.given":      {"s:peter"},
		"Patient.birthdate":  {"Y:1974", "M:1974-12", "D:1974-12-25"},
	}
	if diff := cmp.Diff(wantCanon, b.canon); diff != "" {
		t.Errorf("canonical values (-want +got):\n%s", diff)
	}
	for k, n := range b.calls {
		if n != 1 {
			t.Errorf("%d Tokens calls for %s, want one per parameter", n, k)
		}
	}
	if fmt.Sprint(e.Blind[0]) != "blind(identifier)" {
		t.Error("BlindToken prints its token")
	}
	// A second ApplyBlind replaces, not appends.
	if err := e.ApplyBlind("Patient", newFakeBlinder()); err != nil || len(e.Blind) != 0 {
		t.Errorf("second ApplyBlind: %d tokens, %v", len(e.Blind), err)
	}
	// The Blinder's error is returned.
	e2 := Entries{Strings: []String{{Param: "family", Norm: "x"}}}
	b = newFakeBlinder()
	b.failFor = "family"
	if err := e2.ApplyBlind("Patient", b); err == nil {
		t.Error("the Blinder's error was dropped")
	}
}
