package offlinerepo_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
)

// tufjsDir holds client.js and the npm packages scripts/test-deps.sh
// installs there (tuf-js, an independent TUF client implementation).
const tufjsDir = "testdata/tufjs"

const product = "acme-gw"

// TestTufJSInterop publishes a repository with internal/offlinerepo and has
// tuf-js, over HTTP from a plain static file server, refresh it from the
// first root and download and verify a release through the product's
// delegation: the published repository must be complete TUF with
// consistent snapshots, not just something our own verifier accepts.
func TestTufJSInterop(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node not found: run make test (scripts/test-deps.sh installs nodejs and the npm packages)")
	}
	if _, err := os.Stat(filepath.Join(tufjsDir, "node_modules", "tuf-js", "package.json")); err != nil {
		t.Fatalf("%s/node_modules/tuf-js is missing (%v): run make test (scripts/test-deps.sh installs nodejs and the npm packages)", tufjsDir, err)
	}

	gen := func(t *testing.T, kt keys.Type) keys.Signer {
		t.Helper()
		priv, err := keys.Generate(kt)
		if err != nil {
			t.Fatalf("generate %s key: %v", kt, err)
		}
		return keys.InMemory(priv)
	}
	rootA, rootB := gen(t, keys.Ed25519), gen(t, keys.ECDSAP256)
	targetsKey := gen(t, keys.Ed25519)
	online := gen(t, keys.Ed25519)
	relEd, relRSA, relEC := gen(t, keys.Ed25519), gen(t, keys.RSA3072), gen(t, keys.ECDSAP256)

	dir := t.TempDir()
	r, err := offlinerepo.Init(dir, offlinerepo.InitOptions{
		RootKeys:         []crypto.PublicKey{rootA.Public(), rootB.Public()},
		RootThreshold:    2,
		TargetsKeys:      []crypto.PublicKey{targetsKey.Public()},
		TargetsThreshold: 1,
		SnapshotKeys:     []crypto.PublicKey{online.Public()},
		TimestampKeys:    []crypto.PublicKey{online.Public()},
	})
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	publicDir := filepath.Join(dir, "public")

	sign := func(t *testing.T, role string, signers ...keys.Signer) {
		t.Helper()
		for _, s := range signers {
			if _, err := r.Sign(role, s); err != nil {
				t.Fatalf("Sign(%s): %v", role, err)
			}
		}
	}
	publish := func(t *testing.T) {
		t.Helper()
		if _, err := r.Publish([]keys.Signer{online}); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	addRelease := func(t *testing.T, version string, securityVersion uint64, size int) (target string, length int64, sum string) {
		t.Helper()
		img := filepath.Join(t.TempDir(), "image.bin")
		b := make([]byte, size)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(img, b, 0o644); err != nil {
			t.Fatal(err)
		}
		added, err := r.AddRelease(offlinerepo.ReleaseOptions{
			Image:           img,
			Product:         product,
			Version:         version,
			SecurityVersion: securityVersion,
			Hardware:        []string{"acme-gw-rev-b"},
		})
		if err != nil {
			t.Fatalf("AddRelease %s: %v", version, err)
		}
		h := sha256.Sum256(b)
		if added.Length != int64(size) || added.SHA256 != hex.EncodeToString(h[:]) {
			t.Fatalf("AddRelease %s reports length %d sha256 %s; the image has %d and %x", version, added.Length, added.SHA256, size, h)
		}
		return added.Target, added.Length, added.SHA256
	}

	if err := r.Delegate(product, []crypto.PublicKey{relEd.Public(), relRSA.Public(), relEC.Public()}, 2); err != nil {
		t.Fatalf("Delegate: %v", err)
	}
	target1, length1, sum1 := addRelease(t, "1.0.0", 1, 3<<20+12345)
	sign(t, "root", rootA, rootB)
	sign(t, "targets", targetsKey)
	// One of the two release signatures is RSA-PSS, so tuf-js checks all
	// three key types we publish (ed25519, ecdsa-p256, rsa-3072).
	sign(t, product, relEd, relRSA)
	publish(t)

	srv := httptest.NewServer(http.FileServer(http.Dir(publicDir)))
	t.Cleanup(srv.Close)
	metadataURL, targetsURL := srv.URL+"/", srv.URL+"/targets/"

	// expectDownload runs tuf-js from 1.root.json and checks that it
	// downloaded exactly the image.
	expectDownload := func(t *testing.T, target string, length int64, sum string) string {
		t.Helper()
		mdDir, stdout, stderr, code := runClient(t, publicDir, metadataURL, targetsURL, target)
		if code != 0 {
			t.Fatalf("tuf-js exited %d for %s:\n%s", code, target, stderr)
		}
		var got struct {
			Path   string `json:"path"`
			Length int64  `json:"length"`
			SHA256 string `json:"sha256"`
		}
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("tuf-js output %q: %v", stdout, err)
		}
		if got.Path != target || got.Length != length || got.SHA256 != sum {
			t.Fatalf("tuf-js downloaded %+v; want path %s length %d sha256 %s", got, target, length, sum)
		}
		return mdDir
	}

	expectDownload(t, target1, length1, sum1)

	t.Run("not found", func(t *testing.T) {
		_, _, stderr, code := runClient(t, publicDir, metadataURL, targetsURL, product+"/9.9.9/image.bin")
		if code != 2 {
			t.Fatalf("tuf-js exited %d for a target that does not exist, want 2:\n%s", code, stderr)
		}
	})

	t.Run("root rotation", func(t *testing.T) {
		rootC := gen(t, keys.Ed25519)
		idB := mustID(t, rootB)
		if err := r.Rotate("root", offlinerepo.RotateOptions{Add: []crypto.PublicKey{rootC.Public()}, Remove: []string{idB}}); err != nil {
			t.Fatalf("Rotate root: %v", err)
		}
		// Version 2 needs 2 of the old keys {A, B} and 2 of the new {A, C}.
		sign(t, "root", rootA, rootB, rootC)
		target2, length2, sum2 := addRelease(t, "2.0.0", 2, 1<<20+77)
		sign(t, product, relEd, relRSA)
		publish(t)
		if _, err := os.Stat(filepath.Join(publicDir, "2.root.json")); err != nil {
			t.Fatalf("publish did not write 2.root.json: %v", err)
		}

		mdDir := expectDownload(t, target2, length2, sum2)
		var root struct {
			Signed struct {
				Version int64 `json:"version"`
			} `json:"signed"`
		}
		b, err := os.ReadFile(filepath.Join(mdDir, "root.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &root); err != nil {
			t.Fatal(err)
		}
		if root.Signed.Version != 2 {
			t.Fatalf("tuf-js trusts root version %d after the refresh, want 2", root.Signed.Version)
		}
		// The first release is still there and still verifies.
		expectDownload(t, target1, length1, sum1)
	})

	t.Run("tamper payload", func(t *testing.T) {
		pub, err := r.FindPublished(target1)
		if err != nil {
			t.Fatal(err)
		}
		flipByte(t, pub.ImagePath, length1/2)
		_, _, stderr, code := runClient(t, publicDir, metadataURL, targetsURL, target1)
		if code != 1 {
			t.Fatalf("tuf-js exited %d for a tampered payload, want 1:\n%s", code, stderr)
		}
		if !regexp.MustCompile(`(?i)(hash|length).*(mismatch|expected)|(mismatch|expected).*(hash|length)`).MatchString(stderr) {
			t.Fatalf("tuf-js rejected the tampered payload, but not for a hash or length mismatch:\n%s", stderr)
		}
		t.Logf("tuf-js: %s", stderr)
	})

	t.Run("tamper metadata", func(t *testing.T) {
		path := filepath.Join(publicDir, fmt.Sprintf("%d.%s.json", publishedVersion(t, publicDir, product), product))
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// Same length, still valid JSON, signatures untouched: claim the
		// release also runs on other hardware.
		tampered := bytes.Replace(orig, []byte(`"acme-gw-rev-b"`), []byte(`"acme-gw-rev-x"`), 1)
		if bytes.Equal(tampered, orig) || !json.Valid(tampered) {
			t.Fatalf("could not tamper with %s", path)
		}
		replaceFile(t, path, tampered)
		_, _, stderr, code := runClient(t, publicDir, metadataURL, targetsURL, target1)
		if code != 1 {
			t.Fatalf("tuf-js exited %d for tampered %s, want 1:\n%s", code, filepath.Base(path), stderr)
		}
		if !regexp.MustCompile(`(?i)hash|length|signature|unsigned|threshold`).MatchString(stderr) {
			t.Fatalf("tuf-js rejected tampered %s, but not for a hash, length or signature error:\n%s", filepath.Base(path), stderr)
		}
		t.Logf("tuf-js: %s", stderr)
	})

	t.Run("revoked release signer", func(t *testing.T) {
		if err := r.Rotate(product, offlinerepo.RotateOptions{Remove: []string{mustID(t, relEd)}}); err != nil {
			t.Fatalf("Rotate %s: %v", product, err)
		}
		sign(t, "targets", targetsKey)
		if err := r.Stage(product); err != nil {
			t.Fatalf("Stage %s: %v", product, err)
		}
		if _, err := r.Sign(product, relEd); !errors.Is(err, offlinerepo.ErrNotAuthorised) {
			t.Fatalf("Sign(%s) with the revoked key: %v, want ErrNotAuthorised", product, err)
		}
		sign(t, product, relRSA)
		if _, err := r.Publish([]keys.Signer{online}); !errors.Is(err, offlinerepo.ErrBelowThreshold) {
			t.Fatalf("Publish with 1 of 2 release signatures: %v, want ErrBelowThreshold", err)
		}
		sign(t, product, relEC)
		publish(t)
		expectDownload(t, target1, length1, sum1)
	})
}

