// Package audit defines the server's tamper-evident audit log: every
// operator action and device event becomes an Entry whose hash covers its
// content and the previous entry's hash, so editing, deleting or reordering
// any stored entry breaks the chain at that point.
//
// The package is pure: Append computes the next entry, Verify recomputes a
// chain and names the first entry that does not fit. Storage lives with the
// server's metadata store. A chain proves the log's internal consistency;
// to stop an attacker with write access from rewriting the whole tail,
// its head hash is also published elsewhere (the transparency log or an
// operator's copy) and compared with VerifyHead.
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Genesis is the Prev of the first entry.
const Genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// Entry is one audit record. Its JSON form is the export format (one entry
// per line).
type Entry struct {
	Seq       uint64            `json:"seq"`
	Time      time.Time         `json:"time"`
	Actor     string            `json:"actor"`
	Action    string            `json:"action"`
	Subject   string            `json:"subject,omitempty"`
	RequestID string            `json:"request_id,omitempty"`
	Outcome   string            `json:"outcome"`
	Detail    map[string]string `json:"detail,omitempty"`
	Prev      string            `json:"prev"`
	Hash      string            `json:"hash"`
}

// ErrBroken is wrapped by every chain verification failure.
var ErrBroken = errors.New("audit chain broken")

// BrokenError names the first entry that does not fit the chain.
type BrokenError struct {
	// Index is the position in the verified slice; Seq the entry's own.
	Index  int
	Seq    uint64
	Reason string
}

func (e *BrokenError) Error() string {
	return fmt.Sprintf("audit chain broken at entry %d (seq %d): %s", e.Index, e.Seq, e.Reason)
}

func (e *BrokenError) Unwrap() error { return ErrBroken }

// hashed is what an entry's hash covers: every field but the hash, in a
// fixed order. encoding/json writes struct fields in declaration order and
// map keys sorted, so the encoding is deterministic.
type hashed struct {
	Seq       uint64            `json:"seq"`
	Time      string            `json:"time"`
	Actor     string            `json:"actor"`
	Action    string            `json:"action"`
	Subject   string            `json:"subject"`
	RequestID string            `json:"request_id"`
	Outcome   string            `json:"outcome"`
	Detail    map[string]string `json:"detail"`
	Prev      string            `json:"prev"`
}

// Domain separation: an audit hash can never be confused with another
// SHA-256 the system computes.
const domain = "rampart audit entry v1\n"

func (e *Entry) computeHash() (string, error) {
	b, err := json.Marshal(hashed{e.Seq, e.Time.UTC().Format(time.RFC3339Nano), e.Actor, e.Action, e.Subject, e.RequestID, e.Outcome, e.Detail, e.Prev})
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(domain))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Append returns e chained after prev (nil for the first entry): its Seq,
// Prev and Hash are set; the caller's other fields are kept.
func Append(prev *Entry, e Entry) (Entry, error) {
	if prev == nil {
		e.Seq, e.Prev = 1, Genesis
	} else {
		e.Seq, e.Prev = prev.Seq+1, prev.Hash
	}
	e.Time = e.Time.UTC()
	h, err := e.computeHash()
	if err != nil {
		return Entry{}, err
	}
	e.Hash = h
	return e, nil
}

// Verify checks that entries form an unbroken chain. When after is non-nil
// the first entry must follow it (for verifying a log in pages); otherwise
// it must be the genesis entry. It returns a *BrokenError for the first
// entry that was edited, or follows a deleted or reordered one.
func Verify(after *Entry, entries []Entry) error {
	prevHash, prevSeq := Genesis, uint64(0)
	if after != nil {
		prevHash, prevSeq = after.Hash, after.Seq
	}
	for i := range entries {
		e := &entries[i]
		h, err := e.computeHash()
		if err != nil {
			return &BrokenError{i, e.Seq, err.Error()}
		}
		switch {
		case h != e.Hash:
			return &BrokenError{i, e.Seq, "its content does not match its hash (edited)"}
		case e.Seq != prevSeq+1:
			return &BrokenError{i, e.Seq, fmt.Sprintf("sequence %d follows %d (an entry was deleted or moved)", e.Seq, prevSeq)}
		case e.Prev != prevHash:
			return &BrokenError{i, e.Seq, "it does not name the previous entry's hash (an entry was deleted, inserted or moved)"}
		}
		prevHash, prevSeq = e.Hash, e.Seq
	}
	return nil
}

// VerifyHead checks that the last entry is the head recorded elsewhere:
// truncating the log or rewriting its tail cannot be detected from the
// chain alone.
func VerifyHead(entries []Entry, seq uint64, hash string) error {
	if len(entries) == 0 {
		return fmt.Errorf("%w: the log is empty but head %d was recorded", ErrBroken, seq)
	}
	for i := range entries {
		if entries[i].Seq == seq {
			if entries[i].Hash != hash {
				return &BrokenError{i, seq, "it differs from the recorded head"}
			}
			return nil
		}
	}
	last := entries[len(entries)-1]
	return fmt.Errorf("%w: recorded head seq %d is missing; the log ends at seq %d (truncated)", ErrBroken, seq, last.Seq)
}
