package offlinerepo

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/verify"
)

// authority says which keys may sign a role and how many must.
type authority struct {
	keys      map[string]*metadata.Key
	keyIDs    []string
	threshold int
}

func rootAuthority(root *metadata.Metadata[metadata.RootType], role string) authority {
	r, ok := root.Signed.Roles[role]
	if !ok {
		return authority{}
	}
	return authority{root.Signed.Keys, r.KeyIDs, r.Threshold}
}

// authorities returns the key sets that must each reach their threshold on
// role: for a new root, the previous root's keys and its own.
func (s *state) authorities(role string) ([]authority, []string, error) {
	switch role {
	case metadata.ROOT:
		a := []authority{rootAuthority(s.root, metadata.ROOT)}
		names := []string{"new root keys"}
		if s.parentRoot != nil {
			a = append(a, rootAuthority(s.parentRoot, metadata.ROOT))
			names = append(names, fmt.Sprintf("root version %d keys", s.parentRoot.Signed.Version))
		}
		return a, names, nil
	case metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP:
		return []authority{rootAuthority(s.root, role)}, []string{role + " keys"}, nil
	}
	d := s.delegation(role)
	if d == nil {
		return nil, nil, fmt.Errorf("%w %q: not a top-level role nor a delegated product (see rampart repo status)", ErrUnknownRole, role)
	}
	return []authority{{s.targets.Signed.Delegations.Keys, d.KeyIDs, d.Threshold}}, []string{role + " keys"}, nil
}

func (s *state) doc(role string) (any, bool) {
	switch role {
	case metadata.ROOT:
		return s.root, s.rootStaged
	case metadata.TARGETS:
		return s.targets, s.targetsStaged
	}
	m, ok := s.roles[role]
	if !ok {
		return nil, false
	}
	return m, s.rolesStaged[role]
}

func signaturesOf(doc any) []metadata.Signature {
	switch m := doc.(type) {
	case *metadata.Metadata[metadata.RootType]:
		return m.Signatures
	case *metadata.Metadata[metadata.TargetsType]:
		return m.Signatures
	}
	return nil
}

// Sign adds one signature by signer to the staged role. It refuses a key
// that is not authorised for the role and a key that already signed.
func (r *Repo) Sign(role string, signer keys.Signer) (keyID string, err error) {
	return r.SignReviewed(role, signer, "")
}

// ErrNotReviewed is the refusal to sign content other than what the key
// holder reviewed.
var ErrNotReviewed = errors.New("the staged role is not the one reviewed")

// SignReviewed is Sign, but signs only if the staged role's signed bytes
// still have the SHA-256 digest (RoleDiff.Digest) the key holder reviewed;
// an empty digest skips that check.
func (r *Repo) SignReviewed(role string, signer keys.Signer, digest string) (keyID string, err error) {
	s, err := r.load()
	if err != nil {
		return "", err
	}
	doc, staged := s.doc(role)
	if doc == nil {
		_, _, err := s.authorities(role)
		if err == nil {
			err = fmt.Errorf("%w %q", ErrUnknownRole, role)
		}
		return "", err
	}
	if !staged {
		return "", fmt.Errorf("%w %s (its published version %d is final): stage a new version first with rampart repo stage", ErrNothingStaged, role, versionOf(doc))
	}
	if digest != "" {
		b, err := signedBytes(doc)
		if err != nil {
			return "", err
		}
		if sha256Hex(b) != digest {
			return "", fmt.Errorf("%w: %s changed after it was shown; review it again (rampart repo diff)", ErrNotReviewed, role)
		}
	}
	keyID, err = keys.ID(signer.Public())
	if err != nil {
		return "", err
	}
	auths, _, err := s.authorities(role)
	if err != nil {
		return "", err
	}
	authorised := false
	for _, a := range auths {
		if slices.Contains(a.keyIDs, keyID) {
			authorised = true
		}
	}
	if !authorised {
		if r.wasAuthorised(s, role, keyID) {
			return "", fmt.Errorf("%w: key %s was revoked from role %s", ErrNotAuthorised, keyID, role)
		}
		return "", fmt.Errorf("%w: key %s is not a key of role %s (its keys: %s)", ErrNotAuthorised, keyID, role, joinIDs(auths))
	}
	for _, sig := range signaturesOf(doc) {
		if sig.KeyID == keyID {
			return "", fmt.Errorf("%w: %s already carries a signature by key %s", ErrAlreadySigned, role, keyID)
		}
	}
	ts := keys.ForTUF(signer)
	switch m := doc.(type) {
	case *metadata.Metadata[metadata.RootType]:
		_, err = m.Sign(ts)
	case *metadata.Metadata[metadata.TargetsType]:
		_, err = m.Sign(ts)
	}
	if err != nil {
		return "", fmt.Errorf("signing %s with key %s: %w", role, keyID, err)
	}
	// Check the new signature with go-tuf before keeping it: a token that
	// signs with a different key than it claims must not go unnoticed.
	a := auths[0]
	for _, au := range auths {
		if slices.Contains(au.keyIDs, keyID) {
			a = au
		}
	}
	if !slices.Contains(verify.ValidSigners(a.keys, []string{keyID}, doc), keyID) {
		return "", fmt.Errorf("the signature just made by key %s does not verify; the key or token is faulty", keyID)
	}
	if err := r.saveStaged(s, role); err != nil {
		return "", err
	}
	return keyID, nil
}

