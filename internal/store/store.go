// Package store defines the server's metadata store: the small interfaces
// the server's parts program against (repository metadata, devices,
// enrollment and operator tokens, the audit log), and the errors every
// implementation returns. Implementations live in sub-packages (sqlite,
// the default; postgres, which several servers may share) and must pass
// storetest.Run.
//
// The store holds only what must survive a restart and be shared between
// replicas. Its security-relevant operations are atomic in the store
// itself, not in callers: a one-time token is consumed by exactly one
// caller, a device report counter only moves forward, and audit entries
// are chained inside the transaction that appends them.
//
// An action and the audit entry that records it are committed together
// with Store.Atomic: the callback does both through a Tx, and either both
// are stored or neither is. So the audit log never claims an action that
// did not happen, and no committed action is missing from it.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rampartfw/rampart/internal/audit"
)

// Errors implementations return, wrapped with detail.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrConflict: an immutable record exists with different content.
	ErrConflict = errors.New("conflicts with the stored record")
	ErrExpired  = errors.New("expired")
	ErrUsed     = errors.New("already used")
	// ErrReplay: a device report's counter is not above the last one.
	ErrReplay  = errors.New("replayed or out-of-order report")
	ErrRevoked = errors.New("revoked")
	// ErrSchemaTooNew: Open found a schema migrated by a newer program;
	// it changes nothing, and the program must be upgraded.
	ErrSchemaTooNew = errors.New("database schema is newer than this program knows")
	// ErrUnavailable: the store could not be reached (the database is
	// down, or the connection to it was cut). Nothing the failed call
	// did is committed, and the same store works again once the
	// database is back: the caller may retry later.
	ErrUnavailable = errors.New("the metadata store is unavailable")
	// ErrFenced: a write carried a lease's fence (WithFence) for a term
	// that has ended: the lease expired, or passed to another holder.
	// Nothing the write did is committed; the work it was part of must
	// stop, since another holder may be doing it now.
	ErrFenced = errors.New("the lease term this work was done under has ended")
)

// Doc is one versioned metadata document of a repository. Repo is "image"
// for the image repository or "director/DEVICE" for a device's director
// repository; Role is the TUF role name (root, targets, a product,
// snapshot, timestamp).
type Doc struct {
	Repo    string
	Role    string
	Version int64
	Data    []byte
}

// Metadata stores versioned TUF metadata. Versions are immutable.
type Metadata interface {
	// PutDocs stores docs atomically: all or none. Storing a version
	// again with identical bytes is a no-op; different bytes fail with
	// ErrConflict.
	PutDocs(ctx context.Context, docs ...Doc) error
	// Doc returns one version; version 0 means the latest.
	Doc(ctx context.Context, repo, role string, version int64) (Doc, error)
}

// Device is an enrolled device.
type Device struct {
	ID         string
	HardwareID string
	// CertSerial is the serial number of its current client certificate.
	CertSerial string
	EnrolledAt time.Time
	RevokedAt  time.Time // zero when not revoked
	// What the device last reported running after a confirmed boot.
	Version         string
	SecurityVersion uint64
	// ReportCounter is the highest report counter accepted.
	ReportCounter uint64
	LastStatus    string
	LastSeen      time.Time
	// Anomalies counts reports refused as impossible for this device
	// (see Devices.RecordAnomaly); LastAnomaly is the latest one's reason.
	Anomalies   uint64
	LastAnomaly string
	// Tags are operator-set KEY=VALUE labels (nil when none); the fleet
	// service bounds their number and size.
	Tags map[string]string
	// LastRefusal is the refusal class of the device's latest
	// verification-refused report ("" when none).
	LastRefusal string
}

// ReportHistory is how many of a device's latest accepted reports the
// store keeps (RecordReport drops older ones; the counts per status and
// the audit entries of state changes stay). It bounds what one device's
// reports take, however many it sends.
const ReportHistory = 32

// Report is a device's status report.
type Report struct {
	Counter uint64
	Status  string
	// Reason is the report's reason code or text, already bounded by the
	// caller.
	Reason string
	// Installed is set only when the device confirmed a boot of a new
	// release; only then do Version and SecurityVersion change.
	Installed       bool
	Version         string
	SecurityVersion uint64
	At              time.Time
	// Refusal is the refusal class of a verification-refused report,
	// kept as the device's LastRefusal; "" for other reports.
	Refusal string
}

