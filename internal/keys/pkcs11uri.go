package keys

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The URI parser carries no build tag: it is pure Go so that it is tested
// and fuzzed in every build, including the CGO_ENABLED=0 one that has no
// PKCS#11 support to use it with.

// Environment variables consulted when a PKCS#11 URI leaves out the module
// or the PIN, so that scripts can keep both out of key references that end
// up in config files and shell history.
const (
	envPKCS11Module = "RAMPART_PKCS11_MODULE"
	envPKCS11PIN    = "RAMPART_PKCS11_PIN"
)

// maxPKCS11URI bounds the input we parse; real URIs are a few hundred bytes
// and nothing good comes from parsing megabytes of attacker-supplied text.
const maxPKCS11URI = 8 << 10

// pkcs11URI is the part of an RFC 7512 URI that Rampart understands.
type pkcs11URI struct {
	token   string // token label (CK_TOKEN_INFO.label)
	serial  string // token serial number
	slotID  uint64
	hasID   bool // whether id was given: an empty id is not the same as none
	hasSlot bool
	object  string // object label (CKA_LABEL)
	id      []byte // object id (CKA_ID), raw bytes

	modulePath string
	pinSource  string // file name, with any "file:" scheme removed
	pinValue   string
	hasPIN     bool // pin-value was given
}

var (
	pkcs11PathAttrs  = []string{"token", "object", "id", "serial", "slot-id"}
	pkcs11QueryAttrs = []string{"module-path", "pin-source", "pin-value"}
)

// parsePKCS11URI parses an RFC 7512 PKCS#11 URI. It only accepts the
// attributes Rampart acts on: silently ignoring, say, a misspelt "objet=" would
// select a different key than the one the user meant.
func parsePKCS11URI(s string) (*pkcs11URI, error) {
	if len(s) > maxPKCS11URI {
		return nil, fmt.Errorf("pkcs11 uri: longer than %d bytes", maxPKCS11URI)
	}
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return nil, errors.New(`pkcs11 uri: must start with "pkcs11:"`)
	}
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		return nil, errors.New(`pkcs11 uri: fragments ("#") are not allowed; percent-encode "#" as %23`)
	}
	// The first "?" ends the path; later ones are ordinary query characters
	// (RFC 7512 lets "/" and "?" appear unencoded in query values).
	path, query, hasQuery := strings.Cut(rest, "?")
	u := &pkcs11URI{}
	seen := map[string]bool{}
	if path != "" {
		for _, attr := range strings.Split(path, ";") {
			name, raw, err := splitPKCS11Attr(attr, "path")
			if err != nil {
				return nil, err
			}
			if err := u.setPath(name, raw, seen); err != nil {
				return nil, err
			}
		}
	}
	if hasQuery {
		if query == "" {
			return nil, errors.New(`pkcs11 uri: empty query after "?"; remove the "?" or add a query attribute such as module-path`)
		}
		for _, attr := range strings.Split(query, "&") {
			name, raw, err := splitPKCS11Attr(attr, "query")
			if err != nil {
				return nil, err
			}
			if err := u.setQuery(name, raw, seen); err != nil {
				return nil, err
			}
		}
	}
	if seen["pin-source"] && seen["pin-value"] {
		return nil, errors.New("pkcs11 uri: both pin-source and pin-value given; keep only one")
	}
	return u, nil
}

// splitPKCS11Attr splits "name=value". The value is decoded only once the
// name is known to be valid, so that a misplaced attribute is reported as
// such rather than as a character its value may not contain there.
func splitPKCS11Attr(attr, component string) (name, raw string, err error) {
	if attr == "" {
		return "", "", fmt.Errorf("pkcs11 uri: empty attribute in the %s (doubled or trailing separator)", component)
	}
	name, raw, ok := strings.Cut(attr, "=")
	if !ok {
		return "", "", fmt.Errorf("pkcs11 uri: %s attribute %q has no \"=value\"", component, attr)
	}
	if raw == "" {
		return "", "", fmt.Errorf("pkcs11 uri: attribute %q has an empty value", name)
	}
	return name, raw, nil
}

func decodeAttr(name, raw string, allowed func(byte) bool) ([]byte, error) {
	v, err := pctDecode(raw, allowed)
	if err != nil {
		return nil, fmt.Errorf("pkcs11 uri: attribute %q: %w", name, err)
	}
	return v, nil
}

