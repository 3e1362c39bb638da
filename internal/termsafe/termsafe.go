// Package termsafe makes untrusted text safe to print on one terminal
// line. Text from a server, a file or any other party the operator does
// not control may carry terminal escape sequences (which move the cursor,
// erase lines, set the window title or worse), line breaks that forge
// further output lines, Unicode bidi controls that reorder what is shown,
// or invalid UTF-8. This package owns the rule for all of it: every such
// character is replaced by a visible Go-style escape, and the result is
// bounded in length.
//
// The output is for display only: a backslash in the input is kept as it
// is, so the escaping cannot be reversed unambiguously.
package termsafe

import (
	"fmt"
	"log/slog"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultMaxRunes bounds the output of String.
const DefaultMaxRunes = 512

// Ellipsis ends a truncated result.
const Ellipsis = "…"

// String returns s safe to print on one terminal line, at most
// DefaultMaxRunes runes long.
func String(s string) string { return Bounded(s, DefaultMaxRunes) }

// Bounded returns s safe to print on one terminal line, at most maxRunes
// runes long (a maxRunes below 1 counts as 1). Every C0 control (ESC, CR,
// LF, TAB and BS included), DEL, every C1 control (U+0080-U+009F), each
// byte of invalid UTF-8, and every Unicode format or separator character
// that can reorder, hide or break text (bidi embeddings, overrides and
// isolates, zero-width characters, U+2028 and U+2029, ...) is replaced by
// a visible escape: \t, \n, \r, \xHH, \uHHHH or \UHHHHHHHH. A result that
// would be longer than maxRunes is cut at an escape boundary and ends
// with Ellipsis.
func Bounded(s string, maxRunes int) string {
	if maxRunes < 1 {
		maxRunes = 1
	}
	if safe(s) && utf8.RuneCountInString(s) <= maxRunes {
		return s
	}
	var b strings.Builder
	runes := 0 // runes written to b
	cut := 0   // length of b at the last boundary with runes <= maxRunes-1
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		var piece string
		switch {
		case r == utf8.RuneError && size <= 1:
			piece = fmt.Sprintf(`\x%02x`, s[i])
		case r == '\t':
			piece = `\t`
		case r == '\n':
			piece = `\n`
		case r == '\r':
			piece = `\r`
		case r < 0x20 || r == 0x7f:
			piece = fmt.Sprintf(`\x%02x`, r)
		case unsafeRune(r):
			if r > 0xffff {
				piece = fmt.Sprintf(`\U%08x`, r)
			} else {
				piece = fmt.Sprintf(`\u%04x`, r)
			}
		default:
			piece = s[i : i+size]
		}
		i += size
		n := utf8.RuneCountInString(piece)
		if runes+n > maxRunes {
			return b.String()[:cut] + Ellipsis
		}
		b.WriteString(piece)
		runes += n
		if runes <= maxRunes-1 {
			cut = b.Len()
		}
	}
	return b.String()
}

// safe reports whether s is valid UTF-8 without a rune that needs escaping.
func safe(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f || (r >= 0x80 && unsafeRune(r)) {
			// A literal U+FFFD is harmless, but telling it from invalid
			// UTF-8 is not worth a second decoder: the slow path decides.
			return false
		}
	}
	return true
}

// unsafeRune reports whether a valid rune at or above U+0080 must be
// escaped: C1 controls (Cc), format characters (Cf: bidi controls, zero
// width characters, soft hyphen, tags, ...), line and paragraph separators
// (Zl, Zp), and the bidi marks and controls listed explicitly in case a
// Unicode version moves them.
func unsafeRune(r rune) bool {
	switch {
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		return true
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)
}

// LogAttr is a slog.HandlerOptions.ReplaceAttr that bounds every string,
// error and Stringer value of a log record to DefaultMaxRunes, safe for a
// terminal: a hostile peer's text (an error quoting a 1 MiB URL) must not
// make one log line as long as itself.
func LogAttr(_ []string, a slog.Attr) slog.Attr {
	if k := a.Value.Kind(); k != slog.KindString && k != slog.KindAny {
		return a // numbers, times and durations are bounded already
	}
	switch v := a.Value.Any().(type) {
	case string:
		a.Value = slog.StringValue(String(v))
	case error:
		a.Value = slog.StringValue(String(v.Error()))
	case fmt.Stringer:
		a.Value = slog.StringValue(String(v.String()))
	}
	return a
}
