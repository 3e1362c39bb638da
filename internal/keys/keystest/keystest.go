// Package keystest is the conformance suite every keys.Signer runs, so that
// a key in a file and a key in a token are interchangeable for signing TUF
// metadata.
package keystest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/cjson"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/keys"
)

// TestSigner checks that s has a supported public key with a TUF key id,
// that its signatures over TUF metadata are accepted by go-tuf's own
// verification and by the standard library, that they stop verifying when
// the signed payload changes, and that s can be used from several
// goroutines at once. It does not close s.
func TestSigner(t *testing.T, s keys.Signer) {
	t.Helper()
	pub := s.Public()
	switch pub.(type) {
	case ed25519.PublicKey, *ecdsa.PublicKey, *rsa.PublicKey:
	default:
		t.Fatalf("Public() returned %T, not a supported key type", pub)
	}
	if _, err := keys.TUFKey(pub); err != nil {
		t.Fatalf("TUFKey(Public()): %v", err)
	}
	id, err := keys.ID(pub)
	if err != nil {
		t.Fatalf("ID(Public()): %v", err)
	}
	if id2, err := keys.ID(s.Public()); err != nil || id2 != id {
		t.Fatalf("ID of a second Public() call = %q, %v; want %q (Public must be stable)", id2, err, id)
	}

	t.Run("go-tuf", func(t *testing.T) { testTUF(t, s, id) })
	t.Run("stdlib", func(t *testing.T) { testStdlib(t, s) })
	t.Run("concurrent", func(t *testing.T) { testConcurrent(t, s) })
}

func newTargets(t *testing.T) *metadata.Metadata[metadata.TargetsType] {
	t.Helper()
	md := metadata.Targets(time.Now().Add(time.Hour).UTC().Truncate(time.Second))
	tf, err := metadata.TargetFile().FromBytes("firmware/board-a.bin", []byte("firmware image"), "sha256")
	if err != nil {
		t.Fatal(err)
	}
	md.Signed.Targets["firmware/board-a.bin"] = tf
	return md
}

func testTUF(t *testing.T, s keys.Signer, id string) {
	key, err := keys.TUFKey(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	root := metadata.Root(time.Now().Add(time.Hour))
	if err := root.Signed.AddKey(key, metadata.TARGETS); err != nil {
		t.Fatal(err)
	}
	if got := root.Signed.Roles[metadata.TARGETS].Threshold; got != 1 {
		t.Fatalf("targets threshold = %d, want 1", got)
	}

	md := newTargets(t)
	sig, err := md.Sign(keys.ForTUF(s))
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if sig.KeyID != id {
		t.Fatalf("signature key id = %q, want %q", sig.KeyID, id)
	}
	if err := root.VerifyDelegate(metadata.TARGETS, md); err != nil {
		t.Fatalf("go-tuf rejects the signature: %v", err)
	}

	// Round-trip through bytes, then change exactly one byte of the signed
	// payload: the version number, so the document still parses.
	data, err := md.ToBytes(false)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := metadata.Targets().FromBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := root.VerifyDelegate(metadata.TARGETS, parsed); err != nil {
		t.Fatalf("go-tuf rejects the signature after a JSON round trip: %v", err)
	}
	tampered := bytes.Replace(data, []byte(`"version":1`), []byte(`"version":2`), 1)
	if bytes.Equal(tampered, data) || len(tampered) != len(data) {
		t.Fatalf("could not find the version field to tamper with in %s", data)
	}
	bad, err := metadata.Targets().FromBytes(tampered)
	if err != nil {
		t.Fatal(err)
	}
	if err := root.VerifyDelegate(metadata.TARGETS, bad); err == nil {
		t.Fatal("go-tuf accepts the signature over a payload with one byte changed")
	}

	// A root that does not list this key must not accept it either.
	other := metadata.Root(time.Now().Add(time.Hour))
	if err := other.VerifyDelegate(metadata.TARGETS, md); err == nil {
		t.Fatal("go-tuf accepts the signature under a root that does not list the key")
	}
}

// testStdlib verifies signatures with the standard library alone, on the
// canonical JSON bytes TUF signs, so that go-tuf and keys.ForTUF cannot
// agree on a mistake that other TUF clients would reject.
func testStdlib(t *testing.T, s keys.Signer) {
	md := newTargets(t)
	sig, err := md.Sign(keys.ForTUF(s))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := cjson.EncodeCanonical(md.Signed)
	if err != nil {
		t.Fatal(err)
	}
	if !verify(s.Public(), payload, sig.Signature) {
		t.Fatalf("the standard library rejects the %T signature over the canonical payload", s.Public())
	}
	payload[len(payload)/2] ^= 1
	if verify(s.Public(), payload, sig.Signature) {
		t.Fatal("the standard library accepts the signature over a changed payload")
	}
}

func verify(pub crypto.PublicKey, msg, sig []byte) bool {
	d := sha256.Sum256(msg)
	switch pub := pub.(type) {
	case ed25519.PublicKey:
		return ed25519.Verify(pub, msg, sig)
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(pub, d[:], sig)
	case *rsa.PublicKey:
		// TUF's rsassa-pss-sha256 as ForTUF produces it: salt = hash size.
		opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
		return rsa.VerifyPSS(pub, crypto.SHA256, d[:], sig, opts) == nil
	}
	return false
}

// testConcurrent signs from several goroutines: a token signer shares one
// session, which runs one operation at a time, so it must serialize.
func testConcurrent(t *testing.T, s keys.Signer) {
	const workers, each = 4, 3
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				msg := []byte("concurrent signing")
				sig, err := keys.ForTUF(s).SignMessage(bytes.NewReader(msg))
				if err != nil {
					errs <- err
					continue
				}
				if !verify(s.Public(), msg, sig) {
					errs <- errors.New("a signature made concurrently does not verify")
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
