package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/rampartfw/rampart/internal/agent"
	"github.com/rampartfw/rampart/internal/bootenv"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/fsys"
)

// provisioner is what every backend offers to write its factory state.
type provisioner interface{ Provision() error }

// provisionOptions are the flags of rampart-agent provision.
type provisionOptions struct {
	config      string // --config: write the configured environment in place
	backend     string // --backend with --env-out: build a file for an image
	envOut      string
	envSize     int64
	redundant   bool
	maxAttempts int
}

// provision writes the factory boot state: only slot A bootable, slot B
// (which holds nothing verified yet) out of the boot order. It keeps every
// other variable of an existing environment. It returns what it wrote, for
// the caller to print.
func provision(o provisionOptions) (string, error) {
	if o.envOut == "" {
		cfg, err := agent.LoadConfig(o.config)
		if err != nil {
			return "", err
		}
		bl, err := agent.OpenBootloader(cfg, fsys.OS)
		if err != nil {
			return "", err
		}
		p, ok := bl.(provisioner)
		if !ok {
			return "", fmt.Errorf("backend %s cannot write a factory state", cfg.Bootloader.Backend)
		}
		if err := p.Provision(); err != nil {
			return "", err
		}
		return describe(bl)
	}
	switch o.backend {
	case "grub":
		bl := bootloader.NewGRUB(&bootenv.GRUB{Path: o.envOut})
		if err := bl.Provision(); err != nil {
			return "", err
		}
		return describe(bl)
	case "uboot":
		return provisionUBoot(o)
	case "sim":
		bl, err := bootloader.OpenSim(o.envOut, o.maxAttempts)
		if err != nil {
			return "", err
		}
		if err := bl.Provision(); err != nil {
			return "", err
		}
		return describe(bl)
	case "":
		return "", errors.New("provision --env-out needs --backend grub, uboot or sim")
	}
	return "", fmt.Errorf("unknown backend %q: want grub, uboot or sim", o.backend)
}

// provisionUBoot writes an environment image of one copy, or two back to
// back with --redundant, as fw_env.config would describe it at offsets 0
// and SIZE. A missing or empty file is created; an existing one (made by
// mkenvimage, say) keeps its other variables.
func provisionUBoot(o provisionOptions) (string, error) {
	size := o.envSize
	if size == 0 {
		size = 0x4000
	}
	copies := []bootenv.Location{{Path: o.envOut, Size: size}}
	if o.redundant {
		copies = append(copies, bootenv.Location{Path: o.envOut, Offset: size, Size: size})
	}
	fi, err := os.Stat(o.envOut)
	switch {
	case errors.Is(err, fs.ErrNotExist) || err == nil && fi.Mode().IsRegular() && fi.Size() == 0:
		empty, err := bootenv.MarshalUBoot(bootenv.Env{}, int(size), o.redundant, 0)
		if err != nil {
			return "", err
		}
		var image []byte
		for range copies {
			image = append(image, empty...)
		}
		if err := os.WriteFile(o.envOut, image, 0o644); err != nil {
			return "", err
		}
	case err != nil:
		return "", err
	}
	u, err := bootenv.NewUBoot(copies...)
	if err != nil {
		return "", err
	}
	// An image being built is not shared with fw_setenv: lock beside it.
	u.LockFile = o.envOut + ".lock"
	defer os.Remove(u.LockFile)
	bl := bootloader.NewUBoot(u)
	bl.MaxAttempts = o.maxAttempts
	// Both copies of a redundant environment get the factory state, so
	// that a torn first write on the device falls back to it.
	for range copies {
		if err := bl.Provision(); err != nil {
			return "", err
		}
	}
	return describe(bl)
}

func describe(bl bootloader.Bootloader) (string, error) {
	st, err := bl.State()
	if err != nil {
		return "", err
	}
	return "factory boot state written: " + st.String(), nil
}
