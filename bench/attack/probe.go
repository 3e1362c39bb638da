package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/server/attacktest"
)

// prober is the honest device: it checks in every interval and hands
// back what it measured since the last take.
type prober interface {
	Take() ([]time.Duration, []error)
	Stop()
}

// processProber runs the honest device in a process of its own (this
// program with -probe), so that what it measures is the server's answer
// and not the attacker's goroutines, allocations and garbage collection
// competing with it inside one Go runtime. A real device does not share
// a process with the attacker either; it shares at most the network.
type processProber struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	lat  []time.Duration
	errs []error
}

// startProcessProber enrolls the honest device, writes its credentials
// to dir and starts the child that checks in with them.
func startProcessProber(srv *attacktest.Server, dir string, interval time.Duration) (*processProber, error) {
	certPEM, keyPEM, err := srv.EnrollPEM("gw-honest", "acme-gw-rev2")
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(srv.Data, "ca.pem"))
	if err != nil {
		return nil, err
	}
	for name, b := range map[string][]byte{"ca.pem": caPEM, "cert.pem": certPEM, "key.pem": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p := &processProber{done: make(chan struct{})}
	p.cmd = exec.Command(self, "-probe", srv.Addr, "-probe-dir", dir, "-probe-interval", interval.String())
	p.cmd.Stderr = os.Stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			if msg, ok := strings.CutPrefix(line, "err "); ok {
				p.errs = append(p.errs, fmt.Errorf("%s", msg))
			} else if ns, err := strconv.ParseInt(line, 10, 64); err == nil {
				p.lat = append(p.lat, time.Duration(ns))
			}
			p.mu.Unlock()
		}
	}()
	return p, nil
}

func (p *processProber) Take() ([]time.Duration, []error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, e := p.lat, p.errs
	p.lat, p.errs = nil, nil
	return l, e
}

func (p *processProber) Stop() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
	<-p.done
}

// probe is the child: one check-in (the director timestamp, on a kept
// connection) every interval, each printed as nanoseconds or "err MSG".
func probe(addr, dir string, interval time.Duration) error {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return b
	}
	pool, err := pki.CertPoolFromPEM(read("ca.pem"))
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(read("cert.pem"), read("key.pem"))
	if err != nil {
		return err
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLSConfig(pool, &cert)}, Timeout: 60 * time.Second}
	w := bufio.NewWriter(os.Stdout)
	t := time.NewTicker(interval)
	defer t.Stop()
	for range t.C {
		start := time.Now()
		resp, err := c.Get("https://" + addr + "/director/timestamp.json")
		if err == nil {
			_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("check-in: %d", resp.StatusCode)
			}
		}
		d := time.Since(start)
		if err != nil {
			fmt.Fprintf(w, "err %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			fmt.Fprintf(w, "%d\n", d.Nanoseconds())
		}
		if err := w.Flush(); err != nil {
			return nil // the parent has gone
		}
	}
	return nil
}
