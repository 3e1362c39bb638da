package verify

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/failure"
)

// Class names the kind of attack or fault a refusal defends against. The
// values are stable: they appear in JSON output, reports and metrics.
type Class string

const (
	// BadSignature: a signature does not verify or a role lacks its threshold
	// (arbitrary installation, key compromise below threshold, revoked keys).
	BadSignature Class = "bad-signature"
	// Expired: metadata is past its expiry (indefinite freeze).
	Expired Class = "expired"
	// Rollback: a version number went backwards or skipped (rollback,
	// fast-forward).
	Rollback Class = "rollback"
	// Mismatch: bytes differ from the hash or length that signed metadata
	// names (tampering in transit, mix-and-match, endless data).
	Mismatch Class = "mismatch"
	// WrongHardware: the release does not list the device's hardware id.
	WrongHardware Class = "wrong-hardware"
	// Downgrade: the release's security version is below the minimum.
	Downgrade Class = "security-version"
	// MissingTarget: the requested target or a role it needs is absent.
	MissingTarget Class = "missing-target"
	// Malformed: input that does not parse or breaks the format's rules.
	Malformed Class = "malformed"

	// The device's classes beyond a single offline verification.

	// NotLogged: the release is not (provably) recorded in the log.
	NotLogged Class = "not-logged"
	// LogFork: the log's checkpoint is not an append-only extension of the
	// one the device last accepted (split view, rollback of the log).
	LogFork Class = "log-inconsistent"
	// WrongDevice: director metadata validly signed for another device
	// (a server or front end handing one device's repository to another).
	WrongDevice Class = "wrong-device"
	// EndlessData: a response went on past its signed length or its
	// bound (TUF's endless data attack).
	EndlessData Class = "endless-data"
)

// Classes lists every refusal class, for whoever must check or count
// them (the server bounds its report reasons and metric labels by it).
var Classes = []Class{BadSignature, Expired, Rollback, Mismatch, WrongHardware, Downgrade, MissingTarget, Malformed, NotLogged, LogFork, WrongDevice, EndlessData}

// Error is a verification refusal.
type Error struct {
	Class Class
	// Role is the TUF role concerned, when there is one.
	Role string
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Msg, e.Err)
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// FailureKind makes every refusal exit with the "verification refused" code.
func (e *Error) FailureKind() failure.Kind { return failure.Refused }

// FailureHint gives the operator a next step for each class.
func (e *Error) FailureHint() string {
	switch e.Class {
	case Expired:
		return "the repository must publish fresh metadata (rampart repo publish); do not install from it until then"
	case BadSignature:
		return "the file was modified or not signed by enough authorised keys; obtain it again from the release owner"
	case Mismatch:
		return "the content differs from what was signed: the file is corrupt or was tampered with"
	case Rollback:
		return "the metadata is older than what was already trusted: someone is replaying old metadata"
	case WrongHardware:
		return "this release is not built for that hardware; pick the release for your hardware id"
	case Downgrade:
		return "installing it would lower the anti-rollback counter; use a release with a higher security version"
	case Malformed:
		return "the file is damaged or not a Rampart file"
	}
	return ""
}

func refuse(c Class, role string, err error, format string, args ...any) *Error {
	return &Error{Class: c, Role: role, Msg: fmt.Sprintf(format, args...), Err: err}
}

// FromTUF maps an error of go-tuf (its trusted metadata state machine,
// which this package runs, and its updater, which the device's refresh
// runs in internal/uptane) onto a refusal class about role. It is the one
// place that does: both paths refuse the same attack with the same class.
// A refusal passes through unchanged. The caller sorts out what is not a
// verdict on the bytes (a failed transfer, local I/O) before calling it.
func FromTUF(role string, err error) *Error {
	var ve *Error
	if errors.As(err, &ve) {
		return ve
	}
	switch {
	case errors.Is(err, &metadata.ErrDownloadLengthMismatch{}):
		return refuse(EndlessData, role, err, "%s: response longer than allowed", role)
	case errors.Is(err, &metadata.ErrUnsignedMetadata{}):
		return refuse(BadSignature, role, err, "%s: not signed by enough authorised keys", role)
	case errors.Is(err, &metadata.ErrExpiredMetadata{}):
		return refuse(Expired, role, err, "%s: expired", role)
	case errors.Is(err, &metadata.ErrBadVersionNumber{}), errors.Is(err, &metadata.ErrEqualVersionNumber{}):
		return refuse(Rollback, role, err, "%s: version number check failed", role)
	case errors.Is(err, &metadata.ErrLengthOrHashMismatch{}):
		return refuse(Mismatch, role, err, "%s: length or hash mismatch with what the parent role signed", role)
	}
	return refuse(Malformed, role, err, "%s: malformed or inconsistent metadata", role)
}

// classify is FromTUF for this package's own go-tuf calls.
func classify(role string, err error) *Error { return FromTUF(role, err) }

// TargetLookup maps the error of go-tuf's Updater.GetTargetInfo for
// target, looked up in the repository role names: a target the verified
// metadata does not list (or whose delegated role the snapshot does not
// name) is MissingTarget; anything else is mapped as FromTUF maps it.
func TargetLookup(role, target string, err error) *Error {
	var ve *Error
	if errors.As(err, &ve) {
		return ve
	}
	if tufNotFound(target, err) {
		return refuse(MissingTarget, role, err, "%s repository does not list %s", role, Quote(target))
	}
	return FromTUF(role, err)
}

// tufNotFound reports whether err is go-tuf's answer that the verified
// metadata lists no target (or no delegated role) for target. This is
// the one place Rampart reads go-tuf's error text: the updater returns
// these two answers as plain fmt.Errorf values, of no type errors.As
// could match (go-tuf v2.4.2, updater.go: "target %s not found" and
// "role %s not found in snapshot"). Only those exact, unwrapped texts
// match, so no other error can be read as a missing target because a
// name in it says "not found". TestTargetLookupPinsGoTUFText fails when a
// go-tuf upgrade changes them.
func tufNotFound(target string, err error) bool {
	msg := err.Error()
	if errors.Unwrap(err) != nil {
		return false
	}
	if msg == fmt.Sprintf("target %s not found", target) {
		return true
	}
	rest, ok := strings.CutPrefix(msg, "role ")
	return ok && strings.HasSuffix(rest, " not found in snapshot")
}

// maxQuoted bounds a name quoted in a refusal: a refusal is kept in the
// device's state and shown to people, and whoever signs the metadata
// (for the director, the server's online keys) chooses what its names say.
const maxQuoted = 256

// Quote is s quoted for a message, cut to maxQuoted bytes at a rune
// boundary, with its length when cut.
func Quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:cut]), len(s))
}
