//go:build cgo && !nopkcs11

package keys

import (
	"errors"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
)

// loginError maps a module's login failure to ErrTokenLogin with advice.
// SoftHSM never locks a token, so the locked case is exercised here with
// the return code a locking token gives; the other codes are the ones the
// PKCS#11 specification lists for C_Login.
func TestLoginErrorMapping(t *testing.T) {
	for code, want := range map[uint]string{
		pkcs11.CKR_PIN_LOCKED:               "is locked after too many wrong PINs; unblock it with the SO PIN",
		pkcs11.CKR_PIN_INCORRECT:            "wrong PIN; check pin-source",
		pkcs11.CKR_PIN_INVALID:              "rejects the PIN's format or length",
		pkcs11.CKR_PIN_LEN_RANGE:            "rejects the PIN's format or length",
		pkcs11.CKR_PIN_EXPIRED:              "the PIN has expired",
		pkcs11.CKR_USER_PIN_NOT_INITIALIZED: "has no user PIN yet",
		pkcs11.CKR_DEVICE_ERROR:             `token "release":`,
	} {
		err := loginError(pkcs11.Error(code), "release")
		if !errors.Is(err, ErrTokenLogin) || !errors.Is(err, pkcs11.Error(code)) || !strings.Contains(err.Error(), want) {
			t.Errorf("code %#x: got %v, want ErrTokenLogin containing %q", code, err, want)
		}
	}
}
