package director

import (
	"bytes"
	"fmt"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"
)

// clientCheck verifies next with go-tuf's trustedmetadata the way the
// device's updater does: with prev (when it still verifies under the
// root) loaded first as the device's trusted state, so that a rollback or
// a version that did not move forward is caught here, not on the device.
func clientCheck(rootRaw []byte, rt *metadata.Metadata[metadata.RootType], prev *parsed, next *Repo, now time.Time) error {
	fail := func(step string, err error) error {
		return fmt.Errorf("%w: %s: %v", ErrSelfCheck, step, err)
	}
	tm, err := trustedmetadata.New(rootRaw)
	if err != nil {
		return fail("root", err)
	}
	tm.RefTime = now
	if prev != nil && (rt.VerifyDelegate(metadata.TARGETS, prev.targets) != nil ||
		rt.VerifyDelegate(metadata.SNAPSHOT, prev.snap) != nil ||
		rt.VerifyDelegate(metadata.TIMESTAMP, prev.ts) != nil) {
		// Signed under keys the root no longer names: a device that
		// rotated its root would discard it too.
		prev = nil
	}
	if prev != nil {
		// The updater loads its cached timestamp first and ignores it
		// when it is merely expired; it still guards against rollback.
		if _, err := tm.UpdateTimestamp(prev.raw.Timestamp); err != nil && bytes.Equal(prev.raw.Timestamp, next.Timestamp) {
			return fail("previous timestamp", err)
		}
	}
	if prev == nil || !bytes.Equal(prev.raw.Timestamp, next.Timestamp) {
		if _, err := tm.UpdateTimestamp(next.Timestamp); err != nil {
			return fail("timestamp", err)
		}
	}
	sameSnap := prev != nil && bytes.Equal(prev.raw.Snapshot, next.Snapshot)
	if prev != nil {
		// Like the updater's cached snapshot: it serves for rollback
		// protection even when it is no longer the final one.
		if _, err := tm.UpdateSnapshot(prev.raw.Snapshot, true); err != nil && sameSnap {
			return fail("snapshot", err)
		}
	}
	if !sameSnap {
		if _, err := tm.UpdateSnapshot(next.Snapshot, false); err != nil {
			return fail("snapshot", err)
		}
	}
	if _, err := tm.UpdateTargets(next.Targets); err != nil {
		return fail("targets", err)
	}
	return nil
}
