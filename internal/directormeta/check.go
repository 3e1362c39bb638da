// Package directormeta owns the format of Rampart's custom metadata in a
// director repository and the device-side checks on it: that a verified
// director targets role is bound to this device (CheckDevice) and that the
// director's target agrees with the image repository's (Check).
//
// It is a leaf package, bytes in and errors out, so that the device agent
// links it without the server-side director, which signs with online keys.
//
// The custom metadata it reads came from the network inside signed
// metadata; it is parsed with internal/strictjson, so a member given
// twice or in another case, or one this version does not know, is
// malformed rather than read one way here and another way elsewhere.
package directormeta

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/strictjson"
)

// CustomKey is the key under "custom" that holds Rampart's director fields,
// both in a target entry and at the top level of the targets role.
const CustomKey = release.CustomKey

// Errors of Check (the device-side agreement check). Build also uses
// ErrWrongHardware for an assignment the release does not support.
var (
	// ErrDisagree: the director's target and the image repository's differ
	// in path, length, any hash, or release metadata.
	ErrDisagree = errors.New("director and image repository disagree")
	// ErrWrongDevice: the director's target is bound to another device.
	ErrWrongDevice = errors.New("director target is for another device")
	// ErrWrongHardware: the director names another hardware id, or the
	// image repository's release does not list ours.
	ErrWrongHardware = errors.New("target is not for this hardware")
	// ErrMalformed: a target lacks what the check needs (hashes, custom
	// metadata) or it does not parse.
	ErrMalformed = errors.New("malformed target metadata")
)

// Bounds on what a director target's custom metadata may hold. The
// director's metadata is signed with online keys, so its content is the
// server's word only; these bounds keep a hostile server's fields from
// reaching the device's state and messages whole.
const (
	// MaxDeviceID is the longest device id (the server's own limit).
	MaxDeviceID = 256
	// MaxCustom is the largest custom metadata of a director target: a
	// device id, a hardware id and a copy of the release's metadata.
	MaxCustom = 16 << 10
)

// quote is s quoted for an error message, cut to 64 bytes: device ids
// and paths here came from the network.
func quote(s string) string {
	if len(s) <= 64 {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:64], len(s))
}

// Custom is the rampart custom metadata of a director target entry.
type Custom struct {
	DeviceID   string `json:"device_id"`
	HardwareID string `json:"hardware_id"`
	// Release is the image repository's rampart custom metadata, verbatim.
	Release json.RawMessage `json:"release"`
}

// CustomOf decodes a director target's custom metadata.
func CustomOf(tf *metadata.TargetFiles) (*Custom, error) {
	if tf.Custom != nil && len(*tf.Custom) > MaxCustom {
		return nil, fmt.Errorf("%w: director target %s has %d bytes of custom metadata, more than %d", ErrMalformed, quote(tf.Path), len(*tf.Custom), MaxCustom)
	}
	raw, err := ReleaseCustom(tf.Custom)
	if err != nil {
		return nil, fmt.Errorf("director target %s: %w", quote(tf.Path), err)
	}
	var c Custom
	if err := strictjson.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%w: director target %s custom metadata: %v", ErrMalformed, quote(tf.Path), err)
	}
	if c.DeviceID == "" || c.HardwareID == "" {
		return nil, fmt.Errorf("%w: director target %s names no device or hardware id", ErrMalformed, quote(tf.Path))
	}
	if len(c.DeviceID) > MaxDeviceID || len(c.HardwareID) > MaxDeviceID {
		return nil, fmt.Errorf("%w: director target %s names a device or hardware id longer than %d bytes", ErrMalformed, quote(tf.Path), MaxDeviceID)
	}
	if len(c.Release) == 0 || bytes.Equal(c.Release, []byte("null")) {
		return nil, fmt.Errorf("%w: director target %s carries no release metadata", ErrMalformed, quote(tf.Path))
	}
	return &c, nil
}

// ReleaseCustom returns the value under custom.rampart.
func ReleaseCustom(custom *json.RawMessage) (json.RawMessage, error) {
	if custom == nil {
		return nil, fmt.Errorf("%w: no custom metadata", ErrMalformed)
	}
	var wrapper map[string]json.RawMessage
	if err := strictjson.Unmarshal(*custom, &wrapper); err != nil {
		return nil, fmt.Errorf("%w: custom metadata: %v", ErrMalformed, err)
	}
	raw, ok := wrapper[CustomKey]
	if !ok {
		return nil, fmt.Errorf("%w: no %q custom metadata", ErrMalformed, CustomKey)
	}
	return raw, nil
}

// EqualJSON compares two JSON documents by value (numbers exactly). A
// document that strictjson refuses (a member given twice, trailing data)
// equals nothing.
func EqualJSON(a, b []byte) bool {
	va, ea := decodeJSON(a)
	vb, eb := decodeJSON(b)
	return ea == nil && eb == nil && reflect.DeepEqual(va, vb)
}

func decodeJSON(b []byte) (any, error) {
	// strictjson first, so that no duplicate member can make the two
	// documents compare equal here and differ for another parser; then
	// encoding/json, which keeps numbers exact.
	if err := strictjson.Unmarshal(b, new(any)); err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("trailing data")
	}
	return v, nil
}

