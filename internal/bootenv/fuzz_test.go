package bootenv

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzParseUBoot checks that parsing never panics and that whatever parses
// survives Marshal and Parse unchanged. With fixCRC the checksum is
// recomputed first, so the fuzzer gets past it into the entry parser.
func FuzzParseUBoot(f *testing.F) {
	for _, red := range []bool{false, true} {
		for _, env := range []Env{{}, {"a": "b"}, sample} {
			buf, err := MarshalUBoot(env, 256, red, 3)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(buf, red, false)
			f.Add(buf[:100], red, true)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, redundant, fixCRC bool) {
		if fixCRC && len(data) > headerLen(redundant) {
			data = bytes.Clone(data)
			binaryPutCRC(data, redundant)
		}
		env, flags, err := ParseUBoot(data, redundant)
		if err != nil {
			if !errors.Is(err, ErrBadCRC) && !errors.Is(err, ErrFormat) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		out, err := MarshalUBoot(env, len(data), redundant, flags)
		if err != nil {
			t.Fatalf("parsed %q but cannot marshal it back: %v", data, err)
		}
		env2, flags2, err := ParseUBoot(out, redundant)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(env, env2) || flags != flags2 {
			t.Fatalf("round trip changed %v/%d to %v/%d", env, flags, env2, flags2)
		}
	})
}

// FuzzParseGRUB: same properties for grubenv. With frame the input is put
// behind the header and padded or cut to 1024 bytes, so most inputs reach
// the line parser. Marshal may refuse a block that parsed, but only for
// size: it adds grub-editenv's warning line that a parsed block may lack.
func FuzzParseGRUB(f *testing.F) {
	for _, env := range []Env{{}, {"a": "b"}, grubToolEnv, {"m": "l1\nl2\\"}} {
		buf, err := MarshalGRUB(env)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(buf, false)
		f.Add(buf[len(grubHeader):200], true)
	}
	f.Fuzz(func(t *testing.T, data []byte, frame bool) {
		if frame {
			framed := append([]byte(grubHeader), data...)
			for len(framed) < GRUBSize {
				framed = append(framed, '#')
			}
			data = framed[:GRUBSize]
		}
		env, err := ParseGRUB(data)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		out, err := MarshalGRUB(env)
		if errors.Is(err, ErrTooLarge) {
			return
		}
		if err != nil {
			t.Fatalf("parsed %q but cannot marshal it back: %v", data, err)
		}
		env2, err := ParseGRUB(out)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(env, env2) {
			t.Fatalf("round trip changed %q to %q", env, env2)
		}
	})
}
