package offlinerepo

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/secure-systems-lab/go-securesystemslib/cjson"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/verify"
)

// ImportSignatures adds to the staged role the signatures found in copies
// of it that key holders signed elsewhere, so holders can sign in parallel
// on their own copies of the repository. A copy must have exactly the same
// signed content as the staged role (compared in canonical JSON, the bytes
// signatures cover); each imported signature must come from an authorised
// key and verify. It returns the key ids added.
func (r *Repo) ImportSignatures(role string, copies map[string][]byte) ([]string, error) {
	s, err := r.load()
	if err != nil {
		return nil, err
	}
	doc, staged := s.doc(role)
	if doc == nil {
		if _, _, err := s.authorities(role); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w %q", ErrUnknownRole, role)
	}
	if !staged {
		return nil, fmt.Errorf("%w %s: only a staged version gathers signatures", ErrNothingStaged, role)
	}
	auths, _, err := s.authorities(role)
	if err != nil {
		return nil, err
	}
	want, err := signedBytes(doc)
	if err != nil {
		return nil, err
	}
	var added []string
	for name, b := range copies {
		var other any
		var sigs []metadata.Signature
		if role == metadata.ROOT {
			m, err := metadata.Root().FromBytes(b)
			if err != nil {
				return nil, fmt.Errorf("%w: %s is not root metadata: %v", ErrBadInput, name, err)
			}
			other, sigs = m, m.Signatures
		} else {
			m, err := metadata.Targets().FromBytes(b)
			if err != nil {
				return nil, fmt.Errorf("%w: %s is not %s metadata: %v", ErrBadInput, name, role, err)
			}
			other, sigs = m, m.Signatures
		}
		got, err := signedBytes(other)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(got, want) {
			return nil, fmt.Errorf("%w: %s is not a copy of the staged %s version %d (different content or version %d); its signatures cannot apply", ErrBadInput, name, role, versionOf(doc), versionOf(other))
		}
		for _, sig := range sigs {
			if slices.ContainsFunc(signaturesOf(doc), func(x metadata.Signature) bool { return x.KeyID == sig.KeyID }) {
				continue
			}
			var from *authority
			for i := range auths {
				if slices.Contains(auths[i].keyIDs, sig.KeyID) {
					from = &auths[i]
				}
			}
			if from == nil {
				return nil, fmt.Errorf("%w: %s carries a signature by key %s, which is not a key of %s", ErrNotAuthorised, name, sig.KeyID, role)
			}
			if !slices.Contains(verify.ValidSigners(from.keys, []string{sig.KeyID}, other), sig.KeyID) {
				return nil, fmt.Errorf("%w: %s: the signature by key %s does not verify", ErrBadInput, name, sig.KeyID)
			}
			switch m := doc.(type) {
			case *metadata.Metadata[metadata.RootType]:
				m.Signatures = append(m.Signatures, sig)
			case *metadata.Metadata[metadata.TargetsType]:
				m.Signatures = append(m.Signatures, sig)
			}
			added = append(added, sig.KeyID)
		}
	}
	if len(added) > 0 {
		if err := r.saveStaged(s, role); err != nil {
			return nil, err
		}
	}
	return added, nil
}

// signedBytes is the canonical JSON of a document's signed part: the exact
// bytes its signatures cover.
func signedBytes(doc any) ([]byte, error) {
	switch m := doc.(type) {
	case *metadata.Metadata[metadata.RootType]:
		return cjson.EncodeCanonical(m.Signed)
	case *metadata.Metadata[metadata.TargetsType]:
		return cjson.EncodeCanonical(m.Signed)
	}
	return nil, fmt.Errorf("unexpected document type %T", doc)
}