// DeviceFacts are what a fleet scan decides on about a device: what
// selectors read, a rollout's phases count and incident response
// matches (Devices.ListDeviceFacts).
type DeviceFacts struct {
	ID              string
	HardwareID      string
	Version         string
	SecurityVersion uint64
	// Tags are the device's operator-set tags (nil when none). Devices
	// of one page with equal tags may share one map: never change it.
	Tags map[string]string
	// TagsKey is the tags' stored form, equal for equal tags (JSON with
	// sorted keys), so a scan can remember what it decided for one set.
	TagsKey string
}

// Rows is what ScanDeviceFacts reads: *sql.Rows and pgx.Rows both are.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// ScanDeviceFacts reads a page of device facts from rows of (id,
// hardware_id, version, security_version, tags): devices with equal
// tags share one decoded map. The caller closes rows.
func ScanDeviceFacts(rows Rows, limit int) ([]DeviceFacts, error) {
	out := make([]DeviceFacts, 0, min(limit, 1024))
	tags := map[string]map[string]string{}
	for rows.Next() {
		var f DeviceFacts
		if err := rows.Scan(&f.ID, &f.HardwareID, &f.Version, &f.SecurityVersion, &f.TagsKey); err != nil {
			return nil, err
		}
		if f.TagsKey == "" {
			f.TagsKey = "{}"
		}
		if f.TagsKey != "{}" {
			m, ok := tags[f.TagsKey]
			if !ok {
				if err := json.Unmarshal([]byte(f.TagsKey), &m); err != nil {
					return nil, fmt.Errorf("device %s: stored tags: %w", f.ID, err)
				}
				tags[f.TagsKey] = m
			}
			f.Tags = m
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// Devices stores the device registry.
type Devices interface {
	CreateDevice(ctx context.Context, d Device) error
	Device(ctx context.Context, id string) (Device, error)
	DevicesByHardware(ctx context.Context, hardwareID string) ([]Device, error)
	// ListDevices returns up to limit devices whose id sorts after
	// after, in id order: the fleet is read in bounded pages.
	ListDevices(ctx context.Context, after string, limit int) ([]Device, error)
	// ListDeviceFacts returns the facts of up to limit unrevoked
	// devices whose id sorts after after, in id order: the fleet scan
	// of a rollout's phase start or an incident, in bounded pages, that
	// reads only what it decides on.
	ListDeviceFacts(ctx context.Context, after string, limit int) ([]DeviceFacts, error)
	// SetDeviceTags removes the unset keys from a device's tags, then
	// sets set, in one step, and returns the tags now held; ErrNotFound
	// for an unknown device.
	SetDeviceTags(ctx context.Context, id string, set map[string]string, unset []string) (map[string]string, error)
	// RevokeDevice marks a device revoked: ErrNotFound for an unknown
	// device, ErrRevoked if it already is.
	RevokeDevice(ctx context.Context, id string, at time.Time) error
	// RevokedCertificates returns the serial numbers (lowercase hex) of
	// every device certificate that must no longer be accepted: the
	// current certificates of revoked devices and those of removed
	// devices, sorted. Revocation is by certificate, so an id that was
	// removed can enroll again with a new certificate.
	RevokedCertificates(ctx context.Context) ([]string, error)
	// RemoveDevice deletes a device's record and its assignment, so that
	// its id can enroll again, and keeps its certificate's serial among
	// RevokedCertificates. It returns the record removed; ErrNotFound for
	// an unknown device.
	RemoveDevice(ctx context.Context, id string, at time.Time) (Device, error)
	// RecordAnomaly counts a report refused as impossible for the device
	// (a release that does not exist, a wrong security version) and keeps
	// its reason; ErrNotFound for an unknown device.
	RecordAnomaly(ctx context.Context, id, reason string, at time.Time) error
	// RecordReport accepts a report only if its counter is above the
	// stored one (ErrReplay otherwise) and the device is not revoked. It
	// keeps the report among the device's latest ReportHistory and counts
	// it under its status, and a report with a Refusal class under its
	// class (RefusalCounts).
	RecordReport(ctx context.Context, id string, r Report) error
	// Reports returns a device's kept reports, newest first, and how many
	// reports of each status it has sent.
	Reports(ctx context.Context, id string) ([]Report, map[string]uint64, error)
	CountDevices(ctx context.Context) (int, error)
}

// EnrollToken is a one-time enrollment token, stored by the hash of its
// secret.
type EnrollToken struct {
	Hash       string
	HardwareID string
	Expires    time.Time
	UsedAt     time.Time
	UsedBy     string
}

// OperatorToken is an API token, stored by the hash of its secret.
type OperatorToken struct {
	Hash      string
	Name      string
	Role      string
	CreatedAt time.Time
	RevokedAt time.Time
}

// Tokens stores enrollment and operator tokens.
type Tokens interface {
	CreateEnrollToken(ctx context.Context, t EnrollToken) error
	// ConsumeEnrollToken marks the token used by deviceID and returns it.
	// Exactly one of any number of concurrent callers succeeds; the
	// others get ErrUsed. An expired token gives ErrExpired.
	ConsumeEnrollToken(ctx context.Context, hash, deviceID string, now time.Time) (EnrollToken, error)
	// EnrollToken returns the token with this secret hash without
	// changing it (ErrNotFound when none): a read that lets a request
	// without a valid token be refused before any write.
	EnrollToken(ctx context.Context, hash string) (EnrollToken, error)
	// CreateOperatorToken stores a new token. Names are unique for ever,
	// revoked tokens included (ErrExists), so an audit entry's actor
	// always names one token.
	CreateOperatorToken(ctx context.Context, t OperatorToken) error
	// OperatorToken returns the token with this secret hash. A revoked
	// token is returned with an error wrapping ErrRevoked; an unknown one
	// gives ErrNotFound.
	OperatorToken(ctx context.Context, hash string) (OperatorToken, error)
	// OperatorTokens returns every token, revoked ones included, sorted
	// by name.
	OperatorTokens(ctx context.Context) ([]OperatorToken, error)
	// SetOperatorTokenRole changes a token's role: ErrNotFound for an
	// unknown name, ErrRevoked for a revoked token.
	SetOperatorTokenRole(ctx context.Context, name, role string) error
	// RevokeOperatorToken revokes a token: ErrNotFound for an unknown
	// name, ErrRevoked if it already is.
	RevokeOperatorToken(ctx context.Context, name string, at time.Time) error
}

// AuditAnchor is the last entry pruned from the audit log: the entry
// after it names its hash, so the chain that remains is verified from it
// (audit.Verify with an entry of this Seq and Hash). Seq 0 and
// audit.Genesis when nothing was pruned.
type AuditAnchor struct {
	Seq  uint64
	Hash string
	// At is when the prefix was pruned.
	At time.Time
}

// Audit stores the audit log.
type Audit interface {
	// AppendAudit chains e after the current last entry (see
	// audit.Append) in one transaction and returns the stored entry.
	AppendAudit(ctx context.Context, e audit.Entry) (audit.Entry, error)
	// AuditEntries returns up to limit entries with Seq > after, in order.
	AuditEntries(ctx context.Context, after uint64, limit int) ([]audit.Entry, error)
	// AuditRaw calls fn with the stored JSON of up to limit entries with
	// Seq > after, in order, and stops before the entry that would take
	// the bytes passed past maxBytes (the first entry is always passed).
	// fn must not keep raw. It returns how many entries it passed.
	AuditRaw(ctx context.Context, after uint64, limit int, maxBytes int64, fn func(seq uint64, raw []byte) error) (int, error)
	// AuditAnchor returns the anchor of the pruned prefix.
	AuditAnchor(ctx context.Context) (AuditAnchor, error)
	// PruneAudit removes the longest prefix of the log whose entries are
	// all older than before, at most limit entries, records the last one
	// removed as the anchor, and returns how many it removed and the
	// anchor. The head entry is never removed, so the log never loses
	// its chain's end.
	PruneAudit(ctx context.Context, before time.Time, limit int) (int, AuditAnchor, error)
}

// LogEntry records where a release's statement sits in the transparency
// log, so the server can prove its inclusion under any later checkpoint.
type LogEntry struct {
	Target string
	Index  uint64
	Leaf   []byte
}

// ChunkRef says where the bytes of a chunk are: a range of a payload
// blob. It lets the server serve chunks by their own hash.
type ChunkRef struct {
	Hash   string // hex SHA-256 of the chunk
	Blob   string // hex SHA-256 of the payload blob holding it
	Offset int64
	Length int64
}

// Releases stores per-release records.
type Releases interface {
	// PutLogEntry records a release's log entry; a target has one entry
	// (ErrExists for a second).
	PutLogEntry(ctx context.Context, e LogEntry) error
	LogEntry(ctx context.Context, target string) (LogEntry, error)
	// PutChunks records where chunks are, all or none. A chunk already
	// recorded keeps its first location: its hash names the same bytes
	// wherever they are.
	PutChunks(ctx context.Context, refs []ChunkRef) error
	// Chunk returns where the chunk with this hash is (ErrNotFound when
	// no recorded release holds it).
	Chunk(ctx context.Context, hash string) (ChunkRef, error)
	// ChunkBlobs returns the distinct blobs that recorded chunks are in:
	// the payloads of every release ever published, which chunk URLs
	// keep serving.
	ChunkBlobs(ctx context.Context) ([]string, error)
	// PutPendingPush records the push in progress: what its writer needs
	// to finish it if it is interrupted after its releases may have been
	// logged (opaque to the store). There is at most one: ErrExists when
	// one is pending already.
	PutPendingPush(ctx context.Context, data []byte) error
	// PendingPush returns the push in progress; ErrNotFound when none.
	PendingPush(ctx context.Context) ([]byte, error)
	// DeletePendingPush forgets the push in progress (none is not an
	// error); it commits with the push's metadata.
	DeletePendingPush(ctx context.Context) error
}

// Assignment is what a device must install now.
type Assignment struct {
	DeviceID string
	// Target is the image repository's target path; "" means nothing.
	Target     string
	AssignedAt time.Time
	// Seq increases with every change of any device's assignment, so a
	// director repository generated for an older assignment is recognised.
	Seq uint64
}

// Assignments stores deployments.
type Assignments interface {
	// Assign sets target for every listed device in one transaction and
	// returns how many changed.
	Assign(ctx context.Context, target string, deviceIDs []string, at time.Time) (int, error)
	// Assignment returns a device's assignment (Target "" when none).
	Assignment(ctx context.Context, deviceID string) (Assignment, error)
}

// Rollout is a phased deployment of one release to the devices a
// selector picks. Spec is the fleet service's own description of its
// phases and gates (opaque here); the store keeps its state.
type Rollout struct {
	ID string
	// Seq orders rollouts by creation (set by CreateRollout): the newer
	// of two has the higher Seq.
	Seq             uint64
	Target          string
	SecurityVersion uint64
	Selector        string
	Spec            []byte
	State           string
	Phase           int
	PhaseStarted    time.Time
	// Threshold is the current phase's bucket bound: a device whose
	// bucket is below it is in the phases so far.
	Threshold int
	// Eligible is how many devices the phases so far held when the
	// phase started.
	Eligible     int
	PausedReason string
	CreatedBy    string
	ApprovedBy   string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// RolloutDevice is a device's progress in a rollout.
type RolloutDevice struct {
	RolloutID string
	DeviceID  string
	// Status is pending (offered nothing yet), downloading (the release
	// was handed out; in flight until the final report), installed
	// (after a confirmed boot), rolled-back, failed or refused.
	Status string
	// OfferedAt is when the release was last handed out.
	OfferedAt time.Time
	// Failures counts its rollbacks and failed installs in this rollout.
	Failures      int
	CooldownUntil time.Time
	Reason        string
	UpdatedAt     time.Time
}

// RolloutCounts are a rollout's devices by status, and the sum of their
// failures.
type RolloutCounts struct {
	ByStatus map[string]int
	Failures int
}

// Rollouts stores rollouts and the devices' progress in them.
type Rollouts interface {
	// CreateRollout stores a new rollout (ErrExists for a taken id) and
	// returns it with its Seq.
	CreateRollout(ctx context.Context, r Rollout) (Rollout, error)
	// Rollout returns one rollout; ErrNotFound when none.
	Rollout(ctx context.Context, id string) (Rollout, error)
	// ListRollouts returns up to limit rollouts, newest first.
	ListRollouts(ctx context.Context, limit int) ([]Rollout, error)
	// RolloutsInState returns every rollout in one of the states, oldest
	// first.
	RolloutsInState(ctx context.Context, states ...string) ([]Rollout, error)
	// UpdateRollout stores a rollout's state, phase, phase start,
	// threshold, eligible count, paused reason, approver and update
	// time; ErrNotFound when none.
	UpdateRollout(ctx context.Context, r Rollout) error
	// RolloutDevice returns a device's progress in a rollout;
	// ErrNotFound when it has none.
	RolloutDevice(ctx context.Context, rolloutID, deviceID string) (RolloutDevice, error)
	// PutRolloutDevice stores a device's progress in a rollout.
	PutRolloutDevice(ctx context.Context, d RolloutDevice) error
	// DeviceRollouts returns a device's progress in every rollout.
	DeviceRollouts(ctx context.Context, deviceID string) ([]RolloutDevice, error)
	// RolloutCounts counts a rollout's devices by status, and its
	// failures (every device's, including failures since retried).
	RolloutCounts(ctx context.Context, rolloutID string) (RolloutCounts, error)
	// RolloutInFlight counts a rollout's devices downloading or
	// installing, from an index: its cost is that count, not the
	// rollout's size (an offer checks the concurrency limit with it).
	RolloutInFlight(ctx context.Context, rolloutID string) (int, error)
	// RolloutReasons returns how many devices of a rollout that failed
	// gave each reason (their latest), at most limit reasons (the most
	// common).
	RolloutReasons(ctx context.Context, rolloutID string, limit int) (map[string]int, error)
}

// RevokedKey is a signing key an operator revoked (rampart incident
// revoke-key): releases it signed are never offered again.
type RevokedKey struct {
	KeyID string
	// Kind is the fleet service's name for what the key was
	// (release-signer, product-key, online, targets, root).
	Kind      string
	Reason    string
	RevokedBy string
	RevokedAt time.Time
}

// DeviceCounts are the unrevoked devices counted by the release they
// last confirmed ("" for none) and its security version.
type DeviceCounts struct {
	Devices           int
	ByVersion         map[string]int
	BySecurityVersion map[uint64]int
}

// RolloutStats are the outcomes of a rollout's devices, or of every
// rollout's.
type RolloutStats struct {
	// Installed counts devices whose install was confirmed; Failures
	// their rollbacks and failed installs (retried ones included).
	Installed int
	Failures  int
	// Refusals counts devices whose latest report in the rollout was a
	// refusal of tampered data, by class (the reason).
	Refusals map[string]int
	// InstallTimes are, for at most limit of the latest confirmed
	// installs, the time from the release's hand-out to the confirmed
	// boot.
	InstallTimes []time.Duration
}

// RecoveryStats sum up the recoveries of devices from failed
// deployments: how many closed and their total duration, and how many
// are still open.
type RecoveryStats struct {
	Closed int
	Total  time.Duration
	Open   int
}

// Incidents stores revoked keys and what fleet statistics are computed
// from (each by an indexed query, never a walk of the fleet in Go).
type Incidents interface {
	// RevokeKey records a revoked key; ErrExists when it already is.
	RevokeKey(ctx context.Context, k RevokedKey) error
	// RevokedKeys returns every revoked key, oldest first.
	RevokedKeys(ctx context.Context) ([]RevokedKey, error)
	// AssignedDevices returns up to limit ids of devices assigned
	// target whose id sorts after after, in id order.
	AssignedDevices(ctx context.Context, target, after string, limit int) ([]string, error)
	// AssignedDeviceFacts returns the facts of up to limit unrevoked
	// devices assigned target whose id sorts after after, in id order.
	AssignedDeviceFacts(ctx context.Context, target, after string, limit int) ([]DeviceFacts, error)
	// DeviceCounts counts the unrevoked devices by version and security
	// version.
	DeviceCounts(ctx context.Context) (DeviceCounts, error)
	// RefusalCounts returns how many verification-refused reports
	// RecordReport accepted, by their Refusal class.
	RefusalCounts(ctx context.Context) (map[string]int, error)
	// RolloutStats returns the outcomes of a rollout's devices ("" for
	// every rollout's), with at most limit install times.
	RolloutStats(ctx context.Context, rolloutID string, limit int) (RolloutStats, error)
	// OpenRecoveries opens a recovery for each device that has none
	// open: the device was found on a failed deployment (of rollout
	// rolloutID, "" when none) at at.
	OpenRecoveries(ctx context.Context, deviceIDs []string, rolloutID string, at time.Time) error
	// CloseRecovery closes the device's open recovery at at (none open
	// is not an error) and reports whether it had one.
	CloseRecovery(ctx context.Context, deviceID string, at time.Time) (bool, error)
	// RecoveryStats sums the recoveries of rollout rolloutID ("" for
	// all).
	RecoveryStats(ctx context.Context, rolloutID string) (RecoveryStats, error)
}

// Tx is the store inside one transaction (see Store.Atomic). Each method
// keeps its own atomicity: one that fails has changed nothing, and the
// transaction goes on; it is the callback's error that rolls back the
// whole transaction. A Tx must not be used after its callback returns.
type Tx interface {
	Metadata
	Devices
	Tokens
	Audit
	Releases
	Assignments
	Rollouts
	Incidents
}

// Leases grant named, expiring leases, so that work meant to happen
// once across replicas (the background work, a push) has one holder at a
// time. A lease is held by one holder until it releases it or until ttl
// after its latest acquisition or renewal, measured by the store's own
// clock (the database's, for a shared store), so replicas whose clocks
// disagree still agree on who holds it. A holder must stop acting on a
// lease before the store lets another take it: it counts ttl from the
// moment it sent the request (package lease does), which is never later
// than the moment the store counts it from.
//
// Each term of a lease, from an acquisition of a lease that was free,
// expired or another's to its end, has a token larger than every earlier
// term's of that name; renewals keep it. A write whose context carries a
// term's fence (WithFence) commits only while that term lasts: the store
// checks it inside the write's transaction and holds it there, so a new
// term cannot begin until the write has committed or rolled back, and a
// write for an ended term fails with ErrFenced, changing nothing. This
// closes the window that counting the deadline leaves to a holder paused
// mid-write (a long garbage collection, a stopped virtual machine).
type Leases interface {
	// Lease acquires the lease name for holder, or renews it when holder
	// holds it already, for ttl from now. When another holder holds it
	// unexpired, Held is false and Owner names that holder; otherwise
	// Held is true, Owner is holder and Token is the term's.
	Lease(ctx context.Context, name, holder string, ttl time.Duration) (LeaseState, error)
	// ReleaseLease gives the lease up if holder holds it (if it does not,
	// it changes nothing and is not an error), so another may take it at
	// once.
	ReleaseLease(ctx context.Context, name, holder string) error
}

// LeaseState is what Leases.Lease found: whether the caller holds the
// lease, who does, and the term's token when the caller holds it.
type LeaseState struct {
	Held  bool
	Owner string
	Token int64
}

// Fence names one term of a lease, for WithFence.
type Fence struct {
	Lease, Holder string
	Token         int64
}

type fenceKey struct{}

// WithFence returns ctx carrying f: every write made with it commits only
// while f's term lasts (Leases), else fails with ErrFenced. A Token of 0
// is no term's, so it fences every write.
func WithFence(ctx context.Context, f Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

// FenceFrom returns the fence ctx carries, for the stores' writes.
func FenceFrom(ctx context.Context) (Fence, bool) {
	f, ok := ctx.Value(fenceKey{}).(Fence)
	return f, ok
}

// Store is everything the server keeps.
type Store interface {
	Tx
	Leases
	// Atomic runs f in one transaction and commits every change f made
	// through tx, audit entries included, if f returns nil; if f returns
	// an error (or the commit fails) nothing f did is stored, and that
	// error is returned. Writers are serialised, so reads inside f see a
	// state no other writer changes before the commit. f must use only
	// tx, never the Store, or it may wait on its own transaction.
	Atomic(ctx context.Context, f func(tx Tx) error) error
	Close() error
}
