package logproof

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// StatementType is the value of the "type" member of every encoded
// Statement. It separates release statements from any other kind of leaf
// a future version may log, and versions the encoding.
const StatementType = "rampart.dev/release-statement/v1"

// Limits on Statement fields; an encoded statement always fits in a
// tlog-tiles entry (at most 65535 bytes).
const (
	MaxStatementSize = 16 << 10 // bytes of the encoding
	maxNameLen       = 1024     // Target and Role, in bytes
	maxSigners       = 64
	minKeyIDLen      = 16
	maxKeyIDLen      = 128
)

// Statement is the release statement the image repository logs for every
// release it accepts. The log leaf is exactly MarshalStatement's output.
type Statement struct {
	// Target is the TUF target path of the release, e.g. "acme-gw/1.4.2.img".
	Target string
	// Length is the target's length in bytes.
	Length int64
	// SHA256 is the target's SHA-256, 64 lowercase hex digits.
	SHA256 string
	// SecurityVersion is the release's monotonic anti-rollback counter.
	SecurityVersion uint64
	// SignerKeyIDs are the key ids (lowercase hex) whose signatures on
	// Role met its threshold, sorted ascending and without duplicates.
	SignerKeyIDs []string
	// RoleVersion is the version of the signed role metadata (>= 1).
	RoleVersion int64
	// Role is the name of the TUF role that lists the target.
	Role string
}

// wireStatement fixes the member order and names of the JSON encoding.
// Member order is the declaration order (encoding/json guarantees it).
type wireStatement struct {
	Type            string   `json:"type"`
	Target          string   `json:"target"`
	Length          int64    `json:"length"`
	SHA256          string   `json:"sha256"`
	SecurityVersion uint64   `json:"security_version"`
	Role            string   `json:"role"`
	RoleVersion     int64    `json:"role_version"`
	SignerKeyIDs    []string `json:"signer_keyids"`
}

// Validate reports whether s can be encoded: every field is within its
// domain and SignerKeyIDs is sorted and unique. The error wraps ErrMalformed.
func (s *Statement) Validate() error {
	if err := checkName("target", s.Target); err != nil {
		return err
	}
	if err := checkName("role", s.Role); err != nil {
		return err
	}
	if s.Length < 0 {
		return fmt.Errorf("%w: statement: negative length %d", ErrMalformed, s.Length)
	}
	if len(s.SHA256) != 64 || !isLowerHex(s.SHA256) {
		return fmt.Errorf("%w: statement: sha256 must be 64 lowercase hex digits", ErrMalformed)
	}
	if s.RoleVersion < 1 {
		return fmt.Errorf("%w: statement: role version %d < 1", ErrMalformed, s.RoleVersion)
	}
	if len(s.SignerKeyIDs) == 0 || len(s.SignerKeyIDs) > maxSigners {
		return fmt.Errorf("%w: statement: need 1..%d signer key ids, got %d", ErrMalformed, maxSigners, len(s.SignerKeyIDs))
	}
	for i, id := range s.SignerKeyIDs {
		if len(id) < minKeyIDLen || len(id) > maxKeyIDLen || !isLowerHex(id) {
			return fmt.Errorf("%w: statement: signer key id %d is not %d..%d lowercase hex digits", ErrMalformed, i, minKeyIDLen, maxKeyIDLen)
		}
		if i > 0 && s.SignerKeyIDs[i-1] >= id {
			return fmt.Errorf("%w: statement: signer key ids not sorted and unique", ErrMalformed)
		}
	}
	return nil
}

// MarshalStatement returns the canonical encoding of s: compact JSON with
// the members type, target, length, sha256, security_version, role,
// role_version and signer_keyids, in that order. It fails (ErrMalformed)
// when s does not Validate; use NormalizeSigners to sort key ids first.
//
// The encoding is JSON because monitors and auditors read the log with
// ordinary tools; it is canonical because ParseStatement accepts only
// the exact bytes MarshalStatement produces, so one statement has exactly
// one leaf and one leaf hash.
func MarshalStatement(s *Statement) ([]byte, error) {
	if s == nil {
		return nil, fmt.Errorf("%w: nil statement", ErrMalformed)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(wireStatement{
		Type:            StatementType,
		Target:          s.Target,
		Length:          s.Length,
		SHA256:          s.SHA256,
		SecurityVersion: s.SecurityVersion,
		Role:            s.Role,
		RoleVersion:     s.RoleVersion,
		SignerKeyIDs:    s.SignerKeyIDs,
	}); err != nil {
		return nil, fmt.Errorf("%w: statement: %v", ErrMalformed, err)
	}
	out := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(out) > MaxStatementSize {
		return nil, fmt.Errorf("%w: statement encoding is %d bytes, limit %d", ErrMalformed, len(out), MaxStatementSize)
	}
	return out, nil
}

// ParseStatement decodes a leaf produced by MarshalStatement. It is
// strict: unknown or missing members, a different type, other member
// order, whitespace, escapes or trailing data are refused (ErrMalformed),
// because the input must equal the canonical encoding of its result.
func ParseStatement(b []byte) (*Statement, error) {
	if len(b) > MaxStatementSize {
		return nil, fmt.Errorf("%w: statement is %d bytes, limit %d", ErrMalformed, len(b), MaxStatementSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var w wireStatement
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("%w: statement: %v", ErrMalformed, err)
	}
	if w.Type != StatementType {
		return nil, fmt.Errorf("%w: statement type %q, want %q", ErrMalformed, w.Type, StatementType)
	}
	s := &Statement{
		Target:          w.Target,
		Length:          w.Length,
		SHA256:          w.SHA256,
		SecurityVersion: w.SecurityVersion,
		SignerKeyIDs:    w.SignerKeyIDs,
		RoleVersion:     w.RoleVersion,
		Role:            w.Role,
	}
	canon, err := MarshalStatement(s)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, b) {
		return nil, fmt.Errorf("%w: statement is not in canonical form", ErrMalformed)
	}
	return s, nil
}

// NormalizeSigners sorts ids and removes duplicates, in place, and returns
// the result; use it to build Statement.SignerKeyIDs.
func NormalizeSigners(ids []string) []string {
	slices.Sort(ids)
	return slices.Compact(ids)
}

func checkName(field, v string) error {
	if v == "" || len(v) > maxNameLen {
		return fmt.Errorf("%w: statement: %s must be 1..%d bytes", ErrMalformed, field, maxNameLen)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: statement: %s is not valid UTF-8", ErrMalformed, field)
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }) {
		return fmt.Errorf("%w: statement: %s contains control characters", ErrMalformed, field)
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
