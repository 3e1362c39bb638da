// Package api owns rampart-server's wire vocabulary: its routes, the
// stable error codes of its refusals and the statuses a device reports.
// rampart, rampart-server and rampart-agent name them from here, and
// docs/api.md is checked against it (docs_test.go): every route the
// server serves is documented, every documented route and error code
// exists.
//
// It is a leaf package (standard library only), so the device agent may
// link it. The log-proof envelope, which offline bundles carry too, is
// logproof.Envelope.
package api

import "time"

// Route is one route of the server: a method and a net/http ServeMux
// pattern.
type Route struct {
	Method, Pattern string
}

// String is the route as ServeMux takes it: "METHOD PATTERN".
func (r Route) String() string { return r.Method + " " + r.Pattern }

// Routes are every route rampart-server serves (server.Handler registers
// exactly these; a test checks it).
var Routes = []Route{
	// Operator API.
	{"GET", "/api/v1/keys"},
	{"PUT", "/api/v1/blobs/{digest}"},
	{"HEAD", "/api/v1/blobs/{digest}"},
	{"POST", "/api/v1/repo/push"},
	{"GET", "/api/v1/repo/versions"},
	{"POST", "/api/v1/tokens"},
	{"GET", "/api/v1/tokens"},
	{"POST", "/api/v1/tokens/{name}/role"},
	{"POST", "/api/v1/tokens/{name}/revoke"},
	{"GET", "/api/v1/audit"},
	{"GET", "/api/v1/audit/anchor"},
	{"GET", "/api/v1/log/proof/{target...}"},
	{"GET", "/api/v1/log/consistency"},
	{"POST", "/api/v1/devices/tokens"},
	{"GET", "/api/v1/devices"},
	{"GET", "/api/v1/devices/{id}"},
	{"POST", "/api/v1/devices/{id}/tags"},
	{"GET", "/api/v1/releases"},
	{"POST", "/api/v1/rollouts"},
	{"GET", "/api/v1/rollouts"},
	{"GET", "/api/v1/rollouts/{id}"},
	{"POST", "/api/v1/rollouts/{id}/{action}"},
	{"POST", "/api/v1/policy"},
	{"GET", "/api/v1/policy"},
	{"GET", "/api/v1/policy/explain"},
	{"POST", "/api/v1/devices/{id}/revoke"},
	{"DELETE", "/api/v1/devices/{id}"},
	{"POST", "/api/v1/deploy"},
	{"GET", "/api/v1/fleet/stats"},
	{"POST", "/api/v1/incidents/revoke-key"},
	{"POST", "/api/v1/incidents/redeploy"},
	{"GET", "/api/v1/whoami"},
	// Device API.
	{"POST", "/api/v1/enroll"},
	{"POST", "/api/v1/device/report"},
	{"POST", "/api/v1/director/root"},
	{"GET", "/api/v1/director/root"},
	{"GET", "/director/{file}"},
	// The published repository and log.
	{"GET", "/repo/{file}"},
	{"GET", "/repo/targets/{path...}"},
	{"GET", "/repo/chunks/{hash}"},
	{"GET", "/log/"},
	// The dashboard's static files.
	{"GET", "/ui/"},
	// Operations.
	{"GET", "/healthz"},
	{"GET", "/readyz"},
	{"GET", "/metrics"},
}

// Code is a refusal's stable error code: the "code" of the error body.
type Code string

