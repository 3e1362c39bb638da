package server_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/pki"
)

func pkiKey(t *testing.T) (*ecdsa.PrivateKey, error) {
	k, err := pki.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	return k, nil
}

func csrFor(t *testing.T, key crypto.Signer, id string) []byte {
	csr, err := pki.NewDeviceCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func (e *tlsEnv) dataDir() string {
	// newTLSEnv's data directory sits beside the CA file it read.
	return e.dataDirPath
}

func keysFromFile(t *testing.T, path string) (crypto.PublicKey, error) {
	p, err := keys.ReadPublicFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return p, nil
}

type blobData struct {
	digest string
	data   []byte
}

type offlinePush struct {
	body  map[string]any
	blobs []blobData
}

// offlineRelease runs an offline ceremony whose online keys are the
// server's and returns the push request and blobs of one release
// (acme-gw/1.0.0/fw.img for hardware hw).
func offlineRelease(t *testing.T, snap, ts crypto.PublicKey, hw string) offlinePush {
	k := func() keys.Signer {
		s, _ := keys.Generate(keys.Ed25519)
		return keys.InMemory(s)
	}
	root, targets, rel := k(), k(), k()
	dir := filepath.Join(t.TempDir(), "repo")
	r, err := offlinerepo.Init(dir, offlinerepo.InitOptions{RootKeys: []crypto.PublicKey{root.Public()}, RootThreshold: 1, TargetsKeys: []crypto.PublicKey{targets.Public()}, TargetsThreshold: 1, SnapshotKeys: []crypto.PublicKey{snap}, TimestampKeys: []crypto.PublicKey{ts}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Sign("root", root)
	r.Delegate("acme-gw", []crypto.PublicKey{rel.Public()}, 1)
	r.Sign("targets", targets)
	img := filepath.Join(t.TempDir(), "fw.img")
	b := make([]byte, 1<<20+3)
	rand.Read(b)
	os.WriteFile(img, b, 0o644)
	if _, err := r.AddRelease(offlinerepo.ReleaseOptions{Image: img, Product: "acme-gw", Version: "1.0.0", SecurityVersion: 1, Hardware: []string{hw}}); err != nil {
		t.Fatal(err)
	}
	r.Sign("acme-gw", rel)
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, "staged", n))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	p := offlinePush{body: map[string]any{"roots": [][]byte{read("root.json")}, "targets": read("targets.json"), "roles": map[string][]byte{"acme-gw": read("roles/acme-gw.json")}}}
	entries, _ := os.ReadDir(filepath.Join(dir, "staged", "blobs"))
	for _, en := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, "staged", "blobs", en.Name()))
		sum := sha256.Sum256(data)
		p.blobs = append(p.blobs, blobData{hex.EncodeToString(sum[:]), data})
	}
	return p
}

func (e *tlsEnv) callRaw(c *http.Client, method, path, token string, body []byte) (int, []byte, error) {
	req, _ := http.NewRequest(method, e.ts.URL+path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, nil
}

func (e *tlsEnv) token(name, role string) string {
	b := e.mustCall(e.pool, "POST", "/api/v1/tokens", e.admin, map[string]string{"name": name, "role": role}, 201)
	var out struct{ Token string }
	json.Unmarshal(b, &out)
	if !strings.HasPrefix(out.Token, "rmp_") {
		e.t.Fatalf("%s", b)
	}
	return out.Token
}

// publish runs an offline ceremony naming this server's online keys and
// pushes its release, acme-gw/1.0.0/fw.img (security version 1) for
// hardware hw.
func (e *tlsEnv) publish(hw string) offlinePush {
	e.t.Helper()
	snap, _ := keysFromFile(e.t, filepath.Join(e.dataDirPath, "online", "snapshot.pub"))
	ts, _ := keysFromFile(e.t, filepath.Join(e.dataDirPath, "online", "timestamp.pub"))
	push := offlineRelease(e.t, snap, ts, hw)
	for _, b := range push.blobs {
		code, body, err := e.callRaw(e.pool, "PUT", fmt.Sprintf("/api/v1/blobs/%s?length=%d", b.digest, len(b.data)), e.admin, b.data)
		if err != nil || code != 201 {
			e.t.Fatalf("upload %d %s %v", code, body, err)
		}
	}
	e.mustCall(e.pool, "POST", "/api/v1/repo/push", e.admin, push.body, 200)
	return push
}
