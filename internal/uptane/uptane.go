// Package uptane is the device's network side of Uptane: it fetches what
// the Rampart server asks a device to install, refreshes both
// repositories with go-tuf, and stores the log checkpoint the device
// accepted. Every decision on what it fetched is package verify's, the
// pure trust decision the offline verifier (rampart verify) shares.
//
// Check decides, before a single image byte is downloaded, whether the
// device should install something now. It requires three independent
// authorities to agree (docs/agent.md, "What happens during an update"):
//
//  1. The director: the device's own TUF repository, served at /director/
//     over mTLS, refreshed with go-tuf from the trusted director root (the
//     cached StateDir/director/root.json, else the root shipped in firmware;
//     never trust on first use). Its targets role must be bound to this
//     device (verify.DirectorBinding) and names at most one target
//     (verify.DirectorTarget).
//  2. The image repository, served at /repo/ with consistent snapshots,
//     refreshed the same way (StateDir/image): the director's target must
//     exist there (delegations followed; verify.TargetLookup) and agree
//     with the director's entry in path, length, hashes, device id,
//     hardware id and release metadata, and its security version must be
//     at least Config.MinSecurityVersion (verify.Assigned).
//  3. The transparency log: the release statement must be included under
//     a checkpoint signed by the pinned log key and describe exactly this
//     target (verify.LogProof), and the checkpoint must be consistent with
//     the last one this device accepted (StateDir/log/checkpoint, through
//     Config.FS; verify.LogConsistency), which is then replaced atomically.
//
// Every refusal is a *verify.Error whose Class names the attack class;
// go-tuf's errors are mapped onto classes by verify.FromTUF. A refusal is
// only ever about bytes that arrived whole: a failed transfer (server
// unreachable, an HTTP error, a body cut short by a reset connection or a
// timeout) is not evidence of an attack, matches ErrUnavailable, and the
// caller simply retries. A response longer than its bound (the signed
// length, or a fixed limit where nothing is signed) is refused as
// EndlessData without reading past the bound.
//
// The director's metadata is verified in a staging copy of its state and
// replaces the trusted copy only once its targets role is proven bound to
// this device: another device's metadata, whatever its version numbers,
// is refused as WrongDevice and leaves nothing behind that could make the
// device refuse its own director later.
//
// Check never downloads the image: it returns the consistent-snapshot URLs
// of the image and its chunk index, which the caller streams and verifies
// against Decision.File and Decision.Release.
package uptane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/verify"
)

// ErrUnavailable is matched by every error of Check that is a failed
// transfer rather than a refusal: the server could not be reached or
// answered with an HTTP error, or a response was cut short (connection
// reset, timeout, a body that ended before its length). Nothing was
// trusted from it; the next check-in retries.
var ErrUnavailable = errors.New("server unavailable or transfer cut short")

// transferError is a failed transfer of url. It matches ErrUnavailable
// and unwraps to its cause too (for go-tuf, which looks for its own
// *metadata.ErrDownloadHTTP to find the end of the root chain).
type transferError struct {
	url string
	err error
}

func (e *transferError) Error() string {
	return fmt.Sprintf("fetching %s: %v", boundURL(e.url), e.err)
}
func (e *transferError) Unwrap() []error { return []error{ErrUnavailable, e.err} }

// Limits on the log API responses read by Check.
const (
	maxProofResponse       = 2 * (logproof.MaxProofSize + logproof.MaxStatementSize)
	maxConsistencyResponse = 64 << 10
)

// Config is what the device pins and where it keeps its state.
type Config struct {
	// ServerURL is the server's base URL, e.g. https://updates.example:8443.
	ServerURL string
	// HTTPClient carries the device certificate (mTLS) and pins the
	// server CA. It is required: the director is served only over mTLS.
	HTTPClient *http.Client
	// StateDir holds director/, image/ (trusted TUF metadata) and
	// log/checkpoint (the last accepted checkpoint).
	StateDir string
	// FS is where the log checkpoint is read and written; nil means
	// fsys.OS. The agent passes its own, so that the power-loss model
	// sees every write the agent makes. The TUF metadata directories are
	// not on it: go-tuf reads and writes them with package os, and the
	// copies kept beside them (the durable trusted root, the committed
	// director files) must be where go-tuf reads.
	FS fsys.FS
	// ImageRoot and DirectorRoot are the roots shipped in firmware, used
	// only when StateDir holds no cached trusted root.
	ImageRoot, DirectorRoot []byte
	// LogOrigin and LogKey pin the transparency log. A trusted image root
	// that names a log key (logproof.RootField) overrides them: the root
	// key holders rotate the log key with a new root.
	LogOrigin string
	LogKey    note.Verifier
	// DeviceID and HardwareID are this device's identity.
	DeviceID, HardwareID string
	// MinSecurityVersion is the device's anti-rollback counter.
	MinSecurityVersion uint64
	// Now is the reference time for metadata expiry; nil means time.Now.
	Now func() time.Time
	// Running is the SHA-256 (hex) of the image the device runs, if it
	// runs a verified one. When the director names that very image, Check
	// decides without the transparency log (Decision.Running): nothing is
	// to be downloaded, and the log is proven again, inclusion and
	// consistency with the stored checkpoint, before the next download.
	Running string
	// Memo, when set, carries what a check-in verified to the next one of
	// this device (see Memo); nil verifies everything from the state
	// directory at every check-in. The agent keeps one for its lifetime.
	Memo *Memo

	// logKeyText identifies the log key the image root names, when it
	// replaced LogKey; pinned identifies the pinned one then.
	logKeyText, pinned string
}