// The error codes of rampart-server's refusals, by status (docs/api.md,
// Errors).
const (
	// 400
	BadJSON             Code = "bad-json"
	BadPath             Code = "bad-path"
	BadDigest           Code = "bad-digest"
	BadLength           Code = "bad-length"
	BadRole             Code = "bad-role"
	BadName             Code = "bad-name"
	BadHardware         Code = "bad-hardware"
	BadTTL              Code = "bad-ttl"
	BadDeviceID         Code = "bad-device-id"
	BadCSR              Code = "bad-csr"
	UnsupportedKey      Code = "unsupported-key"
	BadEnrollment       Code = "bad-enrollment"
	BadManufacturerCert Code = "bad-manufacturer-cert"
	BadStatus           Code = "bad-status"
	BadVersion          Code = "bad-version"
	BadReason           Code = "bad-reason"
	NoReason            Code = "no-reason"
	BadTarget           Code = "bad-target"
	AmbiguousTarget     Code = "ambiguous-target"
	BadAfter            Code = "bad-after"
	BadLimit            Code = "bad-limit"
	BadRange            Code = "bad-range"
	BadSelector         Code = "bad-selector"
	BadTag              Code = "bad-tag"
	BadProduct          Code = "bad-product"
	BadPhases           Code = "bad-phases"
	BadRollout          Code = "bad-rollout"
	BadWindow           Code = "bad-window"
	BadPolicy           Code = "bad-policy"
	BadKeyID            Code = "bad-key-id"
	// 401
	Unauthenticated         Code = "unauthenticated"
	TokenRevoked            Code = "token-revoked" // also 409: changing a revoked token
	NoDeviceCertificate     Code = "no-device-certificate"
	BadToken                Code = "bad-token"
	TokenUsed               Code = "token-used"
	TokenExpired            Code = "token-expired"
	ManufacturerUnknownCA   Code = "manufacturer-unknown-ca"
	ManufacturerCertExpired Code = "manufacturer-cert-expired"
	ManufacturerKeyMismatch Code = "manufacturer-key-mismatch"
	// 403
	Forbidden         Code = "forbidden"
	DeviceRevoked     Code = "device-revoked"
	NoManufacturerCA  Code = "no-manufacturer-ca"
	DeviceIDMismatch  Code = "device-id-mismatch"
	HardwareMismatch  Code = "hardware-mismatch"
	NotFound          Code = "not-found"
	UnknownRelease    Code = "unknown-release"
	SelfApproval      Code = "self-approval"
	MethodNotAllowed  Code = "method-not-allowed"
	Timeout           Code = "timeout"
	VersionNotNext    Code = "version-not-next" // 409; 422 for a director root out of order
	ReleaseLogged     Code = "release-logged"
	Exists            Code = "exists"
	DeviceExists      Code = "device-exists"
	ReplayedReport    Code = "replayed-report"
	CounterJump       Code = "counter-jump"
	Conflict          Code = "conflict"
	LastAdmin         Code = "last-admin"
	AlreadyRevoked    Code = "already-revoked"
	AuditPruned       Code = "audit-pruned"
	TooLarge          Code = "too-large"
	RateLimited       Code = "rate-limited"
	RolloutState      Code = "rollout-state"
	UnknownKey        Code = "unknown-key"
	KeyAlreadyRevoked Code = "key-revoked"
	KeyNotRevoked     Code = "key-not-revoked"
	// 422: push refusals (pushaccept, hostedrepo, director roots)
	BadSignature         Code = "bad-signature"
	Expired              Code = "expired"
	Malformed            Code = "malformed"
	UnknownRole          Code = "unknown-role"
	ReleaseImmutable     Code = "release-immutable"
	SecurityLowered      Code = "security-version-lowered"
	OutsideDelegation    Code = "path-outside-delegation"
	UnsafeTargetPath     Code = "unsafe-target-path"
	NothingPushed        Code = "nothing-pushed"
	MissingBlob          Code = "missing-blob"
	BlobMismatch         Code = "blob-mismatch"
	BadIndex             Code = "bad-index"
	OnlineKeys           Code = "online-keys"
	LogKey               Code = "log-key"
	WrongHardware        Code = "wrong-hardware"
	UnknownInstalled     Code = "unknown-installed-release"
	WrongSecurityVersion Code = "wrong-security-version"
	BelowSecurityVersion Code = "below-security-version"
	RevokedRelease       Code = "revoked-release"
	NotSignedByKey       Code = "not-signed-by-key"
	// 5xx
	Internal            Code = "internal"
	ChunkCorrupt        Code = "chunk-corrupt"
	PayloadCorrupt      Code = "payload-corrupt"
	Busy                Code = "busy"
	NotReady            Code = "not-ready"
	NoDirectorRoot      Code = "no-director-root"
	NoDeviceCA          Code = "no-device-ca"
	InsufficientStorage Code = "insufficient-storage"
)

