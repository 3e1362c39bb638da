package keys

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/rampartfw/rampart/internal/atomicfile"
)

// scryptWorkFactor is age's default (2^18). Tests lower it through
// SetTestOnlyWorkFactor so hundreds of key operations stay fast.
var scryptWorkFactor = 18

// SetTestOnlyWorkFactor lowers the scrypt cost of newly encrypted key files.
// Only tests call it.
func SetTestOnlyWorkFactor(logN int) { scryptWorkFactor = logN }

const (
	privateSuffix = ".key"
	publicSuffix  = ".pub"
	// maxKeyFile bounds what we read from a key file.
	maxKeyFile = 64 << 10
)

// FilePaths returns the private and public key file names for base.
func FilePaths(base string) (priv, pub string) {
	return base + privateSuffix, base + publicSuffix
}

// GenerateFile creates a new key of type t and writes base.key (encrypted
// with passphrase unless it is empty, mode 0600) and base.pub. It refuses to
// replace either file.
func GenerateFile(base string, t Type, passphrase string) (crypto.PublicKey, error) {
	privPath, pubPath := FilePaths(base)
	for _, p := range []string{privPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("%s already exists: %w", p, fs.ErrExist)
		}
	}
	if err := os.MkdirAll(filepath.Dir(privPath), 0o700); err != nil {
		return nil, err
	}
	priv, err := Generate(t)
	if err != nil {
		return nil, err
	}
	privPEM, err := MarshalPrivate(priv, passphrase)
	if err != nil {
		return nil, err
	}
	pubPEM, err := MarshalPublic(priv.Public())
	if err != nil {
		return nil, err
	}
	if err := atomicfile.CreateNew(privPath, privPEM, 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.CreateNew(pubPath, pubPEM, 0o644); err != nil {
		os.Remove(privPath)
		return nil, err
	}
	return priv.Public(), nil
}

// MarshalPrivate encodes priv as PKCS#8 PEM, age-encrypted with passphrase
// unless passphrase is empty.
func MarshalPrivate(priv crypto.Signer, passphrase string) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	plain := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if passphrase == "" {
		return plain, nil
	}
	r, err := age.NewScryptRecipient(passphrase)
	if err != nil {
		return nil, err
	}
	r.SetWorkFactor(scryptWorkFactor)
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, r)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(plain); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// MarshalPublic encodes pub as a PEM "PUBLIC KEY" block.
func MarshalPublic(pub crypto.PublicKey) ([]byte, error) {
	if _, err := TUFKey(pub); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePublic decodes a PEM "PUBLIC KEY" block.
func ParsePublic(data []byte) (crypto.PublicKey, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%w: not a PEM \"PUBLIC KEY\" block", ErrMalformedKey)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the PEM block", ErrMalformedKey)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedKey, err)
	}
	if _, err := TUFKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// ReadPublicFile reads a public key file.
func ReadPublicFile(name string) (crypto.PublicKey, error) {
	data, err := readBounded(name)
	if err != nil {
		return nil, err
	}
	pub, err := ParsePublic(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return pub, nil
}

// ParsePrivate decodes a private key file's content, decrypting it with the
// passphrase when it is encrypted.
func ParsePrivate(data []byte, pass Passphrase) (crypto.Signer, error) {
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte(armor.Header)) {
		if pass == nil {
			return nil, ErrNoPassphrase
		}
		p, err := pass()
		if err != nil {
			return nil, err
		}
		if p == "" {
			return nil, ErrNoPassphrase
		}
		id, err := age.NewScryptIdentity(p)
		if err != nil {
			return nil, err
		}
		r, err := age.Decrypt(armor.NewReader(bytes.NewReader(data)), id)
		if err != nil {
			if errors.Is(err, age.ErrIncorrectIdentity) {
				return nil, ErrWrongPassphrase
			}
			return nil, fmt.Errorf("%w: %v", ErrMalformedKey, err)
		}
		data, err = io.ReadAll(io.LimitReader(r, maxKeyFile))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformedKey, err)
		}
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: not an encrypted key file nor a PEM \"PRIVATE KEY\" block", ErrMalformedKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedKey, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, k)
	}
	if _, err := TUFKey(s.Public()); err != nil {
		return nil, err
	}
	return s, nil
}

type memSigner struct{ crypto.Signer }

func (memSigner) Close() error { return nil }

// OpenFile opens a private key file.
func OpenFile(name string, pass Passphrase) (Signer, error) {
	data, err := readBounded(name)
	if err != nil {
		return nil, err
	}
	s, err := ParsePrivate(data, pass)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return memSigner{s}, nil
}

func readBounded(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", name, ErrMalformedKey, maxKeyFile)
	}
	return data, nil
}

// InMemory wraps a private key held in memory as a Signer.
func InMemory(s crypto.Signer) Signer { return memSigner{s} }
