// Package verify is Rampart's trust decision: whether a release may be
// trusted, by the operator's offline verifier (rampart verify), by a
// device installing an offline bundle, and by a device installing what
// its director assigns. It is pure: it takes metadata bytes or metadata
// go-tuf has verified, the trusted state (a root, the device's identity
// and security counter, the log key, the checkpoint the device accepted)
// and a reference time, and returns the verified release (*Result, built
// in one place) or a typed refusal (*Error) whose Class names the attack.
// It never reads files or the network, and it hands on no byte it has
// not verified.
//
// What it decides, and where:
//
//   - the metadata chain of one target, offline (Target, Chain; bundles
//     through internal/bundle) or of a whole repository (Repository,
//     Signed): go-tuf's trustedmetadata state machine (root chain,
//     thresholds, expiry, version monotonicity, snapshot and timestamp
//     consistency), with Rampart's release rules on top: hardware id and
//     security version;
//   - the chunk index against the signed target, and the image against
//     the index (Index, IndexOf, Image);
//   - what a device's director assigns (device.go): the binding of the
//     director's targets role to the device, the one target it names, the
//     image repository listing it, the two repositories' agreement,
//     hardware and security version;
//   - the transparency log (log.go): the release's inclusion under a
//     checkpoint of the log key (or the key the image root names), and
//     the checkpoint's consistency with the one the device accepted.
//
// Formats and their primitive checks stay with their owners
// (internal/chunkindex, internal/logproof, internal/directormeta, go-tuf);
// which refusal class a failure is, is decided here, once: go-tuf's errors
// by FromTUF and TargetLookup, for the offline checks and the device's
// refresh (internal/uptane) alike.
package verify

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"

	"github.com/rampartfw/rampart/internal/chunkindex"
	"github.com/rampartfw/rampart/internal/release"
)

// Metadata is the untrusted metadata needed to verify one target.
type Metadata struct {
	// Roots are root versions after the trusted one, in ascending order.
	// Versions at or below the trusted root's are skipped.
	Roots     [][]byte
	Timestamp []byte
	Snapshot  []byte
	Targets   []byte
	// Delegated maps a delegated role name to its metadata.
	Delegated map[string][]byte
}

// Options are the device- or operator-side requirements.
type Options struct {
	// Hardware, when set, must be among the release's hardware ids.
	Hardware string
	// MinSecurityVersion is the lowest acceptable security version.
	MinSecurityVersion uint64
	// Time is the reference time for expiry; zero means now.
	Time time.Time
}

// Result is a verified release. It is built in one place (newResult), for
// an offline repository or bundle (Target, Chain.Target) and for what a
// device's director assigns (Assigned) alike, so every caller gets the
// same release rules applied in the same order.
type Result struct {
	Target  string
	File    *metadata.TargetFiles
	Release *release.Meta
	// Role is the delegated role that signed the target, Signers the key ids
	// whose signatures on it verify, Threshold the role's threshold.
	Role      string
	Signers   []string
	Threshold int
	// Versions and Expires of each role that was checked.
	Versions map[string]int64
	Expires  map[string]time.Time
}

// Target verifies the metadata chain from trustedRoot down to target.
// Root versions at or below the trusted one are skipped.
func Target(trustedRoot []byte, md Metadata, target string, opt Options) (*Result, error) {
	if err := checkDuplicateSignatures(trustedRoot, md); err != nil {
		return nil, err
	}
	c, err := NewChain(trustedRoot, opt)
	if err != nil {
		return nil, err
	}
	for _, raw := range md.Roots {
		r, err := metadata.Root().FromBytes(raw)
		if err != nil {
			return nil, classify("root", err)
		}
		if r.Signed.Version <= c.RootVersion() {
			continue
		}
		if err := c.UpdateRoot(raw); err != nil {
			return nil, err
		}
	}
	if err := c.UpdateTimestamp(md.Timestamp); err != nil {
		return nil, err
	}
	if err := c.UpdateSnapshot(md.Snapshot); err != nil {
		return nil, err
	}
	if err := c.UpdateTargets(md.Targets); err != nil {
		return nil, err
	}
	return c.Target(target, md.Delegated)
}

// newResult applies Rampart's release rules to the verified entry file of
// target, which role signed: its custom metadata parses, it carries a
// SHA-256 hash, it lists opt.Hardware (when set), and its security
// version is at least opt.MinSecurityVersion.
func newResult(target string, file *metadata.TargetFiles, role string, opt Options) (*Result, error) {
	rel, err := release.FromTarget(target, file)
	if err != nil {
		return nil, refuse(Malformed, role, err, "release metadata of %s", Quote(target))
	}
	if _, ok := file.Hashes["sha256"]; !ok {
		return nil, refuse(Malformed, role, nil, "target %s has no sha256 hash", target)
	}
	if opt.Hardware != "" && !rel.Supports(opt.Hardware) {
		return nil, refuse(WrongHardware, role, nil, "release %s is for hardware %v, not %s", target, rel.HardwareIDs, opt.Hardware)
	}
	if rel.SecurityVersion < opt.MinSecurityVersion {
		return nil, refuse(Downgrade, role, nil, "release %s has security version %d, below the required minimum %d", target, rel.SecurityVersion, opt.MinSecurityVersion)
	}
	return &Result{Target: target, File: file, Release: rel, Role: role}, nil
}

