//go:build !cgo || nopkcs11

package keys

import (
	"crypto"
	"fmt"
)

func openPKCS11(uri string) (Signer, error) {
	return nil, fmt.Errorf("%w: this binary was built without cgo; rebuild with CGO_ENABLED=1 to use %s", ErrNoPKCS11, uri)
}

func generatePKCS11(uri string, t Type) (crypto.PublicKey, error) {
	return nil, fmt.Errorf("%w: this binary was built without cgo; rebuild with CGO_ENABLED=1 to use %s", ErrNoPKCS11, uri)
}
