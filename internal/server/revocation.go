package server

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/store"
)

// deviceGate answers, during every TLS handshake that presents a device
// certificate, whether that certificate may still be used, from memory:
//
//   - revoked holds the serial of every certificate that must no longer
//     be accepted: the certificates of revoked devices and of removed
//     ones. It is loaded from the store when the server starts, updated
//     by a revocation or removal in this process before it is answered
//     (so the device's next handshake is refused), and reloaded every
//     refresh interval (Run) to pick up those made by other replicas. A
//     revoked certificate stays revoked, so a reload only ever adds.
//     Revocation is by certificate, not by id, so an id whose record was
//     removed can enroll again with a new certificate.
//   - serials holds the current certificate serial of devices known to be
//     enrolled and not revoked: filled by enrollment in this process, and
//     by one store lookup the first time any other device connects, or
//     when a device presents another certificate than the one remembered
//     (it was removed and enrolled again meanwhile, perhaps through
//     another replica). About 100 bytes per device that connected.
//
// The store is read only for a device not yet in serials or presenting a
// certificate other than the remembered one; a device that is unknown to
// the store too is refused and not remembered.
//
// deviceGate is safe for concurrent use.
type deviceGate struct {
	store   store.Devices
	lookups prometheus.Counter

	mu      sync.RWMutex
	revoked map[string]struct{}
	serials map[string]string
}

func newDeviceGate(st store.Devices, lookups prometheus.Counter) *deviceGate {
	return &deviceGate{store: st, lookups: lookups, revoked: map[string]struct{}{}, serials: map[string]string{}}
}

// load adds every certificate the store says is revoked.
func (g *deviceGate) load(ctx context.Context) error {
	serials, err := g.store.RevokedCertificates(ctx)
	if err != nil {
		return fmt.Errorf("loading revoked device certificates: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, sn := range serials {
		g.revoked[sn] = struct{}{}
	}
	for id, sn := range g.serials {
		if _, revoked := g.revoked[sn]; revoked {
			delete(g.serials, id)
		}
	}
	return nil
}

// check is the pki.RevocationFunc of the server's listener.
func (g *deviceGate) check(serial *big.Int, id string) error {
	sn := serial.Text(16)
	g.mu.RLock()
	_, revoked := g.revoked[sn]
	cur, known := g.serials[id]
	g.mu.RUnlock()
	if revoked {
		return pki.ErrRevoked
	}
	if !known || cur != sn {
		var err error
		if cur, err = g.lookup(id); err != nil {
			return err
		}
	}
	if cur != sn {
		return fmt.Errorf("%w: certificate %s was replaced", pki.ErrRevoked, sn)
	}
	return nil
}

// lookup reads a device's current certificate serial from the store and
// remembers it, unless the device is (or meanwhile was) revoked.
func (g *deviceGate) lookup(id string) (string, error) {
	g.lookups.Inc()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := g.store.Device(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		g.mu.Lock()
		delete(g.serials, id)
		g.mu.Unlock()
		return "", fmt.Errorf("%w: unknown device", pki.ErrRevoked)
	}
	if err != nil {
		return "", fmt.Errorf("device registry: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !d.RevokedAt.IsZero() {
		g.revoked[d.CertSerial] = struct{}{}
	}
	if _, revoked := g.revoked[d.CertSerial]; revoked {
		// A revocation in this process may have landed after the read.
		delete(g.serials, id)
		return "", pki.ErrRevoked
	}
	g.serials[id] = d.CertSerial
	return d.CertSerial, nil
}

// enrolled records a device enrolled by this process.
func (g *deviceGate) enrolled(id, serial string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, revoked := g.revoked[serial]; !revoked {
		g.serials[id] = serial
	}
}

// revoke records that the certificate serial of device id was revoked,
// or its record removed, by this process (or, seen by a request, by
// another replica).
func (g *deviceGate) revoke(id, serial string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.revoked[serial] = struct{}{}
	if g.serials[id] == serial {
		delete(g.serials, id)
	}
}

func (g *deviceGate) isRevoked(serial string) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	_, revoked := g.revoked[serial]
	return revoked
}

// DeviceRevoked is the handshake's revocation check: an unknown or revoked
// device, or a certificate other than the device's current one, is refused.
func (s *Server) DeviceRevoked(serial *big.Int, id string) error {
	return s.gate.check(serial, id)
}

// ReloadRevocations reloads the revoked devices from the store, for
// revocations made by other replicas; Run calls it every interval.
func (s *Server) ReloadRevocations(ctx context.Context) error {
	return s.gate.load(ctx)
}

// device returns the device a request's client certificate names. A
// connection opened before its device was revoked or removed (keep-alive)
// is refused here with 403 device-revoked; new connections never get this
// far.
func (s *Server) device(w http.ResponseWriter, r *http.Request) (string, bool) {
	id, ok := pki.DeviceFromRequest(r)
	if !ok {
		writeError(w, errorf(http.StatusUnauthorized, "no-device-certificate", "device endpoints need the device's client certificate"))
		return "", false
	}
	if s.gate.isRevoked(certSerial(r)) {
		writeError(w, errorf(http.StatusForbidden, "device-revoked", "device %s is revoked", id))
		return "", false
	}
	return id, true
}

// certSerial is the serial (lowercase hex) of a request's client
// certificate; DeviceFromRequest has checked that there is one and that
// the listener verified it.
func certSerial(r *http.Request) string {
	return r.TLS.PeerCertificates[0].SerialNumber.Text(16)
}
