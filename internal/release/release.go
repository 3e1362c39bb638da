// Package release defines what a Rampart release is in TUF terms: a target
// at PRODUCT/VERSION/FILENAME whose custom metadata (under the "rampart" key)
// names the product, its semantic version, its security version (the
// monotonic anti-rollback counter), the hardware it runs on, when it was
// created, and the hash and length of its chunk index.
//
// The package validates names and versions so that every other package can
// treat a parsed Meta as well-formed. It performs no I/O.
package release

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"golang.org/x/mod/semver"
)

// CustomKey is the key under a target's "custom" object that holds Meta.
const CustomKey = "rampart"

// IndexSuffix is appended to a target's file name to locate its chunk
// index: targets/PRODUCT/VERSION/<index sha256>.<filename>.rpidx.
const IndexSuffix = ".rpidx"

// ErrInvalid is wrapped by every validation error of this package.
var ErrInvalid = errors.New("invalid release")

// The names' grammars: a first byte and further bytes from two sets, and
// a maximum length. Checked by a loop, not a regular expression: a
// repetition such as {0,127} compiles into a program of that many steps,
// which every program linking this package (the CLI's short runs among
// them) compiled at start-up. release_test.go checks them against the
// equivalent regular expressions.
var (
	productName  = nameRule{first: lowerDigit, rest: lowerDigit + "-", max: 63}
	fileName     = nameRule{first: alnum + "_+-", rest: alnum + "._+-", max: 128}
	hardwareName = nameRule{first: alnum, rest: alnum + "._:-", max: 128}
)

const (
	lowerDigit = "abcdefghijklmnopqrstuvwxyz0123456789"
	alnum      = "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + lowerDigit
)

type nameRule struct {
	first, rest string
	max         int
}

func (r nameRule) match(s string) bool {
	if len(s) == 0 || len(s) > r.max || strings.IndexByte(r.first, s[0]) < 0 {
		return false
	}
	for i := 1; i < len(s); i++ {
		if strings.IndexByte(r.rest, s[i]) < 0 {
			return false
		}
	}
	return true
}

// reservedRoles cannot be product names: a delegated role must not shadow a
// top-level TUF role's file name.
var reservedRoles = map[string]bool{"root": true, "targets": true, "snapshot": true, "timestamp": true}

// ValidateProduct checks a product (and delegated role) name.
func ValidateProduct(p string) error {
	if !productName.match(p) {
		return fmt.Errorf("%w: product %q must be 1-63 lower-case letters, digits or '-', starting with a letter or digit", ErrInvalid, p)
	}
	if reservedRoles[p] {
		return fmt.Errorf("%w: product %q is a reserved TUF role name", ErrInvalid, p)
	}
	return nil
}

// ValidateVersion checks a semantic version such as 2.4.1 or 3.0.0-rc.1
// (no leading "v"; build metadata is not allowed because it does not order).
func ValidateVersion(v string) error {
	if strings.HasPrefix(v, "v") || !semver.IsValid("v"+v) || semver.Canonical("v"+v) != "v"+v {
		return fmt.Errorf("%w: version %q is not a semantic version MAJOR.MINOR.PATCH[-PRERELEASE]", ErrInvalid, v)
	}
	return nil
}

// CompareVersions orders two valid versions like semver.Compare.
func CompareVersions(a, b string) int { return semver.Compare("v"+a, "v"+b) }

// ValidateFilename checks the file name part of a target path.
func ValidateFilename(f string) error {
	if !fileName.match(f) || strings.HasSuffix(f, IndexSuffix) {
		return fmt.Errorf("%w: file name %q must be 1-128 of A-Z a-z 0-9 . _ + -, not start with '.', and not end in %s", ErrInvalid, f, IndexSuffix)
	}
	return nil
}

// ValidateHardware checks a hardware id.
func ValidateHardware(h string) error {
	if !hardwareName.match(h) {
		return fmt.Errorf("%w: hardware id %q must be 1-128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit", ErrInvalid, h)
	}
	return nil
}

// TargetPath joins a release's target path.
func TargetPath(product, version, filename string) string {
	return product + "/" + version + "/" + filename
}

