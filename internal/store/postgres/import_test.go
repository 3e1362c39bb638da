package postgres

import (
	"context"
	"slices"
	"testing"

	"github.com/rampartfw/rampart/internal/store/postgres/pgtest"
)

// Every table of the schema is copied by Import, or deliberately not:
// a migration that adds a table must add it to ImportTables.
func TestImportCoversEveryTable(t *testing.T) {
	ctx := context.Background()
	db := open(t, pgtest.NewDatabase(t))
	rows, err := db.pool.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		if name != "schema_version" && name != "leases" && !slices.Contains(ImportTables, name) {
			t.Errorf("table %s is neither copied by Import nor left out on purpose", name)
		}
	}
}
