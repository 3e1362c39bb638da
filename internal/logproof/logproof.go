// Package logproof verifies that a release is recorded in Rampart's
// transparency log, on the device side, without any log storage code.
//
// The log is a C2SP tlog-tiles Merkle tree (RFC 6962 hashing) whose
// checkpoints are C2SP tlog-checkpoint signed notes. Each leaf is the
// canonical encoding of a release Statement (MarshalStatement). A release
// ships with a Proof: the leaf index, a checkpoint signed by the log key and
// the inclusion proof of the leaf under that checkpoint. A device accepts
// the release only when VerifyInclusion succeeds under its pinned log key
// and origin, and VerifyConsistency succeeds from the last checkpoint it
// accepted to the proof's checkpoint; it then stores the newer checkpoint.
//
// The package is deliberately small (it is linked into the device agent):
// it depends only on the standard library, golang.org/x/mod/sumdb/note,
// github.com/transparency-dev/formats/log and
// github.com/transparency-dev/merkle. All hashing, proof checking and
// signature checking is done by those libraries.
//
// Every error returned wraps exactly one of ErrBadCheckpoint,
// ErrNotIncluded, ErrInconsistent or ErrMalformed; test with errors.Is.
package logproof

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

var (
	// ErrBadCheckpoint: a checkpoint is not a well-formed note signed by
	// the log key, or its origin is not the expected one.
	ErrBadCheckpoint = errors.New("logproof: bad checkpoint")
	// ErrNotIncluded: the inclusion proof does not prove the leaf at the
	// index under the checkpoint.
	ErrNotIncluded = errors.New("logproof: leaf not included in log")
	// ErrInconsistent: the newer checkpoint is not an append-only
	// extension of the older one (fork, rollback or bad proof).
	ErrInconsistent = errors.New("logproof: checkpoints inconsistent")
	// ErrMalformed: an encoding (statement, proof, hash) is invalid.
	ErrMalformed = errors.New("logproof: malformed input")
)

// HashSize is the size of every Merkle tree hash (SHA-256).
const HashSize = 32

// MaxCheckpointSize bounds the size of a checkpoint note accepted anywhere
// in this package.
const MaxCheckpointSize = 16 << 10

// maxProofHashes bounds proofs: a tree of at most 2^63 leaves needs fewer
// than 2*64 hashes for a consistency proof and 64 for inclusion.
const maxProofHashes = 128

// OpenCheckpoint verifies raw as a checkpoint signed by logKey for origin
// and returns it parsed. Failures wrap ErrBadCheckpoint.
func OpenCheckpoint(origin string, logKey note.Verifier, raw []byte) (*log.Checkpoint, error) {
	if logKey == nil {
		return nil, fmt.Errorf("%w: no log key", ErrBadCheckpoint)
	}
	if len(raw) == 0 || len(raw) > MaxCheckpointSize {
		return nil, fmt.Errorf("%w: checkpoint size %d out of range", ErrBadCheckpoint, len(raw))
	}
	cp, _, _, err := log.ParseCheckpoint(raw, origin, logKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCheckpoint, err)
	}
	if len(cp.Hash) != HashSize {
		return nil, fmt.Errorf("%w: root hash is %d bytes, want %d", ErrBadCheckpoint, len(cp.Hash), HashSize)
	}
	if cp.Size == 0 && !bytes.Equal(cp.Hash, rfc6962.DefaultHasher.EmptyRoot()) {
		return nil, fmt.Errorf("%w: empty tree with non-empty root", ErrBadCheckpoint)
	}
	return cp, nil
}

// LeafHash returns the RFC 6962 leaf hash of leaf.
func LeafHash(leaf []byte) []byte {
	return rfc6962.DefaultHasher.HashLeaf(leaf)
}

// VerifyInclusion checks that p.Checkpoint is signed by logKey for origin
// and that p.Hashes prove leaf at p.Index in the tree it commits to. It
// returns the verified checkpoint; the caller must still check it is
// consistent with the last checkpoint it accepted (VerifyConsistency).
func VerifyInclusion(origin string, logKey note.Verifier, leaf []byte, p *Proof) (*log.Checkpoint, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: nil proof", ErrMalformed)
	}
	if err := checkHashes(p.Hashes); err != nil {
		return nil, err
	}
	cp, err := OpenCheckpoint(origin, logKey, p.Checkpoint)
	if err != nil {
		return nil, err
	}
	if p.Index >= cp.Size {
		return nil, fmt.Errorf("%w: index %d outside tree of size %d", ErrNotIncluded, p.Index, cp.Size)
	}
	h := rfc6962.DefaultHasher
	if err := proof.VerifyInclusion(h, p.Index, cp.Size, h.HashLeaf(leaf), p.Hashes, cp.Hash); err != nil {
		return nil, fmt.Errorf("%w: index %d, size %d: %v", ErrNotIncluded, p.Index, cp.Size, err)
	}
	return cp, nil
}

