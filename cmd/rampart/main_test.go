package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/rampartfw/rampart/internal/datadir"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/server"
	_ "modernc.org/sqlite"
)

func TestMain(m *testing.M) {
	testscript.Main(withCleanup{m}, map[string]func(){
		"rampart": func() {
			// Scripts generate dozens of keys; age's default scrypt cost
			// would make each take a second.
			keys.SetTestOnlyWorkFactor(10)
			os.Exit(run(os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}))
		},
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkimage":       cmdMkimage,
			"perm":          cmdPerm,
			"flipbyte":      cmdFlipbyte,
			"truncate":      cmdTruncate,
			"appendbytes":   cmdAppend,
			"replace":       cmdReplace,
			"bundle-flip":   cmdBundleFlip,
			"bundle-rename": cmdBundleRename,
			"bundle-extra":  cmdBundleExtra,
			"bundle-edit":   cmdBundleEdit,
			"treehash":      cmdTreehash,
			"softhsm-setup": cmdSoftHSMSetup,
			"capture":       cmdCapture,
			"sqlite-exec":   cmdSQLiteExec,
		},
		Condition: func(cond string) (bool, error) {
			if cond == "pkcs11" {
				return pkcs11Built, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Setup: func(e *testscript.Env) error {
			e.Setenv("RAMPART_PASSPHRASE", "correct-horse")
			// Under -race every exited process sleeps a second first
			// (the race runtime's atexit_sleep_ms), and the scripts run
			// about 400 commands: that idle second was most of this
			// package's wall time.
			e.Setenv("GORACE", "atexit_sleep_ms=0")
			if err := scriptPath(e); err != nil {
				return err
			}
			// A script that carries a file named .server gets one.
			if _, err := os.Stat(filepath.Join(e.WorkDir, ".server")); err == nil {
				return startServer(e)
			}
			return nil
		},
	})
}

func size(ts *testscript.TestScript, s string) int64 {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	ts.Check(err)
	return n * mult
}

// mkimage FILE SIZE [SEED]: deterministic pseudo-random image.
func cmdMkimage(ts *testscript.TestScript, neg bool, args []string) {
	seed := uint64(1)
	if len(args) == 3 {
		seed = uint64(size(ts, args[2]))
	}
	r := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, size(ts, args[1]))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
}

// perm FILE MODE: assert a file's permission bits.
func cmdPerm(ts *testscript.TestScript, neg bool, args []string) {
	fi, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	want, err := strconv.ParseUint(args[1], 8, 32)
	ts.Check(err)
	if (uint64(fi.Mode().Perm()) == want) == neg {
		ts.Fatalf("%s has mode %o", args[0], fi.Mode().Perm())
	}
}

// flipbyte FILE OFFSET: flip the low bit of one byte (negative: from the end).
func cmdFlipbyte(ts *testscript.TestScript, neg bool, args []string) {
	b, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	i := int(size(ts, args[1]))
	if i < 0 {
		i += len(b)
	}
	b[i] ^= 1
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
}

// truncate FILE SIZE
func cmdTruncate(ts *testscript.TestScript, neg bool, args []string) {
	ts.Check(os.Truncate(ts.MkAbs(args[0]), size(ts, args[1])))
}

// appendbytes FILE N: append N bytes of 0xAA.
func cmdAppend(ts *testscript.TestScript, neg bool, args []string) {
	f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_APPEND|os.O_WRONLY, 0)
	ts.Check(err)
	_, err = f.Write(bytes.Repeat([]byte{0xAA}, int(size(ts, args[1]))))
	ts.Check(err)
	ts.Check(f.Close())
}

// replace FILE OLD NEW: replace the first occurrence of OLD, which must exist.
func cmdReplace(ts *testscript.TestScript, neg bool, args []string) {
	b, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	if !bytes.Contains(b, []byte(args[1])) {
		ts.Fatalf("%s does not contain %q", args[0], args[1])
	}
	b = bytes.Replace(b, []byte(args[1]), []byte(args[2]), 1)
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
}

// rewriteBundle copies a bundle's tar stream member by member through edit,
// the way an attacker with a tar tool would.
func rewriteBundle(ts *testscript.TestScript, in, out string, edit func(h *tar.Header, body []byte) (*tar.Header, []byte), extra func(tw *tar.Writer)) {
	f, err := os.Open(ts.MkAbs(in))
	ts.Check(err)
	defer f.Close()
	var buf bytes.Buffer
	tr, tw := tar.NewReader(f), tar.NewWriter(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		ts.Check(err)
		body, err := io.ReadAll(tr)
		ts.Check(err)
		h, body = edit(h, body)
		h.Size = int64(len(body))
		ts.Check(tw.WriteHeader(h))
		_, err = tw.Write(body)
		ts.Check(err)
	}
	if extra != nil {
		extra(tw)
	}
	ts.Check(tw.Close())
	ts.Check(os.WriteFile(ts.MkAbs(out), buf.Bytes(), 0o644))
}

// bundle-flip IN OUT MEMBER OFFSET
func cmdBundleFlip(ts *testscript.TestScript, neg bool, args []string) {
	off := int(size(ts, args[3]))
	found := false
	rewriteBundle(ts, args[0], args[1], func(h *tar.Header, b []byte) (*tar.Header, []byte) {
		if h.Name == args[2] {
			i := off
			if i < 0 {
				i += len(b)
			}
			b[i] ^= 1
			found = true
		}
		return h, b
	}, nil)
	if !found {
		ts.Fatalf("no member %s", args[2])
	}
}

