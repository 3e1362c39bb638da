package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/audit"
)

// TestKill9LosesNothingAcknowledged starts a real rampart-server process,
// sends concurrent writes, kills it with SIGKILL mid-stream, restarts it,
// and checks that every write it acknowledged is there and the audit hash
// chain is intact. Three rounds.
func TestKill9LosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	t.Parallel()
	bin := buildServer(t)
	data := filepath.Join(t.TempDir(), "srv")
	out, err := exec.Command(bin, "init", "--data", data).Output()
	if err != nil {
		t.Fatal(err)
	}
	admin := regexp.MustCompile(`rmp_[A-Za-z0-9_-]+`).FindString(string(out))
	caPEM, _ := os.ReadFile(filepath.Join(data, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}, Timeout: 5 * time.Second}

	var acked []string
	for round := 0; round < 3; round++ {
		cmd := exec.Command(bin, "serve", "--data", data, "--listen", "127.0.0.1:0")
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		addr := waitServing(t, stderr)
		var mu sync.Mutex
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					name := fmt.Sprintf("r%d-w%d-%d", round, w, i)
					body, _ := json.Marshal(map[string]string{"name": name, "role": "auditor"})
					req, _ := http.NewRequest("POST", "https://"+addr+"/api/v1/tokens", bytes.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+admin)
					resp, err := hc.Do(req)
					if err != nil {
						return // the server is gone
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 201 {
						mu.Lock()
						acked = append(acked, name)
						mu.Unlock()
					}
				}
			}(w)
		}
		time.Sleep(300 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		close(stop)
		wg.Wait()
		cmd.Wait()
	}
	if len(acked) < 10 {
		t.Fatalf("only %d writes acknowledged; the test did not exercise anything", len(acked))
	}

	// Restart and check.
	cmd := exec.Command(bin, "serve", "--data", data, "--listen", "127.0.0.1:0")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	addr := waitServing(t, stderr)
	req, _ := http.NewRequest("GET", "https://"+addr+"/api/v1/audit", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var es []audit.Entry
	dec := json.NewDecoder(resp.Body)
	for dec.More() {
		var e audit.Entry
		if err := dec.Decode(&e); err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	if err := audit.Verify(nil, es); err != nil {
		t.Fatalf("audit chain after kill -9: %v", err)
	}
	created := map[string]bool{}
	for _, e := range es {
		if e.Action == "create-token" {
			created[e.Subject] = true
		}
	}
	for _, name := range acked {
		if !created[name] {
			t.Errorf("acknowledged token %s was lost", name)
		}
	}
	t.Logf("%d acknowledged writes across 3 kill -9 rounds, all present; audit chain of %d entries intact", len(acked), len(es))
}

func waitServing(t *testing.T, stderr io.Reader) string {
	t.Helper()
	sc := bufio.NewScanner(stderr)
	deadline := time.After(20 * time.Second)
	found := make(chan string, 1)
	go func() {
		for sc.Scan() {
			var m struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &m) == nil && m.Msg == "serving" {
				found <- m.Addr
				io.Copy(io.Discard, stderr)
				return
			}
		}
	}()
	select {
	case a := <-found:
		return strings.TrimSpace(a)
	case <-deadline:
		t.Fatal("the server did not start")
	}
	return ""
}