// ParseTargetPath splits and validates PRODUCT/VERSION/FILENAME.
func ParseTargetPath(p string) (product, version, filename string, err error) {
	parts := strings.Split(p, "/")
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("%w: target path %q is not PRODUCT/VERSION/FILENAME", ErrInvalid, p)
	}
	for i, check := range []func(string) error{ValidateProduct, ValidateVersion, ValidateFilename} {
		if err := check(parts[i]); err != nil {
			return "", "", "", err
		}
	}
	return parts[0], parts[1], parts[2], nil
}

// DelegationPattern is the path pattern delegated to a product's role. TUF
// matches patterns segment by segment, so PRODUCT/*/* covers exactly
// PRODUCT/VERSION/FILENAME and nothing deeper.
func DelegationPattern(product string) string { return product + "/*/*" }

// IndexRef locates and authenticates a release's chunk index.
type IndexRef struct {
	Length    int64  `json:"length"`
	SHA256    string `json:"sha256"`
	ChunkSize int64  `json:"chunk_size"`
}

// Meta is the custom metadata of a release target.
type Meta struct {
	Product         string    `json:"product"`
	Version         string    `json:"version"`
	SecurityVersion uint64    `json:"security_version"`
	HardwareIDs     []string  `json:"hardware_ids"`
	Created         time.Time `json:"created"`
	Index           IndexRef  `json:"index"`
	// LowerSecurityVersionReason records why a release was allowed a
	// security version below the product's highest published one.
	LowerSecurityVersionReason string `json:"lower_security_version_reason,omitempty"`
}

// Validate checks every field.
func (m *Meta) Validate() error {
	if err := ValidateProduct(m.Product); err != nil {
		return err
	}
	if err := ValidateVersion(m.Version); err != nil {
		return err
	}
	if len(m.HardwareIDs) == 0 {
		return fmt.Errorf("%w: a release needs at least one hardware id", ErrInvalid)
	}
	seen := map[string]bool{}
	for _, h := range m.HardwareIDs {
		if err := ValidateHardware(h); err != nil {
			return err
		}
		if seen[h] {
			return fmt.Errorf("%w: hardware id %q listed twice", ErrInvalid, h)
		}
		seen[h] = true
	}
	if m.Created.IsZero() {
		return fmt.Errorf("%w: missing creation time", ErrInvalid)
	}
	if m.Index.Length <= 0 || m.Index.ChunkSize <= 0 {
		return fmt.Errorf("%w: chunk index length and chunk size must be positive", ErrInvalid)
	}
	if b, err := hex.DecodeString(m.Index.SHA256); err != nil || len(b) != 32 {
		return fmt.Errorf("%w: chunk index sha256 %q is not 64 hex digits", ErrInvalid, m.Index.SHA256)
	}
	return nil
}

// Supports reports whether the release lists hardware id hw.
func (m *Meta) Supports(hw string) bool {
	for _, h := range m.HardwareIDs {
		if h == hw {
			return true
		}
	}
	return false
}

// Custom encodes m as a target's custom metadata.
func (m *Meta) Custom() (*json.RawMessage, error) {
	b, err := json.Marshal(map[string]*Meta{CustomKey: m})
	if err != nil {
		return nil, err
	}
	raw := json.RawMessage(b)
	return &raw, nil
}

// FromTarget extracts and validates the release metadata of a target, and
// checks that it agrees with the target's path.
func FromTarget(path string, tf *metadata.TargetFiles) (*Meta, error) {
	product, version, _, err := ParseTargetPath(path)
	if err != nil {
		return nil, err
	}
	if tf.Custom == nil {
		return nil, fmt.Errorf("%w: target %s has no custom metadata", ErrInvalid, path)
	}
	var wrapper map[string]json.RawMessage
	if err := json.Unmarshal(*tf.Custom, &wrapper); err != nil {
		return nil, fmt.Errorf("%w: target %s custom metadata: %v", ErrInvalid, path, err)
	}
	raw, ok := wrapper[CustomKey]
	if !ok {
		return nil, fmt.Errorf("%w: target %s has no %q custom metadata", ErrInvalid, path, CustomKey)
	}
	var m Meta
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%w: target %s custom metadata: %v", ErrInvalid, path, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("target %s: %w", path, err)
	}
	if m.Product != product || m.Version != version {
		return nil, fmt.Errorf("%w: target %s claims product %q version %q", ErrInvalid, path, m.Product, m.Version)
	}
	return &m, nil
}
