package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/agent/agenttest"
	"github.com/rampartfw/rampart/internal/server/servertest"
	"github.com/rampartfw/rampart/internal/strictjson"
)

// The enrollment answer is parsed strictly: a member given twice (here
// with the same value, which encoding/json accepts) or in another case is
// refused, and nothing is stored.
func TestEnrollAnswerIsStrict(t *testing.T) {
	e := servertest.New(t)
	d := newDevice(t, e, "gw-1")
	for name, extra := range map[string]string{
		"duplicate":    `{"hardware":"` + hw + `",`,
		"case variant": `{"Hardware":"` + hw + `",`,
	} {
		t.Run(name, func(t *testing.T) {
			f := agenttest.New(t, e, nil)
			f.Rewrite(func(r *http.Request, b []byte) []byte {
				if r.URL.Path == "/api/v1/enroll" {
					return bytes.Replace(b, []byte("{"), []byte(extra), 1)
				}
				return b
			})
			cfg := *d.cfg
			cfg.Device.ID = "gw-strict-" + map[string]string{"duplicate": "1", "case variant": "2"}[name]
			cfg.Server.URL = f.URL
			dir := t.TempDir()
			cfg.Device.Key, cfg.Device.Certificate = filepath.Join(dir, "device.key"), filepath.Join(dir, "device.crt")
			var tok struct{ Token string }
			json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/devices/tokens", e.Admin, map[string]any{"hardware": hw, "ttl_seconds": 600}, 201), &tok)
			_, err := agent.Enroll(context.Background(), &cfg, agent.Credential{Token: tok.Token})
			var se *strictjson.Error
			if !errors.As(err, &se) {
				t.Fatalf("got %v, want a strict JSON refusal", err)
			}
			for _, p := range []string{cfg.Device.Certificate, cfg.Device.Key} {
				if _, err := os.Stat(p); err == nil {
					t.Fatalf("%s written from a refused answer", p)
				}
			}
		})
	}
}