func (u *pkcs11URI) setPath(name, raw string, seen map[string]bool) error {
	if !slices.Contains(pkcs11PathAttrs, name) {
		if slices.Contains(pkcs11QueryAttrs, name) {
			return fmt.Errorf("pkcs11 uri: %q is a query attribute; put it after \"?\", as in pkcs11:token=T;object=O?%s=VALUE", name, name)
		}
		return fmt.Errorf("pkcs11 uri: unsupported path attribute %q (supported: %s)", name, strings.Join(pkcs11PathAttrs, ", "))
	}
	if seen[name] {
		return fmt.Errorf("pkcs11 uri: attribute %q given twice; keep only one", name)
	}
	seen[name] = true
	value, err := decodeAttr(name, raw, isPKCS11PathChar)
	if err != nil {
		return err
	}
	switch name {
	case "token":
		u.token = string(value)
	case "object":
		u.object = string(value)
	case "id":
		u.id, u.hasID = value, true
	case "serial":
		u.serial = string(value)
	case "slot-id":
		n, err := strconv.ParseUint(string(value), 10, 64)
		if errors.Is(err, strconv.ErrRange) {
			return fmt.Errorf("pkcs11 uri: slot-id %q is out of range", value)
		}
		if err != nil {
			return fmt.Errorf("pkcs11 uri: slot-id %q is not a decimal number", value)
		}
		u.slotID, u.hasSlot = n, true
	}
	return nil
}

func (u *pkcs11URI) setQuery(name, raw string, seen map[string]bool) error {
	if !slices.Contains(pkcs11QueryAttrs, name) {
		if slices.Contains(pkcs11PathAttrs, name) {
			return fmt.Errorf("pkcs11 uri: %q is a path attribute; put it before \"?\", separated by \";\"", name)
		}
		return fmt.Errorf("pkcs11 uri: unsupported query attribute %q (supported: %s)", name, strings.Join(pkcs11QueryAttrs, ", "))
	}
	if seen[name] {
		return fmt.Errorf("pkcs11 uri: attribute %q given twice; keep only one", name)
	}
	seen[name] = true
	value, err := decodeAttr(name, raw, isPKCS11QueryChar)
	if err != nil {
		return err
	}
	switch name {
	case "module-path":
		u.modulePath = string(value)
	case "pin-value":
		u.pinValue, u.hasPIN = string(value), true
	case "pin-source":
		p, err := pinSourcePath(string(value))
		if err != nil {
			return err
		}
		u.pinSource = p
	}
	return nil
}

// pinSourcePath turns a pin-source value into a file name. RFC 7512 leaves
// the form open; we take file: URIs (file:/p, file:///p, file://localhost/p)
// and bare paths, and refuse other schemes rather than misread them as files.
func pinSourcePath(v string) (string, error) {
	p := v
	if rest, ok := strings.CutPrefix(v, "file:"); ok {
		p = rest
		if rest, ok := strings.CutPrefix(p, "//"); ok {
			host, tail, _ := strings.Cut(rest, "/")
			if host != "" && host != "localhost" {
				return "", fmt.Errorf("pkcs11 uri: pin-source %q names host %q; only local files are supported (file:/path/to/pin)", v, host)
			}
			p = "/" + tail
		}
	} else if i := strings.IndexByte(v, ':'); i > 0 && !strings.ContainsRune(v[:i], '/') {
		return "", fmt.Errorf("pkcs11 uri: pin-source %q: unsupported scheme %q; use file:/path/to/pin", v, v[:i])
	}
	if p == "" || p == "/" {
		return "", fmt.Errorf("pkcs11 uri: pin-source %q names no file; use file:/path/to/pin", v)
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("pkcs11 uri: pin-source %q contains a NUL byte", v)
	}
	return p, nil
}

// pctDecode decodes RFC 3986 percent-encoding, refusing characters the
// RFC 7512 grammar requires to be encoded: an unencoded space or ";" usually
// means the URI was cut or mangled by a shell, and we would rather say so
// than look for a token named after half of it.
func pctDecode(s string, allowed func(byte) bool) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) {
				return nil, fmt.Errorf("truncated percent-escape %q; a literal %% is written %%25", s[i:])
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return nil, fmt.Errorf("invalid percent-escape %q; a literal %% is written %%25", s[i:i+3])
			}
			out = append(out, hi<<4|lo)
			i += 2
		case allowed(c):
			out = append(out, c)
		default:
			return nil, fmt.Errorf("character %q must be percent-encoded as %%%02X", c, c)
		}
	}
	return out, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isPKCS11Unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// pk11-res-avail from RFC 7512 section 2.3.
func isPKCS11ResAvail(c byte) bool {
	return strings.IndexByte(":[]@!$'()*+,=", c) >= 0
}

