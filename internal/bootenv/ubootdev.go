package bootenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rampartfw/rampart/internal/atomicfile"
)

// DefaultLockFile is the lock fw_printenv and fw_setenv take, shared so that
// the agent and a shell script never interleave their writes.
const DefaultLockFile = "/var/lock/fw_printenv.lock"

// maxEnvSize bounds the buffer a configuration can make us allocate; real
// environments are a few KiB to a few hundred KiB.
const maxEnvSize = 16 << 20

// Location is one copy of a U-Boot environment, one line of fw_env.config.
type Location struct {
	Path string
	// Offset of the copy in Path. A negative offset counts back from the
	// end of a block device, as in libubootenv.
	Offset int64
	// Size is the environment size, U-Boot's CONFIG_ENV_SIZE; the checksum
	// covers all of it, so it must match exactly.
	Size int64
	// SectorSize and Sectors describe flash erase blocks. They are kept for
	// completeness; files and block devices need no erase.
	SectorSize, Sectors int64
}

// UBoot is a U-Boot environment stored in one copy or, redundantly, in two.
type UBoot struct {
	Copies []Location
	// LockFile is flock(2)ed around every access; empty means
	// DefaultLockFile.
	LockFile string
}

// Snapshot is what Load found.
type Snapshot struct {
	Env Env
	// Copy is the index in Copies of the copy Env came from.
	Copy int
	// Flags is that copy's generation counter (redundant environments).
	Flags byte
	// Damaged is set when the other copy of a redundant environment is
	// unreadable or fails its checksum. The environment is still good, but
	// one more torn write would lose it: log this and Save to rewrite the
	// damaged copy.
	Damaged error
}

// NewUBoot checks a one- or two-copy configuration.
func NewUBoot(copies ...Location) (*UBoot, error) {
	u := &UBoot{Copies: copies}
	if err := u.check(); err != nil {
		return nil, err
	}
	return u, nil
}

func (u *UBoot) redundant() bool { return len(u.Copies) == 2 }

func (u *UBoot) check() error {
	if n := len(u.Copies); n != 1 && n != 2 {
		return fmt.Errorf("u-boot environment needs 1 or 2 copies, got %d; check fw_env.config", n)
	}
	for _, c := range u.Copies {
		if c.Size < int64(headerLen(u.redundant())+1) || c.Size > maxEnvSize {
			return fmt.Errorf("%s: environment size %#x out of range; set it to U-Boot's CONFIG_ENV_SIZE", c.Path, c.Size)
		}
		if c.Size != u.Copies[0].Size {
			return fmt.Errorf("%s: both copies must have the same size (%#x and %#x); fix fw_env.config", c.Path, u.Copies[0].Size, c.Size)
		}
		// Raw flash needs erase cycles and, on NOR, boolean flags; nothing
		// in the agent uses it, so refuse rather than corrupt it.
		if strings.HasPrefix(c.Path, "/dev/mtd") || strings.HasPrefix(c.Path, "/dev/ubi") {
			return fmt.Errorf("%s: MTD/UBI environments are not supported; use fw_setenv", c.Path)
		}
	}
	return nil
}