// Check is the device's Uptane agreement check between the target the
// director names (dirTarget, verified from the director repository) and
// the image repository's entry for the same path (imageTarget, verified
// from the image repository, delegations followed). It requires the same
// path, identical lengths, identical hashes under every algorithm either
// side lists (sha256 among them), the director's device id and hardware id
// to be ours, its copy of the release metadata to equal the image
// repository's, and the release to list our hardware id.
//
// Errors wrap ErrDisagree, ErrWrongDevice, ErrWrongHardware or
// ErrMalformed.
func Check(dirTarget, imageTarget *metadata.TargetFiles, path string, deviceID, hardwareID string) error {
	if dirTarget == nil || imageTarget == nil {
		return fmt.Errorf("%w: missing director or image target for %s", ErrMalformed, path)
	}
	for _, x := range []struct {
		side string
		tf   *metadata.TargetFiles
	}{{"director", dirTarget}, {"image repository", imageTarget}} {
		if x.tf.Path != "" && x.tf.Path != path {
			return fmt.Errorf("%w: the %s entry is for %s, not %s", ErrDisagree, x.side, x.tf.Path, path)
		}
		if x.tf.Length < 0 {
			return fmt.Errorf("%w: the %s entry for %s has length %d", ErrMalformed, x.side, path, x.tf.Length)
		}
		if len(x.tf.Hashes) == 0 {
			return fmt.Errorf("%w: the %s entry for %s has no hashes", ErrMalformed, x.side, path)
		}
		for alg, h := range x.tf.Hashes {
			if len(h) == 0 {
				return fmt.Errorf("%w: the %s entry for %s has an empty %s hash", ErrMalformed, x.side, path, alg)
			}
		}
	}
	if dirTarget.Length != imageTarget.Length {
		return fmt.Errorf("%w: %s is %d bytes for the director, %d for the image repository", ErrDisagree, path, dirTarget.Length, imageTarget.Length)
	}
	algs := map[string]bool{}
	for alg := range dirTarget.Hashes {
		algs[alg] = true
	}
	for alg := range imageTarget.Hashes {
		algs[alg] = true
	}
	names := make([]string, 0, len(algs))
	for alg := range algs {
		names = append(names, alg)
	}
	sort.Strings(names)
	for _, alg := range names {
		d, dok := dirTarget.Hashes[alg]
		i, iok := imageTarget.Hashes[alg]
		switch {
		case !dok:
			return fmt.Errorf("%w: the image repository lists a %s hash of %s, the director does not", ErrDisagree, alg, path)
		case !iok:
			return fmt.Errorf("%w: the director lists a %s hash of %s, the image repository does not", ErrDisagree, alg, path)
		case !bytes.Equal(d, i):
			return fmt.Errorf("%w: %s of %s is %x for the director, %x for the image repository", ErrDisagree, alg, path, []byte(d), []byte(i))
		}
	}
	if len(imageTarget.Hashes["sha256"]) != 32 {
		return fmt.Errorf("%w: %s has no sha256 hash", ErrMalformed, path)
	}
	c, err := CustomOf(dirTarget)
	if err != nil {
		return err
	}
	if c.DeviceID != deviceID {
		return fmt.Errorf("%w: the director assigned %s to device %s, this is %s", ErrWrongDevice, quote(path), quote(c.DeviceID), quote(deviceID))
	}
	if c.HardwareID != hardwareID {
		return fmt.Errorf("%w: the director assigned %s for hardware %s, this device is %s", ErrWrongHardware, quote(path), quote(c.HardwareID), quote(hardwareID))
	}
	rel, err := release.FromTarget(path, imageTarget)
	if err != nil {
		return fmt.Errorf("%w: image repository entry: %w", ErrMalformed, err)
	}
	imgRaw, err := ReleaseCustom(imageTarget.Custom)
	if err != nil {
		return fmt.Errorf("image repository entry %s: %w", path, err)
	}
	// release.FromTarget reads these with encoding/json; both copies must
	// also read the same strictly, or they are malformed.
	for _, x := range []struct {
		side string
		raw  []byte
	}{{"image repository", imgRaw}, {"director", c.Release}} {
		if err := strictjson.Unmarshal(x.raw, new(release.Meta)); err != nil {
			return fmt.Errorf("%w: the %s's release metadata for %s: %v", ErrMalformed, x.side, path, err)
		}
	}
	if !rel.Supports(hardwareID) {
		return fmt.Errorf("%w: release %s is for hardware %v, this device is %q", ErrWrongHardware, path, rel.HardwareIDs, hardwareID)
	}
	if !EqualJSON(c.Release, imgRaw) {
		return fmt.Errorf("%w: the director's release metadata for %s differs from the image repository's", ErrDisagree, path)
	}
	return nil
}

// RoleCustom is the top-level custom field of the director's targets role.
type RoleCustom struct {
	DeviceID string `json:"device_id"`
}

// DeviceOf returns the device a director targets role is bound to (its
// top-level custom.rampart.device_id).
func DeviceOf(t *metadata.Metadata[metadata.TargetsType]) (string, error) {
	raw, ok := t.Signed.UnrecognizedFields["custom"]
	if !ok {
		return "", fmt.Errorf("%w: the director targets role has no custom device binding", ErrMalformed)
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var c map[string]RoleCustom
	if err := strictjson.Unmarshal(b, &c); err != nil {
		return "", fmt.Errorf("%w: director targets custom: %v", ErrMalformed, err)
	}
	if c[CustomKey].DeviceID == "" {
		return "", fmt.Errorf("%w: the director targets role names no device", ErrMalformed)
	}
	if n := len(c[CustomKey].DeviceID); n > MaxDeviceID {
		return "", fmt.Errorf("%w: the director targets role names a device id of %d bytes, more than %d", ErrMalformed, n, MaxDeviceID)
	}
	return c[CustomKey].DeviceID, nil
}

// CheckDevice is the device's check that a verified director targets role
// is its own, even when it lists nothing.
func CheckDevice(t *metadata.Metadata[metadata.TargetsType], deviceID string) error {
	got, err := DeviceOf(t)
	if err != nil {
		return err
	}
	if got != deviceID {
		return fmt.Errorf("%w: the director targets role is for device %s, this is %s", ErrWrongDevice, quote(got), quote(deviceID))
	}
	return nil
}
