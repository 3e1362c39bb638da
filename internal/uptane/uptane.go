// Package uptane is the device side's full Uptane verification of what the
// Rampart server asks a device to install.
//
// Check decides, before a single image byte is downloaded, whether the
// device should install something now. It requires three independent
// authorities to agree (design §3):
//
//  1. The director: the device's own TUF repository, served at /director/
//     over mTLS, refreshed with go-tuf from the trusted director root (the
//     cached StateDir/director/root.json, else the root shipped in firmware;
//     never trust on first use). Its targets role must be bound to this
//     device (directormeta.CheckDevice) and lists at most one target.
//  2. The image repository, served at /repo/ with consistent snapshots,
//     refreshed the same way (StateDir/image): the director's target must
//     exist there (delegations followed) and agree with the director's
//     entry in path, length, hashes, device id, hardware id and release
//     metadata (directormeta.Check). Its security version must be at least
//     Config.MinSecurityVersion.
//  3. The transparency log: the release statement must be included under
//     a checkpoint signed by the pinned log key, describe exactly this
//     target (path, length, SHA-256, security version), and the checkpoint
//     must be consistent with the last one this device accepted
//     (StateDir/log/checkpoint), which is then replaced atomically.
//
// Every refusal is a *verify.Error whose Class names the attack class; the
// two log-specific classes NotLogged and LogFork are defined here.
// Transport failures (server unreachable, 5xx) are returned as plain errors:
// they are not evidence of an attack and the caller should simply retry.
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
	"github.com/rampartfw/rampart/internal/directormeta"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/verify"
)

// Refusal classes for the transparency log, in addition to verify's.
const (
	// NotLogged: the release is not (provably) recorded in the log.
	NotLogged verify.Class = "not-logged"
	// LogFork: the log's checkpoint is not an append-only extension of the
	// one the device last accepted (split view, rollback of the log).
	LogFork verify.Class = "log-inconsistent"
)

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
	// ImageRoot and DirectorRoot are the roots shipped in firmware, used
	// only when StateDir holds no cached trusted root.
	ImageRoot, DirectorRoot []byte
	// LogOrigin and LogKey pin the transparency log.
	LogOrigin string
	LogKey    note.Verifier
	// DeviceID and HardwareID are this device's identity.
	DeviceID, HardwareID string
	// MinSecurityVersion is the device's anti-rollback counter.
	MinSecurityVersion uint64
	// Now is the reference time for metadata expiry; nil means time.Now.
	Now func() time.Time
}

// Decision is the outcome of a successful Check.
type Decision struct {
	// Nothing is true when the director lists nothing to install; every
	// other field is then zero.
	Nothing bool
	// Target is the image repository's target path.
	Target string
	// File is the image repository's verified entry (length, hashes).
	File *metadata.TargetFiles
	// Release is the parsed release metadata (security version, index).
	Release *release.Meta
	// ImageURL and IndexURL are the consistent-snapshot URLs of the image
	// and its chunk index under /repo/targets/.
	ImageURL, IndexURL string
	// Checkpoint is the log checkpoint now stored as the last accepted.
	Checkpoint []byte
}

