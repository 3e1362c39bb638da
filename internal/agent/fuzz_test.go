package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rampartfw/rampart/internal/fsys"
)

// FuzzParseConfig: configuration files are hand-written; no input may
// panic, and whatever is accepted passes the checks again.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("[device]\nid = \"x\"\n"))
	for _, p := range []string{"../../cmd/rampart-agent/testdata/script/update.txtar"} {
		if b, err := os.ReadFile(filepath.Clean(p)); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(validConfig))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		if err := c.check(); err != nil {
			t.Fatalf("accepted config fails its own check: %v", err)
		}
	})
}

const validConfig = `
[server]
url = "https://127.0.0.1:8443"
ca = "ca.pem"
[device]
id = "gw-1"
hardware_id = "hw"
key = "k"
certificate = "c"
[trust]
image_root = "i"
director_root = "d"
log_key = "l"
[slots]
a = "a"
b = "b"
[bootloader]
backend = "uboot"
fw_env_config = "/etc/fw_env.config"
[health]
command = ["true"]
timeout = "1m"
[poll]
interval = "1h"
jitter = "5m"
`

// FuzzLoadState: the state file is only ever written by the agent, but a
// corrupt one (bad flash) must be refused with an error, never a panic.
func FuzzLoadState(f *testing.F) {
	f.Add([]byte(`{"format":1,"slot":"A","security_counter":3,"outbox":[{"counter":1,"status":"installed"}]}`))
	f.Add([]byte(`{"format":2}`))
	f.Add([]byte(`garbage`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "state.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		loadState(fsys.OS, dir)
	})
}
