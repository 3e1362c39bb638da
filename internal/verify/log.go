package verify

import (
	"errors"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/strictjson"
)

// The transparency log's decisions: that a verified release is in the log
// (LogProof) and that the log did not fork from what the device accepted
// before (LogConsistency, StoredCheckpoint). The Merkle and signed-note
// checks are internal/logproof's; which class a failure is, is decided
// here. Fetching the proofs and storing the checkpoint is the device's
// (internal/uptane).

// LogProof checks a log proof (the server's /api/v1/log/proof answer,
// which offline bundles carry too, logproof.Envelope) for the release
// res: its statement must be this release (path, length, SHA-256,
// security version), and its inclusion must verify under a checkpoint
// signed by logKey for origin. It returns that checkpoint and the proof.
func LogProof(origin string, logKey note.Verifier, proofJSON []byte, res *Result) (*log.Checkpoint, *logproof.Proof, error) {
	env, err := logproof.ParseEnvelope(proofJSON)
	if err != nil {
		return nil, nil, refuse(Malformed, "log", err, "log proof response")
	}
	proof, leaf := env.Proof, env.Statement
	st, err := logproof.ParseStatement(leaf)
	if err != nil {
		return nil, nil, refuse(Malformed, "log", err, "log statement")
	}
	tf, rel := res.File, res.Release
	sum := tf.Hashes["sha256"].String()
	if st.Target != res.Target || st.Length != tf.Length || st.SHA256 != sum || st.SecurityVersion != rel.SecurityVersion {
		return nil, nil, refuse(NotLogged, "log", nil, "the logged statement (%s, %d bytes, sha256 %s, security version %d) is not this release (%s, %d bytes, sha256 %s, security version %d)",
			Quote(st.Target), st.Length, st.SHA256, st.SecurityVersion, Quote(res.Target), tf.Length, sum, rel.SecurityVersion)
	}
	cp, err := logproof.VerifyInclusion(origin, logKey, leaf, proof)
	if err != nil {
		return nil, nil, logRefusal(err)
	}
	return cp, proof, nil
}

// OfflineLogProof is LogProof for the proof an offline bundle carries
// (log-proof.json), under logKey and its own origin: a bundle that
// carries none is NotLogged. It returns the checkpoint and the release's
// index in the log.
func OfflineLogProof(logKey note.Verifier, proofJSON []byte, res *Result) (*log.Checkpoint, uint64, error) {
	if len(proofJSON) == 0 {
		return nil, 0, refuse(NotLogged, "log", nil, "the bundle carries no log proof for %s (rampart bundle --server URL --ca FILE adds it)", res.Target)
	}
	if logKey == nil {
		return nil, 0, errors.New("verify: no log key")
	}
	cp, proof, err := LogProof(logKey.Name(), logKey, proofJSON, res)
	if err != nil {
		return nil, 0, err
	}
	return cp, proof.Index, nil
}

// ConsistencyProof decodes the server's /api/v1/log/consistency answer.
func ConsistencyProof(body []byte) ([][]byte, error) {
	var resp struct {
		Hashes [][]byte `json:"hashes"`
	}
	if err := strictjson.Unmarshal(body, &resp); err != nil {
		return nil, refuse(Malformed, "log", err, "log consistency response")
	}
	return resp.Hashes, nil
}

// LogConsistency refuses a newer checkpoint that is not an append-only
// extension of the older one the device accepted (LogFork), given the
// consistency proof hashes between them (none for trees of one size).
func LogConsistency(older, newer *log.Checkpoint, hashes [][]byte) error {
	if err := logproof.CheckConsistency(older, newer, hashes); err != nil {
		return logRefusal(err)
	}
	return nil
}

// StoredCheckpoint verifies raw, the checkpoint the device stored as the
// last one it accepted (at path, named in the refusal), under the key it
// was stored under. The device's storage is writable by whoever can
// write its state; a stored checkpoint that does not verify was not
// written by the device, and is refused rather than forgotten.
func StoredCheckpoint(origin string, logKey note.Verifier, raw []byte, path string) (*log.Checkpoint, error) {
	cp, err := logproof.OpenCheckpoint(origin, logKey, raw)
	if err != nil {
		return nil, refuse(BadSignature, "log", err, "stored checkpoint %s does not verify", path)
	}
	return cp, nil
}

// RootLogKey returns the log key a trusted image root names
// (logproof.RootField), nil when it names none. A root that names a
// malformed key is refused: it is validly signed, and it is wrong.
func RootLogKey(root *metadata.Metadata[metadata.RootType]) (note.Verifier, error) {
	vk, err := logproof.KeyFromRoot(root.Signed.UnrecognizedFields)
	if err != nil {
		return nil, refuse(Malformed, "image", err, "image root version %d names an unusable log key", root.Signed.Version)
	}
	return vk, nil
}

func logRefusal(err error) error {
	switch {
	case errors.Is(err, logproof.ErrBadCheckpoint):
		return refuse(BadSignature, "log", err, "log checkpoint not signed by the pinned log key")
	case errors.Is(err, logproof.ErrNotIncluded):
		return refuse(NotLogged, "log", err, "release not proven to be in the log")
	case errors.Is(err, logproof.ErrInconsistent):
		return refuse(LogFork, "log", err, "log is not consistent with the last accepted checkpoint")
	}
	return refuse(Malformed, "log", err, "log proof")
}
