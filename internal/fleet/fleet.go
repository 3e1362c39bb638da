// Package fleet is rampart-server's fleet service: it owns the devices
// and what the server decides about them. Enrollment (by one-time token
// or manufacturer certificate), the device registry (show, revoke,
// remove), device reports (replay and counter rules, impossible
// "installed" reports counted as anomalies) and deployments live here;
// rollouts, policy and incident response join them.
//
// It knows nothing of HTTP: refusals are *Refusal values with a stable
// code (api.Code) and a Kind, which the HTTP layer (package server) maps
// to a status; rate limits, the budget of audited refusals and metrics
// stay there. Every change commits in one store transaction with the
// audit entry that records it. It takes the narrow store interface it
// needs (Store) and reads the published releases through Catalog. A
// Service is safe for concurrent use.
package fleet

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/store"
)

// Store is what the fleet service needs of the metadata store: reads
// outside transactions, and transactions for every change (through the
// store.Tx they are given).
type Store interface {
	Device(ctx context.Context, id string) (store.Device, error)
	EnrollToken(ctx context.Context, hash string) (store.EnrollToken, error)
	Assignment(ctx context.Context, deviceID string) (store.Assignment, error)
	Reports(ctx context.Context, id string) ([]store.Report, map[string]uint64, error)
	ListDevices(ctx context.Context, after string, limit int) ([]store.Device, error)
	ListDeviceFacts(ctx context.Context, after string, limit int) ([]store.DeviceFacts, error)
	LogEntry(ctx context.Context, target string) (store.LogEntry, error)
	// Doc reads the stored fleet policy (PolicyRepo, PolicyRole).
	Doc(ctx context.Context, repo, role string, version int64) (store.Doc, error)
	RolloutStore
	StatsStore
	IncidentStore
	Atomic(ctx context.Context, f func(tx store.Tx) error) error
}

// Catalog is what the fleet needs of the hosted image repository: its
// published metadata.
type Catalog interface {
	Published(ctx context.Context) (Published, error)
}

// Published is the image repository's current top-level targets role
// and product roles by name, as signed (nil when nothing is published).
type Published struct {
	// Root is the current root (nil when nothing is published).
	Root    []byte
	Targets []byte
	Roles   map[string][]byte
}

// Config wires a Service.
type Config struct {
	Store   Store
	Catalog Catalog
	// DeviceCA issues device certificates at enrollment; nil refuses
	// enrollment (503 no-device-ca).
	DeviceCA *pki.CA
	// Manufacturers, when set, lets a device enroll with a certificate
	// chain from one of these CAs whose subject names it.
	Manufacturers *x509.CertPool
	// OnlineKeys names the server's online keys by key id (snapshot,
	// timestamp, director-targets, ...), for incident response.
	OnlineKeys map[string]string
	// Log and LogKey (the log's note verifier key), when set, let
	// Releases check each release's inclusion proof as a device would;
	// without them releases are listed with log_proof "unchecked".
	Log    Log
	LogKey string
	Now    func() time.Time
}

// Log is what Releases needs of the transparency log.
type Log interface {
	Origin() string
	Checkpoint(ctx context.Context) ([]byte, error)
	Prove(ctx context.Context, index uint64, checkpoint []byte) (*logproof.Proof, error)
}

// Service is the fleet. It is safe for concurrent use.
type Service struct {
	store         Store
	catalog       Catalog
	deviceCA      *pki.CA
	manufacturers *x509.CertPool
	now           func() time.Time
	ro            rollouts
	refreshing    sync.Mutex  // one Refresh from Decide at a time
	win           windows     // window.go
	pol           policyState // policy.go
	onlineKeys    map[string]string
	log           Log
	logKey        note.Verifier // nil: proofs unchecked
}

// New returns a Service.
func New(c Config) *Service {
	if c.Now == nil {
		c.Now = time.Now
	}
	s := &Service{store: c.Store, catalog: c.Catalog, deviceCA: c.DeviceCA, manufacturers: c.Manufacturers, now: c.Now, onlineKeys: c.OnlineKeys}
	if c.Log != nil && c.LogKey != "" {
		// A key that does not parse leaves proofs unchecked; the server
		// refused it at start-up already (it publishes it to devices).
		if v, err := note.NewVerifier(c.LogKey); err == nil {
			s.log, s.logKey = c.Log, v
		}
	}
	return s
}

// Op says who asks for an action, for its audit entry: the actor
// ("token:NAME", "device:ID") and the request's id.
type Op struct {
	Actor     string
	RequestID string
}

// Kind is a refusal's class: what the HTTP layer answers it with.
type Kind int

// The kinds of refusal.
const (
	Invalid         Kind = iota + 1 // the request is malformed (400)
	Unauthenticated                 // the credential is not good (401)
	Forbidden                       // the credential may not do this (403)
	NotFound                        // what the request names does not exist (404)
	Conflict                        // the state does not allow it now (409)
	Unprocessable                   // well-formed but impossible (422)
	Unavailable                     // the server is not set up for it (503)
)

// Refusal is a request the fleet refuses, with a stable code and a
// message that says what to fix.
type Refusal struct {
	Kind Kind
	Code api.Code
	Msg  string
	// Actor, on a refused enrollment, names the credential when it was
	// accepted before the refusal: the refusal may then be audited with
	// it as the actor. "" when the credential was not (yet) accepted.
	Actor string
	// Audited is set when the refusal was recorded in the audit log
	// with what it changed (an anomaly): it is not audited again.
	Audited bool
}

func (r *Refusal) Error() string { return r.Msg }

func refuse(kind Kind, code api.Code, format string, args ...any) *Refusal {
	return &Refusal{Kind: kind, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// ErrDeviceGone means the device's record was revoked or removed (by
// another replica, say) since its connection was opened.
var ErrDeviceGone = errors.New("the device is revoked or removed")

// event is what an audit entry records about an action; the time and the
// request id are added when it is written.
type event struct {
	actor, action, subject, outcome string
	detail                          map[string]string
}

func (s *Service) entry(op Op, ev event) audit.Entry {
	return audit.Entry{Time: s.now(), Actor: ev.actor, Action: ev.action, Subject: ev.subject,
		RequestID: op.RequestID, Outcome: ev.outcome, Detail: ev.detail}
}

// atomically runs act and appends the audit entry of the event it
// returns in one transaction: both commit or neither does.
func (s *Service) atomically(ctx context.Context, op Op, act func(tx store.Tx) (event, error)) error {
	return s.store.Atomic(ctx, func(tx store.Tx) error {
		ev, err := act(tx)
		if err != nil {
			return err
		}
		if _, err := tx.AppendAudit(ctx, s.entry(op, ev)); err != nil {
			return fmt.Errorf("audit entry of %s %s: %w", ev.action, ev.subject, err)
		}
		return nil
	})
}

// productRoles parses the published product roles.
func (s *Service) productRoles(ctx context.Context) (map[string]*metadata.Metadata[metadata.TargetsType], error) {
	pub, err := s.catalog.Published(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*metadata.Metadata[metadata.TargetsType], len(pub.Roles))
	for name, b := range pub.Roles {
		m, err := metadata.Targets().FromBytes(b)
		if err != nil {
			return nil, fmt.Errorf("published role %s: %w", name, err)
		}
		out[name] = m
	}
	return out, nil
}