// Decision is the outcome of a successful Check.
type Decision struct {
	// Nothing is true when the director lists nothing to install; every
	// other field is then zero (Result points to a zero Result, so that
	// its fields read as empty).
	Nothing bool
	// Result is what verify decided the device may install: the image
	// repository's target path (Target), its verified entry (File) and
	// the parsed release metadata (Release), with role "image".
	*verify.Result
	// ImageURL and IndexURL are the consistent-snapshot URLs of the image
	// and its chunk index under /repo/targets/.
	ImageURL, IndexURL string
	// Checkpoint is the log checkpoint the release was proven under. It is
	// not stored by Check: KeepCheckpoint stores it, once the caller acts
	// on the release (see KeepCheckpoint).
	Checkpoint []byte
	// Running is true when the director names the image Config.Running
	// says the device runs: the log was not asked (Checkpoint is nil),
	// and the caller has nothing to download.
	Running bool

	// keep stores Checkpoint as the last accepted one; nil when there is
	// nothing new to store.
	keep func() error
}

// KeepCheckpoint stores the decision's checkpoint as the last one the
// device accepted, atomically, if it is newer than the stored one.
//
// The caller calls it only when it acts on the release (it installs it),
// never on a check-in that changes nothing. A stored checkpoint is a
// commitment: every later one must extend it. Were every check-in to
// store the newest checkpoint it was shown, one answer signed by a stolen
// log key (the honest tree plus a made-up entry, with a genuine
// consistency proof) would bind an up-to-date device to that fork, and
// every honest check-in after it would be refused as log-inconsistent.
// Stored only when the device installs, a fork can bind only a device
// that installs a release the release signers genuinely signed and the
// director assigned; that device recovers when the log key is rotated
// (the checkpoint of a retired key is discarded).
func (d *Decision) KeepCheckpoint() error {
	if d == nil || d.keep == nil {
		return nil
	}
	return d.keep()
}

// Check runs the full verification described in the package comment.
func Check(ctx context.Context, cfg Config) (*Decision, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	base := strings.TrimRight(cfg.ServerURL, "/")

	// 1. Director.
	dir, err := refreshDirector(ctx, cfg, base+"/director/")
	if err != nil {
		return nil, err
	}
	tpath, dirTarget, err := verify.DirectorTarget(dir.GetTrustedMetadataSet().Targets[metadata.TARGETS])
	if err != nil {
		return nil, err
	}
	if dirTarget == nil {
		return &Decision{Nothing: true, Result: &verify.Result{}}, nil
	}

	// 2. Image repository.
	img, err := refreshImage(ctx, cfg, base+"/repo/")
	if err != nil {
		return nil, err
	}
	imgTarget, err := img.up.GetTargetInfo(tpath)
	if err != nil {
		if nr := notRefusal("image", err); nr != nil {
			return nil, nr
		}
		return nil, verify.TargetLookup("image", tpath, err)
	}
	// Remembered only now: the lookup loads the delegated roles it needs.
	cfg.Memo.keep(base+"/repo/", img)
	res, err := verify.Assigned(tpath, dirTarget, imgTarget, verify.Device{ID: cfg.DeviceID, HardwareID: cfg.HardwareID, MinSecurityVersion: cfg.MinSecurityVersion})
	if err != nil {
		return nil, err
	}

	dirPart, file := path.Split(tpath)
	sum := imgTarget.Hashes["sha256"].String()
	rel := res.Release
	d := &Decision{
		Result:   res,
		ImageURL: base + "/repo/targets/" + escapePath(dirPart+sum+"."+file),
		IndexURL: base + "/repo/targets/" + escapePath(dirPart+rel.Index.SHA256+"."+file+release.IndexSuffix),
	}
	if cfg.Running != "" && sum == cfg.Running {
		// The log gates a download (docs/agent.md): a fleet's usual
		// check-in downloads nothing, and would otherwise fetch and
		// verify a proof of what it already runs every time.
		d.Running = true
		return d, nil
	}

	// 3. Transparency log, under the key the trusted image root names
	// (else the pinned one).
	if cfg, err = withRootLogKey(cfg, img.up.GetTrustedMetadataSet().Root); err != nil {
		return nil, err
	}
	if d.Checkpoint, d.keep, err = checkLog(ctx, cfg, base, res); err != nil {
		return nil, err
	}
	return d, nil
}

func (cfg *Config) validate() error {
	switch {
	case cfg.ServerURL == "":
		return errors.New("uptane: ServerURL is required")
	case cfg.HTTPClient == nil:
		return errors.New("uptane: HTTPClient is required (mTLS with the pinned CA)")
	case cfg.StateDir == "":
		return errors.New("uptane: StateDir is required")
	case len(cfg.ImageRoot) == 0 || len(cfg.DirectorRoot) == 0:
		return errors.New("uptane: the shipped image and director roots are required")
	case cfg.LogOrigin == "" || cfg.LogKey == nil:
		return errors.New("uptane: the log origin and key are required")
	case cfg.DeviceID == "" || cfg.HardwareID == "":
		return errors.New("uptane: DeviceID and HardwareID are required")
	}
	return nil
}

