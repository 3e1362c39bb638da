package server_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/server"
)

// Chunks of a published release are served by their own hash, with Range
// and immutable caching; nothing else is, and stored bytes that do not
// match the hash are refused rather than served.
func TestChunksServedByHash(t *testing.T) {
	e := newEnv(t)
	image := make([]byte, 3<<20+100) // four chunks, the last short
	rand.Read(image)
	e.ceremony(image)
	rm := e.token("ci", server.RoleReleaseManager)
	e.uploadBlobs(rm)
	chunkURL := func(b []byte) string {
		sum := sha256.Sum256(b)
		return "/repo/chunks/" + hex.EncodeToString(sum[:])
	}
	// Uploaded but not published: not served.
	if resp, _ := e.do("GET", chunkURL(image[:1<<20]), "", nil); resp.StatusCode != 404 {
		t.Fatalf("a chunk of an unpublished release: %d", resp.StatusCode)
	}
	if resp, b := e.do("POST", "/api/v1/repo/push", rm, pushBody([][]byte{e.staged("root.json")}, e.staged("targets.json"), map[string][]byte{"acme-gw": e.staged("roles/acme-gw.json")})); resp.StatusCode != 200 {
		t.Fatalf("push: %d %s", resp.StatusCode, b)
	}
	for off := 0; off < len(image); off += 1 << 20 {
		c := image[off:min(off+1<<20, len(image))]
		for range 2 { // the second time from the checked cache
			resp, got := e.do("GET", chunkURL(c), "", nil)
			if resp.StatusCode != 200 || !bytes.Equal(got, c) {
				t.Fatalf("chunk at %d: %d, %d bytes", off, resp.StatusCode, len(got))
			}
			if !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") || !strings.Contains(resp.Header.Get("ETag"), chunkURL(c)[len("/repo/chunks/"):]) {
				t.Fatalf("headers: %v", resp.Header)
			}
		}
	}
	// Range inside a chunk, both before and after it was first checked.
	last := image[3<<20:]
	for _, c := range [][]byte{image[1<<20 : 2<<20], last} {
		req, _ := http.NewRequest("GET", e.ts.URL+chunkURL(c), nil)
		req.Header.Set("Range", "bytes=10-19")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 10)
		n, _ := resp.Body.Read(got)
		resp.Body.Close()
		if resp.StatusCode != 206 || !bytes.Equal(got[:n], c[10:20]) {
			t.Fatalf("range: %d %q", resp.StatusCode, got[:n])
		}
	}
	for _, bad := range []string{strings.Repeat("0", 64), strings.Repeat("A", 64), "abc", strings.Repeat("0", 63) + "g"} {
		resp, body := e.do("GET", "/repo/chunks/"+bad, "", nil)
		wantError(t, resp, body, 404, "not-found")
	}

	// Corrupt the stored payload under a chunk not served yet by this
	// process (a fresh server on the same store): refused with 500
	// chunk-corrupt, not served.
	sum := sha256.Sum256(image)
	digest := hex.EncodeToString(sum[:])
	blobPath := filepath.Join(filepath.Dir(e.dbPath), "blobs", digest[:2], digest)
	f, err := os.OpenFile(blobPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("rot"), 2<<20+5); err != nil {
		t.Fatal(err)
	}
	f.Close()
	blobs, err := blob.NewFS(filepath.Join(filepath.Dir(e.dbPath), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Store: e.db, Blobs: blobs, Log: e.lg, Snapshot: e.snap, Timestamp: e.tsk, Now: func() time.Time { return e.now }})
	if err != nil {
		t.Fatal(err)
	}
	fresh := httptest.NewServer(srv.Handler())
	defer fresh.Close()
	get := func(path string) (*http.Response, []byte) {
		resp, err := http.Get(fresh.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, body := get(chunkURL(image[2<<20 : 3<<20]))
	wantError(t, resp, body, 500, "chunk-corrupt")
	if resp, got := get(chunkURL(image[:1<<20])); resp.StatusCode != 200 || !bytes.Equal(got, image[:1<<20]) {
		t.Fatalf("an intact chunk of the same payload: %d", resp.StatusCode)
	}
}
