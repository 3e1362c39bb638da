package server_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/keys"
)

// treeListing lists every file under dir with its size, to show that a
// refused request created nothing in the data directory. The database
// (refusals are audited) and the log's own files (checked through its
// size) are left out.
func treeListing(t *testing.T, dir string) string {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() && rel == "log" {
			return filepath.SkipDir
		}
		if d.IsDir() || strings.HasPrefix(rel, "rampart.db") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %d", rel, info.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// Target names that are not plain PRODUCT/VERSION/FILE paths are refused
// in pushed metadata, even validly signed, and in URLs, with a 4xx and a
// stable code; nothing is stored or logged.
func TestUnsafeTargetPathsRefused(t *testing.T) {
	e := newEnv(t)
	image := make([]byte, 70000)
	for i := range image {
		image[i] = byte(i * 7)
	}
	e.ceremony(image)
	e.uploadBlobs(e.admin)
	dataDir := filepath.Dir(e.dbPath)
	before := treeListing(t, dataDir)

	good, err := metadata.Targets().FromBytes(e.staged("roles/acme-gw.json"))
	if err != nil {
		t.Fatal(err)
	}
	tf := good.Signed.Targets["acme-gw/2.4.1/fw.img"]
	// signedWith returns the product role listing one more target, validly
	// signed by the release threshold.
	signedWith := func(name string) []byte {
		role, _ := metadata.Targets().FromBytes(e.staged("roles/acme-gw.json"))
		extra := *tf
		extra.Path = name
		role.Signed.Targets[name] = &extra
		role.ClearSignatures()
		for _, k := range []keys.Signer{e.rel[0], e.rel[2]} {
			if _, err := role.Sign(keys.ForTUF(k)); err != nil {
				t.Fatal(err)
			}
		}
		b, err := role.ToBytes(false)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, name := range []string{
		"acme-gw/../../etc/passwd",
		"acme-gw/2.4.1/../../../rampart.db",
		"acme-gw/2.4.1/..",
		"acme-gw/./fw.img",
		"acme-gw/%2e%2e/fw.img",
		"acme-gw/2.4.1/%2e%2e%2frampart.db",
		"/etc/passwd",
		"/acme-gw/2.4.1/fw.img",
		`acme-gw\2.4.1\fw.img`,
		`acme-gw/2.4.1/..\..\rampart.db`,
		"acme-gw/2.4.1/fw.img\x00.png",
		"acme-gw//fw.img",
		"acme-gw/2.4.1//fw.img",
		"acme-gw/2.4.1/fw.img/",
	} {
		body, _ := json.Marshal(map[string]any{"roots": [][]byte{e.staged("root.json")}, "targets": e.staged("targets.json"), "roles": map[string][]byte{"acme-gw": signedWith(name)}})
		resp, b := e.do("POST", "/api/v1/repo/push", e.admin, bytes.NewReader(body))
		wantError(t, resp, b, 422, "unsafe-target-path")
		if !strings.Contains(string(b), `"role":"acme-gw"`) {
			t.Fatalf("%q: %s", name, b)
		}
		for _, target := range []string{name, "acme-gw/2.4.1/fw.img"} {
			if _, err := e.db.LogEntry(t.Context(), target); err == nil {
				t.Fatalf("%q: %s was logged", name, target)
			}
		}
		for _, role := range []string{"root", "targets", "acme-gw", "snapshot", "timestamp"} {
			if _, err := e.db.Doc(t.Context(), "image", role, 0); err == nil {
				t.Fatalf("%q: %s was stored", name, role)
			}
		}
		if n, err := e.lg.Size(t.Context()); err != nil || n != 0 {
			t.Fatalf("%q: the log has %d entries (%v)", name, n, err)
		}
	}
	if after := treeListing(t, dataDir); after != before {
		t.Fatalf("refused pushes changed the data directory:\n%s\nwas:\n%s", after, before)
	}
	var refused int
	for _, a := range e.auditEntries() {
		if a.Action == "push" && a.Outcome == "refused" && a.Detail["code"] == "unsafe-target-path" {
			refused++
		}
	}
	if refused != 14 {
		t.Fatalf("%d refused pushes audited, want 14", refused)
	}

	// The clean push is accepted and its payload served.
	body, _ := json.Marshal(map[string]any{"roots": [][]byte{e.staged("root.json")}, "targets": e.staged("targets.json"), "roles": map[string][]byte{"acme-gw": e.staged("roles/acme-gw.json")}})
	if resp, b := e.do("POST", "/api/v1/repo/push", e.admin, bytes.NewReader(body)); resp.StatusCode != 200 {
		t.Fatalf("push: %d %s", resp.StatusCode, b)
	}
	sum := sha256.Sum256(image)
	payload := "/repo/targets/acme-gw/2.4.1/" + hex.EncodeToString(sum[:]) + ".fw.img"
	if resp, b := e.do("GET", payload, "", nil); resp.StatusCode != 200 || !bytes.Equal(b, image) {
		t.Fatalf("payload: %d", resp.StatusCode)
	}

	// In URLs, encoded or not, before any routing or redirect.
	for _, p := range []string{
		"/repo/targets/../../rampart.db",
		"/repo/targets/acme-gw/2.4.1/../../../keys/snapshot.key",
		"/repo/targets/acme-gw/2.4.1/./" + hex.EncodeToString(sum[:]) + ".fw.img",
		"/repo/targets/%2e%2e/%2e%2e/rampart.db",
		"/repo/targets/%2E%2E%2F%2E%2E%2Frampart.db",
		"/repo/targets/acme-gw/2.4.1%2f..%2f..%2f..%2frampart.db",
		"/repo/targets/%252e%252e/%252e%252e/rampart.db",
		"/repo/targets//etc/passwd",
		"/repo/targets/%2fetc%2fpasswd",
		"//repo/targets/acme-gw/2.4.1/fw.img",
		"/repo/targets/acme-gw%5c2.4.1%5cfw.img",
		"/repo/targets/acme-gw/2.4.1/" + hex.EncodeToString(sum[:]) + ".fw.img%00.png",
		"/repo/../rampart.db",
		"/repo/%2e%2e/keys/ca.key",
		"/log/../keys/log.key",
		"/log/tile/0/%2e%2e/%2e%2e/checkpoint",
		"/api/v1/log/proof/../../../rampart.db",
		"/api/v1/blobs/..%2f..%2frampart.db?length=1",
		"/director/..%2f..%2frampart.db",
	} {
		resp, b := e.do("GET", p, "", nil)
		wantError(t, resp, b, 400, "bad-path")
	}
	// A backslash sent raw, not percent-encoded.
	conn, err := net.Dial("tcp", e.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /repo/targets/acme-gw\\2.4.1\\..\\..\\rampart.db HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	wantError(t, resp, b, 400, "bad-path")
	// Legitimate names still work, and nothing new appeared on disk
	// beyond the accepted push.
	if resp, _ := e.do("GET", payload, "", nil); resp.StatusCode != 200 {
		t.Fatalf("payload after refusals: %d", resp.StatusCode)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "passwd")); err == nil {
		t.Fatal("a file named by a refused path exists")
	}
	if _, err := e.db.Doc(t.Context(), "image", "timestamp", 0); err != nil {
		t.Fatal(err)
	}
}
