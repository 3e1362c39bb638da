package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the agent's configuration file (TOML), documented key by key in
// docs/agent.md. Paths are taken as written; relative paths are relative to
// the directory of the configuration file, so a test or a simulated device
// can keep everything in one directory.
type Config struct {
	Server     ServerConfig     `toml:"server"`
	Device     DeviceConfig     `toml:"device"`
	Trust      TrustConfig      `toml:"trust"`
	Slots      SlotsConfig      `toml:"slots"`
	Bootloader BootloaderConfig `toml:"bootloader"`
	Health     CommandConfig    `toml:"health"`
	Reboot     CommandConfig    `toml:"reboot"`
	State      StateConfig      `toml:"state"`
	Poll       PollConfig       `toml:"poll"`
	Download   DownloadConfig   `toml:"download"`
	Offline    OfflineConfig    `toml:"offline"`
}

// ServerConfig names the server and the only CA its certificate may chain to.
type ServerConfig struct {
	URL string `toml:"url"`
	CA  string `toml:"ca"`
}

// DeviceConfig is the device's identity and its mTLS key pair.
type DeviceConfig struct {
	ID          string `toml:"id"`
	HardwareID  string `toml:"hardware_id"`
	Key         string `toml:"key"`
	Certificate string `toml:"certificate"`
}

// TrustConfig holds the roots shipped in firmware and the log's key. The
// roots are used only until the state directory has a newer trusted root.
type TrustConfig struct {
	ImageRoot    string `toml:"image_root"`
	DirectorRoot string `toml:"director_root"`
	// LogKey is a file holding the log's note verifier key
	// ("origin+hash+key"); its name is the log origin.
	LogKey string `toml:"log_key"`
}

// SlotsConfig names the two A/B slots: block devices or files.
type SlotsConfig struct {
	A string `toml:"a"`
	B string `toml:"b"`
}

// BootloaderConfig selects the boot-control backend.
type BootloaderConfig struct {
	// Backend is "uboot", "grub" or "sim".
	Backend string `toml:"backend"`
	// Env is the environment: for grub the grubenv file, for sim the
	// simulated record; for uboot, when FWEnvConfig is empty, a file or
	// device holding a single environment of EnvSize bytes at offset 0.
	Env string `toml:"env"`
	// FWEnvConfig is libubootenv's fw_env.config describing one or two
	// (redundant) environment copies, as fw_printenv uses it.
	FWEnvConfig string `toml:"fw_env_config"`
	EnvSize     int    `toml:"env_size"`
	// MaxAttempts is what a committed slot gets (BOOT_x_LEFT); 0 means
	// the backend's default (3 for U-Boot and sim, 1 for GRUB).
	MaxAttempts int `toml:"max_attempts"`
	// Cmdline is where the running slot is read from: the kernel command
	// line's rauc.slot= or rampart.slot= (default /proc/cmdline).
	Cmdline string `toml:"cmdline"`
}

// CommandConfig is an external command with a time limit.
type CommandConfig struct {
	Command []string `toml:"command"`
	Timeout Duration `toml:"timeout"`
}

// StateConfig is where the agent keeps everything it must remember.
type StateConfig struct {
	Dir string `toml:"dir"`
}

// PollConfig spaces check-ins: every Interval plus a random part of
// Jitter, so a fleet does not poll in lockstep.
type PollConfig struct {
	Interval Duration `toml:"interval"`
	Jitter   Duration `toml:"jitter"`
}

// DownloadConfig bounds what one update may cost.
type DownloadConfig struct {
	// MaxImageSize refuses a release larger than this many bytes before
	// anything is downloaded (0: the slot size for a block device, no
	// limit for a file).
	MaxImageSize int64 `toml:"max_image_size"`
	// Workers is the number of chunks fetched and verified at once.
	Workers int `toml:"workers"`
	// Retries is the number of retries per chunk after the first try.
	Retries int `toml:"retries"`
	// Timeout bounds one HTTP request.
	Timeout Duration `toml:"timeout"`
}

// OfflineConfig governs rampart-agent install BUNDLE.
type OfflineConfig struct {
	// Policy is "newer" (default: only a higher security version or a
	// higher version than the running one), "always" (any release at or
	// above the security counter) or "never".
	Policy string `toml:"policy"`

	// RequireLog (default true) refuses a bundle that carries no proof
	// that its release is in the transparency log (a format 1 bundle,
	// made without --server). Set it to false only for fleets that have
	// no log.
	RequireLog *bool `toml:"require_log"`
}

// LogRequired reports whether offline bundles must carry a log proof.
func (c OfflineConfig) LogRequired() bool { return c.RequireLog == nil || *c.RequireLog }

// Duration is a time.Duration written as "90s" or "1h30m".
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"90s\" or \"1h\"", b)
	}
	if v < 0 {
		return fmt.Errorf("%q is negative", b)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// ConfigError is a configuration file that cannot be used; the agent exits
// with a distinct code for it.
type ConfigError struct {
	Path string
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// MaxConfigSize bounds the configuration file.
const MaxConfigSize = 1 << 20

// LoadConfig reads and checks a configuration file. Unknown keys are
// refused: a misspelt key would otherwise silently keep a default.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &ConfigError{Path: path, Msg: err.Error()}
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, &ConfigError{Path: path, Msg: err.Error()}
	}
	c.resolve(filepath.Dir(path))
	return c, nil
}

