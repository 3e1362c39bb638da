package pgtest

import (
	"strings"
	"testing"
)

// Without PostgreSQL the tests fail (they are not skipped), saying how to
// install it.
func TestMissingPostgresSaysWhatToDo(t *testing.T) {
	t.Setenv("RAMPART_POSTGRES_BIN", t.TempDir())
	_, err := binDir()
	if err == nil || !strings.Contains(err.Error(), "scripts/test-deps.sh") || !strings.Contains(err.Error(), "RAMPART_SKIP_POSTGRES=1") {
		t.Fatalf("%v", err)
	}
}

// Two databases of one server are separate.
func TestDatabasesAreSeparate(t *testing.T) {
	a, b := NewDatabase(t), NewDatabase(t)
	if a == b || !strings.HasPrefix(a, "postgres://"+User+"@127.0.0.1:") {
		t.Fatalf("%s %s", a, b)
	}
}

func TestMain(m *testing.M) { Main(m) }
