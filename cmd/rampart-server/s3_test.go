package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/blob/s3blob/s3test"
	"github.com/rampartfw/rampart/internal/server/attacktest"
	"github.com/rampartfw/rampart/internal/store/postgres/pgtest"
	"github.com/rampartfw/rampart/internal/testbin"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	s3test.Stop()
	pgtest.Stop()
	os.Exit(code)
}

// TestServeBlobsOnS3 runs the real server with blob_store naming a bucket
// on versitygw, credentials from an AWS credentials file: an upload
// lands in the bucket only once checked, a mismatching one leaves
// nothing, and a bucket that does not exist stops serve with a clear
// error.
func TestServeBlobsOnS3(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real server")
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	endpoint := s3test.Endpoint(t)
	bucket := s3test.NewBucket(t)
	creds := filepath.Join(t.TempDir(), "credentials")
	os.WriteFile(creds, fmt.Appendf(nil, "[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s3test.AccessKey, s3test.SecretKey), 0o600)
	store := fmt.Sprintf("s3://%s/rampart?endpoint=%s&region=us-east-1", bucket, endpoint)

	bin := buildServer(t)
	srv, err := attacktest.Start(bin, t.TempDir(), map[string]any{"blob_store": store, "blob_store_credentials": creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	if !strings.Contains(srv.Logs(), `"blob_store":"s3://`+bucket) {
		t.Errorf("the server does not log its blob store:\n%s", srv.Logs())
	}
	c := srv.Client(nil, true)
	data := make([]byte, 6<<20+1) // two parts
	rand.Read(data)
	sum := sha256.Sum256(data)
	d := hex.EncodeToString(sum[:])
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	code, body, err := srv.Call(c, "PUT", fmt.Sprintf("/api/v1/blobs/%s?length=%d", d, len(bad)), srv.Admin, bad)
	if err != nil || code/100 != 4 {
		t.Fatalf("a mismatching upload: %d %s %v", code, body, err)
	}
	if keys, left := s3test.Objects(t, bucket), s3test.IncompleteUploads(t, bucket); len(keys) != 0 || len(left) != 0 {
		t.Fatalf("a refused upload left objects %v, uploads %v", keys, left)
	}
	code, body, err = srv.Call(c, "PUT", fmt.Sprintf("/api/v1/blobs/%s?length=%d", d, len(data)), srv.Admin, data)
	if err != nil || code != 201 {
		t.Fatalf("upload: %d %s %v", code, body, err)
	}
	if keys := s3test.Objects(t, bucket); !slices.Equal(keys, []string{"rampart/" + d[:2] + "/" + d}) {
		t.Fatalf("bucket holds %v", keys)
	}
	if entries, _ := os.ReadDir(filepath.Join(srv.Data, "blobs")); len(entries) > 1 {
		t.Errorf("the data directory's blobs/ was used: %v", entries)
	}

	// A bucket that does not exist: serve stops at once and says why.
	dir := t.TempDir()
	if code := run(context.Background(), []string{"init", "--data", filepath.Join(dir, "srv")}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("init: %d", code)
	}
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, fmt.Appendf(nil, `{"blob_store": "s3://no-such-bucket?endpoint=%s", "blob_store_credentials": %q}`, endpoint, creds), 0o644)
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"serve", "--data", filepath.Join(dir, "srv"), "--listen", "127.0.0.1:0", "--config", cfg}, io.Discard, &stderr); code != 3 || !strings.Contains(stderr.String(), "bucket no-such-bucket does not exist") {
		t.Fatalf("serve on a missing bucket: exit %d\n%s", code, stderr.String())
	}
	// blob_quota bounds the filesystem store only.
	os.WriteFile(cfg, fmt.Appendf(nil, `{"blob_store": %q, "blob_store_credentials": %q, "blob_quota": 1000}`, store, creds), 0o644)
	stderr.Reset()
	if code := run(context.Background(), []string{"serve", "--data", filepath.Join(dir, "srv"), "--listen", "127.0.0.1:0", "--config", cfg}, io.Discard, &stderr); code == 0 || !strings.Contains(stderr.String(), "blob_quota") {
		t.Fatalf("serve with blob_quota on S3: exit %d\n%s", code, stderr.String())
	}
}
