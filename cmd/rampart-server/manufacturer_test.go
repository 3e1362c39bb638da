package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/syncbuf"
)

// serveInProcess runs "rampart-server serve" with args until the test
// ends and returns its address and log.
func serveInProcess(t *testing.T, args ...string) (string, *syncbuf.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncbuf.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...), io.Discard, logs)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d: %s", code, logs.String())
		}
	})
	re := regexp.MustCompile(`"msg":"serving","addr":"([^"]+)"`)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			return m[1], logs
		}
		select {
		case code := <-done:
			done <- code
			t.Fatalf("serve exited %d: %s", code, logs.String())
		default:
		}
	}
	t.Fatalf("the server did not start: %s", logs.String())
	return "", nil
}

// factoryDevice makes a device key and its certificate from the factory
// CA, naming the device in its CommonName.
func factoryDevice(t *testing.T, factory *pki.CA, id string) (csr, leaf []byte) {
	key, _ := pki.GenerateDeviceKey()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: id}, URIs: []*url.URL{pki.HardwareURI("acme-gw-rev2")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, factory.Cert, key.Public(), factory.Key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err = pki.NewDeviceCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return csr, der
}

func enrollWithFactory(t *testing.T, data, addr string, factory *pki.CA, id string) (int, string) {
	t.Helper()
	caPEM, _ := os.ReadFile(filepath.Join(data, "ca.pem"))
	pool, _ := pki.CertPoolFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLSConfig(pool, nil)}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	csr, leaf := factoryDevice(t, factory, id)
	body, _ := json.Marshal(map[string]any{"device_id": id, "csr": csr, "manufacturer_certificates": [][]byte{leaf}})
	resp, err := hc.Post("https://"+addr+"/api/v1/enroll", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The manufacturer CA bundle comes from --manufacturer-ca, then
// RAMPART_MANUFACTURER_CA, then the config file's manufacturer_ca; a bad
// bundle stops serve with a usage error before it listens.
func TestServeManufacturerCA(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "srv")
	if code := run(t.Context(), []string{"init", "--data", data}, io.Discard, io.Discard); code != 0 {
		t.Fatal("init failed")
	}
	factory, err := pki.NewCA("Acme factory CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "factory.pem")
	os.WriteFile(bundle, pki.CertPEM(factory.Cert.Raw), 0o644)
	_, leaf := factoryDevice(t, factory, "not-a-ca")
	notCA := filepath.Join(dir, "leaf.pem")
	os.WriteFile(notCA, pki.CertPEM(leaf), 0o644)
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, []byte(`{"manufacturer_ca": "`+bundle+`"}`), 0o644)

	t.Run("flag beats a bad environment", func(t *testing.T) {
		t.Setenv("RAMPART_MANUFACTURER_CA", notCA)
		addr, logs := serveInProcess(t, "--data", data, "--manufacturer-ca", bundle)
		if !strings.Contains(logs.String(), `"msg":"manufacturer enrollment enabled","manufacturer_ca":"`+bundle+`"`) {
			t.Fatalf("%s", logs.String())
		}
		if code, b := enrollWithFactory(t, data, addr, factory, "gw-1"); code != 201 || !strings.Contains(b, `"hardware":"acme-gw-rev2"`) {
			t.Fatalf("%d %s", code, b)
		}
	})
	t.Run("environment", func(t *testing.T) {
		t.Setenv("RAMPART_MANUFACTURER_CA", bundle)
		addr, _ := serveInProcess(t, "--data", data, "--config", cfg)
		if code, b := enrollWithFactory(t, data, addr, factory, "gw-2"); code != 201 {
			t.Fatalf("%d %s", code, b)
		}
	})
	t.Run("config file", func(t *testing.T) {
		addr, _ := serveInProcess(t, "--data", data, "--config", cfg)
		if code, b := enrollWithFactory(t, data, addr, factory, "gw-3"); code != 201 {
			t.Fatalf("%d %s", code, b)
		}
	})
	t.Run("not configured", func(t *testing.T) {
		addr, logs := serveInProcess(t, "--data", data)
		if strings.Contains(logs.String(), "manufacturer enrollment enabled") {
			t.Fatal(logs.String())
		}
		if code, b := enrollWithFactory(t, data, addr, factory, "gw-4"); code != 403 || !strings.Contains(b, `"code":"no-manufacturer-ca"`) {
			t.Fatalf("%d %s", code, b)
		}
	})
	t.Run("bad bundle", func(t *testing.T) {
		t.Setenv("RAMPART_MANUFACTURER_CA", notCA)
		var errb bytes.Buffer
		code := run(t.Context(), []string{"serve", "--data", data, "--listen", "127.0.0.1:0", "--config", cfg}, io.Discard, &errb)
		if code != 2 || !strings.Contains(errb.String(), notCA) || !strings.Contains(errb.String(), "not a ca certificate") || !strings.Contains(errb.String(), "hint: --manufacturer-ca") {
			t.Fatalf("%d %s", code, errb.String())
		}
	})
}
