package main

import (
	"crypto"
	"strings"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/keys"
)

// loadAnyPublic loads a public key from a .pub file, a PKCS#11 URI or, as a
// convenience, a private .key file.
func loadAnyPublic(e *env, ref, ppFile string) (crypto.PublicKey, error) {
	if strings.HasSuffix(ref, ".key") {
		s, err := keys.Open(ref, passphraseSource(e, ppFile))
		if err != nil {
			return nil, err
		}
		defer s.Close()
		return s.Public(), nil
	}
	return keys.LoadPublic(ref)
}

func loadPublics(refs []string) ([]crypto.PublicKey, error) {
	var out []crypto.PublicKey
	for _, r := range refs {
		p, err := keys.LoadPublic(r)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func writeNewFile(path string, b []byte) error {
	return atomicfile.CreateNew(path, b, 0o644)
}