// ParseConfig parses and checks configuration bytes, filling defaults.
// Relative paths stay relative.
func ParseConfig(data []byte) (*Config, error) {
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxConfigSize)
	}
	var c Config
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c)
	if err != nil {
		return nil, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown key %s (see docs/agent.md for the keys)", strings.Join(keys, ", "))
	}
	c.defaults()
	if err := c.check(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) defaults() {
	if c.Bootloader.Cmdline == "" {
		c.Bootloader.Cmdline = "/proc/cmdline"
	}
	if c.Bootloader.EnvSize == 0 {
		c.Bootloader.EnvSize = 0x4000
	}
	if c.Health.Timeout.Duration == 0 {
		c.Health.Timeout.Duration = 5 * time.Minute
	}
	if c.Reboot.Timeout.Duration == 0 {
		c.Reboot.Timeout.Duration = time.Minute
	}
	if len(c.Reboot.Command) == 0 {
		c.Reboot.Command = []string{"/sbin/reboot"}
	}
	if c.Poll.Interval.Duration == 0 {
		c.Poll.Interval.Duration = time.Hour
	}
	if c.Download.Workers == 0 {
		c.Download.Workers = 2
	}
	if c.Download.Retries == 0 {
		c.Download.Retries = 4
	}
	if c.Download.Timeout.Duration == 0 {
		c.Download.Timeout.Duration = 5 * time.Minute
	}
	if c.Offline.Policy == "" {
		c.Offline.Policy = OfflineNewer
	}
}

// Offline policies.
const (
	OfflineNewer  = "newer"
	OfflineAlways = "always"
	OfflineNever  = "never"
)

func (c *Config) check() error {
	var missing []string
	need := func(v, key string) {
		if v == "" {
			missing = append(missing, key)
		}
	}
	need(c.Device.ID, "device.id")
	need(c.Device.HardwareID, "device.hardware_id")
	need(c.Device.Key, "device.key")
	need(c.Device.Certificate, "device.certificate")
	need(c.Trust.ImageRoot, "trust.image_root")
	need(c.Trust.DirectorRoot, "trust.director_root")
	need(c.Trust.LogKey, "trust.log_key")
	need(c.Slots.A, "slots.a")
	need(c.Slots.B, "slots.b")
	need(c.Bootloader.Backend, "bootloader.backend")
	need(c.State.Dir, "state.dir")
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	if c.Server.URL != "" {
		u, err := url.Parse(c.Server.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("server.url %q must be an https:// URL", c.Server.URL)
		}
		if c.Server.CA == "" {
			return errors.New("server.ca is required with server.url: the agent trusts only the pinned CA")
		}
	}
	if c.Slots.A == c.Slots.B {
		return fmt.Errorf("slots.a and slots.b are both %q", c.Slots.A)
	}
	switch c.Bootloader.Backend {
	case "uboot":
		if c.Bootloader.Env == "" && c.Bootloader.FWEnvConfig == "" {
			return errors.New("bootloader.backend uboot needs bootloader.fw_env_config or bootloader.env")
		}
	case "grub", "sim":
		if c.Bootloader.Env == "" {
			return fmt.Errorf("bootloader.backend %s needs bootloader.env", c.Bootloader.Backend)
		}
	default:
		return fmt.Errorf("bootloader.backend %q is not uboot, grub or sim", c.Bootloader.Backend)
	}
	if c.Bootloader.MaxAttempts < 0 || c.Bootloader.MaxAttempts > 9 {
		return fmt.Errorf("bootloader.max_attempts %d is not between 1 and 9", c.Bootloader.MaxAttempts)
	}
	if len(c.Health.Command) == 0 {
		return errors.New("health.command is required: a trial boot is committed only after it succeeds")
	}
	if c.Download.Workers < 1 || c.Download.Workers > 64 {
		return fmt.Errorf("download.workers %d is not between 1 and 64", c.Download.Workers)
	}
	if c.Download.Retries < 0 || c.Download.Retries > 20 {
		return fmt.Errorf("download.retries %d is not between 0 and 20", c.Download.Retries)
	}
	if c.Download.MaxImageSize < 0 {
		return errors.New("download.max_image_size is negative")
	}
	switch c.Offline.Policy {
	case OfflineNewer, OfflineAlways, OfflineNever:
	default:
		return fmt.Errorf("offline.policy %q is not newer, always or never", c.Offline.Policy)
	}
	return nil
}

// resolve makes relative paths relative to dir. A command named by a
// relative path ("./check", "bin/check") is one too, so the health check
// does not depend on where the agent was started; a bare name ("systemctl")
// is looked up in PATH, as a shell would.
func (c *Config) resolve(dir string) {
	paths := []*string{&c.Server.CA, &c.Device.Key, &c.Device.Certificate,
		&c.Trust.ImageRoot, &c.Trust.DirectorRoot, &c.Trust.LogKey, &c.Slots.A, &c.Slots.B,
		&c.Bootloader.Env, &c.Bootloader.FWEnvConfig, &c.Bootloader.Cmdline, &c.State.Dir}
	for _, cmd := range [][]string{c.Health.Command, c.Reboot.Command} {
		if len(cmd) > 0 && strings.Contains(cmd[0], "/") {
			paths = append(paths, &cmd[0])
		}
	}
	for _, p := range paths {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}
