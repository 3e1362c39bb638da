package uptane_test

import (
	"crypto/tls"
	"testing"

	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/uptane"
)

const (
	product   = servertest.Product
	hwRev2    = "acme-gw-rev2"
	logOrigin = servertest.LogOrigin
)

type env struct{ *servertest.Env }

func newEnv(t *testing.T) *env { return &env{servertest.New(t)} }

// device is one device's configuration with a fresh state directory and,
// as the agent has, a Memo: every test that checks twice with one
// configuration also checks that the Memo changes no outcome.
func (e *env) device(id, hw string, cert *tls.Certificate) uptane.Config {
	return uptane.Config{
		ServerURL:    e.TS.URL,
		HTTPClient:   e.Client(cert),
		StateDir:     e.T().TempDir(),
		ImageRoot:    e.ImageRoot,
		DirectorRoot: e.DirectorRoot,
		LogOrigin:    logOrigin,
		LogKey:       e.LogKey,
		DeviceID:     id,
		HardwareID:   hw,
		Memo:         new(uptane.Memo),
	}
}
