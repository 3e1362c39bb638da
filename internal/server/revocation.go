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
//   - revoked holds every revoked device id. It is loaded from the store
//     when the server starts, updated by a revocation in this process
//     before the revocation is answered (so the device's next handshake is
//     refused), and reloaded every refresh interval (Run) to pick up
//     revocations made by other replicas. Revocation is permanent, so a
//     reload only ever adds ids.
//   - serials holds the current certificate serial of devices known to be
//     enrolled and not revoked: filled by enrollment in this process, and
//     by one store lookup the first time any other device connects. About
//     100 bytes per device that connected.
//
// The store is read only for a device not yet in serials; a device that
// is unknown to the store too is refused and not remembered.
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

// load adds every device the store says is revoked.
func (g *deviceGate) load(ctx context.Context) error {
	ids, err := g.store.RevokedDevices(ctx)
	if err != nil {
		return fmt.Errorf("loading revoked devices: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, id := range ids {
		g.revoked[id] = struct{}{}
		delete(g.serials, id)
	}
	return nil
}

// check is the pki.RevocationFunc of the server's listener.
func (g *deviceGate) check(serial *big.Int, id string) error {
	g.mu.RLock()
	_, revoked := g.revoked[id]
	cur, known := g.serials[id]
	g.mu.RUnlock()
	if revoked {
		return pki.ErrRevoked
	}
	if !known {
		var err error
		if cur, err = g.lookup(id); err != nil {
			return err
		}
	}
	if cur != serial.Text(16) {
		return fmt.Errorf("%w: certificate %s was replaced", pki.ErrRevoked, serial.Text(16))
	}
	return nil
}

// lookup reads a device the gate does not know yet from the store and
// remembers its serial, unless it is (or meanwhile was) revoked.
func (g *deviceGate) lookup(id string) (string, error) {
	g.lookups.Inc()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := g.store.Device(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return "", fmt.Errorf("%w: unknown device", pki.ErrRevoked)
	}
	if err != nil {
		return "", fmt.Errorf("device registry: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !d.RevokedAt.IsZero() {
		g.revoked[id] = struct{}{}
	}
	if _, revoked := g.revoked[id]; revoked {
		// A revocation in this process may have landed after the read.
		return "", pki.ErrRevoked
	}
	g.serials[id] = d.CertSerial
	return d.CertSerial, nil
}

// enrolled records a device enrolled by this process.
func (g *deviceGate) enrolled(id, serial string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, revoked := g.revoked[id]; !revoked {
		g.serials[id] = serial
	}
}

// revoke records a revocation committed by this process.
func (g *deviceGate) revoke(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.revoked[id] = struct{}{}
	delete(g.serials, id)
}

func (g *deviceGate) isRevoked(id string) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	_, revoked := g.revoked[id]
	return revoked
}

// deviceRevoked is the handshake's revocation check: an unknown or revoked
// device, or a certificate other than the device's current one, is refused.
func (s *Server) deviceRevoked(serial *big.Int, id string) error {
	return s.gate.check(serial, id)
}

// ReloadRevocations reloads the revoked devices from the store, for
// revocations made by other replicas; Run calls it every interval.
func (s *Server) ReloadRevocations(ctx context.Context) error {
	return s.gate.load(ctx)
}

// device returns the device a request's client certificate names. A
// connection opened before its device was revoked (keep-alive) is refused
// here with 403 device-revoked; new connections never get this far.
func (s *Server) device(w http.ResponseWriter, r *http.Request) (string, bool) {
	id, ok := pki.DeviceFromRequest(r)
	if !ok {
		writeError(w, errorf(http.StatusUnauthorized, "no-device-certificate", "device endpoints need the device's client certificate"))
		return "", false
	}
	if s.gate.isRevoked(id) {
		writeError(w, errorf(http.StatusForbidden, "device-revoked", "device %s is revoked", id))
		return "", false
	}
	return id, true
}