// Codes are every error code.
var Codes = []Code{
	BadJSON, BadPath, BadDigest, BadLength, BadRole, BadName, BadHardware, BadTTL, BadDeviceID, BadCSR,
	UnsupportedKey, BadEnrollment, BadManufacturerCert, BadStatus, BadVersion, BadReason, NoReason, BadTarget,
	AmbiguousTarget, BadAfter, BadLimit, BadRange, BadSelector, BadTag, BadProduct, BadPhases, BadRollout,
	BadWindow, BadPolicy, BadKeyID,
	Unauthenticated, TokenRevoked, NoDeviceCertificate, BadToken, TokenUsed, TokenExpired,
	ManufacturerUnknownCA, ManufacturerCertExpired, ManufacturerKeyMismatch,
	Forbidden, DeviceRevoked, NoManufacturerCA, DeviceIDMismatch, HardwareMismatch, SelfApproval,
	NotFound, UnknownRelease, MethodNotAllowed, Timeout,
	VersionNotNext, ReleaseLogged, Exists, DeviceExists, ReplayedReport, CounterJump, Conflict, LastAdmin, AlreadyRevoked,
	AuditPruned, TooLarge, RateLimited, RolloutState, UnknownKey, KeyAlreadyRevoked, KeyNotRevoked,
	BadSignature, Expired, Malformed, UnknownRole, ReleaseImmutable, SecurityLowered, OutsideDelegation,
	UnsafeTargetPath, NothingPushed, MissingBlob, BlobMismatch, BadIndex, OnlineKeys, LogKey, WrongHardware,
	UnknownInstalled, WrongSecurityVersion, BelowSecurityVersion, RevokedRelease, NotSignedByKey,
	Internal, ChunkCorrupt, PayloadCorrupt, Busy, NotReady, NoDirectorRoot, NoDeviceCA, InsufficientStorage,
}

// ReportStatus is the status of a device report (POST /api/v1/device/report).
type ReportStatus string

// The statuses a device reports. Only Installed, sent after a confirmed
// boot, changes what the server believes the device runs.
const (
	Downloading            ReportStatus = "downloading"
	Installing             ReportStatus = "installing"
	InstalledPendingReboot ReportStatus = "installed-pending-reboot"
	Installed              ReportStatus = "installed"
	RolledBack             ReportStatus = "rolled-back"
	Failed                 ReportStatus = "failed"
	VerificationRefused    ReportStatus = "verification-refused"
)

// ReportStatuses are every report status, in the order of an update.
var ReportStatuses = []ReportStatus{Downloading, Installing, InstalledPendingReboot, Installed, RolledBack, Failed, VerificationRefused}

// NeedsReason reports whether a report of status s must give a reason.
func (s ReportStatus) NeedsReason() bool {
	return s == Failed || s == RolledBack || s == VerificationRefused
}

// ReportRequest is a device report: POST /api/v1/device/report. Counter
// increases with every report of a device (replays are refused).
type ReportRequest struct {
	Counter         int64        `json:"counter"`
	Status          ReportStatus `json:"status"`
	Reason          string       `json:"reason,omitempty"`
	Version         string       `json:"version,omitempty"`
	SecurityVersion int64        `json:"security_version,omitempty"`
}

// Keys is the answer of GET /api/v1/keys: the server's online public keys
// (PEM) for the root ceremonies and the transparency log's verifier key.
// Its members are in the order encoding/json gives a map's, so that the
// answer's bytes did not change when it became a struct.
type Keys struct {
	DirectorSnapshot  string `json:"director-snapshot,omitempty"`
	DirectorTargets   string `json:"director-targets,omitempty"`
	DirectorTimestamp string `json:"director-timestamp,omitempty"`
	LogKey            string `json:"log_key"`
	LogOrigin         string `json:"log_origin"`
	Snapshot          string `json:"snapshot"`
	Timestamp         string `json:"timestamp"`
}

// Role returns the public key of an online role by its name in the data
// directory (snapshot, timestamp, director-targets, director-snapshot,
// director-timestamp); "" when the server has none.
func (k *Keys) Role(name string) string {
	switch name {
	case "snapshot":
		return k.Snapshot
	case "timestamp":
		return k.Timestamp
	case "director-targets":
		return k.DirectorTargets
	case "director-snapshot":
		return k.DirectorSnapshot
	case "director-timestamp":
		return k.DirectorTimestamp
	}
	return ""
}

