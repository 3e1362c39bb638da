package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/client"
	"github.com/rampartfw/rampart/internal/server/servertest"
)

// rampart device remove deletes a device's record against a real server:
// the device's certificate stops working, the id enrolls again, and the
// refusals (an unknown id, a role that may not) say why.
func TestDeviceRemove(t *testing.T) {
	srv := servertest.New(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, srv.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(srv.TS.URL, ca, srv.Admin)
	if err != nil {
		t.Fatal(err)
	}
	auditor, err := admin.CreateToken(context.Background(), "aud", "auditor")
	if err != nil {
		t.Fatal(err)
	}
	cert := srv.Enroll("gw-0042", "acme-gw-rev2")
	srv.Call(srv.Client(cert), "POST", "/api/v1/device/report", "", map[string]any{"counter": 1, "status": "downloading"}, 204)

	rampart := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(args, &env{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
		return code, out.String(), errOut.String()
	}
	flags := func(token string) []string { return []string{"--server", srv.TS.URL, "--ca", ca, "--token", token} }

	code, out, errOut := rampart(append([]string{"device", "remove", "gw-0042"}, flags(auditor)...)...)
	if code != 2 || !strings.Contains(errOut, "403 forbidden") {
		t.Fatalf("as an auditor: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = rampart(append([]string{"device", "remove", "gw-0042"}, flags(srv.Admin)...)...)
	if code != 0 || out != "removed gw-0042; its certificate is refused and its id may enroll again\n" {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if _, err := srv.Client(cert).Get(srv.TS.URL + "/director/timestamp.json"); err == nil {
		t.Fatal("the removed device's certificate was accepted")
	}
	code, out, errOut = rampart(append([]string{"device", "remove", "gw-0042"}, flags(srv.Admin)...)...)
	if code != 2 || !strings.Contains(errOut, "404 not-found") || !strings.Contains(errOut, "no device gw-0042") {
		t.Fatalf("twice: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = rampart(append([]string{"device", "remove"}, flags(srv.Admin)...)...)
	if code != 2 || !strings.Contains(errOut, "device remove takes the device id") {
		t.Fatalf("no id: exit %d\n%s%s", code, out, errOut)
	}
	// The id enrolls again.
	srv.Enroll("gw-0042", "acme-gw-rev3")
}