// LoadFWEnvConfig reads an fw_env.config file.
func LoadFWEnvConfig(path string) (*UBoot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	copies, err := ParseFWEnvConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	u, err := NewUBoot(copies...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return u, nil
}

// ParseFWEnvConfig parses fw_env.config lines
//
//	device offset size [sector-size [sectors]]
//
// with the number bases libubootenv's sscanf("%s %lli %zx %zx %lx") gives
// them: the offset is decimal, 0x-hex or 0-octal, the rest are always hex
// (so "4000" means 0x4000). Unlike libubootenv, a line it would skip
// silently is an error here, because silently losing the second line turns
// a redundant environment into a single one.
func ParseFWEnvConfig(data []byte) ([]Location, error) {
	var locs []Location
	sc := bufio.NewScanner(bytes.NewReader(data))
	for lineno := 1; sc.Scan(); lineno++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		for i, f := range fields {
			if strings.HasPrefix(f, "#") {
				fields = fields[:i]
				break
			}
		}
		if len(fields) < 3 {
			return nil, fmt.Errorf("line %d: want \"device offset size\", got %q", lineno, line)
		}
		loc := Location{Path: fields[0]}
		var err error
		if loc.Offset, err = strconv.ParseInt(fields[1], 0, 64); err != nil {
			return nil, fmt.Errorf("line %d: offset %q: %w", lineno, fields[1], err)
		}
		hex := []*int64{&loc.Size, &loc.SectorSize, &loc.Sectors}
		for i, f := range fields[2:] {
			if i >= len(hex) {
				break // libubootenv's MTD lock flag; meaningless here
			}
			s := strings.TrimPrefix(strings.TrimPrefix(f, "0x"), "0X")
			if *hex[i], err = strconv.ParseInt(s, 16, 64); err != nil || *hex[i] < 0 {
				return nil, fmt.Errorf("line %d: %q is not a hex number", lineno, f)
			}
		}
		locs = append(locs, loc)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(locs) == 0 || len(locs) > 2 {
		return nil, fmt.Errorf("want 1 or 2 environment lines, found %d", len(locs))
	}
	return locs, nil
}

// Load reads the environment U-Boot would boot with.
func (u *UBoot) Load() (*Snapshot, error) {
	unlock := lockFile(u.lockPath())
	defer unlock()
	return u.load()
}

// Save replaces the whole environment with env.
//
// A redundant environment gets env in the copy that is not current, with the
// next generation number, then fsync; until that write is complete the old
// copy stays the valid one. A single copy in a regular file is replaced
// atomically (temporary file, fsync, rename, directory fsync); on a block
// device it is overwritten in place and fsynced, which a power cut can tear.
func (u *UBoot) Save(env Env) error {
	unlock := lockFile(u.lockPath())
	defer unlock()
	return u.save(env)
}

// Update loads the environment, lets change edit it and saves the result,
// all under the lock, so a concurrent fw_setenv cannot slip in between and
// have its change lost. It refuses to start from an unreadable environment
// because that would drop the board's bootcmd and friends; use Save to
// write a complete environment instead.
func (u *UBoot) Update(change func(Env) error) error {
	unlock := lockFile(u.lockPath())
	defer unlock()
	snap, err := u.load()
	if err != nil {
		return err
	}
	env := snap.Env.Clone()
	if err := change(env); err != nil {
		return err
	}
	return u.save(env)
}

func (u *UBoot) lockPath() string {
	if u.LockFile == "" {
		return DefaultLockFile
	}
	return u.LockFile
}

func (u *UBoot) load() (*Snapshot, error) {
	if err := u.check(); err != nil {
		return nil, err
	}
	red := u.redundant()
	var (
		bufs  [2][]byte
		errs  [2]error
		valid [2]bool
		flags [2]byte
	)
	for i, loc := range u.Copies {
		bufs[i], errs[i] = readCopy(loc)
		if errs[i] == nil {
			flags[i], errs[i] = checkUBoot(bufs[i], red)
		}
		if errs[i] != nil {
			errs[i] = fmt.Errorf("%s at offset %#x: %w", loc.Path, loc.Offset, errs[i])
		}
		valid[i] = errs[i] == nil
	}
	if !red {
		if errs[0] != nil {
			return nil, fmt.Errorf("%w; check offset and size in fw_env.config against U-Boot's CONFIG_ENV_OFFSET/CONFIG_ENV_SIZE, or Save a complete environment", errs[0])
		}
		env, err := parseEntries(bufs[0][singleHeader:], singleHeader)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", u.Copies[0].Path, err)
		}
		return &Snapshot{Env: env}, nil
	}
	cur, ok := pickCopy(valid, flags)
	if !ok {
		return nil, fmt.Errorf("both copies unusable: %w; %w; check fw_env.config, or Save a complete environment", errs[0], errs[1])
	}
	env, err := parseEntries(bufs[cur][redundantHeader:], redundantHeader)
	if err != nil {
		// Falling back to the older copy would disagree with U-Boot, which
		// selects by checksum and generation only.
		return nil, fmt.Errorf("%s at offset %#x (current copy): %w", u.Copies[cur].Path, u.Copies[cur].Offset, err)
	}
	return &Snapshot{Env: env, Copy: cur, Flags: flags[cur], Damaged: errs[1-cur]}, nil
}

