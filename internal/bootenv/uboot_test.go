package bootenv

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var sample = Env{
	"boot_part":         "a",
	"bootcount":         "0",
	"bootlimit":         "3",
	"upgrade_available": "0",
	"bootargs":          "console=ttyS0,115200 root=/dev/mmcblk0p2 rw",
	"empty":             "",
}

func TestUBootRoundTrip(t *testing.T) {
	for _, red := range []bool{false, true} {
		buf, err := MarshalUBoot(sample, 0x400, red, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(buf) != 0x400 {
			t.Fatalf("len %d", len(buf))
		}
		env, flags, err := ParseUBoot(buf, red)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(env, sample) {
			t.Fatalf("redundant=%v: got %v", red, env)
		}
		if red && flags != 7 {
			t.Fatalf("flags %d", flags)
		}
	}
}

func TestUBootEmptyEnv(t *testing.T) {
	buf, err := MarshalUBoot(Env{}, singleHeader+1, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	env, _, err := ParseUBoot(buf, false)
	if err != nil || len(env) != 0 {
		t.Fatalf("%v %v", env, err)
	}
}

func TestUBootRefuses(t *testing.T) {
	good, _ := MarshalUBoot(Env{"a": "b"}, 64, false, 0)
	flipped := bytes.Clone(good)
	flipped[10] ^= 1
	var ce *CRCError
	if _, _, err := ParseUBoot(flipped, false); !errors.Is(err, ErrBadCRC) || !errors.As(err, &ce) || ce.Stored == ce.Computed {
		t.Fatalf("flipped byte: %v", err)
	}
	if _, _, err := ParseUBoot(good[:4], false); !errors.Is(err, ErrFormat) {
		t.Fatalf("too small: %v", err)
	}
	for name, area := range map[string]string{
		"no terminator": "a=b\x00c=d",
		"no equals":     "a=b\x00junk\x00\x00",
		"empty name":    "=b\x00\x00",
		"all 0xff":      "\xff\xff\xff\xff",
	} {
		if _, err := parseEntries([]byte(area), 4); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, env := range map[string]Env{
		"name with =":   {"a=b": "c"},
		"empty name":    {"": "c"},
		"NUL in value":  {"a": "b\x00c"},
		"NUL in name":   {"a\x00": "c"},
		"does not fit":  {"a": strings.Repeat("x", 60)},
		"exactly +1":    {"a": strings.Repeat("x", 64-4-4+1)},
		"size too tiny": nil,
	} {
		size := 64
		if env == nil {
			size = 4
		}
		if _, err := MarshalUBoot(env, size, false, 0); err == nil {
			t.Errorf("%s: marshalled", name)
		}
	}
	// "a=" + 56 x + NUL + NUL is exactly 60 bytes: the largest that fits.
	if _, err := MarshalUBoot(Env{"a": strings.Repeat("x", 56)}, 64, false, 0); err != nil {
		t.Fatal(err)
	}
}

func TestUBootLastDuplicateWins(t *testing.T) {
	env, err := parseEntries([]byte("a=1\x00a=2\x00\x00"), 4)
	if err != nil || env["a"] != "2" {
		t.Fatal(env, err)
	}
}

func TestPickCopy(t *testing.T) {
	for _, c := range []struct {
		valid [2]bool
		flags [2]byte
		cur   int
		ok    bool
	}{
		{[2]bool{true, true}, [2]byte{1, 2}, 1, true},
		{[2]bool{true, true}, [2]byte{3, 2}, 0, true},
		{[2]bool{true, true}, [2]byte{5, 5}, 0, true},
		{[2]bool{true, true}, [2]byte{255, 0}, 1, true},
		{[2]bool{true, true}, [2]byte{0, 255}, 0, true},
		{[2]bool{true, true}, [2]byte{254, 255}, 1, true},
		{[2]bool{true, false}, [2]byte{1, 9}, 0, true},
		{[2]bool{false, true}, [2]byte{9, 1}, 1, true},
		{[2]bool{false, false}, [2]byte{9, 1}, 0, false},
	} {
		cur, ok := pickCopy(c.valid, c.flags)
		if cur != c.cur || ok != c.ok {
			t.Errorf("%v %v: got %d %v", c.valid, c.flags, cur, ok)
		}
	}
}

func TestParseFWEnvConfig(t *testing.T) {
	locs, err := ParseFWEnvConfig([]byte(`# comment
/dev/mmcblk0  0x400000  0x4000  # inline comment
/dev/mmcblk0  -0x4000   4000  200 2

`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Location{
		{Path: "/dev/mmcblk0", Offset: 0x400000, Size: 0x4000},
		{Path: "/dev/mmcblk0", Offset: -0x4000, Size: 0x4000, SectorSize: 0x200, Sectors: 2},
	}
	if !reflect.DeepEqual(locs, want) {
		t.Fatalf("got %+v", locs)
	}
	for _, bad := range []string{
		"",
		"# only a comment\n",
		"/dev/x 0\n",
		"/dev/x zero 0x4000\n",
		"/dev/x 0 0x4g00\n",
		"a 0 10\nb 0 10\nc 0 10\n",
	} {
		if _, err := ParseFWEnvConfig([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := NewUBoot(Location{Path: "a", Size: 0x4000}, Location{Path: "b", Size: 0x2000}); err == nil {
		t.Error("different sizes accepted")
	}
	if _, err := NewUBoot(Location{Path: "/dev/mtd0", Size: 0x4000}); err == nil {
		t.Error("mtd accepted")
	}
}

func newRedundant(t *testing.T, size int64) (*UBoot, string) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "env.bin")
	if err := os.WriteFile(p, bytes.Repeat([]byte{0xff}, int(2*size)), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := NewUBoot(Location{Path: p, Size: size}, Location{Path: p, Offset: size, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	u.LockFile = filepath.Join(dir, "lock")
	return u, p
}

func TestRedundantSaveAlternatesAndFallsBack(t *testing.T) {
	const size = 0x400
	u, p := newRedundant(t, size)
	if _, err := u.Load(); !errors.Is(err, ErrBadCRC) {
		t.Fatalf("erased env: %v", err)
	}
	if err := u.Update(func(Env) error { return nil }); err == nil {
		t.Fatal("Update started from an unreadable environment")
	}
	// Both copies invalid: libubootenv treats copy 0 as current and writes
	// copy 1 with its flags + 1 (0xff + 1 = 0).
	for i, want := range []struct {
		copy  int
		flags byte
	}{{1, 0}, {0, 1}, {1, 2}, {0, 3}} {
		if err := u.Save(Env{"n": string(rune('0' + i))}); err != nil {
			t.Fatal(err)
		}
		snap, err := u.Load()
		if err != nil {
			t.Fatal(err)
		}
		if snap.Copy != want.copy || snap.Flags != want.flags || snap.Env["n"] != string(rune('0'+i)) {
			t.Fatalf("write %d: got copy %d flags %d env %v", i, snap.Copy, snap.Flags, snap.Env)
		}
		if i > 0 && snap.Damaged != nil {
			t.Fatalf("write %d: damaged %v", i, snap.Damaged)
		}
	}
	// Tear the newest copy (copy 0, n=3): the older one (n=2) takes over.
	data, _ := os.ReadFile(p)
	data[100] ^= 0xff
	os.WriteFile(p, data, 0o644)
	snap, err := u.Load()
	if err != nil {
		t.Fatal(err)
	}
	if snap.Copy != 1 || snap.Env["n"] != "2" || !errors.Is(snap.Damaged, ErrBadCRC) {
		t.Fatalf("after tear: %+v", snap)
	}
	// Update rewrites the damaged copy, leaving the good one untouched.
	if err := u.Update(func(e Env) error { e["m"] = "x"; return nil }); err != nil {
		t.Fatal(err)
	}
	snap, err = u.Load()
	if err != nil || snap.Copy != 0 || snap.Flags != 3 || snap.Damaged != nil || snap.Env["n"] != "2" || snap.Env["m"] != "x" {
		t.Fatalf("after update: %+v %v", snap, err)
	}
}

func TestRedundantCurrentCopyMalformed(t *testing.T) {
	u, p := newRedundant(t, 64)
	good, _ := MarshalUBoot(Env{"a": "1"}, 64, true, 1)
	// Valid checksum, newer generation, but an entry without '=': U-Boot
	// would pick it, so we must not quietly fall back to the other copy.
	bad := make([]byte, 64)
	copy(bad[5:], "junk\x00\x00")
	bad[4] = 2
	binaryPutCRC(bad, true)
	os.WriteFile(p, append(good, bad...), 0o644)
	if _, err := u.Load(); !errors.Is(err, ErrFormat) {
		t.Fatalf("got %v", err)
	}
}

func TestSingleFileSaveIsAtomicAndKeepsSurroundings(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "disk.img")
	orig := bytes.Repeat([]byte("Z"), 300)
	os.WriteFile(p, orig, 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink("disk.img", link)
	u, err := NewUBoot(Location{Path: link, Offset: 100, Size: 64})
	if err != nil {
		t.Fatal(err)
	}
	u.LockFile = filepath.Join(dir, "lock")
	before, _ := os.Stat(p)
	if err := u.Save(Env{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(p)
	if os.SameFile(before, after) {
		t.Error("file was rewritten in place, not replaced")
	}
	if after.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", after.Mode())
	}
	if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink == 0 {
		t.Error("symlink replaced by a file")
	}
	data, _ := os.ReadFile(p)
	if !bytes.Equal(data[:100], orig[:100]) || !bytes.Equal(data[164:], orig[164:]) {
		t.Error("bytes outside the environment changed")
	}
	snap, err := u.Load()
	if err != nil || snap.Env["k"] != "v" {
		t.Fatal(snap, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("left files behind: %v", entries)
	}
}

func TestLoadShortFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "env")
	good, _ := MarshalUBoot(Env{"a": "1"}, 64, true, 1)
	os.WriteFile(p, good, 0o644) // second copy missing entirely
	u, _ := NewUBoot(Location{Path: p, Size: 64}, Location{Path: p, Offset: 64, Size: 64})
	u.LockFile = filepath.Join(dir, "lock")
	snap, err := u.Load()
	if err != nil || snap.Env["a"] != "1" || snap.Damaged == nil {
		t.Fatalf("%+v %v", snap, err)
	}
	if err := u.Save(Env{"a": "2"}); err != nil {
		t.Fatal(err)
	}
	if snap, err = u.Load(); err != nil || snap.Copy != 1 || snap.Env["a"] != "2" || snap.Damaged != nil {
		t.Fatalf("%+v %v", snap, err)
	}
}
