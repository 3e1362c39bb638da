package keys

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode"
)

func TestParsePKCS11URI(t *testing.T) {
	tests := []struct {
		in   string
		want pkcs11URI
	}{
		{"pkcs11:", pkcs11URI{}},
		{"pkcs11:token=release;object=rel-a?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin",
			pkcs11URI{token: "release", object: "rel-a", modulePath: "/usr/lib/softhsm/libsofthsm2.so", pinSource: "/run/pin"}},
		// RFC 7512 section 3 examples, trimmed to the attributes we take.
		{"pkcs11:token=Software%20PKCS%2311%20softtoken",
			pkcs11URI{token: "Software PKCS#11 softtoken"}},
		{"pkcs11:object=my-sign-key;id=%01%02%0a%FF",
			pkcs11URI{object: "my-sign-key", id: []byte{1, 2, 10, 255}, hasID: true}},
		{"pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;object=my-certificate?pin-value=1234",
			pkcs11URI{token: "The Software PKCS#11 Softtoken", object: "my-certificate", pinValue: "1234", hasPIN: true}},
		{"pkcs11:serial=DECC0401648;slot-id=0",
			pkcs11URI{serial: "DECC0401648", slotID: 0, hasSlot: true}},
		{"pkcs11:slot-id=18446744073709551615", pkcs11URI{slotID: 1<<64 - 1, hasSlot: true}},
		// "&" is literal in the path; "/", "?" and "|" are literal in the query.
		{"pkcs11:object=a&b?module-path=/opt/x?y|z/p11.so",
			pkcs11URI{object: "a&b", modulePath: "/opt/x?y|z/p11.so"}},
		{"pkcs11:object=%3b%3F%25", pkcs11URI{object: ";?%"}},
		{"pkcs11:token=%E2%82%AC", pkcs11URI{token: "€"}},
		{"pkcs11:object=k?pin-source=file:///run/pin", pkcs11URI{object: "k", pinSource: "/run/pin"}},
		{"pkcs11:object=k?pin-source=file://localhost/run/pin", pkcs11URI{object: "k", pinSource: "/run/pin"}},
		{"pkcs11:object=k?pin-source=/run/pin", pkcs11URI{object: "k", pinSource: "/run/pin"}},
		{"pkcs11:object=k?pin-source=pin.txt", pkcs11URI{object: "k", pinSource: "pin.txt"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parsePKCS11URI(tt.in)
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestParsePKCS11URIErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `must start with "pkcs11:"`},
		{"PKCS11:token=a", `must start with "pkcs11:"`},
		{"pkcs11:token=a#frag", "fragments"},
		{"pkcs11:token=a;token=b", `"token" given twice`},
		{"pkcs11:token=a?module-path=/a&module-path=/b", `"module-path" given twice`},
		{"pkcs11:model=SoftHSM", `unsupported path attribute "model"`},
		{"pkcs11:objet=k", `unsupported path attribute "objet"`},
		{"pkcs11:object=k?module-name=softhsm2", `unsupported query attribute "module-name"`},
		{"pkcs11:module-path=/x.so", "is a query attribute"},
		{"pkcs11:object=k?token=a", "is a path attribute"},
		{"pkcs11:token", `has no "=value"`},
		{"pkcs11:token=", "empty value"},
		{"pkcs11:token=a;", "empty attribute"},
		{"pkcs11:;token=a", "empty attribute"},
		{"pkcs11:token=a?", "empty query"},
		{"pkcs11:token=a?module-path=/x&", "empty attribute"},
		{"pkcs11:token=a%2", "truncated percent-escape"},
		{"pkcs11:token=a%", "truncated percent-escape"},
		{"pkcs11:token=a%zz", "invalid percent-escape"},
		{"pkcs11:token=my token", `character ' ' must be percent-encoded as %20`},
		{"pkcs11:token=a/b", `character '/' must be percent-encoded as %2F`},
		{"pkcs11:object=k?pin-value=a&b", `has no "=value"`},
		{"pkcs11:object=k?pin-value=1&pin-source=file:/p", "both pin-source and pin-value"},
		{"pkcs11:object=k?pin-source=https://example.com/pin", `unsupported scheme "https"`},
		{"pkcs11:object=k?pin-source=file://host/pin", `names host "host"`},
		{"pkcs11:object=k?pin-source=file:", "names no file"},
		{"pkcs11:object=k?pin-source=file:%00", "NUL"},
		{"pkcs11:slot-id=-1", "not a decimal number"},
		{"pkcs11:slot-id=+1", "not a decimal number"},
		{"pkcs11:slot-id=0x10", "not a decimal number"},
		{"pkcs11:slot-id=18446744073709551616", "out of range"},
		{"pkcs11:token=" + strings.Repeat("a", maxPKCS11URI), "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.in[:min(len(tt.in), 80)], func(t *testing.T) {
			_, err := parsePKCS11URI(tt.in)
			if err == nil {
				t.Fatalf("no error, want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
			checkErrorStyle(t, err.Error())
		})
	}
}

func checkErrorStyle(t *testing.T, msg string) {
	t.Helper()
	if r := []rune(msg)[0]; unicode.IsUpper(r) {
		t.Errorf("error %q starts with a capital letter", msg)
	}
}

func TestPKCS11URIString(t *testing.T) {
	u, err := parsePKCS11URI("pkcs11:token=my%20token;object=k;id=%ab%01?module-path=/m.so&pin-value=secret")
	if err != nil {
		t.Fatal(err)
	}
	s := u.String()
	if strings.Contains(s, "secret") {
		t.Fatalf("String() leaks the PIN: %s", s)
	}
	want := "pkcs11:token=my%20token;object=k;id=%AB%01?module-path=/m.so&pin-value=REDACTED"
	if s != want {
		t.Fatalf("String() = %s, want %s", s, want)
	}
}

func TestPKCS11URIResolve(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pinFile := write("pin", "1234\n")
	crlfFile := write("pin-crlf", "1234\r\n")
	rawFile := write("pin-raw", " 12 34 ")
	emptyFile := write("pin-empty", "\n")

	t.Setenv(envPKCS11Module, "")
	t.Setenv(envPKCS11PIN, "")
	pin := func(uri string) (string, error) {
		u, err := parsePKCS11URI(uri)
		if err != nil {
			t.Fatal(err)
		}
		return u.resolvedPIN()
	}
	module := func(uri string) (string, error) {
		u, err := parsePKCS11URI(uri)
		if err != nil {
			t.Fatal(err)
		}
		return u.resolvedModule()
	}

	for uri, want := range map[string]string{
		"pkcs11:?pin-source=file:" + pinFile:  "1234",
		"pkcs11:?pin-source=file:" + crlfFile: "1234",
		"pkcs11:?pin-source=" + pinFile:       "1234",
		"pkcs11:?pin-source=file:" + rawFile:  " 12 34 ",
		"pkcs11:?pin-value=%3A1":              ":1",
	} {
		got, err := pin(uri)
		if err != nil || got != want {
			t.Errorf("PIN of %s = %q, %v; want %q", uri, got, err, want)
		}
	}
	if _, err := pin("pkcs11:?pin-source=file:" + emptyFile); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty PIN file: err = %v", err)
	}
	if _, err := pin("pkcs11:?pin-source=file:" + filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing PIN file: err = %v, want it to name the file", err)
	}
	if _, err := pin("pkcs11:"); err == nil || !strings.Contains(err.Error(), envPKCS11PIN) {
		t.Errorf("no PIN: err = %v, want a hint about %s", err, envPKCS11PIN)
	}
	t.Setenv(envPKCS11PIN, "9999")
	if got, err := pin("pkcs11:"); err != nil || got != "9999" {
		t.Errorf("PIN from env = %q, %v", got, err)
	}
	if got, err := pin("pkcs11:?pin-value=1"); err != nil || got != "1" {
		t.Errorf("pin-value must win over env: %q, %v", got, err)
	}

	if _, err := module("pkcs11:"); err == nil || !strings.Contains(err.Error(), envPKCS11Module) {
		t.Errorf("no module: err = %v, want a hint about %s", err, envPKCS11Module)
	}
	if _, err := module("pkcs11:?module-path=libsofthsm2.so"); err == nil || !strings.Contains(err.Error(), "not absolute") {
		t.Errorf("relative module: err = %v", err)
	}
	if _, err := module("pkcs11:?module-path=/a%00b"); err == nil || !strings.Contains(err.Error(), "NUL") {
		t.Errorf("NUL in module path: err = %v", err)
	}
	t.Setenv(envPKCS11Module, "/env/p11.so")
	if got, err := module("pkcs11:"); err != nil || got != "/env/p11.so" {
		t.Errorf("module from env = %q, %v", got, err)
	}
	if got, err := module("pkcs11:?module-path=/uri/p11.so"); err != nil || got != "/uri/p11.so" {
		t.Errorf("module-path must win over env: %q, %v", got, err)
	}
}

// FuzzParsePKCS11URI checks that the parser never panics, that its errors
// follow the package's style, and that whatever it accepts survives a
// String/parse round trip unchanged (String is how URIs appear in errors,
// so it must not misrepresent them).
func FuzzParsePKCS11URI(f *testing.F) {
	for _, s := range []string{
		"pkcs11:",
		"pkcs11:token=release;object=rel-a?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/tmp/pin",
		"pkcs11:token=Software%20PKCS%2311%20softtoken;id=%01%02?pin-value=1234",
		"pkcs11:serial=DECC0401648;slot-id=0;object=a&b?module-path=/x?y|z",
		"pkcs11:object=k?pin-source=file:///run/pin",
		"pkcs11:object=k?pin-source=file://localhost/run/pin",
		"pkcs11:object=%zz",
		"pkcs11:token=a;token=b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parsePKCS11URI(s)
		if err != nil {
			if u != nil {
				t.Fatal("non-nil URI with an error")
			}
			checkErrorStyle(t, err.Error())
			return
		}
		if u.hasPIN {
			// String redacts the PIN, so compare the rest.
			u.pinValue = "REDACTED"
		}
		if len(u.String()) > maxPKCS11URI {
			// String encodes more than the input may have (every id byte
			// becomes %XX), so a long input can format past the limit.
			return
		}
		again, err := parsePKCS11URI(u.String())
		if err != nil {
			t.Fatalf("String() of %q gives %q, which does not parse: %v", s, u.String(), err)
		}
		if !reflect.DeepEqual(u, again) {
			t.Fatalf("round trip of %q via %q:\n got  %+v\n want %+v", s, u.String(), again, u)
		}
	})
}
