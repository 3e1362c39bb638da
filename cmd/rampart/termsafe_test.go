package main

import (
	"bytes"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReportEscapesEachLine(t *testing.T) {
	var buf bytes.Buffer
	err := errors.New("server says \x1b]0;pwned\x07\x1b[2K gone\nsecond \x1b[1A\rline \u202eok\u0085")
	if code := report(&buf, err); code != exitEnvironment {
		t.Errorf("exit %d, want %d", code, exitEnvironment)
	}
	want := `rampart: error: server says \x1b]0;pwned\x07\x1b[2K gone` + "\n" +
		`rampart:   second \x1b[1A\rline \u202eok\u0085` + "\n"
	if buf.String() != want {
		t.Errorf("report wrote\n%q\nwant\n%q", buf.String(), want)
	}
}

// TestServerTextIsPrintedEscaped runs commands against a server whose
// answers carry escape sequences: OSC set-title, CSI erase line and
// cursor up, bidi override.
func TestServerTextIsPrintedEscaped(t *testing.T) {
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/tokens":
			io.WriteString(w, `{"tokens":[{"name":"ci\u001b]0;pwned\u0007\u001b[2K\u001b[1A\u202e","role":"admin\u001b[2K","created_at":"2025-01-01T00:00:00Z"}]}`)
		case "/api/v1/tokens/ci/role":
			io.WriteString(w, `{"name":"ci\u001b[2K","role":"auditor\u001b]0;pwned\u0007"}`)
		default:
			w.WriteHeader(http.StatusUnprocessableEntity)
			io.WriteString(w, `{"error":{"code":"nope\u001b[2K","message":"refused \u001b]0;pwned\u0007\u001b[2K\u001b[1A\u202e\nrampart: hint: forged"}}`)
		}
	}))
	defer ts.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args      []string
		code      int
		out, errs string
	}{
		{[]string{"token", "list"}, exitOK, `ci\x1b]0;pwned\x07\x1b[2K\x1b[1A\u202e  admin\x1b[2K`, ""},
		{[]string{"token", "set-role", "ci", "--role", "auditor"}, exitOK, `token ci\x1b[2K now has role auditor\x1b]0;pwned\x07`, ""},
		{[]string{"token", "revoke", "ci"}, exitRefused, "", `rampart: error: server refused (422 nope\x1b[2K): refused \x1b]0;pwned\x07\x1b[2K\x1b[1A\u202e\nrampart: hint: forged` + "\n"},
		{[]string{"device", "token", "--hardware", "hw"}, exitRefused, "", `\x1b]0;pwned\x07`},
	} {
		var stdout, stderr bytes.Buffer
		args := append(tc.args, "--server", ts.URL, "--ca", ca, "--token", "t")
		code := run(args, &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }})
		if code != tc.code || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.errs) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q", tc.args, code, stdout.String(), stderr.String(), tc.code, tc.out, tc.errs)
		}
		if strings.ContainsAny(stdout.String()+stderr.String(), "\x1b\x07\r\u202e") {
			t.Errorf("%v: a control character reached the terminal: %q %q", tc.args, stdout.String(), stderr.String())
		}
		// The server's line break did not forge a line of its own.
		if n := strings.Count(stderr.String(), "\n"); n > 1 {
			t.Errorf("%v: %d lines on stderr: %q", tc.args, n, stderr.String())
		}
	}
}
