//go:build !cgo || nopkcs11

package keys

import (
	"errors"
	"strings"
	"testing"
)

// A binary built without PKCS#11 support (CGO_ENABLED=0, or -tags
// nopkcs11 as CI also tests) refuses a token key loudly, naming what to
// rebuild, rather than falling back to anything: opening, loading the
// public key and generating all fail with ErrNoPKCS11.
func TestPKCS11StubRefuses(t *testing.T) {
	const uri = "pkcs11:token=release;object=rel-a?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234"
	_, openErr := Open(uri, nil)
	_, loadErr := LoadPublic(uri)
	_, genErr := GeneratePKCS11(uri, Ed25519)
	for name, err := range map[string]error{"Open": openErr, "LoadPublic": loadErr, "GeneratePKCS11": genErr} {
		if !errors.Is(err, ErrNoPKCS11) || !strings.Contains(err.Error(), "rebuild") || !strings.Contains(err.Error(), uri) {
			t.Errorf("%s = %v, want ErrNoPKCS11 naming the URI and how to rebuild", name, err)
		}
	}
	// A malformed URI is still refused as malformed first.
	if _, err := Open("pkcs11:token=release?module-path=relative.so&pin-value=1", nil); !errors.Is(err, ErrBadURI) {
		t.Errorf("relative module path: %v, want ErrBadURI", err)
	}
}
