package agent_test

import (
	"crypto"
	"net/http"
	"os"
	"sync"
	"testing"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/server/servertest"
)

// sessions passes requests through and records, for each answer, whether
// it came over a resumed TLS session.
type sessions struct {
	base http.RoundTripper

	mu            sync.Mutex
	full, resumed int
	fullPaths     []string
}

func (s *sessions) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.base.RoundTrip(req)
	if err == nil && resp.TLS != nil {
		s.mu.Lock()
		if resp.TLS.DidResume {
			s.resumed++
		} else {
			s.full++
			s.fullPaths = append(s.fullPaths, req.URL.Path)
		}
		s.mu.Unlock()
	}
	return resp, err
}

func (s *sessions) reset() (full, resumed int, fullPaths []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	full, resumed, fullPaths = s.full, s.resumed, s.fullPaths
	s.full, s.resumed, s.fullPaths = 0, 0, nil
	return
}

// A device checks in long after the server has closed its idle
// connection (an hour's poll against a 2-minute idle timeout). The
// agent's client (NewHTTPClient, as rampart-agent run builds it) keeps
// the server's session ticket, so the next check-in's connections resume
// the session instead of making full handshakes: every answer of the
// second check-in, update download included, comes over a resumed
// session. (That a resumed session is still refused once the device is
// revoked is pki's TestRevokedDeviceRefusedOnResumption.)
func TestCheckInsResumeTLSSessions(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	keyPEM, err := pki.MarshalKeyPEM(d.cert.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.cfg.Device.Certificate, pki.CertPEM(d.cert.Certificate[0]), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.cfg.Device.Key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := agent.NewHTTPClient(d.cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := c.Transport.(*http.Transport)
	seen := &sessions{base: tr}
	c.Transport = seen
	d.a.HTTP = c
	d.firstBoot()
	seen.reset()

	if out, err := d.run(); err != nil || out.Action != "nothing" {
		t.Fatalf("first check-in: %+v, %v", out, err)
	}
	if full, _, _ := seen.reset(); full == 0 {
		t.Fatal("the first check-in made no full handshake: the test proves nothing")
	}

	e.Release("1.0.0", 2, hw)
	e.Deploy(servertest.Product+"/1.0.0", hw)
	// What the server's idle timeout does between two check-ins.
	tr.CloseIdleConnections()
	out, err := d.run()
	if err != nil || out.Action != "installed-pending-reboot" {
		t.Fatalf("second check-in: %+v, %v", out, err)
	}
	full, resumed, paths := seen.reset()
	if full != 0 || resumed == 0 {
		t.Fatalf("second check-in: %d answers over full handshakes (%v), %d over resumed sessions; want every one resumed", full, paths, resumed)
	}
	t.Logf("second check-in: %d answers, all over resumed sessions", resumed)
}