// VersionsResponse is the answer of GET /api/v1/repo/versions: the
// image repository's current version of each role (root, targets and
// each product role).
type VersionsResponse struct {
	Versions map[string]int64 `json:"versions"`
}

// DirectorRootRequest is POST /api/v1/director/root: new director root
// versions, oldest first.
type DirectorRootRequest struct {
	Roots [][]byte `json:"roots"`
}

// DirectorRootResponse is the answer of POST /api/v1/director/root: the
// director root version now current.
type DirectorRootResponse struct {
	Root int64 `json:"root"`
}

// DirectorVersionResponse is the answer of GET /api/v1/director/root (0
// before the first push).
type DirectorVersionResponse struct {
	Director int64 `json:"director"`
}

// PushRequest is POST /api/v1/repo/push: offline-signed metadata of the
// image repository, each file's bytes as signed (base64 in JSON). Roots
// are the new root versions, oldest first; Roles the product roles by
// name.
type PushRequest struct {
	Roots   [][]byte          `json:"roots,omitempty"`
	Targets []byte            `json:"targets,omitempty"`
	Roles   map[string][]byte `json:"roles,omitempty"`
}

// PushResponse is the answer to an accepted push: the versions now
// published, by role, and the new releases, logged.
type PushResponse struct {
	Versions map[string]int64 `json:"versions"`
	Releases []string         `json:"releases"`
}

// ErrorBody is every refusal's JSON body: {"error": {...}}.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Error is a refusal: a stable code, a message that says what to fix,
// and, for push refusals, the role concerned.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Role    string `json:"role,omitempty"`
}

// RefusalClass is why a device refused what the server offered: the
// reason of a verification-refused report. Each class is an attack (or a
// fault) the device's verification recognised; the server counts them
// (tamper detections), never as failed installs.
type RefusalClass string

// The refusal classes. They are the device's verify.Classes, named here
// so that the server and the operator CLI need not link the device's
// verification; a test keeps the two lists equal.
const (
	RefusedBadSignature  RefusalClass = "bad-signature"
	RefusedExpired       RefusalClass = "expired"
	RefusedRollback      RefusalClass = "rollback"
	RefusedMismatch      RefusalClass = "mismatch"
	RefusedWrongHardware RefusalClass = "wrong-hardware"
	RefusedDowngrade     RefusalClass = "security-version"
	RefusedMissingTarget RefusalClass = "missing-target"
	RefusedMalformed     RefusalClass = "malformed"
	RefusedNotLogged     RefusalClass = "not-logged"
	RefusedLogFork       RefusalClass = "log-inconsistent"
	RefusedWrongDevice   RefusalClass = "wrong-device"
	RefusedEndlessData   RefusalClass = "endless-data"
)

// RefusalClasses are every refusal class.
var RefusalClasses = []RefusalClass{RefusedBadSignature, RefusedExpired, RefusedRollback, RefusedMismatch, RefusedWrongHardware,
	RefusedDowngrade, RefusedMissingTarget, RefusedMalformed, RefusedNotLogged, RefusedLogFork, RefusedWrongDevice, RefusedEndlessData}

// TokenRequest is POST /api/v1/tokens: a new operator token.
type TokenRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// TokenCreated is the answer of POST /api/v1/tokens: the secret, shown
// this once.
type TokenCreated struct {
	Name  string `json:"name"`
	Role  string `json:"role"`
	Token string `json:"token"`
}

// RoleRequest is POST /api/v1/tokens/{name}/role.
type RoleRequest struct {
	Role string `json:"role"`
}