func (u *UBoot) save(env Env) error {
	if err := u.check(); err != nil {
		return err
	}
	size := int(u.Copies[0].Size)
	if !u.redundant() {
		buf, err := MarshalUBoot(env, size, false, 0)
		if err != nil {
			return fmt.Errorf("%s: %w", u.Copies[0].Path, err)
		}
		return writeSingle(u.Copies[0], buf)
	}
	// Work out the current copy from the medium, not from an earlier Load,
	// so that a write by fw_setenv in between is never overwritten.
	var (
		valid [2]bool
		flags [2]byte
	)
	for i, loc := range u.Copies {
		buf, err := readCopy(loc)
		if err == nil {
			flags[i], err = checkUBoot(buf, true)
		} else if len(buf) > redundantHeader {
			flags[i] = buf[4]
		}
		valid[i] = err == nil
	}
	cur, _ := pickCopy(valid, flags)
	buf, err := MarshalUBoot(env, size, true, flags[cur]+1)
	if err != nil {
		return fmt.Errorf("%s: %w", u.Copies[0].Path, err)
	}
	return writeInPlace(u.Copies[1-cur], buf)
}

// openCopy opens loc and resolves a negative offset.
func openCopy(loc Location, flag int) (*os.File, int64, fs.FileInfo, error) {
	f, err := os.OpenFile(loc.Path, flag, 0)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("%w; check the device in fw_env.config", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, nil, err
	}
	if fi.Mode()&fs.ModeCharDevice != 0 {
		f.Close()
		return nil, 0, nil, fmt.Errorf("%s is a character device (raw flash?); not supported", loc.Path)
	}
	off := loc.Offset
	if off < 0 {
		if fi.Mode()&fs.ModeDevice == 0 {
			f.Close()
			return nil, 0, nil, fmt.Errorf("%s: negative offset %d is only allowed on block devices", loc.Path, off)
		}
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, 0, nil, err
		}
		if off += end; off < 0 {
			f.Close()
			return nil, 0, nil, fmt.Errorf("%s: offset %d is before the start of the %d-byte device", loc.Path, loc.Offset, end)
		}
	}
	return f, off, fi, nil
}

// readCopy returns the copy's bytes. On a short read it returns what it got
// so that Save can still see the generation byte.
func readCopy(loc Location) ([]byte, error) {
	f, off, _, err := openCopy(loc, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, loc.Size)
	n, err := f.ReadAt(buf, off)
	if errors.Is(err, io.EOF) {
		return buf[:n], fmt.Errorf("%w: only %d of %#x bytes at offset %#x; the file or device is shorter than fw_env.config says", ErrFormat, n, loc.Size, off)
	}
	return buf, err
}

func writeInPlace(loc Location, buf []byte) error {
	f, off, _, err := openCopy(loc, os.O_RDWR)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		f.Close()
		return fmt.Errorf("writing environment to %s at offset %#x: %w", loc.Path, off, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing environment in %s: %w", loc.Path, err)
	}
	return f.Close()
}

// writeSingle writes a single-copy environment, atomically when it lives in
// a regular file (U-Boot's uboot.env on a FAT partition, for instance).
func writeSingle(loc Location, buf []byte) error {
	f, off, fi, err := openCopy(loc, os.O_RDONLY)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return writeInPlace(loc, buf)
	}
	old, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("reading %s: %w", loc.Path, err)
	}
	if end := off + int64(len(buf)); int64(len(old)) < end {
		old = append(old, make([]byte, end-int64(len(old)))...)
	}
	copy(old[off:], buf)
	// Rename must replace the file, not a symlink pointing at it.
	real, err := filepath.EvalSymlinks(loc.Path)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(real, old, fi.Mode().Perm()); err != nil {
		return fmt.Errorf("replacing environment file %s: %w", real, err)
	}
	return nil
}
