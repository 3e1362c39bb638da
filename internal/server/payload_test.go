package server_test

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A payload or chunk index is checked against the hash its name promises
// before it is first served: corrupted bytes on disk are a 500, never a
// 200 marked immutable that a CDN would keep for a year.
func TestCorruptPayloadIsNotServed(t *testing.T) {
	e := newTLSEnv(t)
	push := e.publish("acme-gw-rev2")
	var payload, index blobData
	for _, b := range push.blobs {
		if len(b.data) > 1<<20 {
			payload = b
		} else {
			index = b
		}
	}
	stored := func(d string) string { return filepath.Join(e.dataDirPath, "blobs", d[:2], d) }
	for _, c := range []struct {
		blob blobData
		url  string
	}{
		{payload, "/repo/targets/acme-gw/1.0.0/" + payload.digest + ".fw.img"},
		{index, "/repo/targets/acme-gw/1.0.0/" + index.digest + ".fw.img.rpidx"},
	} {
		bad := bytes.Clone(c.blob.data)
		bad[len(bad)/2] ^= 1
		os.Chmod(stored(c.blob.digest), 0o644)
		if err := os.WriteFile(stored(c.blob.digest), bad, 0o644); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			code, b, _ := e.call(e.pool, "GET", c.url, "", nil)
			refused(t, code, b, 500, "payload-corrupt", c.blob.digest)
		}
		// Restored, it is served, and then from the checked cache.
		if err := os.WriteFile(stored(c.blob.digest), c.blob.data, 0o644); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			req, _ := http.NewRequest("GET", e.ts.URL+c.url, nil)
			resp, err := e.pool.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Equal(got, c.blob.data) || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
				t.Fatalf("%s: %d, %d bytes", c.url, resp.StatusCode, len(got))
			}
		}
	}
}