// bundle-edit IN OUT MEMBER OLD NEW: replace text inside one member.
func cmdBundleEdit(ts *testscript.TestScript, neg bool, args []string) {
	rewriteBundle(ts, args[0], args[1], func(h *tar.Header, b []byte) (*tar.Header, []byte) {
		if h.Name == args[2] {
			if !bytes.Contains(b, []byte(args[3])) {
				ts.Fatalf("member %s does not contain %q", args[2], args[3])
			}
			b = bytes.Replace(b, []byte(args[3]), []byte(args[4]), 1)
		}
		return h, b
	}, nil)
}

// bundle-rename IN OUT MEMBER NEWNAME
func cmdBundleRename(ts *testscript.TestScript, neg bool, args []string) {
	rewriteBundle(ts, args[0], args[1], func(h *tar.Header, b []byte) (*tar.Header, []byte) {
		if h.Name == args[2] {
			h.Name = args[3]
		}
		return h, b
	}, nil)
}

// bundle-extra IN OUT NAME: append a member after the image.
func cmdBundleExtra(ts *testscript.TestScript, neg bool, args []string) {
	rewriteBundle(ts, args[0], args[1], func(h *tar.Header, b []byte) (*tar.Header, []byte) { return h, b }, func(tw *tar.Writer) {
		body := []byte("extra\n")
		ts.Check(tw.WriteHeader(&tar.Header{Name: args[2], Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}))
		_, err := tw.Write(body)
		ts.Check(err)
	})
}

// startServer initialises a rampart-server data directory in $WORK/srv,
// serves it over TLS on loopback for the script's lifetime, and sets
// RAMPART_SERVER, RAMPART_CA and ADMIN (the admin token).
func startServer(e *testscript.Env) error {
	dir := filepath.Join(e.WorkDir, "srv")
	res, err := datadir.Init(dir, datadir.InitOptions{})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	in, err := datadir.Open(ctx, dir, server.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		cancel()
		return err
	}
	ts := httptest.NewUnstartedServer(in.Server.Handler())
	ts.TLS = in.TLS
	ts.StartTLS()
	e.Defer(func() {
		ts.Close()
		cancel()
		in.Close()
	})
	e.Setenv("RAMPART_SERVER", ts.URL)
	e.Setenv("RAMPART_CA", filepath.Join(dir, "ca.pem"))
	e.Setenv("ADMIN", res.AdminToken)
	return nil
}

// capture NAME: set the environment variable NAME to the last command's
// stdout, without its trailing newline.
func cmdCapture(ts *testscript.TestScript, neg bool, args []string) {
	ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile("stdout")))
}

// sqlite-exec DB SQL: run one statement against a SQLite database, as an
// attacker with write access to the server's disk could.
func cmdSQLiteExec(ts *testscript.TestScript, neg bool, args []string) {
	db, err := sql.Open("sqlite", "file:"+ts.MkAbs(args[0]))
	ts.Check(err)
	defer db.Close()
	_, err = db.Exec(args[1])
	ts.Check(err)
}

// softhsm-setup LABEL...: create a private SoftHSM2 configuration in $WORK,
// initialise one token per label with user PIN 1234 (written to
// $WORK/pin.txt), and set SOFTHSM2_CONF and MODULE for the script.
func cmdSoftHSMSetup(ts *testscript.TestScript, neg bool, args []string) {
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		ts.Fatalf("softhsm2-util not found: run make test (scripts/test-deps.sh installs softhsm2)")
	}
	dir := ts.MkAbs("softhsm")
	ts.Check(os.MkdirAll(filepath.Join(dir, "tokens"), 0o700))
	conf := filepath.Join(dir, "softhsm2.conf")
	ts.Check(os.WriteFile(conf, []byte(fmt.Sprintf("directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", dir)), 0o600))
	ts.Setenv("SOFTHSM2_CONF", conf)
	module := "/usr/lib/softhsm/libsofthsm2.so"
	if out, err := exec.Command("dpkg", "-L", "libsofthsm2").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasSuffix(l, "/libsofthsm2.so") {
				module = l
			}
		}
	}
	ts.Setenv("MODULE", module)
	ts.Check(os.WriteFile(ts.MkAbs("pin.txt"), []byte("1234\n"), 0o600))
	for _, label := range args {
		cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "12345678", "--pin", "1234")
		cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
		if out, err := cmd.CombinedOutput(); err != nil {
			ts.Fatalf("softhsm2-util: %v\n%s", err, out)
		}
	}
}

// treehash DIR: print a digest of every file's path, mode and content
// under DIR, to show that a refused command changed nothing.
func cmdTreehash(ts *testscript.TestScript, neg bool, args []string) {
	d, err := treeDigest(ts.MkAbs(args[0]))
	ts.Check(err)
	fmt.Fprintln(ts.Stdout(), d)
}

// treeDigest digests every file's path, mode and content under root, but
// the repository lock.
func treeDigest(root string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == ".lock" {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", rel, info.Mode())
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	return fmt.Sprintf("%x", h.Sum(nil)), err
}
