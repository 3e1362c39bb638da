// Package keys owns signing keys: generating them, storing private keys
// encrypted at rest, loading public keys, computing TUF key ids, and opening
// a signer by reference (a file path or an RFC 7512 PKCS#11 URI).
//
// Private key files are age-encrypted (scrypt passphrase recipient, armored)
// PKCS#8 documents; public key files are PEM "PUBLIC KEY" (PKIX) documents,
// readable by openssl. A key's id is its TUF key id: the SHA-256 of the
// canonical JSON form of the key as go-tuf encodes it.
package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Type names a key algorithm.
type Type string

const (
	Ed25519   Type = "ed25519"
	ECDSAP256 Type = "ecdsa-p256"
	RSA3072   Type = "rsa-3072"
)

// Types lists the supported key types, default first.
var Types = []Type{Ed25519, ECDSAP256, RSA3072}

// ParseType validates a key type name.
func ParseType(s string) (Type, error) {
	for _, t := range Types {
		if string(t) == s {
			return t, nil
		}
	}
	return "", fmt.Errorf("unknown key type %q (want one of ed25519, ecdsa-p256, rsa-3072)", s)
}

// Errors callers distinguish.
var (
	ErrWrongPassphrase = errors.New("wrong passphrase")
	ErrNoPassphrase    = errors.New("no passphrase given")
	ErrMalformedKey    = errors.New("malformed key")
	ErrUnsupportedKey  = errors.New("unsupported key type")
	ErrNoPKCS11        = errors.New("PKCS#11 support is not built in")
	ErrTokenNotFound   = errors.New("PKCS#11 token not found")
	ErrTokenLogin      = errors.New("PKCS#11 token login failed")
	ErrObjectNotFound  = errors.New("PKCS#11 key object not found")
	ErrBadURI          = errors.New("invalid PKCS#11 URI")
)

// Signer is a private key, held in memory or in a token, that can sign.
// Close releases the token session, if any.
type Signer interface {
	crypto.Signer
	Close() error
}

// Generate creates a new in-memory private key of type t.
func Generate(t Type) (crypto.Signer, error) {
	switch t {
	case Ed25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedKey, t)
}

// TUFKey converts a public key into its TUF form, refusing key types and
// sizes Rampart does not accept.
func TUFKey(pub crypto.PublicKey) (*metadata.Key, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ECDSA keys must use P-256", ErrUnsupportedKey)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 3072 {
			return nil, fmt.Errorf("%w: RSA keys must have at least 3072 bits, this one has %d", ErrUnsupportedKey, k.N.BitLen())
		}
	default:
		return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, pub)
	}
	return metadata.KeyFromPublicKey(pub)
}

// ID returns the TUF key id of a public key.
func ID(pub crypto.PublicKey) (string, error) {
	k, err := TUFKey(pub)
	if err != nil {
		return "", err
	}
	return k.ID()
}

// TypeOf names the algorithm of a public key.
func TypeOf(pub crypto.PublicKey) Type {
	switch pub.(type) {
	case ed25519.PublicKey:
		return Ed25519
	case *ecdsa.PublicKey:
		return ECDSAP256
	case *rsa.PublicKey:
		return RSA3072
	}
	return "unknown"
}

// tufSigner adapts a crypto.Signer to the sigstore signature.Signer that
// go-tuf's Metadata.Sign takes, hashing the way TUF's key schemes require:
// Ed25519 signs the message itself, ecdsa-sha2-nistp256 signs its SHA-256
// digest (ASN.1 signature), rsassa-pss-sha256 signs its SHA-256 digest with
// PSS.
type tufSigner struct {
	s crypto.Signer
}

// ForTUF returns a signature.Signer for go-tuf that signs with s.
func ForTUF(s crypto.Signer) signature.Signer { return tufSigner{s} }

func (t tufSigner) PublicKey(...signature.PublicKeyOption) (crypto.PublicKey, error) {
	return t.s.Public(), nil
}

func (t tufSigner) SignMessage(message io.Reader, _ ...signature.SignOption) ([]byte, error) {
	msg, err := io.ReadAll(message)
	if err != nil {
		return nil, err
	}
	switch t.s.Public().(type) {
	case ed25519.PublicKey:
		return t.s.Sign(rand.Reader, msg, crypto.Hash(0))
	case *ecdsa.PublicKey:
		d := sha256.Sum256(msg)
		return t.s.Sign(rand.Reader, d[:], crypto.SHA256)
	case *rsa.PublicKey:
		d := sha256.Sum256(msg)
		return t.s.Sign(rand.Reader, d[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	}
	return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, t.s.Public())
}

var _ signature.Signer = tufSigner{}

// IsPKCS11URI reports whether ref names a key in a PKCS#11 token.
func IsPKCS11URI(ref string) bool { return strings.HasPrefix(ref, "pkcs11:") }

// Passphrase supplies the passphrase for an encrypted key file when needed.
type Passphrase func() (string, error)

// Open opens the private key named by ref: a PKCS#11 URI or a key file path.
func Open(ref string, pass Passphrase) (Signer, error) {
	if IsPKCS11URI(ref) {
		if err := checkPKCS11URI(ref); err != nil {
			return nil, err
		}
		return openPKCS11(ref)
	}
	return OpenFile(ref, pass)
}

// LoadPublic loads the public key named by ref: a PKCS#11 URI or a PEM file.
func LoadPublic(ref string) (crypto.PublicKey, error) {
	if IsPKCS11URI(ref) {
		s, err := Open(ref, nil)
		if err != nil {
			return nil, err
		}
		defer s.Close()
		return s.Public(), nil
	}
	return ReadPublicFile(ref)
}

// GeneratePKCS11 creates a key of type t inside the token named by uri and
// returns its public key. The private key never leaves the token.
func GeneratePKCS11(uri string, t Type) (crypto.PublicKey, error) {
	if err := checkPKCS11URI(uri); err != nil {
		return nil, err
	}
	return generatePKCS11(uri, t)
}

// checkPKCS11URI validates a URI, its module and its PIN source before any
// module is loaded, so that a mistyped URI is an input error, not an
// environment one.
func checkPKCS11URI(ref string) error {
	u, err := parsePKCS11URI(ref)
	if err == nil {
		_, err = u.resolvedModule()
	}
	if err == nil {
		_, err = u.resolvedPIN()
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadURI, err)
	}
	return nil
}