// Token is an operator token as the server shows it: never its secret
// or hash.
type Token struct {
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	CreatedAt time.Time  `json:"created_at"`
	Revoked   bool       `json:"revoked"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// TokenList is the answer of GET /api/v1/tokens.
type TokenList struct {
	Tokens []Token `json:"tokens"`
}

// EnrollTokenRequest is POST /api/v1/devices/tokens. TTLSeconds is nil
// when not given (then the default applies); a given 0 is refused, not
// read as "default".
type EnrollTokenRequest struct {
	Hardware   string `json:"hardware"`
	TTLSeconds *int64 `json:"ttl_seconds"`
}

// EnrollToken is the answer of POST /api/v1/devices/tokens: the one-time
// secret, shown this once.
type EnrollToken struct {
	Expires  time.Time `json:"expires"`
	Hardware string    `json:"hardware"`
	Token    string    `json:"token"`
}

// EnrollRequest is POST /api/v1/enroll: either a one-time token, or a
// manufacturer certificate chain (DER, leaf first), and a CSR made on the
// device. Hardware is the device's own hardware id: with a token the
// server refuses a token made for other hardware before spending it
// (optional for older agents); with a manufacturer certificate that
// names no hardware id, it is the hardware id.
type EnrollRequest struct {
	Token                    string   `json:"token,omitempty"`
	DeviceID                 string   `json:"device_id"`
	CSR                      []byte   `json:"csr"`
	ManufacturerCertificates [][]byte `json:"manufacturer_certificates,omitempty"`
	Hardware                 string   `json:"hardware,omitempty"`
}

// Enrolled is the answer of POST /api/v1/enroll: the device's client
// certificate (PEM).
type Enrolled struct {
	Certificate string `json:"certificate"`
	DeviceID    string `json:"device_id"`
	Hardware    string `json:"hardware"`
}

// DeployRequest is POST /api/v1/deploy.
type DeployRequest struct {
	Target   string `json:"target"`
	Hardware string `json:"hardware"`
}

// Deployed is the answer of POST /api/v1/deploy: the target resolved,
// how many devices it names and how many assignments changed.
type Deployed struct {
	Changed int    `json:"changed"`
	Devices int    `json:"devices"`
	Target  string `json:"target"`
}

// Report is one of a device's kept reports.
type Report struct {
	Counter         uint64    `json:"counter"`
	Status          string    `json:"status"`
	Reason          string    `json:"reason,omitempty"`
	Version         string    `json:"version,omitempty"`
	SecurityVersion uint64    `json:"security_version,omitempty"`
	At              time.Time `json:"at"`
}

// Device is the answer of GET /api/v1/devices/{id}. Its members are in
// the order encoding/json gives a map's (as were those of the map it
// replaced), and so are those of the other answers that were maps.
type Device struct {
	Anomalies       uint64            `json:"anomalies"`
	Assigned        string            `json:"assigned"`
	EnrolledAt      time.Time         `json:"enrolled_at"`
	Hardware        string            `json:"hardware"`
	ID              string            `json:"id"`
	LastAnomaly     string            `json:"last_anomaly"`
	LastRefusal     string            `json:"last_refusal,omitempty"`
	LastSeen        time.Time         `json:"last_seen"`
	LastStatus      string            `json:"last_status"`
	ReportCounts    map[string]uint64 `json:"report_counts"`
	Reports         []Report          `json:"reports"`
	Revoked         bool              `json:"revoked"`
	SecurityVersion uint64            `json:"security_version"`
	State           string            `json:"state"`
	Tags            map[string]string `json:"tags,omitempty"`
	Version         string            `json:"version"`
}

// AuditAnchor is the answer of GET /api/v1/audit/anchor: where the
// retained audit log starts (see store.AuditAnchor).
type AuditAnchor struct {
	Hash      string     `json:"hash"`
	PrunedAt  *time.Time `json:"pruned_at,omitempty"`
	Retention string     `json:"retention"`
	Seq       uint64     `json:"seq"`
}

// Consistency is the answer of GET /api/v1/log/consistency.
type Consistency struct {
	Hashes [][]byte `json:"hashes"`
}

// Ready is the answer of GET /readyz: Ready, or the reason it is not
// with the usual error object.
type Ready struct {
	Error  *Error `json:"error,omitempty"`
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
}

// DeviceSummary is a device as GET /api/v1/devices lists it. State is
// "revoked", else the status of its latest report, else "enrolled".
type DeviceSummary struct {
	ID              string            `json:"id"`
	Hardware        string            `json:"hardware"`
	Tags            map[string]string `json:"tags"`
	Version         string            `json:"version"`
	SecurityVersion uint64            `json:"security_version"`
	State           string            `json:"state"`
	LastSeen        *time.Time        `json:"last_seen"`
	LastRefusal     string            `json:"last_refusal,omitempty"`
}

// DeviceList is a page of GET /api/v1/devices?select=EXPR&after=ID&limit=N:
// the devices the selector matched among those scanned, in id order, and
// Next, the id to ask after for the next page ("" at the end). A page may
// hold fewer than limit devices, or none, and still not be the last: each
// request scans a bounded number of devices.
type DeviceList struct {
	Devices []DeviceSummary `json:"devices"`
	Next    string          `json:"next,omitempty"`
}

// TagsRequest is POST /api/v1/devices/{id}/tags: keys to remove, then
// tags to set.
type TagsRequest struct {
	Set   map[string]string `json:"set,omitempty"`
	Unset []string          `json:"unset,omitempty"`
}

// Tags is the answer of POST /api/v1/devices/{id}/tags: the tags the
// device now has.
type Tags struct {
	Tags map[string]string `json:"tags"`
}

// Release is a published release as GET /api/v1/releases lists it: from
// the image repository's signed metadata (its product role's signers
// among the delegation's keys, and whether they meet its threshold) and
// the transparency log (its leaf index).
type Release struct {
	Target          string    `json:"target"`
	Product         string    `json:"product"`
	Version         string    `json:"version"`
	SecurityVersion uint64    `json:"security_version"`
	Hardware        []string  `json:"hardware"`
	Signers         []string  `json:"signers"`
	Threshold       int       `json:"threshold"`
	ThresholdMet    bool      `json:"threshold_met"`
	LogIndex        *uint64   `json:"log_index"`
	Created         time.Time `json:"created"`
	// SignedBy are the key ids whose signatures on the product role
	// met its threshold when the release was first published (its log
	// statement's signers); RevokedKey is set when one of them, or of
	// Signers, is revoked (rampart incident revoke-key): the release is
	// never offered again.
	SignedBy   []string `json:"signed_by,omitempty"`
	RevokedKey bool     `json:"revoked_key,omitempty"`
	// LogProof is whether the release's inclusion proof in the
	// transparency log verifies, checked by the server as a device
	// checks it (the statement is this release, the proof holds under
	// the log's current signed checkpoint): LogProofVerified,
	// LogProofFailed (with LogProofError saying why), LogProofNotLogged
	// or LogProofUnchecked (the server has no log to check against).
	LogProof      string `json:"log_proof"`
	LogProofError string `json:"log_proof_error,omitempty"`
}

// Release.LogProof values.
const (
	LogProofVerified  = "verified"
	LogProofFailed    = "failed"
	LogProofNotLogged = "not-logged"
	LogProofUnchecked = "unchecked"
)

// ReleaseList is the answer of GET /api/v1/releases[?product=P]: newest
// first within each product, products in name order.
type ReleaseList struct {
	Releases []Release `json:"releases"`
}

// Rollout states.
const (
	RolloutWaitingApproval = "waiting-approval"
	RolloutRunning         = "running"
	RolloutPaused          = "paused"
	RolloutCompleted       = "completed"
	RolloutAborted         = "aborted"
)

// RolloutRequest is POST /api/v1/rollouts. Phases is a comma-separated
// list of percentages ("1%,10%,50%,100%") or device counts ("10,100,100%"),
// increasing and ending at 100%, or "exp" (1%, 2%, 4%, ... 64%, 100%).
// Soak is a Go duration each phase is held for; MaxFailureRate a
// percentage ("2%"); ApproveAfter one of the phases ("10%"), beyond which
// promotion needs a second operator's approval.
type RolloutRequest struct {
	Release        string `json:"release"`
	Select         string `json:"select"`
	Phases         string `json:"phases"`
	Soak           string `json:"soak,omitempty"`
	MaxFailureRate string `json:"max_failure_rate,omitempty"`
	MinSuccess     int    `json:"min_success,omitempty"`
	MaxConcurrent  int    `json:"max_concurrent,omitempty"`
	ApproveAfter   string `json:"approve_after,omitempty"`
	Critical       bool   `json:"critical,omitempty"`
	// Window is a maintenance window ("Mon-Fri 01:00-05:00
	// Europe/Berlin"): outside it the rollout's phase holds.
	Window string `json:"window,omitempty"`
}

// RolloutCreated is the answer of POST /api/v1/rollouts: the rollout's
// id, how many devices the selector picks now, and how many of those
// run a higher security version than the release (they are never
// offered it). Note says plainly what an operator should know (no
// device matches, some are skipped).
type RolloutCreated struct {
	ID                   string `json:"id"`
	Matched              int    `json:"matched"`
	BelowSecurityVersion int    `json:"below_security_version"`
	Note                 string `json:"note,omitempty"`
}

// RolloutCounts are a rollout's devices by status. Downloading counts a
// device from when the server handed it the release until its next
// report; installed only after its confirmed-boot report; refused are
// refusals of tampered data (tamper detections, not failures).
type RolloutCounts struct {
	Pending     int `json:"pending"`
	Downloading int `json:"downloading"`
	Installing  int `json:"installing"`
	Installed   int `json:"installed"`
	RolledBack  int `json:"rolled-back"`
	Failed      int `json:"failed"`
	Refused     int `json:"refused"`
	// PolicyDenied counts the devices the phases reach that the fleet
	// policy does not let take the release (docs/policy.md).
	PolicyDenied int `json:"policy-denied"`
}

// Rollout is the answer of GET /api/v1/rollouts/{id} and of the state
// changes. Phase is the current phase, from 1.
type Rollout struct {
	ID              string         `json:"id"`
	Release         string         `json:"release"`
	State           string         `json:"state"`
	Phase           int            `json:"phase"`
	Phases          []string       `json:"phases"`
	Counts          RolloutCounts  `json:"counts"`
	PausedReason    string         `json:"paused_reason"`
	FailureReasons  map[string]int `json:"failure_reasons"`
	CreatedBy       string         `json:"created_by"`
	ApprovedBy      string         `json:"approved_by"`
	Select          string         `json:"select"`
	SecurityVersion uint64         `json:"security_version"`
	Soak            string         `json:"soak"`
	MaxFailureRate  string         `json:"max_failure_rate"`
	MinSuccess      int            `json:"min_success"`
	MaxConcurrent   int            `json:"max_concurrent"`
	ApproveAfter    string         `json:"approve_after,omitempty"`
	Critical        bool           `json:"critical"`
	Eligible        int            `json:"eligible"`
	CreatedAt       time.Time      `json:"created_at"`
	PhaseStarted    time.Time      `json:"phase_started"`
	// Window is the rollout's maintenance window ("" when none);
	// WindowOpen whether it is open now (true without one, and for a
	// critical rollout, which ignores windows); WindowOpens when it next
	// opens, when it is closed.
	Window      string     `json:"window,omitempty"`
	WindowOpen  bool       `json:"window_open"`
	WindowOpens *time.Time `json:"window_opens,omitempty"`
	// Stats are the rollout's metrics (rollout show only).
	Stats *RolloutStats `json:"stats,omitempty"`
}

// RolloutStats are a rollout's metrics: what FleetStats says of the
// fleet, for the rollout's devices.
type RolloutStats struct {
	UpdateSuccessRate *float64       `json:"update_success_rate"`
	TimeToInstallP50  *float64       `json:"time_to_install_p50_s"`
	TimeToInstallP95  *float64       `json:"time_to_install_p95_s"`
	MTTR              *float64       `json:"mttr_s"`
	TamperDetections  map[string]int `json:"tamper_detections"`
}

// RolloutList is the answer of GET /api/v1/rollouts: the newest 1000.
type RolloutList struct {
	Rollouts []Rollout `json:"rollouts"`
}

// RolloutAction is the body of POST /api/v1/rollouts/{id}/pause (and
// resume, abort, approve): an optional reason, audited.
type RolloutAction struct {
	Reason string `json:"reason,omitempty"`
}

// FleetStats is the answer of GET /api/v1/fleet/stats (rampart fleet
// stats --json). Devices counts unrevoked devices; ByVersion and
// BySecurityVersion count them by the release they last confirmed
// ("none" before any), the most common MaxStatsVersions and the rest as
// "other". UpdateSuccessRate is confirmed installs over confirmed
// installs plus failures (rollbacks, failed installs) in every rollout;
// the install times run from the release's hand-out to the confirmed
// boot; MTTR from a device found on a failed deployment to its confirmed
// boot of a good release. Each is null while nothing was measured.
// TamperDetections counts the devices' verification refusals by class.
type FleetStats struct {
	Devices           int            `json:"devices"`
	ByVersion         map[string]int `json:"by_version"`
	BySecurityVersion map[string]int `json:"by_security_version"`
	UpdateSuccessRate *float64       `json:"update_success_rate"`
	TimeToInstallP50  *float64       `json:"time_to_install_p50_s"`
	TimeToInstallP95  *float64       `json:"time_to_install_p95_s"`
	MTTR              *float64       `json:"mttr_s"`
	TamperDetections  map[string]int `json:"tamper_detections"`
}

// MaxStatsVersions is how many versions (and security versions) fleet
// statistics name; the others are counted as "other".
const MaxStatsVersions = 50

// RevokeKeyRequest is POST /api/v1/incidents/revoke-key.
type RevokeKeyRequest struct {
	KeyID  string `json:"key_id"`
	Reason string `json:"reason"`
}

// AffectedDevice is a device running or assigned a release signed with
// a revoked key.
type AffectedDevice struct {
	ID       string `json:"id"`
	Running  string `json:"running,omitempty"`
	Assigned string `json:"assigned,omitempty"`
}

// KeyRevoked is the answer of POST /api/v1/incidents/revoke-key: what
// the key was (Kind: release-signer, product-key, online, targets,
// root; Role: the role it signs for), the rollouts halted (aborted),
// the releases it signed (marked revoked), the devices running or
// assigned them (at most MaxAffectedDevices; DevicesMore counts the
// rest), and the offline steps still to do.
type KeyRevoked struct {
	KeyID          string           `json:"key_id"`
	Kind           string           `json:"kind"`
	Role           string           `json:"role"`
	Reason         string           `json:"reason"`
	HaltedRollouts []string         `json:"halted_rollouts"`
	Releases       []string         `json:"releases"`
	Devices        []AffectedDevice `json:"devices"`
	DevicesMore    int              `json:"devices_more,omitempty"`
	RotationSteps  []string         `json:"rotation_steps"`
}

// MaxAffectedDevices is how many affected devices one answer lists.
const MaxAffectedDevices = 10000

// RedeployRequest is POST /api/v1/incidents/redeploy: Release
// (PRODUCT/VERSION) is a release signed with the revoked key AffectedBy.
type RedeployRequest struct {
	Release    string `json:"release"`
	AffectedBy string `json:"affected_by"`
}

// RedeployedDevice is what redeploy did for one device: the release
// assigned to it, or why none was.
type RedeployedDevice struct {
	ID       string `json:"id"`
	Assigned string `json:"assigned,omitempty"`
	Note     string `json:"note,omitempty"`
}

// Redeployed is the answer of POST /api/v1/incidents/redeploy.
type Redeployed struct {
	Release     string             `json:"release"`
	Assigned    int                `json:"assigned"`
	Unchanged   int                `json:"unchanged"`
	Devices     []RedeployedDevice `json:"devices"`
	DevicesMore int                `json:"devices_more,omitempty"`
}

// Whoami is the answer of GET /api/v1/whoami: the token's name and role,
// and what the role may do, named as the dashboard asks (WhoamiMay).
type Whoami struct {
	Name string   `json:"name"`
	Role string   `json:"role"`
	May  []string `json:"may"`
}

// What GET /api/v1/whoami's "may" names: the actions the dashboard
// shows or hides (the server enforces the same roles on the routes).
const (
	MaySteerRollouts = "steer-rollouts" // POST /api/v1/rollouts/{id}/{action}
	MayRevokeKeys    = "revoke-keys"    // POST /api/v1/incidents/revoke-key
	MayReadFleet     = "read-fleet"     // devices, releases, rollouts, stats
	MayReadAudit     = "read-audit"     // GET /api/v1/audit
)
