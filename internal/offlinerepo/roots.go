package offlinerepo

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/logproof"
)

// AdoptPushedRoots records the root versions a server now holds (roots,
// as RootsAfter returned them and the server accepted them) as published:
// each is written to public/N.root.json, and a staged root among them is
// no longer staged. A director repository has nothing else to publish
// (its online roles are signed by the server), so this is what makes its
// next rotation stage version N+1 instead of editing the version the
// devices already hold. Each root must be the next version and verify
// against the chain (the previous root's threshold and its own).
func (r *Repo) AdoptPushedRoots(roots [][]byte) error {
	s, err := r.load()
	if err != nil {
		return err
	}
	chain := append([][]byte{}, s.pub.roots...)
	for _, b := range roots {
		m, err := metadata.Root().FromBytes(b)
		if err != nil {
			return fmt.Errorf("%w: a pushed root: %v", ErrBadInput, err)
		}
		v := m.Signed.Version
		if v <= int64(len(chain)) {
			if !bytes.Equal(chain[v-1], b) {
				return fmt.Errorf("root version %d pushed differs from public/%d.root.json", v, v)
			}
			continue
		}
		if v != int64(len(chain))+1 {
			return fmt.Errorf("%w: root version %d does not follow version %d", ErrBadInput, v, len(chain))
		}
		if err := m.VerifyDelegate(metadata.ROOT, m); err != nil {
			return fmt.Errorf("root version %d is not signed by its own threshold: %w", v, err)
		}
		if len(chain) > 0 {
			prev, err := metadata.Root().FromBytes(chain[len(chain)-1])
			if err != nil {
				return err
			}
			if err := prev.VerifyDelegate(metadata.ROOT, m); err != nil {
				return fmt.Errorf("root version %d is not signed by a threshold of version %d's keys: %w", v, v-1, err)
			}
		}
		chain = append(chain, b)
	}
	if err := os.MkdirAll(r.publicDir(), 0o755); err != nil {
		return err
	}
	for v := len(s.pub.roots) + 1; v <= len(chain); v++ {
		if err := atomicfile.WriteFile(filepath.Join(r.publicDir(), fmt.Sprintf("%d.root.json", v)), chain[v-1], 0o644); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(r.publicDir(), "root.json"), chain[v-1], 0o644); err != nil {
			return err
		}
	}
	if s.rootStaged && s.root.Signed.Version <= int64(len(chain)) {
		if err := os.Remove(r.stagedPath(metadata.ROOT)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// SetLogKey stages a root that names vkey (the transparency log's note
// verifier key, "origin+hash+key", as rampart server keys writes it to
// log.pub) in logproof.RootField. Devices verify the log under the key
// the newest root they trust names, instead of the one pinned in their
// configuration; a new root naming a new key is how the log key rotates
// (docs/incident-response.md). Like any root change, it needs a threshold
// of the previous root's keys and of its own.
func (r *Repo) SetLogKey(vkey string) error {
	vkey = strings.TrimSpace(vkey)
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("%w: not a log verifier key (origin+hash+key): %v", ErrBadInput, err)
	}
	if _, err := logproof.KeyFromRoot(map[string]any{logproof.RootField: vkey}); err != nil {
		return fmt.Errorf("%w: %v", ErrBadInput, err)
	}
	s, err := r.load()
	if err != nil {
		return err
	}
	if cur, ok := s.root.Signed.UnrecognizedFields[logproof.RootField]; ok && cur == vkey {
		return fmt.Errorf("%w: root version %d already names log key %s", ErrBadInput, s.root.Signed.Version, v.Name())
	}
	r.stageRoot(s)
	fields := map[string]any{}
	for k, x := range s.root.Signed.UnrecognizedFields {
		fields[k] = x
	}
	fields[logproof.RootField] = vkey
	s.root.Signed.UnrecognizedFields = fields
	return r.saveStaged(s, metadata.ROOT)
}