func (r *Repo) wasAuthorised(s *state, role, keyID string) bool {
	if s.prevRoot != nil {
		if rl, ok := s.prevRoot.Signed.Roles[role]; ok && slices.Contains(rl.KeyIDs, keyID) {
			return true
		}
	}
	if isProduct(role) && s.pubVersion[metadata.TARGETS] > 0 {
		if pub := s.pub.role(metadata.TARGETS); pub != nil && pub.Signed.Delegations != nil {
			for _, d := range pub.Signed.Delegations.Roles {
				if d.Name == role && slices.Contains(d.KeyIDs, keyID) {
					return true
				}
			}
		}
	}
	return false
}

func joinIDs(auths []authority) string {
	var ids []string
	for _, a := range auths {
		for _, id := range a.keyIDs {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	sort.Strings(ids)
	out := ""
	for i, id := range ids {
		if i > 0 {
			out += ", "
		}
		out += id
	}
	return out
}

func versionOf(doc any) int64 {
	switch m := doc.(type) {
	case *metadata.Metadata[metadata.RootType]:
		return m.Signed.Version
	case *metadata.Metadata[metadata.TargetsType]:
		return m.Signed.Version
	}
	return 0
}

func expiresOf(doc any) time.Time {
	switch m := doc.(type) {
	case *metadata.Metadata[metadata.RootType]:
		return m.Signed.Expires
	case *metadata.Metadata[metadata.TargetsType]:
		return m.Signed.Expires
	}
	return time.Time{}
}

// Requirement is one threshold a role must meet.
type Requirement struct {
	// Name says whose keys these are, e.g. "root version 1 keys".
	Name      string   `json:"name"`
	Threshold int      `json:"threshold"`
	Signed    []string `json:"signed"`
	Missing   []string `json:"missing"`
}

// Met reports whether the requirement's threshold is reached.
func (q Requirement) Met() bool { return len(q.Signed) >= q.Threshold }

// RoleStatus describes one role of the repository.
type RoleStatus struct {
	Role         string        `json:"role"`
	Version      int64         `json:"version"`
	Published    int64         `json:"published_version"`
	Staged       bool          `json:"staged"`
	Expires      time.Time     `json:"expires"`
	Requirements []Requirement `json:"requirements"`
	// Invalid lists key ids whose signature is present but does not verify.
	Invalid []string `json:"invalid_signatures,omitempty"`
	Ready   bool     `json:"ready"`
	Expired bool     `json:"expired"`
}

// Status reports every role of the repository as the next publish would
// see it: root, targets and each product role.
func (r *Repo) Status() ([]RoleStatus, error) {
	s, err := r.load()
	if err != nil {
		return nil, err
	}
	return r.status(s)
}

func (r *Repo) status(s *state) ([]RoleStatus, error) {
	roles := []string{metadata.ROOT, metadata.TARGETS}
	for _, d := range s.delegatedRoles() {
		roles = append(roles, d.Name)
	}
	var out []RoleStatus
	for _, role := range roles {
		doc, staged := s.doc(role)
		if doc == nil {
			return nil, fmt.Errorf("role %s is delegated but its metadata is missing", role)
		}
		auths, names, err := s.authorities(role)
		if err != nil {
			return nil, err
		}
		st := RoleStatus{Role: role, Version: versionOf(doc), Published: s.pubVersion[role], Staged: staged, Expires: expiresOf(doc)}
		st.Expired = r.now().After(st.Expires)
		ready := !st.Expired
		valid := map[string]bool{}
		for i, a := range auths {
			signed := verify.ValidSigners(a.keys, a.keyIDs, doc)
			q := Requirement{Name: names[i], Threshold: a.threshold, Signed: append([]string{}, signed...), Missing: []string{}}
			for _, id := range a.keyIDs {
				if !slices.Contains(signed, id) {
					q.Missing = append(q.Missing, id)
				}
			}
			sort.Strings(q.Missing)
			for _, id := range signed {
				valid[id] = true
			}
			ready = ready && q.Met()
			st.Requirements = append(st.Requirements, q)
		}
		for _, sig := range signaturesOf(doc) {
			if !valid[sig.KeyID] {
				st.Invalid = append(st.Invalid, sig.KeyID)
			}
		}
		st.Ready = ready
		out = append(out, st)
	}
	return out, nil
}