// expiryOr turns go-tuf's expiry errors into a message that names the role
// and the instant it expired; other errors are classified as they are.
func expiryOr(trusted *trustedmetadata.TrustedMetadata, role string, raw []byte, err error) error {
	if !errors.Is(err, &metadata.ErrExpiredMetadata{}) {
		return classify(role, err)
	}
	// go-tuf reports the final root's expiry while loading the timestamp.
	if trusted.Root.Signed.IsExpired(trusted.RefTime) {
		return refuse(Expired, "root", nil, "the root role expired at %s (checked at %s)", stamp(trusted.Root.Signed.Expires), stamp(trusted.RefTime))
	}
	if role == "snapshot" && trusted.Timestamp != nil && trusted.Timestamp.Signed.IsExpired(trusted.RefTime) {
		// go-tuf checks the timestamp's expiry only when the snapshot loads.
		return refuse(Expired, "timestamp", nil, "the timestamp role expired at %s (checked at %s)", stamp(trusted.Timestamp.Signed.Expires), stamp(trusted.RefTime))
	}
	if role == "targets" && trusted.Snapshot != nil && trusted.Snapshot.Signed.IsExpired(trusted.RefTime) {
		return refuse(Expired, "snapshot", nil, "the snapshot role expired at %s (checked at %s)", stamp(trusted.Snapshot.Signed.Expires), stamp(trusted.RefTime))
	}
	var exp time.Time
	switch role {
	case "timestamp":
		if m, e := metadata.Timestamp().FromBytes(raw); e == nil {
			exp = m.Signed.Expires
		}
	case "snapshot":
		if m, e := metadata.Snapshot().FromBytes(raw); e == nil {
			exp = m.Signed.Expires
		}
	default:
		if m, e := metadata.Targets().FromBytes(raw); e == nil {
			exp = m.Signed.Expires
		}
	}
	return refuse(Expired, role, nil, "the %s role expired at %s (checked at %s)", role, stamp(exp), stamp(trusted.RefTime))
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// ValidSigners returns the ids of the keys among keyIDs whose signature on md
// verifies. It asks go-tuf to verify each key alone (threshold 1), so the
// signature check itself is go-tuf's.
func ValidSigners(keys map[string]*metadata.Key, keyIDs []string, md any) []string {
	var out []string
	for _, id := range keyIDs {
		k, ok := keys[id]
		if !ok {
			continue
		}
		probe := metadata.Root()
		probe.Signed.Keys = map[string]*metadata.Key{id: k}
		probe.Signed.Roles = map[string]*metadata.Role{"probe": {KeyIDs: []string{id}, Threshold: 1}}
		if probe.VerifyDelegate("probe", md) == nil {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Index authenticates a chunk index against the verified release and
// parses it. The index must also agree with the target's own length and
// SHA-256, so the index, the target entry and the image cannot drift apart.
func Index(res *Result, data []byte) (*chunkindex.Index, error) {
	return IndexOf(res.File, res.Release, res.Role, data)
}

// IndexOf is Index for a release not verified through this package: a
// push the server accepts (internal/pushaccept), whose target entry file
// and release metadata rel role signed.
func IndexOf(file *metadata.TargetFiles, rel *release.Meta, role string, data []byte) (*chunkindex.Index, error) {
	ref := rel.Index
	if int64(len(data)) != ref.Length {
		return nil, refuse(Mismatch, role, nil, "chunk index is %d bytes, signed metadata says %d", len(data), ref.Length)
	}
	sum := sha256Hex(data)
	if sum != ref.SHA256 {
		return nil, refuse(Mismatch, role, nil, "chunk index sha256 %s differs from the signed %s", sum, ref.SHA256)
	}
	ix, err := chunkindex.Parse(data)
	if err != nil {
		return nil, refuse(Malformed, role, err, "chunk index")
	}
	if ix.ImageLength != file.Length {
		return nil, refuse(Mismatch, role, nil, "chunk index covers %d bytes, the signed target is %d bytes", ix.ImageLength, file.Length)
	}
	if hex.EncodeToString(ix.ImageHash[:]) != hex.EncodeToString(file.Hashes["sha256"]) {
		return nil, refuse(Mismatch, role, nil, "chunk index image sha256 differs from the signed target hash")
	}
	if ix.ChunkSize != ref.ChunkSize {
		return nil, refuse(Mismatch, role, nil, "chunk index uses chunk size %d, signed metadata says %d", ix.ChunkSize, ref.ChunkSize)
	}
	return ix, nil
}

// Image streams the image from r through the verified index, writing each
// chunk to w (which may be nil) only after it verified. Every byte of the
// image is covered by a chunk hash from the signed index, so no separate
// whole-image pass is made: the image is proven to be what the signed
// index describes, and the index names the signed image hash. Only
// signers could make those two disagree; the device's whole-image
// read-back (install) refuses such a release.
func Image(ix *chunkindex.Index, r io.Reader, w io.Writer, workers int) error {
	err := ix.VerifyStream(r, w, workers)
	if err == nil {
		return nil
	}
	var cm chunkindex.ChunkMismatchError
	switch {
	case errors.As(err, &cm):
		return refuse(Mismatch, "", err, "image chunk %d at offset %d does not match its signed hash", cm.Chunk, cm.Offset)
	case errors.Is(err, chunkindex.ErrImageTooShort):
		return refuse(Mismatch, "", err, "image is shorter than the signed length %d", ix.ImageLength)
	case errors.Is(err, chunkindex.ErrImageTooLong):
		return refuse(Mismatch, "", err, "image is longer than the signed length %d", ix.ImageLength)
	}
	return err
}

// Repository verifies a whole repository the way a client refreshing it
// would: the root chain, timestamp, snapshot, top-level targets and every
// delegated role the targets role names, at time at.
func Repository(trustedRoot []byte, md Metadata, at time.Time) error {
	_, err := repository(trustedRoot, md, at.UTC())
	return err
}

// Signed verifies a whole repository as Repository does (root chain,
// thresholds, versions, the hashes and versions snapshot and timestamp
// pin, every delegated role) but at no particular time: expiry is not
// checked. It is for an offline repository that builds the next versions
// of its roles on what it published, where an expired timestamp is no
// reason to doubt the targets it pins, and a forged or edited file is.
// It returns the verified metadata.
func Signed(trustedRoot []byte, md Metadata) (*trustedmetadata.TrustedMetadata, error) {
	// go-tuf compares every expiry with RefTime; the zero time is before
	// all of them.
	return repository(trustedRoot, md, time.Time{})
}

func repository(trustedRoot []byte, md Metadata, at time.Time) (*trustedmetadata.TrustedMetadata, error) {
	if err := checkDuplicateSignatures(trustedRoot, md); err != nil {
		return nil, err
	}
	trusted, err := trustedmetadata.New(trustedRoot)
	if err != nil {
		return nil, classify("root", err)
	}
	trusted.RefTime = at
	for _, raw := range md.Roots {
		if _, err := trusted.UpdateRoot(raw); err != nil {
			return nil, classify("root", fmt.Errorf("root version %d: %w", trusted.Root.Signed.Version+1, err))
		}
	}
	if _, err := trusted.UpdateTimestamp(md.Timestamp); err != nil {
		return nil, expiryOr(trusted, "timestamp", md.Timestamp, err)
	}
	if _, err := trusted.UpdateSnapshot(md.Snapshot, false); err != nil {
		return nil, expiryOr(trusted, "snapshot", md.Snapshot, err)
	}
	top, err := trusted.UpdateTargets(md.Targets)
	if err != nil {
		return nil, expiryOr(trusted, "targets", md.Targets, err)
	}
	if top.Signed.Delegations == nil {
		return trusted, nil
	}
	for _, d := range top.Signed.Delegations.Roles {
		raw, ok := md.Delegated[d.Name]
		if !ok {
			return nil, refuse(MissingTarget, d.Name, nil, "metadata of delegated role %s is missing", d.Name)
		}
		if _, err := trusted.UpdateDelegatedTargets(raw, d.Name, metadata.TARGETS); err != nil {
			return nil, expiryOr(trusted, d.Name, raw, err)
		}
	}
	return trusted, nil
}

// checkDuplicateSignatures refuses a document that carries two signatures
// under one key id. go-tuf refuses it too, as a generic value error; naming
// it here tells the operator that someone tried to count a key twice.
func checkDuplicateSignatures(root []byte, md Metadata) error {
	docs := []struct {
		role string
		b    []byte
	}{{"root", root}, {"timestamp", md.Timestamp}, {"snapshot", md.Snapshot}, {"targets", md.Targets}}
	for _, r := range md.Roots {
		docs = append(docs, struct {
			role string
			b    []byte
		}{"root", r})
	}
	for name, b := range md.Delegated {
		docs = append(docs, struct {
			role string
			b    []byte
		}{name, b})
	}
	for _, d := range docs {
		if err := checkDuplicates(d.role, d.b); err != nil {
			return err
		}
	}
	return nil
}

// checkDuplicates refuses one document signed twice under one key id.
func checkDuplicates(role string, b []byte) error {
	var env struct {
		Signatures []struct {
			KeyID string `json:"keyid"`
		} `json:"signatures"`
	}
	if json.Unmarshal(b, &env) != nil {
		return nil // go-tuf reports the parse error with its context
	}
	seen := map[string]bool{}
	for _, s := range env.Signatures {
		if seen[s.KeyID] {
			return refuse(BadSignature, role, nil, "%s is signed twice by key %s; a key counts once towards a threshold", role, s.KeyID)
		}
		seen[s.KeyID] = true
	}
	return nil
}
