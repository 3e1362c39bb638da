package director

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"

	"github.com/rampartfw/rampart/internal/keys"
)

// RootCode is why AcceptRoots refuses (the API's error code).
type RootCode string

// The refusals of AcceptRoots.
const (
	RootBadSignature   RootCode = "bad-signature"
	RootVersionNotNext RootCode = "version-not-next"
	RootExpired        RootCode = "expired"
	RootOnlineKeys     RootCode = "online-keys"
)

// RootError is a refused director root push.
type RootError struct {
	Code RootCode
	// NotFirst: the chain does not start at version 1 (a conflict with
	// what the repository must hold, rather than bad metadata).
	NotFirst bool
	Msg      string
}

func (e *RootError) Error() string { return e.Msg }

func rootErr(code RootCode, format string, args ...any) *RootError {
	return &RootError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// AcceptRoots decides whether new versions of the offline-signed director
// root may follow the chain the server holds. It is pure: the first root
// must be version 1 signed by its own threshold, each later one by a
// threshold of the previous root's keys and of its own (go-tuf's
// trustedmetadata checks both), the newest must not be expired at now and
// must name every one of the server's director online keys. It returns
// the newest root, or a *RootError.
func AcceptRoots(chain, pushed [][]byte, online Keys, now time.Time) (*metadata.Metadata[metadata.RootType], error) {
	all := append(append([][]byte{}, chain...), pushed...)
	if len(all) == 0 {
		return nil, rootErr(RootBadSignature, "no director root")
	}
	trusted, err := trustedmetadata.New(all[0])
	if err != nil {
		return nil, rootErr(RootBadSignature, "director root version 1: %v", err)
	}
	if trusted.Root.Signed.Version != 1 {
		e := rootErr(RootVersionNotNext, "the first director root must be version 1")
		e.NotFirst = true
		return nil, e
	}
	for _, raw := range all[1:] {
		if _, err := trusted.UpdateRoot(raw); err != nil {
			code := RootBadSignature
			if errors.Is(err, &metadata.ErrBadVersionNumber{}) {
				code = RootVersionNotNext
			}
			return nil, rootErr(code, "director root: %v", err)
		}
	}
	root := trusted.Root
	if root.Signed.IsExpired(now) {
		return nil, rootErr(RootExpired, "the director root expired at %s", root.Signed.Expires.Format(time.RFC3339))
	}
	for role, signers := range map[string][]keys.Signer{"targets": online.Targets, "snapshot": online.Snapshot, "timestamp": online.Timestamp} {
		for _, sg := range signers {
			id, _ := keys.ID(sg.Public())
			if rl := root.Signed.Roles[role]; rl == nil || !slices.Contains(rl.KeyIDs, id) {
				return nil, rootErr(RootOnlineKeys, "the director root does not name this server's director %s key %s (rampart server keys writes it)", role, id)
			}
		}
	}
	return root, nil
}