func (cfg *Config) fs() fsys.FS {
	if cfg.FS != nil {
		return cfg.FS
	}
	return fsys.OS
}

func (cfg *Config) now() time.Time {
	if cfg.Now != nil {
		return cfg.Now()
	}
	return time.Now()
}

// refresh runs go-tuf's client workflow for one repository in mdDir,
// starting from root (the trusted one). go-tuf stores what it verifies in
// mdDir as it goes, unless noCache: then it stores nothing and starts from
// root alone, with no cached versions to compare with. The caller keeps
// the durable copy of the root (keepTrustedRoot) where it keeps the
// metadata for good: the director's staging copy is scratch.
//
// When the refresh walked to a root that changed the keys of the online
// roles and then failed, the metadata those roles' old keys signed is
// deleted and the refresh runs once more (TUF 5.3.11). go-tuf already
// ignores a cached role that no longer verifies under the new root, but
// not one whose own keys did not change while its parent's did: a
// timestamp of version 2^63-1 signed with an unchanged timestamp key
// would still be trusted, and every honest one refused as a rollback.
// Rotating the online keys through the offline root is how devices that
// accepted an attacker's metadata recover (docs/incident-response.md).
func refresh(f *fetcher, metaURL, mdDir string, root []byte, noCache bool, now time.Time) (*updater.Updater, error) {
	name := f.role
	up, err := refreshOnce(f, metaURL, mdDir, root, noCache, now)
	if err == nil || noCache || isDownload(err) {
		return up, err
	}
	newRoot, rerr := os.ReadFile(filepath.Join(mdDir, "root.json"))
	if rerr != nil || !json.Valid(newRoot) || bytes.Equal(newRoot, root) {
		return up, err
	}
	roles := onlineRoles(name)
	if !onlineKeysChanged(root, newRoot, roles) {
		return up, err
	}
	for _, r := range roles {
		if rmErr := os.Remove(filepath.Join(mdDir, r+".json")); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
			return nil, fmt.Errorf("uptane: %s: discarding metadata of rotated keys: %w", name, rmErr)
		}
	}
	return refreshOnce(f, metaURL, mdDir, newRoot, false, now)
}

// onlineRoles are the roles of a repository whose keys the server holds:
// the director's targets too.
func onlineRoles(name string) []string {
	if name == "director" {
		return []string{metadata.TIMESTAMP, metadata.SNAPSHOT, metadata.TARGETS}
	}
	return []string{metadata.TIMESTAMP, metadata.SNAPSHOT}
}

// onlineKeysChanged reports whether any of roles has other keys or
// another threshold in newRoot than in oldRoot. Roots that do not parse
// count as unchanged: go-tuf has refused them already.
func onlineKeysChanged(oldRoot, newRoot []byte, roles []string) bool {
	o, err1 := metadata.Root().FromBytes(oldRoot)
	n, err2 := metadata.Root().FromBytes(newRoot)
	if err1 != nil || err2 != nil {
		return false
	}
	for _, r := range roles {
		or, nr := o.Signed.Roles[r], n.Signed.Roles[r]
		if or == nil || nr == nil {
			return or != nr
		}
		if or.Threshold != nr.Threshold || !sameSet(or.KeyIDs, nr.KeyIDs) {
			return true
		}
	}
	return false
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return true
}

func refreshOnce(f *fetcher, metaURL, mdDir string, root []byte, noCache bool, now time.Time) (*updater.Updater, error) {
	name := f.role
	uc, err := config.New(metaURL, root)
	if err != nil {
		return nil, fmt.Errorf("uptane: %s: %w", name, err)
	}
	uc.LocalMetadataDir = mdDir
	// Targets are never downloaded through go-tuf (it buffers whole files);
	// the directory only has to exist.
	uc.LocalTargetsDir = filepath.Join(mdDir, "targets")
	uc.RemoteTargetsURL = metaURL + "targets/"
	uc.PrefixTargetsWithHash = true
	uc.DisableLocalCache = noCache
	lim := f.limits
	uc.RootMaxLength, uc.TimestampMaxLength, uc.SnapshotMaxLength, uc.TargetsMaxLength = lim.Root, lim.Timestamp, lim.Snapshot, lim.Targets
	// Our fetcher, not go-tuf's: it honours ctx, it tells a cut transfer
	// (ErrUnavailable) from a response longer than allowed (EndlessData),
	// which go-tuf's would both leave to be guessed, and it holds every
	// role to the agent's own bound whatever length a parent signed.
	uc.Fetcher = f
	up, err := updater.New(uc)
	if err != nil {
		// The trusted root itself does not load (not self-signed, garbage).
		return nil, classify(name, err)
	}
	up.UnsafeSetRefTime(now)
	if err := up.Refresh(); err != nil {
		return nil, classify(name, err)
	}
	return up, nil
}

