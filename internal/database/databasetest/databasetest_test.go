package databasetest

import (
	"context"
	"testing"
)

func TestNewPoolIsMigratedAndPrivate(t *testing.T) {
	t.Parallel()
	a, b := NewPool(t), NewPool(t)
	ctx := context.Background()
	if _, err := a.Exec(ctx, `INSERT INTO resources (rid, tenant, type, id, version, seq, last_updated, method, body)
		VALUES (1, 't', 'Patient', 'x', 1, 1, now(), 'PUT', '{}')`); err != nil {
		t.Fatalf("insert into migrated schema: %v", err)
	}
	var n int
	if err := b.QueryRow(ctx, `SELECT count(*) FROM resources`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("second test database sees %d rows of the first; want 0", n)
	}
}
