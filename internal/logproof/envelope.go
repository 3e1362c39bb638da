package logproof

import (
	"encoding/json"
	"fmt"

	"github.com/rampartfw/rampart/internal/strictjson"
)

// Envelope is a release's log proof as it travels: the server's answer
// to GET /api/v1/log/proof/TARGET, which an offline bundle carries as it
// is (log-proof.json). Its JSON is
//
//	{"proof":{"index":N,"checkpoint":"...","hashes":[...]},"statement":"<leaf>"}
//
// where statement is the logged leaf (MarshalStatement's bytes) as a
// string.
type Envelope struct {
	// Statement is the logged leaf.
	Statement []byte
	Proof     *Proof
}

type wireEnvelope struct {
	Proof     *Proof `json:"proof"`
	Statement string `json:"statement"`
}

// MarshalJSON encodes e; a nil or malformed proof is refused.
func (e Envelope) MarshalJSON() ([]byte, error) {
	if e.Proof == nil {
		return nil, fmt.Errorf("%w: envelope without a proof", ErrMalformed)
	}
	return json.Marshal(wireEnvelope{Proof: e.Proof, Statement: string(e.Statement)})
}

// Marshal encodes e as the server answers it and bundles carry it.
func (e *Envelope) Marshal() ([]byte, error) { return json.Marshal(e) }

// ParseEnvelope decodes an envelope strictly (strictjson: no duplicate
// or differently cased member, nothing after the object): both members
// are required and the proof is parsed by ParseProof's rules. The
// statement is returned as it is; ParseStatement decodes it. Failures
// wrap ErrMalformed. Nothing is verified here: VerifyInclusion does that.
func ParseEnvelope(b []byte) (*Envelope, error) {
	var w struct {
		Proof     json.RawMessage `json:"proof"`
		Statement *string         `json:"statement"`
	}
	if err := strictjson.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%w: log proof envelope: %v", ErrMalformed, err)
	}
	if w.Statement == nil {
		return nil, fmt.Errorf("%w: log proof envelope: statement is required", ErrMalformed)
	}
	p, err := ParseProof(w.Proof)
	if err != nil {
		return nil, err
	}
	return &Envelope{Statement: []byte(*w.Statement), Proof: p}, nil
}
