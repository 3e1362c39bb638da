// Package s3test starts versitygw, a real S3 server, with its POSIX
// backend in a temporary directory, for the tests of the S3 blob store
// and of a server that uses it. scripts/versitygw.sh builds versitygw's
// gateway once (about 50 s on two cores; tools/versitygw/s3gw, in a module
// of its own) and caches it under the user cache directory.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// The credentials the server accepts.
const (
	AccessKey = "rampart-test"
	SecretKey = "rampart-test-secret-key"
)

var gw struct {
	once     sync.Once
	endpoint string // http://127.0.0.1:PORT
	err      error
	cmd      *exec.Cmd
	dir      string
}

// Main runs a test binary's tests and stops the server afterwards; call
// it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop stops the server, if one was started (for a TestMain that also
// stops other servers).
func Stop() {
	if gw.cmd != nil {
		gw.cmd.Process.Kill()
		gw.cmd.Wait()
		os.RemoveAll(gw.dir)
		gw.cmd = nil
	}
}

// Endpoint returns the server's endpoint (http://127.0.0.1:PORT),
// starting it, and building it if needed, on first use. The test binary
// must run its tests through Main.
func Endpoint(t testing.TB) string {
	t.Helper()
	gw.once.Do(func() { gw.endpoint, gw.err = start() })
	if gw.err != nil {
		t.Fatalf("versitygw: %v", gw.err)
	}
	return gw.endpoint
}

func start() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "scripts", "versitygw.sh")
	out, err := exec.Command(script).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return "", fmt.Errorf("%s: %v\n%s", script, err, ee.Stderr)
		}
		return "", fmt.Errorf("%s: %v", script, err)
	}
	bin := strings.TrimSpace(string(out))
	gw.dir, err = os.MkdirTemp("", "rampart-versitygw-")
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	var logs bytes.Buffer
	gw.cmd = exec.Command(bin, "--access", AccessKey, "--secret", SecretKey, "--port", addr, "posix", gw.dir)
	gw.cmd.Stdout, gw.cmd.Stderr = &logs, &logs
	if err := gw.cmd.Start(); err != nil {
		return "", err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return "http://" + addr, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("not listening on %s after 30 s: %s", addr, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Client is an S3 client with the server's credentials.
func Client(t testing.TB) *minio.Client {
	u, _ := url.Parse(Endpoint(t))
	c, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""), BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NewBucket creates an empty bucket and returns its name.
func NewBucket(t testing.TB) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	name := "rampart-" + hex.EncodeToString(b[:])
	if err := Client(t).MakeBucket(context.Background(), name, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	return name
}

// Objects lists the keys in a bucket.
func Objects(t testing.TB, bucket string) []string {
	t.Helper()
	var keys []string
	for o := range Client(t).ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// IncompleteUploads lists the multipart uploads left in a bucket.
func IncompleteUploads(t testing.TB, bucket string) []string {
	t.Helper()
	var ids []string
	for u := range Client(t).ListIncompleteUploads(context.Background(), bucket, "", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		ids = append(ids, u.Key+" "+u.UploadID)
	}
	return ids
}