// Check runs the full verification described in the package comment.
func Check(ctx context.Context, cfg Config) (*Decision, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	base := strings.TrimRight(cfg.ServerURL, "/")

	// 1. Director.
	dir, err := refresh(cfg, "director", base+"/director/", cfg.DirectorRoot)
	if err != nil {
		return nil, err
	}
	trusted := dir.GetTrustedMetadataSet()
	if trusted.Targets[metadata.TARGETS] == nil {
		return nil, refuse(verify.MissingTarget, "director", nil, "director has no trusted targets role")
	}
	if err := directormeta.CheckDevice(trusted.Targets[metadata.TARGETS], cfg.DeviceID); err != nil {
		return nil, directorRefusal(err)
	}
	dirTargets := dir.GetTopLevelTargets()
	if len(dirTargets) == 0 {
		return &Decision{Nothing: true}, nil
	}
	if len(dirTargets) > 1 {
		return nil, refuse(verify.Malformed, "director", nil, "director lists %d targets; a Rampart device installs one", len(dirTargets))
	}
	var tpath string
	var dirTarget *metadata.TargetFiles
	for p, tf := range dirTargets {
		tpath, dirTarget = p, tf
	}

	// 2. Image repository.
	img, err := refresh(cfg, "image", base+"/repo/", cfg.ImageRoot)
	if err != nil {
		return nil, err
	}
	imgTarget, err := img.GetTargetInfo(tpath)
	if err != nil {
		if strings.Contains(err.Error(), "not found") && !isDownload(err) {
			return nil, refuse(verify.MissingTarget, "image", err, "image repository does not list %q", tpath)
		}
		return nil, classify("image", err)
	}
	if err := directormeta.Check(dirTarget, imgTarget, tpath, cfg.DeviceID, cfg.HardwareID); err != nil {
		return nil, directorRefusal(err)
	}
	rel, err := release.FromTarget(tpath, imgTarget)
	if err != nil {
		return nil, refuse(verify.Malformed, "image", err, "release metadata of %q", tpath)
	}
	if rel.SecurityVersion < cfg.MinSecurityVersion {
		return nil, refuse(verify.Downgrade, "image", nil, "%q has security version %d, below the device's %d", tpath, rel.SecurityVersion, cfg.MinSecurityVersion)
	}

	// 3. Transparency log.
	cp, err := checkLog(ctx, cfg, base, tpath, imgTarget, rel)
	if err != nil {
		return nil, err
	}

	dirPart, file := path.Split(tpath)
	sum := imgTarget.Hashes["sha256"].String()
	return &Decision{
		Target:     tpath,
		File:       imgTarget,
		Release:    rel,
		ImageURL:   base + "/repo/targets/" + escapePath(dirPart+sum+"."+file),
		IndexURL:   base + "/repo/targets/" + escapePath(dirPart+rel.Index.SHA256+"."+file+release.IndexSuffix),
		Checkpoint: cp,
	}, nil
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

func (cfg *Config) now() time.Time {
	if cfg.Now != nil {
		return cfg.Now()
	}
	return time.Now()
}

// refresh runs go-tuf's client workflow for one repository, starting from
// the cached trusted root if there is one, else the shipped root.
func refresh(cfg Config, name, metaURL string, shipped []byte) (*updater.Updater, error) {
	mdDir := filepath.Join(cfg.StateDir, name)
	root, err := trustedRoot(mdDir, shipped)
	if err != nil {
		return nil, fmt.Errorf("uptane: %s: %w", name, err)
	}
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
	// Never NewFetcherWithHTTPClient: its unbounded retries make the
	// expected 404 for the next root hang.
	if err := uc.SetDefaultFetcherHTTPClient(cfg.HTTPClient); err != nil {
		return nil, fmt.Errorf("uptane: %s: %w", name, err)
	}
	up, err := updater.New(uc)
	if err != nil {
		// The trusted root itself does not load (not self-signed, garbage).
		return nil, classify(name, err)
	}
	up.UnsafeSetRefTime(cfg.now())
	if err := up.Refresh(); err != nil {
		return nil, classify(name, err)
	}
	if err := keepTrustedRoot(mdDir); err != nil {
		return nil, fmt.Errorf("uptane: %s: %w", name, err)
	}
	return up, nil
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

// isDownload reports a transport failure: the server could not be reached
// or answered with an HTTP error. An over-long response is not one: it is
// refused as endless data.
func isDownload(err error) bool {
	if errors.Is(err, &metadata.ErrDownloadLengthMismatch{}) {
		return false
	}
	var ue *url.Error
	return errors.Is(err, &metadata.ErrDownload{}) || errors.As(err, &ue) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// classify maps go-tuf's errors onto refusal classes. Download failures
// other than an over-long response are transport errors, not refusals.
func classify(repo string, err error) error {
	var ve *verify.Error
	if errors.As(err, &ve) {
		return ve
	}
	var pe *fs.PathError
	switch {
	case isDownload(err):
		return fmt.Errorf("uptane: %s repository unavailable: %w", repo, err)
	case errors.As(err, &pe):
		return fmt.Errorf("uptane: %s metadata state: %w", repo, err) // local I/O, not a refusal
	case errors.Is(err, &metadata.ErrDownloadLengthMismatch{}):
		return refuse(verify.Mismatch, repo, err, "%s: response longer than allowed", repo)
	case errors.Is(err, &metadata.ErrUnsignedMetadata{}):
		return refuse(verify.BadSignature, repo, err, "%s: not signed by enough trusted keys", repo)
	case errors.Is(err, &metadata.ErrExpiredMetadata{}):
		return refuse(verify.Expired, repo, err, "%s: metadata expired", repo)
	case errors.Is(err, &metadata.ErrBadVersionNumber{}), errors.Is(err, &metadata.ErrEqualVersionNumber{}):
		return refuse(verify.Rollback, repo, err, "%s: version number check failed", repo)
	case errors.Is(err, &metadata.ErrLengthOrHashMismatch{}):
		return refuse(verify.Mismatch, repo, err, "%s: length or hash differs from what the parent role signed", repo)
	}
	return refuse(verify.Malformed, repo, err, "%s: malformed or inconsistent metadata", repo)
}

// directorRefusal maps directormeta.Check and CheckDevice errors.
func directorRefusal(err error) error {
	switch {
	case errors.Is(err, directormeta.ErrWrongHardware):
		return refuse(verify.WrongHardware, "director", err, "director target is not for this hardware")
	case errors.Is(err, directormeta.ErrWrongDevice):
		return refuse(verify.Mismatch, "director", err, "director metadata is bound to another device")
	case errors.Is(err, directormeta.ErrDisagree):
		return refuse(verify.Mismatch, "director", err, "director and image repository disagree")
	}
	return refuse(verify.Malformed, "director", err, "director metadata")
}

// checkLog verifies the release's inclusion in the log and the log's
// consistency with the stored checkpoint, then stores the new checkpoint.
func checkLog(ctx context.Context, cfg Config, base, tpath string, tf *metadata.TargetFiles, rel *release.Meta) ([]byte, error) {
	body, code, err := get(ctx, cfg.HTTPClient, base+"/api/v1/log/proof/"+escapePath(tpath), maxProofResponse)
	if err != nil {
		return nil, err
	}
	if code == http.StatusNotFound {
		return nil, refuse(NotLogged, "log", nil, "the log has no entry for %q", tpath)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("uptane: log proof for %q: HTTP %d", tpath, code)
	}
	newer, proof, err := verifyLogProof(cfg, body, tpath, tf, rel)
	if err != nil {
		return nil, err
	}
	cp := proof.Checkpoint

	cpFile, older, oldRaw, err := storedCheckpoint(cfg)
	if err != nil {
		return nil, err
	}
	if older != nil {
		var hashes [][]byte
		if older.Size < newer.Size {
			hashes, err = fetchConsistency(ctx, cfg, base, older.Size, newer.Size)
			if err != nil {
				return nil, err
			}
		}
		if err := logproof.CheckConsistency(older, newer, hashes); err != nil {
			return nil, logRefusal(err)
		}
		if older.Size == newer.Size {
			return oldRaw, nil // same tree: nothing new to store
		}
	}
	if err := os.MkdirAll(filepath.Dir(cpFile), 0o700); err != nil {
		return nil, fmt.Errorf("uptane: %w", err)
	}
	if err := atomicfile.WriteFile(cpFile, cp, 0o600); err != nil {
		return nil, fmt.Errorf("uptane: storing checkpoint: %w", err)
	}
	return cp, nil
}

// verifyLogProof checks a log proof response (the server's
// /api/v1/log/proof answer, which offline bundles carry too) for the
// release tpath: its statement must be this release, and its inclusion
// must verify under a checkpoint signed by the pinned log key. It returns
// that checkpoint, parsed and raw.
func verifyLogProof(cfg Config, body []byte, tpath string, tf *metadata.TargetFiles, rel *release.Meta) (*log.Checkpoint, *logproof.Proof, error) {
	var resp struct {
		Statement string          `json:"statement"`
		Proof     json.RawMessage `json:"proof"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, nil, refuse(verify.Malformed, "log", err, "log proof response")
	}
	proof, err := logproof.ParseProof(resp.Proof)
	if err != nil {
		return nil, nil, refuse(verify.Malformed, "log", err, "log proof")
	}
	leaf := []byte(resp.Statement)
	st, err := logproof.ParseStatement(leaf)
	if err != nil {
		return nil, nil, refuse(verify.Malformed, "log", err, "log statement")
	}
	sum := tf.Hashes["sha256"].String()
	if st.Target != tpath || st.Length != tf.Length || st.SHA256 != sum || st.SecurityVersion != rel.SecurityVersion {
		return nil, nil, refuse(NotLogged, "log", nil, "the logged statement (%s, %d bytes, sha256 %s, security version %d) is not this release (%s, %d bytes, sha256 %s, security version %d)",
			st.Target, st.Length, st.SHA256, st.SecurityVersion, tpath, tf.Length, sum, rel.SecurityVersion)
	}
	newer, err := logproof.VerifyInclusion(cfg.LogOrigin, cfg.LogKey, leaf, proof)
	if err != nil {
		return nil, nil, logRefusal(err)
	}
	return newer, proof, nil
}

// VerifyLogProof checks a log proof as an offline bundle carries it (the
// server's /api/v1/log/proof answer) for the release res that verify.Target
// accepted: the statement is this release, and it is included under a
// checkpoint signed by logKey. It returns the checkpoint and the release's
// index in the log. It is pure: no network, no stored state.
func VerifyLogProof(logKey note.Verifier, proofJSON []byte, res *verify.Result) (*log.Checkpoint, uint64, error) {
	if len(proofJSON) == 0 {
		return nil, 0, refuse(NotLogged, "log", nil, "the bundle carries no log proof for %s (rampart bundle --server URL --ca FILE adds it)", res.Target)
	}
	if logKey == nil {
		return nil, 0, errors.New("uptane: no log key")
	}
	cp, proof, err := verifyLogProof(Config{LogOrigin: logKey.Name(), LogKey: logKey}, proofJSON, res.Target, res.File, res.Release)
	if err != nil {
		return nil, 0, err
	}
	return cp, proof.Index, nil
}

// CheckOfflineLog checks the log proof an offline bundle carries for a
// release that verify.Target has accepted (res): the statement is this
// release, and it is included under a checkpoint signed by the pinned log
// key. Offline there is no consistency proof to fetch, so a checkpoint of
// another size than the stored one is neither checked against it nor
// stored (the next online check-in proves consistency from the stored
// one); one of the same size must be the very same tree.
func CheckOfflineLog(cfg Config, proofJSON []byte, res *verify.Result) error {
	newer, _, err := VerifyLogProof(cfg.LogKey, proofJSON, res)
	if err != nil {
		return err
	}
	_, older, _, err := storedCheckpoint(cfg)
	if err != nil || older == nil || older.Size != newer.Size {
		return err
	}
	if err := logproof.CheckConsistency(older, newer, nil); err != nil {
		return logRefusal(err)
	}
	return nil
}

// storedCheckpoint reads and verifies the last checkpoint this device
// accepted; older is nil when there is none yet.
func storedCheckpoint(cfg Config) (path string, older *log.Checkpoint, raw []byte, err error) {
	path = filepath.Join(cfg.StateDir, "log", "checkpoint")
	raw, err = os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return path, nil, nil, nil
	case err != nil:
		return path, nil, nil, fmt.Errorf("uptane: reading stored checkpoint: %w", err)
	}
	older, err = logproof.OpenCheckpoint(cfg.LogOrigin, cfg.LogKey, raw)
	if err != nil {
		// Storage is writable; a stored checkpoint that does not verify
		// was not written by us. Refuse rather than forget it.
		return path, nil, nil, refuse(verify.BadSignature, "log", err, "stored checkpoint %s does not verify", path)
	}
	return path, older, raw, nil
}

func fetchConsistency(ctx context.Context, cfg Config, base string, from, to uint64) ([][]byte, error) {
	u := fmt.Sprintf("%s/api/v1/log/consistency?from=%d&to=%d", base, from, to)
	body, code, err := get(ctx, cfg.HTTPClient, u, maxConsistencyResponse)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("uptane: log consistency %d→%d: HTTP %d", from, to, code)
	}
	var resp struct {
		Hashes [][]byte `json:"hashes"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, refuse(verify.Malformed, "log", err, "log consistency response")
	}
	return resp.Hashes, nil
}

func logRefusal(err error) error {
	switch {
	case errors.Is(err, logproof.ErrBadCheckpoint):
		return refuse(verify.BadSignature, "log", err, "log checkpoint not signed by the pinned log key")
	case errors.Is(err, logproof.ErrNotIncluded):
		return refuse(NotLogged, "log", err, "release not proven to be in the log")
	case errors.Is(err, logproof.ErrInconsistent):
		return refuse(LogFork, "log", err, "log is not consistent with the last accepted checkpoint")
	}
	return refuse(verify.Malformed, "log", err, "log proof")
}

// get fetches u, reading at most limit bytes; a longer body is a refusal.
func get(ctx context.Context, c *http.Client, u string, limit int64) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("uptane: %w", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("uptane: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, 0, fmt.Errorf("uptane: reading %s: %w", u, err)
	}
	if int64(len(b)) > limit {
		return nil, 0, refuse(verify.Mismatch, "log", nil, "response from %s exceeds %d bytes", u, limit)
	}
	return bytes.TrimSpace(b), resp.StatusCode, nil
}

// escapePath escapes each segment of a slash-separated path.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}
