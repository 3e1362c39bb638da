package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rampartfw/rampart/internal/datadir"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/server"
)

// frontEnd is a hostile TLS-terminating proxy in front of a real
// rampart-server: it holds the server's certificate and key, so the CLI
// cannot tell it from the server, forwards every request, and rewrites
// the answers its rewrite function chooses.
type frontEnd struct {
	URL     string
	mu      sync.Mutex
	rewrite func(path string, body []byte) []byte
	paths   []string
}

func (f *frontEnd) set(rw func(path string, body []byte) []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rewrite, f.paths = rw, nil
}

func (f *frontEnd) requested(path string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.paths {
		if p == path {
			return true
		}
	}
	return false
}

// hostileEnv starts a real server behind a hostile front end and returns
// the front end, the server's data directory and an admin token.
func hostileEnv(t *testing.T) (*frontEnd, string, string) {
	t.Helper()
	keys.SetTestOnlyWorkFactor(10)
	dir := filepath.Join(t.TempDir(), "srv")
	res, err := datadir.Init(dir, datadir.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in, err := datadir.Open(ctx, dir, server.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	real := httptest.NewUnstartedServer(in.Server.Handler())
	real.TLS = in.TLS
	real.StartTLS()
	t.Cleanup(func() { real.Close(); cancel(); in.Close() })

	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	u, _ := url.Parse(real.URL)
	f := &frontEnd{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	proxy.ModifyResponse = func(resp *http.Response) error {
		f.mu.Lock()
		rw := f.rewrite
		f.paths = append(f.paths, resp.Request.URL.Path)
		f.mu.Unlock()
		if rw == nil {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body.Close()
		nb := rw(resp.Request.URL.Path, b)
		if !bytes.Equal(nb, b) {
			resp.StatusCode = http.StatusOK
		}
		resp.Body = io.NopCloser(bytes.NewReader(nb))
		resp.ContentLength = int64(len(nb))
		resp.Header.Set("Content-Length", fmt.Sprint(len(nb)))
		return nil
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "keys", "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	fe := httptest.NewUnstartedServer(proxy)
	fe.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	fe.StartTLS()
	t.Cleanup(fe.Close)
	f.URL = fe.URL
	return f, dir, res.AdminToken
}

// cli runs rampart in-process in dir and returns its exit code and output.
type cli struct {
	t   *testing.T
	dir string
	env map[string]string
}

func (c *cli) run(args ...string) (code int, stdout, stderr string) {
	c.t.Helper()
	var o, e bytes.Buffer
	wd, _ := os.Getwd()
	if err := os.Chdir(c.dir); err != nil {
		c.t.Fatal(err)
	}
	defer os.Chdir(wd)
	code = run(args, &env{stdin: strings.NewReader(""), stdout: &o, stderr: &e, getenv: func(k string) string { return c.env[k] }})
	return code, o.String(), e.String()
}

func (c *cli) ok(args ...string) string {
	c.t.Helper()
	code, out, errOut := c.run(args...)
	if code != 0 {
		c.t.Fatalf("rampart %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// refused runs a command that must exit 1 with stderr matching every want.
func (c *cli) refused(want []string, args ...string) {
	c.t.Helper()
	code, out, errOut := c.run(args...)
	if code != exitRefused {
		c.t.Fatalf("rampart %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, exitRefused, out, errOut)
	}
	for _, w := range want {
		if !strings.Contains(errOut, w) {
			c.t.Fatalf("rampart %s: stderr does not say %q:\n%s", strings.Join(args, " "), w, errOut)
		}
	}
}

func dirHash(t *testing.T, dir string) string {
	t.Helper()
	d, err := treeDigest(dir)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// injectRelease adds an attacker's release to a signed product role's
// JSON, keeping its signatures.
func injectRelease(t *testing.T, doc []byte) []byte {
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil || m["signed"] == nil {
		t.Errorf("not a signed role: %v: %s", err, doc)
		return doc
	}
	m["signed"].(map[string]any)["targets"].(map[string]any)["acme-gw/6.6.6/fw.img"] = map[string]any{
		"length": 666, "hashes": map[string]any{"sha256": strings.Repeat("66", 32)},
		"custom": map[string]any{"rampart": map[string]any{"product": "acme-gw", "version": "6.6.6", "security_version": 999,
			"hardware_ids": []string{"acme-gw-rev2"}, "created": "2026-01-01T00:00:00Z",
			"index": map[string]any{"sha256": strings.Repeat("77", 32), "length": 100, "chunk_size": 1 << 20}}},
	}
	b, _ := json.Marshal(m)
	return b
}

// A compromised server (here a front end holding its TLS key) that
// rewrites its answers cannot get the operator's offline keys to sign its
// release, nor get its bytes into public/, nor panic, flood or hijack the
// CLI; the genuine answer is adopted afterwards.
func TestHostileFrontEnd(t *testing.T) {
	fe, srv, admin := hostileEnv(t)
	work := t.TempDir()
	c := &cli{t: t, dir: work, env: map[string]string{
		"RAMPART_PASSPHRASE": "correct-horse", "RAMPART_SERVER": fe.URL, "RAMPART_CA": filepath.Join(srv, "ca.pem"),
	}}
	img := func(name string, n int) string {
		b := make([]byte, n)
		rand.Read(b)
		os.WriteFile(filepath.Join(work, name), b, 0o644)
		return name
	}
	c.ok("server", "keys", "-o", "online")
	for _, k := range []string{"root", "targets", "rel-a"} {
		c.ok("key", "generate", "keys/"+k)
	}
	c.ok("repo", "init", "repo", "--root-key", "keys/root.pub", "--targets-key", "keys/targets.pub", "--snapshot-key", "online/snapshot.pub", "--timestamp-key", "online/timestamp.pub")
	c.ok("repo", "sign", "repo", "root", "--key", "keys/root.key", "--yes")
	c.ok("repo", "delegate", "repo", "acme-gw", "--key", "keys/rel-a.pub", "--threshold", "1")
	c.ok("repo", "sign", "repo", "targets", "--key", "keys/targets.key", "--yes")
	c.env["RAMPART_TOKEN"] = strings.TrimSpace(c.ok("token", "create", "ci", "--role", "release-manager", "--token", admin))
	c.ok("release", "add", "repo", img("fw1.img", 100<<10), "--product", "acme-gw", "--version", "1.0.0", "--security-version", "1", "--hardware", "acme-gw-rev2")
	c.ok("repo", "sign", "repo", "acme-gw", "--key", "keys/rel-a.key", "--yes")
	c.ok("repo", "push", "repo")

	// 1. The push of 2.0.0 is answered with the role plus the attacker's
	// 6.6.6: refused, nothing written, the role stays staged.
	c.ok("release", "add", "repo", img("fw2.img", 100<<10), "--product", "acme-gw", "--version", "2.0.0", "--security-version", "2", "--hardware", "acme-gw-rev2")
	c.ok("repo", "sign", "repo", "acme-gw", "--key", "keys/rel-a.key", "--yes")
	before := dirHash(t, filepath.Join(work, "repo"))
	fe.set(func(path string, b []byte) []byte {
		if path == "/repo/2.acme-gw.json" {
			return injectRelease(t, b)
		}
		return b
	})
	c.refused([]string{"the server's answer to the push does not verify", "acme-gw version 2 that differs from the one pushed", "hint: the server accepted the push", "Treat the server as compromised"}, "repo", "push", "repo")
	if dirHash(t, filepath.Join(work, "repo")) != before {
		t.Fatal("the refused push answer changed the repository")
	}

	// 2. Even with the poisoned role written into public/ by hand, no
	// command builds on it, and none changes anything.
	pubRole := filepath.Join(work, "repo", "public", "1.acme-gw.json")
	genuine, _ := os.ReadFile(pubRole)
	os.WriteFile(pubRole, injectRelease(t, genuine), 0o644)
	before = dirHash(t, filepath.Join(work, "repo"))
	for _, args := range [][]string{
		{"release", "add", "repo", img("fw3.img", 4096), "--product", "acme-gw", "--version", "3.0.0", "--security-version", "3", "--hardware", "acme-gw-rev2"},
		{"repo", "sign", "repo", "acme-gw", "--key", "keys/rel-a.key", "--yes"},
		{"repo", "stage", "repo", "acme-gw"},
		{"repo", "diff", "repo"},
		{"bundle", "repo", "acme-gw/1.0.0", "-o", "b.rbundle"},
		{"repo", "push", "repo"},
	} {
		c.refused([]string{"public/ does not verify against the repository's root chain", "acme-gw", "hint: nothing was changed"}, args...)
	}
	if dirHash(t, filepath.Join(work, "repo")) != before {
		t.Fatal("a refused command changed the repository")
	}
	os.WriteFile(pubRole, genuine, 0o644)
	before = dirHash(t, filepath.Join(work, "repo"))

	// 3. A push answer claiming root version 2,000,000,000, a 9 MiB
	// timestamp, a snapshot entry shorter than ".json", and escapes in the
	// answer: each refused or neutralised, and no root version that was not
	// pushed is ever requested.
	fe.set(func(path string, b []byte) []byte {
		if path == "/repo/timestamp.json" {
			return make([]byte, 9<<20)
		}
		return b
	})
	code, _, errOut := c.run("repo", "push", "repo")
	if code == 0 || !strings.Contains(errOut, "timestamp.json") || !strings.Contains(errOut, "exceeds") {
		t.Fatalf("9 MiB timestamp: exit %d\n%s", code, errOut)
	}
	fe.set(func(path string, b []byte) []byte {
		if strings.HasSuffix(path, ".snapshot.json") {
			var m map[string]any
			json.Unmarshal(b, &m)
			m["signed"].(map[string]any)["meta"].(map[string]any)["a"] = map[string]any{"version": 1}
			b, _ = json.Marshal(m)
		}
		return b
	})
	c.refused([]string{`snapshot entry "a" is neither targets.json nor PRODUCT.json`}, "repo", "push", "repo")
	if dirHash(t, filepath.Join(work, "repo")) != before {
		t.Fatal("a refused push changed the repository")
	}

	// 4. The genuine answer is adopted by the next push (the server already
	// holds 2.0.0), and signing 3.0.0 shows exactly one new target.
	fe.set(nil)
	out := c.ok("repo", "push", "repo")
	if !strings.Contains(out, "the server already had what is staged") {
		t.Fatalf("push after a refused answer: %s", out)
	}
	c.ok("release", "add", "repo", "fw3.img", "--product", "acme-gw", "--version", "3.0.0", "--security-version", "3", "--hardware", "acme-gw-rev2")
	out = c.ok("repo", "sign", "repo", "acme-gw", "--key", "keys/rel-a.key", "--yes")
	if !strings.Contains(out, "+ target acme-gw/3.0.0/fw3.img: length 4096") || strings.Contains(out, "6.6.6") || strings.Count(out, "+ target") != 1 {
		t.Fatalf("repo sign shows:\n%s", out)
	}

	// 5. The push answer claims root 2,000,000,000 and a release name with
	// terminal escapes: no root is fetched, the name is printed escaped.
	fe.set(func(path string, b []byte) []byte {
		if path == "/api/v1/repo/push" {
			var m map[string]any
			json.Unmarshal(b, &m)
			m["versions"].(map[string]any)["root"] = 2000000000
			m["releases"] = []string{"acme-gw/3.0.0/fw3.img\x1b[2K\x1b]0;owned\x07\r"}
			b, _ = json.Marshal(m)
		}
		return b
	})
	code, out, errOut = c.run("repo", "push", "repo")
	if code != 0 {
		t.Fatalf("push: exit %d\n%s%s", code, out, errOut)
	}
	if strings.ContainsAny(out+errOut, "\x1b\x07\r") || !strings.Contains(out, `\x1b[2K`) {
		t.Fatalf("escapes reached the terminal: %q", out)
	}
	for v := 2; v <= 3; v++ {
		if fe.requested(fmt.Sprintf("/repo/%d.root.json", v)) {
			t.Fatalf("root version %d, never pushed, was fetched", v)
		}
	}
	if _, err := os.Stat(filepath.Join(work, "repo", "public", "2.root.json")); err == nil {
		t.Fatal("a root version the operator never pushed is in public/")
	}

	// 6. An error message with escapes is printed escaped.
	fe.set(func(path string, b []byte) []byte {
		if path == "/api/v1/repo/versions" {
			return []byte(`{"error":{"code":"x","message":"ok\u001b[1A\u001b[2K\u001b]0;title\u0007 rampart: pushed"}}`)
		}
		return b
	})
	code, _, errOut = c.run("repo", "push", "repo")
	if code == 0 || strings.ContainsAny(errOut, "\x1b\x07") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	fe.set(nil)

	// What the genuine server logged and published verifies offline, and
	// the attacker's release is in no bundle the operator can make.
	c.ok("bundle", "repo", "acme-gw/3.0.0", "-o", "b3.rbundle")
	c.ok("verify", "b3.rbundle", "--root", "repo/public/1.root.json", "--log-key", "online/log.pub")
	code, _, errOut = c.run("bundle", "repo", "acme-gw/6.6.6", "-o", "evil.rbundle")
	if code == 0 || !strings.Contains(errOut, "no published release acme-gw/6.6.6") {
		t.Fatalf("bundle of 6.6.6: exit %d: %s", code, errOut)
	}
}
