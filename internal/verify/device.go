package verify

import (
	"errors"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/directormeta"
)

// The device's decisions on what its director assigns. The device's
// refresh (internal/uptane) verifies both repositories with go-tuf and
// hands the verified roles here; what they must say for the device to
// install is decided here, in this order: the director's targets role is
// bound to this device (DirectorBinding), it names at most one target
// (DirectorTarget), the image repository lists it (TargetLookup), the two
// repositories agree on it and it is for this hardware and at or above
// the device's security version (Assigned), and the log records it
// (LogProof, LogConsistency).

// maxTargetPath bounds a target name from the director: a release name is
// PRODUCT/VERSION/FILENAME, each part far shorter (release.ParseTargetPath).
const maxTargetPath = 512

// DirectorBinding refuses a verified director targets role t that is not
// bound to deviceID (WrongDevice), or that does not say which device it
// is bound to (Malformed), even when it lists nothing.
func DirectorBinding(t *metadata.Metadata[metadata.TargetsType], deviceID string) error {
	if t == nil {
		return refuse(MissingTarget, "director", nil, "director has no trusted targets role")
	}
	if err := directormeta.CheckDevice(t, deviceID); err != nil {
		return directorRefusal(err)
	}
	return nil
}

// DirectorTarget returns the one target the verified director targets
// role t assigns: its path and entry, or "" and nil when it assigns
// nothing. A Rampart device is one ECU and installs one image, so a role
// naming more is malformed, and so is a name longer than a release name
// can be (refused before it is quoted in any request or message).
func DirectorTarget(t *metadata.Metadata[metadata.TargetsType]) (string, *metadata.TargetFiles, error) {
	if t == nil {
		return "", nil, refuse(MissingTarget, "director", nil, "director has no trusted targets role")
	}
	targets := t.Signed.Targets
	if len(targets) == 0 {
		return "", nil, nil
	}
	if len(targets) > 1 {
		return "", nil, refuse(Malformed, "director", nil, "director lists %d targets; a Rampart device installs one", len(targets))
	}
	var path string
	var tf *metadata.TargetFiles
	for p, f := range targets {
		path, tf = p, f
	}
	if len(path) > maxTargetPath {
		return "", nil, refuse(Malformed, "director", nil, "the director's target name is %d bytes, more than the %d a release name can be", len(path), maxTargetPath)
	}
	return path, tf, nil
}

// Device is what a device checks an assignment against.
type Device struct {
	ID, HardwareID string
	// MinSecurityVersion is the device's anti-rollback counter.
	MinSecurityVersion uint64
}

// Assigned decides whether the device may install target, which its
// director assigned (dirTarget, from the verified director repository)
// and which the image repository lists (imageTarget, verified with its
// delegations): the two entries must agree (path, length, every hash,
// release metadata), the director's entry must name this device and its
// hardware, the release must list the hardware, and its security version
// must be at least the device's. The result's role is "image": the image
// repository's entry is the one the device installs.
func Assigned(target string, dirTarget, imageTarget *metadata.TargetFiles, dev Device) (*Result, error) {
	if err := directormeta.Check(dirTarget, imageTarget, target, dev.ID, dev.HardwareID); err != nil {
		return nil, directorRefusal(err)
	}
	res, err := newResult(target, imageTarget, "image", Options{})
	if err != nil {
		return nil, err
	}
	if res.Release.SecurityVersion < dev.MinSecurityVersion {
		return nil, refuse(Downgrade, "image", nil, "%s has security version %d, below the device's %d", Quote(target), res.Release.SecurityVersion, dev.MinSecurityVersion)
	}
	return res, nil
}

// directorRefusal maps the errors of directormeta's checks onto classes.
func directorRefusal(err error) error {
	switch {
	case errors.Is(err, directormeta.ErrWrongHardware):
		return refuse(WrongHardware, "director", err, "director target is not for this hardware")
	case errors.Is(err, directormeta.ErrWrongDevice):
		return refuse(WrongDevice, "director", err, "director metadata is bound to another device")
	case errors.Is(err, directormeta.ErrDisagree):
		return refuse(Mismatch, "director", err, "director and image repository disagree")
	}
	return refuse(Malformed, "director", err, "director metadata")
}
