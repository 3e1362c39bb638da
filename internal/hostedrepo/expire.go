package hostedrepo

import (
	"context"
	"errors"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/blob"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
)

// ExpiringBlobs is a blob store whose blobs can be listed and expired by
// age (blob.FS); ExpireBlobs does nothing on a blob store that is not one.
type ExpiringBlobs interface {
	Walk(ctx context.Context, fn func(blob.Info) error) error
	ExpireIfOlder(digest string, before time.Time) (bool, error)
}

// ExpireBlobs removes the blobs that no published release references and
// that were uploaded more than grace ago, and returns how many it
// removed. Referenced are the payloads of every release ever published
// (chunk URLs keep serving them) and the payloads and chunk indexes of
// the releases the current metadata names. It holds the push lock, so no
// push of this process can name a blob while it decides, and does
// nothing while a push is pending: it names blobs not recorded yet.
func (s *Service) ExpireBlobs(ctx context.Context, grace time.Duration) (int, error) {
	ex, ok := s.blobs.(ExpiringBlobs)
	if !ok {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A push on another replica may be about to name blobs this would
	// take for unreferenced: expire them when no push runs anywhere.
	ctx, unhold, err := s.hold(ctx)
	if errors.Is(err, errBusy) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer unhold()
	if _, err := s.store.PendingPush(ctx); err == nil {
		return 0, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return 0, err
	}
	refs := map[string]bool{}
	chunkBlobs, err := s.store.ChunkBlobs(ctx)
	if err != nil {
		return 0, err
	}
	for _, b := range chunkBlobs {
		refs[b] = true
	}
	st, err := s.State(ctx)
	if err != nil {
		return 0, err
	}
	for _, raw := range st.Roles {
		role, err := metadata.Targets().FromBytes(raw)
		if err != nil {
			return 0, err
		}
		for path, tf := range role.Signed.Targets {
			refs[tf.Hashes["sha256"].String()] = true
			if m, err := release.FromTarget(path, tf); err == nil {
				refs[m.Index.SHA256] = true
			}
		}
	}
	// Files are dated by the clock of the machine, not by s.now.
	cutoff := time.Now().Add(-grace)
	var expired []string
	err = ex.Walk(ctx, func(b blob.Info) error {
		if !refs[b.Digest] && b.ModTime.Before(cutoff) {
			expired = append(expired, b.Digest)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range expired {
		gone, err := ex.ExpireIfOlder(d, cutoff)
		if err != nil {
			return n, err
		}
		if gone {
			n++
		}
	}
	return n, nil
}
