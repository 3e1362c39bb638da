package bootenv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Header sizes: a CRC32, and for a redundant environment one more byte, the
// generation counter ("flags") that decides which copy is newer.
const (
	singleHeader    = 4
	redundantHeader = 5
)

func headerLen(redundant bool) int {
	if redundant {
		return redundantHeader
	}
	return singleHeader
}

// ParseUBoot decodes one copy of a U-Boot environment. data must be exactly
// the configured environment size, because the checksum covers every byte
// after the header including the padding. flags is the copy's generation
// counter when redundant is true.
//
// Whatever follows the terminating empty entry is ignored: mkenvimage pads
// with 0xff (or the -p byte) and libubootenv leaves whatever its buffer held.
func ParseUBoot(data []byte, redundant bool) (env Env, flags byte, err error) {
	if flags, err = checkUBoot(data, redundant); err != nil {
		return nil, flags, err
	}
	env, err = parseEntries(data[headerLen(redundant):], headerLen(redundant))
	return env, flags, err
}

// checkUBoot verifies the checksum only. Choosing between redundant copies
// must depend on nothing else, exactly as in U-Boot and libubootenv, or we
// would read a different copy from the one the bootloader boots with.
func checkUBoot(data []byte, redundant bool) (flags byte, err error) {
	hdr := headerLen(redundant)
	if len(data) < hdr+1 {
		return 0, fmt.Errorf("%w: %d bytes is smaller than the %d-byte minimum", ErrFormat, len(data), hdr+1)
	}
	if redundant {
		flags = data[4]
	}
	stored := binary.LittleEndian.Uint32(data)
	if computed := crc32.ChecksumIEEE(data[hdr:]); stored != computed {
		return flags, &CRCError{Stored: stored, Computed: computed}
	}
	return flags, nil
}

// parseEntries reads "name=value\x00" entries up to the empty entry that
// ends the list. base is only used to report file offsets.
func parseEntries(area []byte, base int) (Env, error) {
	env := Env{}
	for i := 0; ; {
		if i >= len(area) {
			return nil, fmt.Errorf("%w: no terminating NUL before the end of the environment", ErrFormat)
		}
		if area[i] == 0 {
			return env, nil
		}
		n := bytes.IndexByte(area[i:], 0)
		if n < 0 {
			return nil, fmt.Errorf("%w: entry at offset %d runs past the end of the environment", ErrFormat, base+i)
		}
		entry := area[i : i+n]
		eq := bytes.IndexByte(entry, '=')
		if eq < 0 {
			return nil, fmt.Errorf("%w: entry at offset %d has no '='", ErrFormat, base+i)
		}
		name := string(entry[:eq])
		if err := checkName(name, ""); err != nil {
			return nil, fmt.Errorf("entry at offset %d: %w", base+i, err)
		}
		// A repeated name keeps the last value, as U-Boot's import and
		// libubootenv both do.
		env[name] = string(entry[eq+1:])
		i += n + 1
	}
}

// MarshalUBoot encodes env as one copy of size bytes. Variables are sorted
// by name, as fw_setenv writes them, and the unused tail is 0xff like
// mkenvimage's default and erased NOR flash.
func MarshalUBoot(env Env, size int, redundant bool, flags byte) ([]byte, error) {
	hdr := headerLen(redundant)
	if size < hdr+1 {
		return nil, fmt.Errorf("%w: size %d is smaller than the %d-byte minimum", ErrTooLarge, size, hdr+1)
	}
	buf := make([]byte, size)
	for i := hdr; i < size; i++ {
		buf[i] = 0xff
	}
	p := hdr
	for _, name := range env.Names() {
		if err := checkName(name, ""); err != nil {
			return nil, err
		}
		value := env[name]
		if bytes.IndexByte([]byte(value), 0) >= 0 {
			return nil, fmt.Errorf("%w: value of %q contains NUL", ErrFormat, name)
		}
		// The entry, its NUL and the final NUL that ends the list.
		if p+len(name)+1+len(value)+1+1 > size {
			return nil, fmt.Errorf("%w: %d variables need more than %d bytes; remove variables or raise the environment size", ErrTooLarge, len(env), size)
		}
		p += copy(buf[p:], name)
		buf[p] = '='
		p++
		p += copy(buf[p:], value)
		buf[p] = 0
		p++
	}
	buf[p] = 0
	if redundant {
		buf[4] = flags
	}
	binary.LittleEndian.PutUint32(buf, crc32.ChecksumIEEE(buf[hdr:]))
	return buf, nil
}

// pickCopy returns the copy of a redundant environment that U-Boot
// (env_import_redund) and libubootenv (libuboot_load, incremental flags as
// used for files, block devices, NAND and UBI) treat as current: the only
// valid one, or of two valid ones the newer generation, where 0 is newer
// than 255 because the counter wraps. Equal generations favour copy 0. ok is
// false when neither copy is valid; current is then 0, which makes the next
// write go to copy 1, again as libubootenv does.
func pickCopy(valid [2]bool, flags [2]byte) (current int, ok bool) {
	switch {
	case valid[0] && !valid[1]:
		return 0, true
	case !valid[0] && valid[1]:
		return 1, true
	case !valid[0] && !valid[1]:
		return 0, false
	}
	switch {
	case flags[0] == 0xff && flags[1] == 0:
		return 1, true
	case flags[1] == 0xff && flags[0] == 0:
		return 0, true
	case flags[1] > flags[0]:
		return 1, true
	}
	return 0, true
}