// Limits are the largest metadata files the agent fetches, per role, set
// by the agent whatever a signature says: whoever holds a repository's
// online snapshot key signs the lengths of targets roles, and whoever
// holds its timestamp key signs the snapshot's. A file whose signed or
// declared length is larger is refused as EndlessData before any of it
// is read, and a body that goes on past the bound is cut there; nothing
// refused is parsed or stored.
type Limits struct {
	// Root bounds each root version, Timestamp and Snapshot their roles.
	Root, Timestamp, Snapshot int64
	// Targets bounds the top-level targets role; Delegated each delegated
	// (product) role.
	Targets, Delegated int64
}

// DirectorLimits: a device's director repository lists at most one
// target (one per ECU, and a Rampart device is one ECU) whose entry
// carries a copy of the release's custom metadata: a few KiB. Its
// snapshot names one role.
var DirectorLimits = Limits{Root: 128 << 10, Timestamp: 16 << 10, Snapshot: 16 << 10, Targets: 64 << 10, Delegated: 64 << 10}

// ImageLimits: the image repository's snapshot names one role per
// product line (about 110 bytes each with length and hash: 512 KiB is
// over 4,000 products); its targets role holds the delegations and their
// keys; a product role lists that product's releases (about 600 bytes
// each: 4 MiB is several thousand releases).
var ImageLimits = Limits{Root: 128 << 10, Timestamp: 16 << 10, Snapshot: 512 << 10, Targets: 1 << 20, Delegated: 4 << 20}

func limitsFor(name string) Limits {
	if name == "director" {
		return DirectorLimits
	}
	return ImageLimits
}

// forFile returns the bound of the metadata file a URL names
// (timestamp.json, N.ROLE.json) and the role's name.
func (l Limits) forFile(u string) (int64, string) {
	file := u[strings.LastIndex(u, "/")+1:]
	role := strings.TrimSuffix(file, ".json")
	if v, rest, ok := strings.Cut(role, "."); ok && v != "" && strings.Trim(v, "0123456789") == "" {
		role = rest
	}
	switch role {
	case metadata.ROOT:
		return l.Root, role
	case metadata.TIMESTAMP:
		return l.Timestamp, role
	case metadata.SNAPSHOT:
		return l.Snapshot, role
	case metadata.TARGETS:
		return l.Targets, role
	}
	return l.Delegated, role
}

// The director's metadata files go-tuf keeps, in the order they are
// committed from the staging copy.
var directorFiles = []string{"root.json", "timestamp.json", "snapshot.json", "targets.json"}

// refreshDirector refreshes the director in a staging copy of its trusted
// metadata (StateDir/director.staging) and copies the result over the
// trusted metadata (StateDir/director) only once the targets role is bound
// to this device. Were another device's metadata stored first, as go-tuf
// would, a device handed it once would then refuse its own director's
// lower versions as a rollback until they caught up.
//
// Another device's metadata with lower version numbers than ours fails
// go-tuf's rollback check before the binding can be read. So a rollback
// refusal is looked at again: the same repository verified from the
// trusted root alone, stored nowhere. Validly signed and bound to another
// device, it is refused as WrongDevice; bound to this one, it stays a
// rollback.
func refreshDirector(ctx context.Context, cfg Config, metaURL string) (*updater.Updater, error) {
	mdDir := filepath.Join(cfg.StateDir, "director")
	now := cfg.now()
	got, replay := cfg.Memo.take(mdDir).reuse(ctx, cfg.HTTPClient, "director", metaURL, mdDir, now)
	if got != nil {
		// Bound to this device when it was remembered; the check is cheap.
		if err := verify.DirectorBinding(got.up.GetTrustedMetadataSet().Targets[metadata.TARGETS], cfg.DeviceID); err != nil {
			return nil, err
		}
		cfg.Memo.hit()
		cfg.Memo.keep(metaURL, got)
		return got.up, nil
	}
	root, err := trustedRoot(mdDir, cfg.DirectorRoot)
	if err != nil {
		return nil, fmt.Errorf("uptane: director: %w", err)
	}
	stage := mdDir + ".staging"
	if err := stageCopy(mdDir, stage); err != nil {
		return nil, fmt.Errorf("uptane: director: %w", err)
	}
	defer os.RemoveAll(stage)
	f := newFetcher(ctx, cfg.HTTPClient, "director", replay)
	up, err := refresh(f, metaURL, stage, root, false, now)
	if err != nil {
		var ve *verify.Error
		if errors.As(err, &ve) && ve.Class == verify.Rollback {
			if werr := otherDevice(ctx, cfg, metaURL, stage, root, now); werr != nil {
				return nil, errors.Join(werr, err)
			}
		}
		return nil, err
	}
	if err := verify.DirectorBinding(up.GetTrustedMetadataSet().Targets[metadata.TARGETS], cfg.DeviceID); err != nil {
		return nil, err
	}
	if err := commitStaged(stage, mdDir); err != nil {
		return nil, fmt.Errorf("uptane: director: %w", err)
	}
	// The updater reads from the staging copy, now gone; the director has
	// no delegated roles for it to load later, and the files remembered
	// are the committed ones.
	cfg.Memo.remember(metaURL, &refreshed{up: up, mdDir: mdDir, fetch: f})
	return up, nil
}

