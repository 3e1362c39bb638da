package offlinerepo

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rampartfw/rampart/internal/atomicfile"
)

// Default expiry periods: offline roles are signed rarely, online roles
// often, so that a frozen repository is noticed within a day.
var DefaultExpiry = map[string]Duration{
	"root":      Duration(365 * 24 * time.Hour),
	"targets":   Duration(182 * 24 * time.Hour),
	"delegated": Duration(182 * 24 * time.Hour),
	"snapshot":  Duration(7 * 24 * time.Hour),
	"timestamp": Duration(24 * time.Hour),
}

// Config is the repository's own settings file, rampart-repo.json.
type Config struct {
	Format int `json:"format"`
	// Expiry maps root, targets, snapshot, timestamp, "delegated" (every
	// product role) or a product name to how long a new version is valid.
	Expiry map[string]Duration `json:"expiry"`
}

// ExpiryFor returns the expiry period of a role.
func (c *Config) ExpiryFor(role string) time.Duration {
	if d, ok := c.Expiry[role]; ok {
		return time.Duration(d)
	}
	if _, top := DefaultExpiry[role]; !top {
		if d, ok := c.Expiry["delegated"]; ok {
			return time.Duration(d)
		}
		return time.Duration(DefaultExpiry["delegated"])
	}
	return time.Duration(DefaultExpiry[role])
}

// Duration is a time.Duration that also accepts a day suffix ("30d") and
// marshals as a string.
type Duration time.Duration

// ParseDuration parses "90s", "36h", "30d" or "1y" (365 days).
func ParseDuration(s string) (Duration, error) {
	mult := time.Duration(0)
	switch {
	case strings.HasSuffix(s, "d"):
		mult = 24 * time.Hour
	case strings.HasSuffix(s, "y"):
		mult = 365 * 24 * time.Hour
	}
	var d time.Duration
	if mult != 0 {
		n, err := strconv.ParseUint(s[:len(s)-1], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q (use e.g. 36h, 30d or 1y)", s)
		}
		d = time.Duration(n) * mult
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("invalid duration %q (use e.g. 36h, 30d or 1y)", s)
		}
	}
	if d < time.Second {
		return 0, fmt.Errorf("invalid duration %q: must be at least one second", s)
	}
	return Duration(d), nil
}

func (d Duration) String() string {
	td := time.Duration(d)
	if td%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", td/(24*time.Hour))
	}
	return td.String()
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

const configName = "rampart-repo.json"

func readConfig(dir string) (*Config, error) {
	b, err := os.ReadFile(filepath.Join(dir, configName))
	if err != nil {
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, configName), err)
	}
	if c.Format != 1 {
		return nil, fmt.Errorf("%s: unsupported repository format %d", filepath.Join(dir, configName), c.Format)
	}
	if c.Expiry == nil {
		c.Expiry = map[string]Duration{}
	}
	return &c, nil
}

func writeConfig(dir string, c *Config) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, configName), append(b, '\n'), 0o644)
}
