// Package token makes the secrets of operator and enrollment tokens and
// the hash under which the store keeps them. It is shared by the HTTP
// layer (operator tokens) and the fleet service (enrollment tokens), so
// both kinds have one format.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
)

// Prefix starts every secret, so a secret is recognised in a leak and a
// string without it is refused before any lookup.
const Prefix = "rmp_"

// New returns a fresh secret and its hash. The secret is shown once.
func New() (secret, hash string) {
	b := make([]byte, 32)
	rand.Read(b)
	secret = Prefix + base64.RawURLEncoding.EncodeToString(b)
	return secret, Hash(secret)
}

// Hash is how secrets are stored: only their SHA-256. The secrets are
// 256-bit random, so a plain hash is not brute-forceable.
func Hash(secret string) string {
	s := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(s[:])
}
