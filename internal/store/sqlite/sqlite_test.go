package sqlite

import (
	"path/filepath"
	"testing"

	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		db, err := Open(filepath.Join(t.TempDir(), "rampart.db"))
		if err != nil {
			t.Fatal(err)
		}
		return db
	})
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rampart.db")
	db, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.PutDocs(t.Context(), store.Doc{Repo: "image", Role: "root", Version: 1, Data: []byte("r")}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if d, err := db.Doc(t.Context(), "image", "root", 0); err != nil || string(d.Data) != "r" {
		t.Fatalf("%+v %v", d, err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rampart.db")
	db, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	db.db.Exec(`PRAGMA user_version = 99`)
	db.Close()
	if _, err := Open(p); err == nil {
		t.Fatal("opened a database with a newer schema")
	}
}
