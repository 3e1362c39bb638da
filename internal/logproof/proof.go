package logproof

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/rampartfw/rampart/internal/strictjson"
)

// MaxProofSize bounds the JSON encoding ParseProof accepts.
const MaxProofSize = 64 << 10

// Proof is what ships with a release (or an offline bundle) to show its
// statement is in the log: the leaf index, the signed checkpoint the proof
// is relative to and the RFC 6962 inclusion proof (leaf to root order).
type Proof struct {
	Index      uint64
	Checkpoint []byte
	Hashes     [][]byte
}

// wireProof is the JSON form: the checkpoint note as a string (it is UTF-8
// text) and the hashes in standard base64.
type wireProof struct {
	Index      uint64   `json:"index"`
	Checkpoint string   `json:"checkpoint"`
	Hashes     [][]byte `json:"hashes"`
}

// MarshalJSON encodes p as {"index":N,"checkpoint":"...","hashes":["base64",...]}.
// It refuses proofs ParseProof would refuse.
func (p Proof) MarshalJSON() ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	hs := p.Hashes
	if hs == nil {
		hs = [][]byte{}
	}
	return json.Marshal(wireProof{Index: p.Index, Checkpoint: string(p.Checkpoint), Hashes: hs})
}

// UnmarshalJSON decodes with the same rules as ParseProof.
func (p *Proof) UnmarshalJSON(b []byte) error {
	q, err := ParseProof(b)
	if err != nil {
		return err
	}
	*p = *q
	return nil
}

// ParseProof decodes a Proof strictly: one JSON object with exactly the
// members index, checkpoint and hashes, nothing after it, every hash 32
// bytes, a checkpoint of valid UTF-8 text within MaxCheckpointSize.
// Failures wrap ErrMalformed. The checkpoint's signature is not checked
// here; VerifyInclusion does that.
func ParseProof(b []byte) (*Proof, error) {
	if len(b) > MaxProofSize {
		return nil, fmt.Errorf("%w: proof is %d bytes, limit %d", ErrMalformed, len(b), MaxProofSize)
	}
	// Pointers, so that a missing member is detected. strictjson refuses
	// a member given twice or in another case ("Index"), which
	// encoding/json would read, and anything after the object.
	var w struct {
		Index      *uint64   `json:"index"`
		Checkpoint *string   `json:"checkpoint"`
		Hashes     *[][]byte `json:"hashes"`
	}
	if err := strictjson.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%w: proof: %v", ErrMalformed, err)
	}
	if w.Index == nil || w.Checkpoint == nil || w.Hashes == nil {
		return nil, fmt.Errorf("%w: proof: index, checkpoint and hashes are required", ErrMalformed)
	}
	p := &Proof{Index: *w.Index, Checkpoint: []byte(*w.Checkpoint), Hashes: *w.Hashes}
	if err := p.check(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Proof) check() error {
	if len(p.Checkpoint) == 0 || len(p.Checkpoint) > MaxCheckpointSize {
		return fmt.Errorf("%w: proof: checkpoint size %d out of range", ErrMalformed, len(p.Checkpoint))
	}
	if !utf8.Valid(p.Checkpoint) {
		return fmt.Errorf("%w: proof: checkpoint is not UTF-8 text", ErrMalformed)
	}
	return checkHashes(p.Hashes)
}