// runClient runs client.js with a fresh metadata directory holding
// public/1.root.json as its trusted root, and returns that directory, the
// client's output and its exit code.
func runClient(t *testing.T, publicDir, metadataURL, targetsURL, target string) (mdDir, stdout, stderr string, code int) {
	t.Helper()
	mdDir, targetDir := t.TempDir(), t.TempDir()
	root, err := os.ReadFile(filepath.Join(publicDir, "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mdDir, "root.json"), root, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(tufjsDir, "client.js"), metadataURL, targetsURL, mdDir, targetDir, target)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		code = ee.ExitCode()
	default:
		t.Fatalf("running node client.js: %v\n%s", err, errb.String())
	}
	return mdDir, out.String(), errb.String(), code
}

func mustID(t *testing.T, s keys.Signer) string {
	t.Helper()
	id, err := keys.ID(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// publishedVersion returns the version of role named by the published
// snapshot (the one timestamp.json names).
func publishedVersion(t *testing.T, publicDir, role string) int64 {
	t.Helper()
	type meta struct {
		Signed struct {
			Meta map[string]struct {
				Version int64 `json:"version"`
			} `json:"meta"`
		} `json:"signed"`
	}
	read := func(name string) meta {
		b, err := os.ReadFile(filepath.Join(publicDir, name))
		if err != nil {
			t.Fatal(err)
		}
		var m meta
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return m
	}
	ts := read("timestamp.json")
	snap := read(fmt.Sprintf("%d.snapshot.json", ts.Signed.Meta["snapshot.json"].Version))
	v := snap.Signed.Meta[role+".json"].Version
	if v == 0 {
		t.Fatalf("the published snapshot does not name %s.json", role)
	}
	return v
}

// replaceFile overwrites path with b and restores the original content
// when the (sub)test ends, so later sub-tests see the published repository.
func replaceFile(t *testing.T, path string, b []byte) {
	t.Helper()
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(path, orig, 0o644); err != nil {
			t.Errorf("restoring %s: %v", path, err)
		}
	})
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := bytes.Clone(b)
	c[off] ^= 0x01
	replaceFile(t, path, c)
}