// refreshed is a repository go-tuf refreshed: the updater holding its
// trusted set, the directory that set is kept in, and the fetcher the
// updater loads delegated roles with.
type refreshed struct {
	up    *updater.Updater
	mdDir string
	fetch *fetcher
	// from is the memo reused, when nothing was refreshed.
	from *memoRepo
}

// refreshImage refreshes the image repository, kept in StateDir/image.
func refreshImage(ctx context.Context, cfg Config, metaURL string) (*refreshed, error) {
	mdDir := filepath.Join(cfg.StateDir, "image")
	now := cfg.now()
	got, replay := cfg.Memo.take(mdDir).reuse(ctx, cfg.HTTPClient, "image", metaURL, mdDir, now)
	if got != nil {
		cfg.Memo.hit()
		return got, nil
	}
	root, err := trustedRoot(mdDir, cfg.ImageRoot)
	if err != nil {
		return nil, fmt.Errorf("uptane: image: %w", err)
	}
	f := newFetcher(ctx, cfg.HTTPClient, "image", replay)
	up, err := refresh(f, metaURL, mdDir, root, false, now)
	if err != nil {
		return nil, err
	}
	if err := keepTrustedRoot(mdDir); err != nil {
		return nil, fmt.Errorf("uptane: image: %w", err)
	}
	return &refreshed{up: up, mdDir: mdDir, fetch: f}, nil
}

// otherDevice verifies the director from the trusted root alone (in the
// staging copy, the newest root the refresh reached), storing nothing, and
// returns a WrongDevice refusal when that repository is bound to another
// device; nil otherwise.
func otherDevice(ctx context.Context, cfg Config, metaURL, stage string, root []byte, now time.Time) error {
	if r, err := os.ReadFile(filepath.Join(stage, "root.json")); err == nil && json.Valid(r) {
		root = r
	}
	empty, err := os.MkdirTemp(cfg.StateDir, "director.probe")
	if err != nil {
		return nil
	}
	defer os.RemoveAll(empty)
	up, err := refresh(newFetcher(ctx, cfg.HTTPClient, "director", nil), metaURL, empty, root, true, now)
	if err != nil {
		return nil
	}
	t := up.GetTrustedMetadataSet().Targets[metadata.TARGETS]
	if t == nil {
		return nil
	}
	var ve *verify.Error
	if err := verify.DirectorBinding(t, cfg.DeviceID); errors.As(err, &ve) && ve.Class == verify.WrongDevice {
		return err
	}
	return nil
}