// pk11-pchar: "&" is literal in the path, ";" separates attributes.
func isPKCS11PathChar(c byte) bool {
	return isPKCS11Unreserved(c) || isPKCS11ResAvail(c) || c == '&'
}

// pk11-qchar: "/", "?" and "|" are literal in the query, "&" separates.
func isPKCS11QueryChar(c byte) bool {
	return isPKCS11Unreserved(c) || isPKCS11ResAvail(c) || c == '/' || c == '?' || c == '|'
}

// String formats u back into a URI, percent-encoding everything outside
// the unreserved set in values. The PIN value is redacted so the result is
// safe for error messages and logs.
func (u *pkcs11URI) String() string {
	var path, query []string
	add := func(dst *[]string, name string, v []byte, allowed func(byte) bool) {
		*dst = append(*dst, name+"="+pctEncode(v, allowed))
	}
	if u.token != "" {
		add(&path, "token", []byte(u.token), isPKCS11PathChar)
	}
	if u.serial != "" {
		add(&path, "serial", []byte(u.serial), isPKCS11PathChar)
	}
	if u.hasSlot {
		path = append(path, "slot-id="+strconv.FormatUint(u.slotID, 10))
	}
	if u.object != "" {
		add(&path, "object", []byte(u.object), isPKCS11PathChar)
	}
	if u.hasID {
		// Every byte of an id is encoded, the way p11tool prints ids.
		add(&path, "id", u.id, func(byte) bool { return false })
	}
	if u.modulePath != "" {
		add(&query, "module-path", []byte(u.modulePath), isPKCS11QueryChar)
	}
	if u.pinSource != "" {
		// Always written as a file: URI so that a relative name such as
		// "c:pin" is not read back as a URI with scheme "c".
		p := "file:" + u.pinSource
		if strings.HasPrefix(u.pinSource, "//") {
			p = "file://" + u.pinSource // else "//x" would be read as host x
		}
		add(&query, "pin-source", []byte(p), isPKCS11QueryChar)
	}
	if u.hasPIN {
		query = append(query, "pin-value=REDACTED")
	}
	s := "pkcs11:" + strings.Join(path, ";")
	if len(query) > 0 {
		s += "?" + strings.Join(query, "&")
	}
	return s
}

func pctEncode(v []byte, allowed func(byte) bool) string {
	var b strings.Builder
	for _, c := range v {
		if allowed(c) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// resolvedModule returns the PKCS#11 module to load: module-path from the
// URI, else $RAMPART_PKCS11_MODULE.
func (u *pkcs11URI) resolvedModule() (string, error) {
	m := u.modulePath
	if m == "" {
		m = os.Getenv(envPKCS11Module)
	}
	if m == "" {
		return "", fmt.Errorf("pkcs11: no PKCS#11 module given; add ?module-path=/path/to/module.so to %s or set %s", u, envPKCS11Module)
	}
	if strings.IndexByte(m, 0) >= 0 {
		// The path is handed to dlopen as a C string, which would end at
		// the NUL and load a different file than the one named.
		return "", fmt.Errorf("pkcs11: module path %q contains a NUL byte", m)
	}
	if !filepath.IsAbs(m) {
		// A relative name would be resolved by dlopen through the library
		// search path, so the module actually loaded could depend on the
		// environment rather than on the URI.
		return "", fmt.Errorf("pkcs11: module path %q is not absolute; give the full path to the module", m)
	}
	return m, nil
}

// resolvedPIN returns the user PIN: pin-value, else the content of the
// pin-source file (one trailing newline removed, as left by echo or an
// editor), else $RAMPART_PKCS11_PIN.
func (u *pkcs11URI) resolvedPIN() (string, error) {
	switch {
	case u.hasPIN:
		return u.pinValue, nil
	case u.pinSource != "":
		data, err := readBounded(u.pinSource)
		if err != nil {
			return "", fmt.Errorf("pkcs11: reading the PIN from pin-source: %w", err)
		}
		pin := strings.TrimSuffix(string(data), "\n")
		pin = strings.TrimSuffix(pin, "\r")
		if pin == "" {
			return "", fmt.Errorf("pkcs11: PIN file %s is empty; write the token's user PIN into it", u.pinSource)
		}
		return pin, nil
	}
	if pin, ok := os.LookupEnv(envPKCS11PIN); ok && pin != "" {
		return pin, nil
	}
	return "", fmt.Errorf("pkcs11: no PIN for %s; add pin-source=file:/path/to/pin to the URI or set %s", u, envPKCS11PIN)
}
