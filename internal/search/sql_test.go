package search

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"
)

// scratchDB creates a uniquely named database with the resource schema and
// drops it when the test ends. The lead will replace it with the project's
// template-database harness.
func scratchDB(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	server := os.Getenv("TEST_DATABASE_URL")
	if server == "" {
		server = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatalf("connect to test server: %v", err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "search_scratch_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database: %v", err)
		}
	})
	cfg, err := pgx.ParseConfig(server)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = name
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	schema, err := os.ReadFile("../database/migrations/0001_resources.sql")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, string(schema)); err != nil {
		t.Fatalf("apply schema: %v", err)
	}
	return conn
}

func insertResource(t *testing.T, conn *pgx.Conn, tenant string, lastUpdated time.Time, content map[string]any) {
	t.Helper()
	ctx := context.Background()
	typ, id := content["resourceType"].(string), content["id"].(string)
	body, err := json.Marshal(content)
	if err != nil {
		t.Fatal(err)
	}
	var rid int64
	err = conn.QueryRow(ctx, `INSERT INTO resources (rid, tenant, type, id, version, seq, last_updated, method, body)
		SELECT s, $1, $2, $3, 1, s, $4, 'PUT', $5 FROM nextval('resource_seq') s RETURNING rid`,
		tenant, typ, id, lastUpdated, body).Scan(&rid)
	if err != nil {
		t.Fatal(err)
	}
	e := Extract(typ, content)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, append([]any{rid, tenant, typ}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range e.Tokens {
		exec(`INSERT INTO idx_token VALUES ($1,$2,$3,$4,$5,$6)`, x.Param, x.System, x.Code)
	}
	for _, x := range e.Strings {
		exec(`INSERT INTO idx_string VALUES ($1,$2,$3,$4,$5,$6)`, x.Param, x.Norm, x.Exact)
	}
	for _, x := range e.Dates {
		exec(`INSERT INTO idx_date VALUES ($1,$2,$3,$4,$5,$6)`, x.Param, x.Lo, x.Hi)
	}
	for _, x := range e.References {
		exec(`INSERT INTO idx_reference VALUES ($1,$2,$3,$4,$5,$6)`, x.Param, x.TargetType, x.TargetID)
	}
	for _, x := range e.Numbers {
		exec(`INSERT INTO idx_number VALUES ($1,$2,$3,$4,$5::numeric,$6::numeric)`, x.Param, x.Lo, x.Hi)
	}
	for _, x := range e.Quantities {
		exec(`INSERT INTO idx_quantity VALUES ($1,$2,$3,$4,$5,$6,$7::numeric,$8::numeric)`, x.Param, x.System, x.Code, x.Lo, x.Hi)
	}
	for _, x := range e.URIs {
		exec(`INSERT INTO idx_uri VALUES ($1,$2,$3,$4,$5)`, x.Param, x.URI)
	}
}

func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestConditionSQL(t *testing.T) {
	t.Parallel()
	conn := scratchDB(t)
	base := ts("2024-01-01T00:00:00Z")
	insertResource(t, conn, "t1", base, readContent(t, "extract-patient.json"))
	insertResource(t, conn, "t1", base.Add(time.Hour), decode(t, `{"resourceType":"Patient","id":"p2","gender":"female",
		"name":[{"family":"Smith","given":["Émile"]}],"birthDate":"1985-06-15","identifier":[{"system":"http://other","value":"X"}]}`))
	insertResource(t, conn, "t2", base, readContent(t, "extract-patient.json")) // same id, other tenant
	insertResource(t, conn, "t1", base, readContent(t, "extract-observation.json"))
	insertResource(t, conn, "t1", base, decode(t, `{"resourceType":"Observation","id":"o2","status":"final",
		"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"subject":{"reference":"Patient/p2"},
		"effectiveDateTime":"2021-03-04T05:06:07Z","valueQuantity":{"value":130,"unit":"mm[Hg]","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}`))
	insertResource(t, conn, "t1", base, decode(t, `{"resourceType":"RiskAssessment","id":"r1","status":"final",
		"subject":{"reference":"Patient/p1"},"prediction":[{"probabilityDecimal":0.25}]}`))

	tests := []struct {
		typ, query string
		want       []string
	}{
		// token
		{"Patient", "gender=male", []string{"p1"}},
		{"Patient", "gender=male,female", []string{"p1", "p2"}},
		{"Patient", "gender:not=male", []string{"p2"}},
		{"Patient", "identifier=http://hospital.example/mrn|MRN-1", []string{"p1"}},
		{"Patient", "identifier=http://other|MRN-1", nil},
		{"Patient", "identifier=|noSystem", []string{"p1"}},
		{"Patient", "identifier=|MRN-1", nil},
		{"Patient", "identifier=http://hospital.example/mrn|", []string{"p1"}},
		{"Patient", "email=jm@example.org", []string{"p1"}},
		{"Patient", "phone:missing=true", []string{"p2"}},
		{"Patient", "phone:missing=false", []string{"p1"}},
		{"Patient", "_id=p1,p2", []string{"p1", "p2"}},
		{"Patient", "_id=p2", []string{"p2"}},
		{"Patient", "_tag=http://example.org/tags|t1", []string{"p1"}},
		// string
		{"Patient", "name=mul", []string{"p1"}},
		{"Patient", "name=MÜL", []string{"p1"}},
		{"Patient", "name=jose%20m", []string{"p1"}},
		{"Patient", "given=emi", []string{"p2"}},
		{"Patient", "name:exact=Müller", []string{"p1"}},
		{"Patient", "name:exact=muller", nil},
		{"Patient", "name:contains=LL", []string{"p1"}},
		{"Patient", "name:contains=%25", nil},
		{"Patient", "name=_", nil},
		{"Patient", "address-city=zur", []string{"p1"}},
		{"Patient", "name=mul&name=jos", []string{"p1"}},
		{"Patient", "name=mul&name=smi", nil},
		// date prefixes: p1 born 1970-03 (a month), p2 on 1985-06-15
		{"Patient", "birthdate=1970", []string{"p1"}},
		{"Patient", "birthdate=eq1970-03", []string{"p1"}},
		{"Patient", "birthdate=1970-03-15", nil},
		{"Patient", "birthdate=ne1970", []string{"p2"}},
		{"Patient", "birthdate=gt1970-03-15", []string{"p1", "p2"}},
		{"Patient", "birthdate=gt1970-03", []string{"p2"}},
		{"Patient", "birthdate=lt1970-03-15", []string{"p1"}},
		{"Patient", "birthdate=lt1970-03", nil},
		{"Patient", "birthdate=ge1985-06-15", []string{"p2"}},
		{"Patient", "birthdate=ge1985-06-16", nil},
		{"Patient", "birthdate=le1970-03", []string{"p1"}},
		{"Patient", "birthdate=le1970-02", nil},
		{"Patient", "birthdate=sa1970", []string{"p2"}},
		{"Patient", "birthdate=sa1970-02", []string{"p1", "p2"}},
		{"Patient", "birthdate=eb1980", []string{"p1"}},
		{"Patient", "birthdate=eb1970-03-31", nil},
		{"Patient", "birthdate=ap1985-06-15", []string{"p2"}},
		{"Patient", "birthdate=ap1986", []string{"p2"}},
		{"Patient", "birthdate=ge1970&birthdate=lt1980", []string{"p1"}},
		{"Patient", "birthdate:missing=true", nil},
		{"Patient", "_lastUpdated=2024-01-01", []string{"p1", "p2"}},
		{"Patient", "_lastUpdated=gt2024-01-01T00:30:00Z", []string{"p2"}},
		{"Patient", "_lastUpdated=le2024-01-01T00:00:00Z", []string{"p1"}},
		{"Observation", "date=2020-05", []string{"o1"}},
		{"Observation", "date=2020-05-01", nil}, // the period runs into May 2
		{"Observation", "date=ge2021&code=8480-6", []string{"o2"}},
		{"Observation", "date=2021-03-04T05:06:07Z", []string{"o2"}},
		{"Observation", "date=2021-03-04T06:06:07%2B01:00", []string{"o2"}},
		// reference
		{"Observation", "subject=Patient/p1", []string{"o1"}},
		{"Observation", "subject=p1", []string{"o1"}},
		{"Observation", "subject:Patient=p1", []string{"o1"}},
		{"Observation", "subject:Group=p1", nil},
		{"Observation", "patient=p2", []string{"o2"}},
		{"Observation", "patient=Patient/p1,Patient/p2", []string{"o1", "o2"}},
		{"Observation", "encounter:missing=true", []string{"o2"}},
		{"Patient", "organization=http://other.example/fhir/Organization/o1", []string{"p1"}},
		// token OR, token AND
		{"Observation", "code=29463-7,8480-6", []string{"o1", "o2"}},
		{"Observation", "code=http://loinc.org|29463-7", []string{"o1"}},
		{"Observation", "combo-code=8480-6", []string{"o1", "o2"}},
		// quantity
		{"Observation", "value-quantity=72.5", []string{"o1"}},
		{"Observation", "value-quantity=72.5|http://unitsofmeasure.org|kg", []string{"o1"}},
		{"Observation", "value-quantity=72.5||kg", []string{"o1"}},
		{"Observation", "value-quantity=72.5||g", nil},
		{"Observation", "value-quantity=72", nil},
		{"Observation", "value-quantity=72.50", []string{"o1"}},
		{"Observation", "value-quantity=gt100", []string{"o2"}},
		{"Observation", "value-quantity=lt100", []string{"o1"}},
		{"Observation", "value-quantity=ge130", []string{"o2"}},
		{"Observation", "value-quantity=le72.5", []string{"o1"}},
		{"Observation", "value-quantity=ne72.5", []string{"o2"}},
		{"Observation", "value-quantity=ap120", []string{"o2"}},
		{"Observation", "value-quantity=130|http://unitsofmeasure.org|mm[Hg]", []string{"o2"}},
		// number
		{"RiskAssessment", "probability=0.25", []string{"r1"}},
		{"RiskAssessment", "probability=0.3", []string{"r1"}}, // 0.3 means [0.25, 0.35)
		{"RiskAssessment", "probability=0.4", nil},
		{"RiskAssessment", "probability=0.250", []string{"r1"}},
		{"RiskAssessment", "probability=0.251", nil},
		{"RiskAssessment", "probability=gt0.2", []string{"r1"}},
		{"RiskAssessment", "probability=lt0.2", nil},
		{"RiskAssessment", "probability=le0.25", []string{"r1"}},
		// uri
		{"Patient", "_profile=http://example.org/StructureDefinition/p", []string{"p1"}},
		{"Patient", "_profile=http://example.org/", nil},
		{"Patient", "_profile:below=http://example.org/", []string{"p1"}},
		{"Patient", "_profile:above=http://example.org/StructureDefinition/p/x", []string{"p1"}},
		{"Patient", "_profile:above=http://example.org/", nil},
	}
	ctx := context.Background()
	for _, tt := range tests {
		values, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		q, err := Parse(tt.typ, values, true)
		if err != nil {
			t.Errorf("Parse(%s?%s): %v", tt.typ, tt.query, err)
			continue
		}
		args := []any{"t1", tt.typ}
		cond := q.Condition(&args)
		rows, err := conn.Query(ctx, "SELECT r.id FROM resources r WHERE r.tenant = $1 AND r.type = $2 AND "+cond+" ORDER BY r.id", args...)
		if err != nil {
			t.Errorf("%s?%s: %v\n%s", tt.typ, tt.query, err, cond)
			continue
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Errorf("%s?%s: %v", tt.typ, tt.query, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s?%s (-want +got):\n%s\nSQL: %s", tt.typ, tt.query, diff, cond)
		}
	}

	// Keyset pagination over a parameter sort, one row per page.
	for _, sort := range []struct {
		spec string
		want []string
	}{
		{"-birthdate", []string{"p2", "p1"}},
		{"birthdate", []string{"p1", "p2"}},
		{"family", []string{"p1", "p2"}},
		{"-_lastUpdated", []string{"p2", "p1"}},
		{"gender,_id", []string{"p2", "p1"}},
		{"phone", []string{"p1", "p2"}}, // p2 has none: last
		{"-phone", []string{"p1", "p2"}},
	} {
		q, err := Parse("Patient", url.Values{"_sort": {sort.spec}}, true)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		var cursor string
		for page := 0; page < 5; page++ {
			args := []any{"t1", "Patient"}
			keys := q.SortSQL(&args)
			where := "TRUE"
			if cursor != "" {
				last, err := ParseCursor(cursor)
				if err != nil {
					t.Fatal(err)
				}
				if where, err = After(keys, last, &args); err != nil {
					t.Fatal(err)
				}
			}
			sel := ""
			for _, k := range keys {
				sel += ", " + k.SQL
			}
			rows, err := conn.Query(ctx, "SELECT r.id"+sel+" FROM resources r WHERE r.tenant = $1 AND r.type = $2 AND "+
				where+" ORDER BY "+OrderBy(keys)+" LIMIT 1", args...)
			if err != nil {
				t.Fatalf("sort %s: %v", sort.spec, err)
			}
			vals, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
			if err != nil {
				t.Fatal(err)
			}
			if len(vals) == 0 {
				break
			}
			got = append(got, vals[0][0].(string))
			if cursor, err = Cursor(vals[0][1:]); err != nil {
				t.Fatal(err)
			}
		}
		if diff := cmp.Diff(sort.want, got); diff != "" {
			t.Errorf("_sort=%s pages (-want +got):\n%s", sort.spec, diff)
		}
	}
}

func TestCursorRoundTrip(t *testing.T) {
	t.Parallel()
	in := []any{ts("2020-01-02T03:04:05.123456Z"), "x", nil}
	c, err := Cursor(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseCursor(c)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, out); diff != "" {
		t.Errorf("cursor (-want +got):\n%s", diff)
	}
	if _, err := ParseCursor("!!"); err == nil {
		t.Error("ParseCursor accepted garbage")
	}
	_ = slices.Clone(in)
}