// VerifyConsistency checks that both checkpoints are signed by logKey for
// origin and that newer commits to an append-only extension of the tree
// older commits to: newer's size is at least older's (a smaller newer
// checkpoint is a rollback of the log view), equal sizes have equal roots,
// and proof is a valid RFC 6962 consistency proof between them.
//
// older is normally the checkpoint the device stored after its last
// accepted release; it is re-verified because it lives on writable storage.
func VerifyConsistency(origin string, logKey note.Verifier, older, newer []byte, proof [][]byte) error {
	if err := checkHashes(proof); err != nil {
		return err
	}
	o, err := OpenCheckpoint(origin, logKey, older)
	if err != nil {
		return fmt.Errorf("older %w", err)
	}
	n, err := OpenCheckpoint(origin, logKey, newer)
	if err != nil {
		return fmt.Errorf("newer %w", err)
	}
	return CheckConsistency(o, n, proof)
}

// CheckConsistency is VerifyConsistency for checkpoints already verified
// (e.g. by OpenCheckpoint or VerifyInclusion).
func CheckConsistency(older, newer *log.Checkpoint, proofHashes [][]byte) error {
	if older == nil || newer == nil {
		return fmt.Errorf("%w: nil checkpoint", ErrMalformed)
	}
	if err := checkHashes(proofHashes); err != nil {
		return err
	}
	if older.Origin != newer.Origin {
		return fmt.Errorf("%w: origin %q, then %q", ErrInconsistent, older.Origin, newer.Origin)
	}
	if newer.Size < older.Size {
		return fmt.Errorf("%w: newer checkpoint size %d is smaller than %d (rollback)", ErrInconsistent, newer.Size, older.Size)
	}
	if newer.Size == older.Size {
		if !bytes.Equal(newer.Hash, older.Hash) {
			return fmt.Errorf("%w: two roots for size %d (fork)", ErrInconsistent, newer.Size)
		}
		if len(proofHashes) != 0 {
			return fmt.Errorf("%w: non-empty proof between equal trees", ErrInconsistent)
		}
		return nil
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, older.Size, newer.Size, proofHashes, older.Hash, newer.Hash); err != nil {
		return fmt.Errorf("%w: %d -> %d: %v", ErrInconsistent, older.Size, newer.Size, err)
	}
	return nil
}

func checkHashes(hs [][]byte) error {
	if len(hs) > maxProofHashes {
		return fmt.Errorf("%w: proof has %d hashes, limit %d", ErrMalformed, len(hs), maxProofHashes)
	}
	for i, h := range hs {
		if len(h) != HashSize {
			return fmt.Errorf("%w: proof hash %d is %d bytes, want %d", ErrMalformed, i, len(h), HashSize)
		}
	}
	return nil
}

// RootField is the member of the image repository root's signed part that
// names the log's verifier key ("origin+hash+key", the text form of
// golang.org/x/mod/sumdb/note). The root is signed offline by a threshold
// of root keys, so naming the log key there gives it a rotation path that
// a thief of the online server cannot take: a new root version, signed by
// the root key holders, names the new key, and every device that walks to
// that root verifies checkpoints with it from then on.
//
// TUF clients preserve and ignore members they do not know, so the field
// does not disturb other clients of the repository.
const RootField = "x-rampart-log-key"

// maxVerifierKey bounds the verifier key text read from a root.
const maxVerifierKey = 1 << 10

// KeyFromRoot returns the log verifier key that a root's signed part names
// in RootField (fields is go-tuf's RootType.UnrecognizedFields), or nil
// when it names none. A field that is present but is not a single valid
// Ed25519 verifier key is an error wrapping ErrMalformed.
func KeyFromRoot(fields map[string]any) (note.Verifier, error) {
	v, ok := fields[RootField]
	if !ok {
		return nil, nil
	}
	s, ok := v.(string)
	if !ok || len(s) == 0 || len(s) > maxVerifierKey {
		return nil, fmt.Errorf("%w: the root's %s must be one verifier key of at most %d bytes", ErrMalformed, RootField, maxVerifierKey)
	}
	vk, err := note.NewVerifier(s)
	if err != nil {
		return nil, fmt.Errorf("%w: the root's %s: %v", ErrMalformed, RootField, err)
	}
	return vk, nil
}