// stageCopy makes stage a fresh copy of the metadata go-tuf reads from
// mdDir (the root comes from trustedRoot, which go-tuf writes itself).
// The copy is scratch: it is not synced.
func stageCopy(mdDir, stage string) error {
	if err := os.RemoveAll(stage); err != nil {
		return err
	}
	if err := os.MkdirAll(stage, 0o700); err != nil {
		return err
	}
	for _, f := range directorFiles[1:] {
		b, err := os.ReadFile(filepath.Join(mdDir, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(stage, f), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// commitStaged replaces each trusted metadata file in mdDir that the
// staged refresh changed, atomically and durably, root first. A power
// cut part way leaves a mix that go-tuf reads as it reads any stale
// cache: what no longer fits is fetched again and verified.
func commitStaged(stage, mdDir string) error {
	if err := os.MkdirAll(mdDir, 0o700); err != nil {
		return err
	}
	for _, f := range directorFiles {
		b, err := os.ReadFile(filepath.Join(stage, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if old, err := os.ReadFile(filepath.Join(mdDir, f)); err == nil && bytes.Equal(old, b) {
			continue
		}
		if err := atomicfile.WriteFile(filepath.Join(mdDir, f), b, 0o644); err != nil {
			return err
		}
	}
	return keepTrustedRoot(mdDir)
}

// TrustedImageRoot returns the newest image repository root the device
// trusts: the cached one in stateDir, else shipped. Offline bundles are
// verified against it.
func TrustedImageRoot(stateDir string, shipped []byte) ([]byte, error) {
	return trustedRoot(filepath.Join(stateDir, "image"), shipped)
}

func trustedRoot(mdDir string, shipped []byte) ([]byte, error) {
	cached, err := os.ReadFile(filepath.Join(mdDir, "root.json"))
	switch {
	case err == nil && json.Valid(cached):
		return cached, nil
	case err == nil || errors.Is(err, fs.ErrNotExist):
		// go-tuf replaces root.json without fsync, so a power cut can
		// leave it empty. Our own durable copy of the last trusted root
		// takes over; go-tuf then walks the root chain forward from it.
		if backup, berr := os.ReadFile(filepath.Join(mdDir, trustedRootFile)); berr == nil && json.Valid(backup) {
			return backup, nil
		}
		return shipped, nil
	}
	return nil, fmt.Errorf("reading the cached root: %w", err)
}

// trustedRootFile is a durable copy of the last trusted root, written by us
// with fsync, next to go-tuf's root.json.
const trustedRootFile = "trusted-root.json"

// keepTrustedRoot copies the root go-tuf just verified and stored into
// trustedRootFile, atomically and durably, when it changed.
func keepTrustedRoot(mdDir string) error {
	cur, err := os.ReadFile(filepath.Join(mdDir, "root.json"))
	if err != nil || !json.Valid(cur) {
		// go-tuf rewrites root.json only when the root changes; a torn
		// one stays torn, and the copy we have is still the trusted root.
		return nil
	}
	old, err := os.ReadFile(filepath.Join(mdDir, trustedRootFile))
	if err == nil && bytes.Equal(old, cur) {
		return nil
	}
	return atomicfile.WriteFile(filepath.Join(mdDir, trustedRootFile), cur, 0o644)
}

func refuse(c verify.Class, role string, err error, format string, args ...any) *verify.Error {
	return &verify.Error{Class: c, Role: role, Msg: fmt.Sprintf(format, args...), Err: err}
}

// isDownload reports a failed transfer (ErrUnavailable, or the context
// ending); an over-long response is not one: it is refused as endless
// data.
func isDownload(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// classify maps the errors of go-tuf's refresh: a failed transfer or
// local I/O is not a refusal; everything else is mapped by
// verify.FromTUF, the one mapping of go-tuf's errors onto classes.
func classify(repo string, err error) error {
	if nr := notRefusal(repo, err); nr != nil {
		return nr
	}
	return verify.FromTUF(repo, err)
}

// notRefusal returns err wrapped with its context when it is no verdict
// on the bytes (a refusal made while fetching passes through), nil
// otherwise.
func notRefusal(repo string, err error) error {
	var ve *verify.Error
	var pe *fs.PathError
	switch {
	case errors.As(err, &ve):
		return ve
	case isDownload(err):
		return fmt.Errorf("uptane: %s repository unavailable: %w", repo, err)
	case errors.As(err, &pe):
		return fmt.Errorf("uptane: %s metadata state: %w", repo, err) // local I/O, not a refusal
	}
	return nil
}

// checkLog verifies the release's inclusion in the log and the log's
// consistency with the stored checkpoint. It stores nothing: it returns
// the checkpoint and, when it is newer than the stored one, the function
// that stores it (Decision.KeepCheckpoint).
func checkLog(ctx context.Context, cfg Config, base string, res *verify.Result) ([]byte, func() error, error) {
	tpath := res.Target
	body, code, err := get(ctx, cfg.HTTPClient, "log", base+"/api/v1/log/proof/"+escapePath(tpath), maxProofResponse)
	if err != nil {
		return nil, nil, err
	}
	if code == http.StatusNotFound {
		return nil, nil, refuse(verify.NotLogged, "log", nil, "the log has no entry for %s", verify.Quote(tpath))
	}
	if code != http.StatusOK {
		return nil, nil, &transferError{url: "the log proof for " + tpath, err: fmt.Errorf("HTTP %d", code)}
	}
	newer, proof, err := verify.LogProof(cfg.LogOrigin, cfg.LogKey, body, res)
	if err != nil {
		return nil, nil, err
	}
	cp := proof.Checkpoint

	cpFile, older, oldRaw, err := storedCheckpoint(cfg)
	if err != nil {
		return nil, nil, err
	}
	if older != nil {
		var hashes [][]byte
		if older.Size < newer.Size {
			hashes, err = fetchConsistency(ctx, cfg, base, older.Size, newer.Size)
			if err != nil {
				return nil, nil, err
			}
		}
		if err := verify.LogConsistency(older, newer, hashes); err != nil {
			return nil, nil, err
		}
		if older.Size == newer.Size {
			return oldRaw, nil, nil // same tree: nothing new to store
		}
	}
	keyText := verifierText(cfg)
	fsy := cfg.fs()
	keep := func() error {
		if err := fsy.MkdirAll(filepath.Dir(cpFile), 0o700); err != nil {
			return fmt.Errorf("uptane: %w", err)
		}
		// The checkpoint first, then the key it verified under: a cut in
		// between leaves a key that does not match, and the checkpoint
		// is then discarded as a retired key's (harmless: the next one
		// is accepted afresh), never a key file that matches a
		// checkpoint it did not sign.
		if err := fsys.WriteFile(fsy, cpFile, cp, 0o600); err != nil {
			return fmt.Errorf("uptane: storing checkpoint: %w", err)
		}
		if err := fsys.WriteFile(fsy, cpFile+keySuffix, []byte(keyText+"\n"), 0o600); err != nil {
			return fmt.Errorf("uptane: storing checkpoint key: %w", err)
		}
		return nil
	}
	return cp, keep, nil
}

// CheckOfflineLog checks the log proof an offline bundle carries for a
// release that verify.Target has accepted (res): the statement is this
// release, and it is included under a checkpoint signed by the log key
// (the one the trusted image root names, else the pinned one). Offline
// there is no consistency proof to fetch, so a checkpoint of another size
// than the stored one is neither checked against it nor stored (the next
// online check-in proves consistency from the stored one); one of the
// same size must be the very same tree.
func CheckOfflineLog(cfg Config, proofJSON []byte, res *verify.Result) error {
	cfg, err := withStoredRootLogKey(cfg)
	if err != nil {
		return err
	}
	newer, _, err := verify.OfflineLogProof(cfg.LogKey, proofJSON, res)
	if err != nil {
		return err
	}
	_, older, _, err := storedCheckpoint(cfg)
	if err != nil || older == nil || older.Size != newer.Size {
		return err
	}
	return verify.LogConsistency(older, newer, nil)
}

// keySuffix names the file beside the stored checkpoint that holds the
// verifier key it was accepted under. A checkpoint stored before this
// file existed was accepted under the pinned key.
const keySuffix = ".key"

// storedCheckpoint reads and verifies the last checkpoint this device
// accepted; older is nil when there is none yet, or when it was accepted
// under a log key that the trusted image root has since retired: a
// checkpoint of a retired key is discarded, and the first checkpoint of
// the key now named is accepted afresh (see docs/incident-response.md).
// That is what ends a fork bound by a stolen log key.
func storedCheckpoint(cfg Config) (path string, older *log.Checkpoint, raw []byte, err error) {
	path = filepath.Join(cfg.StateDir, "log", "checkpoint")
	// One byte more than a checkpoint may be: a longer file is refused
	// by its size, as any stored checkpoint that does not verify.
	raw, err = readUpTo(cfg.fs(), path, logproof.MaxCheckpointSize+1)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return path, nil, nil, nil
	case err != nil:
		return path, nil, nil, fmt.Errorf("uptane: reading stored checkpoint: %w", err)
	}
	under := cfg.pinnedText()
	if k, kerr := readUpTo(cfg.fs(), path+keySuffix, 2*maxVerifierText+1); kerr == nil && len(k) <= 2*maxVerifierText {
		under = strings.TrimSpace(string(k))
	}
	if under != verifierText(cfg) {
		return path, nil, nil, nil // a retired key's: discarded
	}
	older, err = verify.StoredCheckpoint(cfg.LogOrigin, cfg.LogKey, raw, path)
	if err != nil {
		return path, nil, nil, err
	}
	return path, older, raw, nil
}

// readUpTo reads at most n bytes of name from fsy.
func readUpTo(fsy fsys.FS, name string, n int64) ([]byte, error) {
	f, err := fsy.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}

// maxVerifierText bounds a verifier key's text form.
const maxVerifierText = 1 << 10

// verifierText is the text form of the log key cfg verifies under.
func verifierText(cfg Config) string {
	if cfg.logKeyText != "" {
		return cfg.logKeyText
	}
	return cfg.pinnedText()
}

// pinnedText identifies the pinned log key: its name and key hash (the
// text form is not kept by note.Verifier).
func (cfg *Config) pinnedText() string {
	if cfg.pinned != "" {
		return cfg.pinned
	}
	if cfg.LogKey == nil {
		return ""
	}
	return fmt.Sprintf("%s+%08x", cfg.LogKey.Name(), cfg.LogKey.KeyHash())
}

// withRootLogKey returns cfg verifying the log under the key root names
// (logproof.RootField), if it names one. A root that names a malformed
// key is refused: it is validly signed, and it is wrong.
func withRootLogKey(cfg Config, root *metadata.Metadata[metadata.RootType]) (Config, error) {
	if root == nil {
		return cfg, nil
	}
	vk, err := verify.RootLogKey(root)
	if err != nil {
		return cfg, err
	}
	if vk == nil {
		return cfg, nil
	}
	cfg.pinned = cfg.pinnedText()
	cfg.LogKey, cfg.LogOrigin = vk, vk.Name()
	cfg.logKeyText = fmt.Sprintf("%s+%08x", vk.Name(), vk.KeyHash())
	return cfg, nil
}

// withStoredRootLogKey is withRootLogKey for the trusted image root in
// cfg.StateDir (offline: nothing is refreshed).
func withStoredRootLogKey(cfg Config) (Config, error) {
	b, err := TrustedImageRoot(cfg.StateDir, cfg.ImageRoot)
	if err != nil || len(b) == 0 {
		return cfg, err
	}
	root, err := metadata.Root().FromBytes(b)
	if err != nil {
		// The trusted root does not parse: the bundle's own checks
		// refuse it; the log key stays the pinned one.
		return cfg, nil
	}
	return withRootLogKey(cfg, root)
}

func fetchConsistency(ctx context.Context, cfg Config, base string, from, to uint64) ([][]byte, error) {
	u := fmt.Sprintf("%s/api/v1/log/consistency?from=%d&to=%d", base, from, to)
	body, code, err := get(ctx, cfg.HTTPClient, "log", u, maxConsistencyResponse)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, &transferError{url: fmt.Sprintf("the log consistency proof %d→%d", from, to), err: fmt.Errorf("HTTP %d", code)}
	}
	return verify.ConsistencyProof(body)
}

// get fetches u for role, reading at most limit bytes. The body of an
// answer other than 200 OK is not read: the caller decides what its status
// means.
func get(ctx context.Context, c *http.Client, role, u string, limit int64) ([]byte, int, error) {
	b, code, err := fetch(ctx, c, role, u, limit)
	if err != nil {
		return nil, 0, err
	}
	return bytes.TrimSpace(b), code, nil
}

// fetch is every request of Check. It sorts what can go wrong into the
// two kinds the caller must tell apart: a transfer that failed or was cut
// short, in any way, before the body arrived whole (a *transferError,
// ErrUnavailable), and a body, declared or actual, of more than limit
// bytes (an EndlessData refusal, having read at most limit+1 bytes).
// Only a body that arrived whole is returned, to be checked; for a status
// other than 200 OK, only the status.
func fetch(ctx context.Context, c *http.Client, role, u string, limit int64) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("uptane: %w", err)
	}
	resp, err := noRedirects(c).Do(req)
	if err != nil {
		return nil, 0, &transferError{url: u, err: boundedTransportError(err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The body is not used: whatever its length, a status other
		// than 200 OK is a failed transfer (or, for the log proof, 404
		// means not logged), never a refusal of the bytes.
		drainShort(resp)
		return nil, resp.StatusCode, nil
	}
	if resp.ContentLength > limit {
		return nil, 0, refuse(verify.EndlessData, role, nil, "%s declares %d bytes, more than the %d allowed", boundURL(u), resp.ContentLength, limit)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, 0, &transferError{url: u, err: fmt.Errorf("cut after %d bytes: %w", len(b), boundedTransportError(err))}
	}
	if int64(len(b)) > limit {
		return nil, 0, refuse(verify.EndlessData, role, nil, "%s goes on past the %d bytes allowed", boundURL(u), limit)
	}
	return b, resp.StatusCode, nil
}

// maxDrain bounds the error body read only to keep its connection.
const maxDrain = 4 << 10

// drainShort reads the rest of an error body that declares at most
// maxDrain bytes, so that its connection carries the next request: an
// HTTP/1.1 connection whose body is closed unread is closed with it. Every
// refresh asks for the next root version, and the answer, a 404, would
// otherwise cost each check-in two new TLS handshakes (one per
// repository), a fifth of a fleet's CPU in TestFleetE2E's profile. A body
// of no declared length or a longer one is not read.
func drainShort(resp *http.Response) {
	if resp.ContentLength >= 0 && resp.ContentLength <= maxDrain {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	}
}

// fetcher is go-tuf's Fetcher over fetch, bound to Check's context.
type fetcher struct {
	ctx    context.Context
	client *http.Client
	role   string
	limits Limits
	// replay holds answers fetched already in this refresh (Memo.reuse),
	// each given once in place of a request.
	replay map[string]fetched
}

func newFetcher(ctx context.Context, client *http.Client, role string, replay map[string]fetched) *fetcher {
	return &fetcher{ctx: ctx, client: client, role: role, limits: limitsFor(role), replay: replay}
}

// DownloadFile implements fetcher.Fetcher: maxLength is the length the
// parent role signed, or go-tuf's bound for the role when none is signed
// (set to the agent's own). Neither may exceed the agent's bound: a
// signed length beyond it is refused before anything is requested.
func (f *fetcher) DownloadFile(u string, maxLength int64, _ time.Duration) ([]byte, error) {
	if r, ok := f.replay[u]; ok {
		delete(f.replay, u)
		return r.data, r.err
	}
	limit, role := f.limits.forFile(u)
	if maxLength > limit {
		return nil, refuse(verify.EndlessData, f.role, nil, "%s: the %s metadata is signed as %d bytes, more than the %d this device accepts", f.role, verify.Quote(role), maxLength, limit)
	}
	if maxLength <= 0 {
		maxLength = limit
	}
	b, code, err := fetch(f.ctx, f.client, f.role, u, maxLength)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		// go-tuf looks for this type: a 404 for the next root version
		// ends the root chain.
		return nil, &transferError{url: u, err: &metadata.ErrDownloadHTTP{StatusCode: code, URL: boundURL(u)}}
	}
	return b, nil
}

// boundURL is u cut and quoted for error text (verify.Quote): an error is
// kept in the device's state and shown to people, and a hostile server
// chooses what the names in its metadata say.
func boundURL(u string) string { return verify.Quote(u) }

// noRedirects returns c, made never to follow a redirect: the redirect
// itself is returned as the answer, which is not 200 OK and so fails as a
// transfer. A device talks only to its configured server, over TLS with
// the pinned CA; a redirect would take it elsewhere (another host, plain
// http), and the server never redirects what a device asks for.
func noRedirects(c *http.Client) *http.Client {
	if c == nil {
		c = http.DefaultClient
	}
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cc
}

// escapePath escapes each segment of a slash-separated path.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// boundedTransportError keeps a transport error's cause but not the URL
// net/http quotes in it (the request's, which transferError names
// bounded), and bounds what is left.
func boundedTransportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &boundedError{msg: ue.Op + ": " + verify.Quote(ue.Err.Error()), err: err}
	}
	if len(err.Error()) > 4*256 { // four times what verify.Quote keeps
		return &boundedError{msg: verify.Quote(err.Error()), err: err}
	}
	return err
}

// boundedError is an error whose text is bounded and whose cause is kept
// for errors.Is and errors.As.
type boundedError struct {
	msg string
	err error
}

func (e *boundedError) Error() string { return e.msg }
func (e *boundedError) Unwrap() error { return e.err }
