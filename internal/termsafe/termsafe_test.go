package termsafe

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text: acme-gw/2.4.1", "plain text: acme-gw/2.4.1"},
		{"", ""},
		{"title\x1b]0;pwned\x07 and \x1b[2K erase", `title\x1b]0;pwned\x07 and \x1b[2K erase`},
		{"two\nlines\r\tand\bback", `two\nlines\r\tand\x08back`},
		{"nul\x00del\x7f", `nul\x00del\x7f`},
		{"c1 csi \u009b2K osc \u009d", `c1 csi \u009b2K osc \u009d`},
		{"bad utf8 \xff\xfe end", `bad utf8 \xff\xfe end`},
		{"truncated \xe2\x80", `truncated \xe2\x80`},
		{"rlo \u202egnp.exe lri \u2066x\u2069 lrm \u200e alm \u061c", `rlo \u202egnp.exe lri \u2066x\u2069 lrm \u200e alm \u061c`},
		{"zero\u200bwidth bom\ufeff ls\u2028ps\u2029 tag\U000e0041", `zero\u200bwidth bom\ufeff ls\u2028ps\u2029 tag\U000e0041`},
		{"kept: é ü 日本 \ufffd 🙂 back\\slash", "kept: é ü 日本 \ufffd 🙂 back\\slash"},
	} {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestBounded(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"abcdef", 6, "abcdef"},
		{"abcdef", 5, "abcd…"},
		{"abcdef", 1, "…"},
		{"abcdef", 0, "…"},
		{"日本語です", 3, "日本…"},
		// An escape is never cut in half.
		{"ab\x1bcd", 6, `ab…`},
		{"ab\x1bcd", 7, `ab\x1b…`},
		{"ab\x1bcd", 8, `ab\x1bcd`},
	} {
		got := Bounded(tc.in, tc.max)
		if got != tc.want {
			t.Errorf("Bounded(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
	long := strings.Repeat("\x1b[2K", 1<<20)
	if got := String(long); utf8.RuneCountInString(got) > DefaultMaxRunes || !strings.HasSuffix(got, Ellipsis) {
		t.Errorf("String of 4 MiB of escapes: %d runes, %q...", utf8.RuneCountInString(got), got[:20])
	}
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"", "abc", "\x1b]0;t\x07\x1b[2K", "\u202e\u2066\u0085\xff", strings.Repeat("é\x01", 300)} {
		f.Add(s, 16)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		n %= 1024
		check := func(out string, bound int) {
			if !utf8.ValidString(out) {
				t.Fatalf("invalid UTF-8 out of %q: %q", s, out)
			}
			if n := utf8.RuneCountInString(out); n > max(bound, 1) {
				t.Fatalf("%d runes out, bound %d: %q", n, bound, out)
			}
			for i := 0; i < len(out); i++ {
				if out[i] < 0x20 || out[i] == 0x7f {
					t.Fatalf("control byte %#x in %q (from %q)", out[i], out, s)
				}
			}
			for _, r := range out {
				if (r >= 0x80 && r <= 0x9f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f || r == 0x061c || r == 0x2028 || r == 0x2029 || r == 0xfeff {
					t.Fatalf("unsafe rune %U in %q (from %q)", r, out, s)
				}
			}
		}
		check(String(s), DefaultMaxRunes)
		check(Bounded(s, n), n)
		// Safe text that fits is kept as it is.
		if out := Bounded(s, len(s)+1); safe(s) && out != s {
			t.Fatalf("safe %q changed to %q", s, out)
		}
	})
}

// A log record quoting a hostile peer stays one bounded line; numbers and
// times keep their own formatting.
func TestLogAttr(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: LogAttr}))
	huge := strings.Repeat("\x1b[2J", 1<<18)
	log.Warn("check-in failed", "err", errors.New(huge), "url", huge, "n", 42)
	out := buf.String()
	if len(out) > 4*DefaultMaxRunes*4 || strings.Contains(out, "\x1b") || strings.Count(out, "\n") != 1 {
		t.Fatalf("log line of %d bytes: %.200q", len(out), out)
	}
	if !strings.Contains(out, "n=42") || !strings.HasPrefix(out, "time=") {
		t.Fatalf("log line lost its plain attributes: %.200q", out)
	}
}
