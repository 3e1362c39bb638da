package fleet

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/release"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/token"
)

const deviceCertValidity = 5 * 365 * 24 * time.Hour

// Enrollment token lifetimes.
const (
	DefaultEnrollTTL = 24 * time.Hour
	MaxEnrollTTL     = 30 * 24 * time.Hour
)

// CreateEnrollToken creates a one-time, expiring enrollment token for a
// hardware id; the secret is returned once and only its hash is stored.
func (s *Service) CreateEnrollToken(ctx context.Context, op Op, req api.EnrollTokenRequest) (api.EnrollToken, error) {
	if err := release.ValidateHardware(req.Hardware); err != nil {
		return api.EnrollToken{}, refuse(Invalid, api.BadHardware, "%v", err)
	}
	ttl := DefaultEnrollTTL
	if req.TTLSeconds != nil {
		// Checked in seconds, before the multiplication could overflow.
		if n := *req.TTLSeconds; n < 1 || n > int64(MaxEnrollTTL/time.Second) {
			return api.EnrollToken{}, refuse(Invalid, api.BadTTL, "ttl_seconds must be between 1 and %d, not %d (leave it out for %d)",
				int64(MaxEnrollTTL/time.Second), n, int64(DefaultEnrollTTL/time.Second))
		}
		ttl = time.Duration(*req.TTLSeconds) * time.Second
	}
	secret, hash := token.New()
	exp := s.now().Add(ttl)
	err := s.atomically(ctx, op, func(tx store.Tx) (event, error) {
		return event{op.Actor, "create-enroll-token", req.Hardware, "ok", map[string]string{"expires": exp.Format(time.RFC3339), "token_id": enrollTokenID(hash)}},
			tx.CreateEnrollToken(ctx, store.EnrollToken{Hash: hash, HardwareID: req.Hardware, Expires: exp})
	})
	if err != nil {
		return api.EnrollToken{}, err
	}
	return api.EnrollToken{Token: secret, Hardware: req.Hardware, Expires: exp}, nil
}

// enrollTokenID names an enrollment token in the audit log: the start of
// the hash the store keeps, so the entry that created a token and the one
// of the enrollment that spent it can be matched without the secret.
func enrollTokenID(hash string) string { return hash[:16] }

// enrollment is who an accepted enrollment credential says the device is.
type enrollment struct {
	hardware string
	// actor names the credential in audit entries: never a name the
	// client chose.
	actor  string
	detail map[string]string
	// key is the device key to certify, once the CSR was checked.
	key crypto.PublicKey
	// spend consumes the credential inside the enrollment's transaction
	// (a one-time token); nil when there is nothing to consume.
	spend func(ctx context.Context, tx store.Tx) error
}

// Enrolled is an accepted enrollment: the answer and the certificate's
// serial (lowercase hex), which the HTTP layer's certificate gate learns.
type Enrolled struct {
	api.Enrolled
	Serial string
}

// Enroll exchanges a credential and a CSR (the device made its key
// locally) for a client certificate carrying the device id. The
// credential is a one-time enrollment token, or a certificate chain from
// a configured manufacturer CA whose subject names the device. The
// device record, the spent token and the audit entry commit in one
// transaction.
//
// Anyone can ask for this, so the cheapest checks come first and nothing
// costly happens for a request whose credential is not good: the
// request's syntax; then the credential (a token is looked up without
// writing; a manufacturer chain is bounded in count, size and key sizes
// before any signature is checked); then the CSR's key type and size
// (ECDSA P-256 or Ed25519); then its signature; and only in the
// transaction that spends the token, the signing of the certificate.
//
// A refusal before the credential is accepted has no Actor, and its
// answer does not depend on whether the device id exists. Only after the
// credential is accepted does the service look at the device id
// (device-exists); such refusals name the credential as their Actor.
func (s *Service) Enroll(ctx context.Context, requestID string, req api.EnrollRequest) (Enrolled, error) {
	if err := pki.ValidateDeviceID(req.DeviceID); err != nil {
		return Enrolled{}, refuse(Invalid, api.BadDeviceID, "%v", err)
	}
	if s.deviceCA == nil {
		return Enrolled{}, refuse(Unavailable, api.NoDeviceCA, "this server has no device CA")
	}
	if req.Hardware != "" {
		if err := release.ValidateHardware(req.Hardware); err != nil {
			return Enrolled{}, refuse(Invalid, api.BadHardware, "%v", err)
		}
	}
	var en *enrollment
	var err error
	switch {
	case req.ManufacturerCertificates != nil && req.Token != "":
		err = refuse(Invalid, api.BadEnrollment, "give a token or manufacturer_certificates, not both")
	case req.ManufacturerCertificates != nil:
		en, err = s.manufacturerEnrollment(req)
	default:
		en, err = s.tokenEnrollment(ctx, req)
	}
	if err == nil && en.key == nil {
		// The credential is good: the CSR, its key's type before its
		// signature.
		csr, cerr := pki.ParseDeviceCSR(req.CSR)
		switch {
		case errors.Is(cerr, pki.ErrUnsupportedKey):
			err = refuse(Invalid, api.UnsupportedKey, "%v", cerr)
		case cerr != nil:
			err = refuse(Invalid, api.BadCSR, "%v", cerr)
		default:
			en.key = csr.PublicKey
		}
	}
	if err != nil {
		return Enrolled{}, withActor(err, en)
	}
	var out Enrolled
	authenticated := true
	err = s.atomically(ctx, Op{Actor: en.actor, RequestID: requestID}, func(tx store.Tx) (event, error) {
		if en.spend != nil {
			if err := en.spend(ctx, tx); err != nil {
				// Spent by a concurrent enrollment since the lookup.
				authenticated = false
				return event{}, err
			}
		}
		// Only now, with the credential accepted, may the answer depend
		// on the device id; a refusal rolls the spent token back.
		if _, err := tx.Device(ctx, req.DeviceID); err == nil {
			return event{}, refuse(Conflict, api.DeviceExists, "device %s is already enrolled (an operator can remove its record: rampart device remove %s)", req.DeviceID, req.DeviceID)
		} else if !errors.Is(err, store.ErrNotFound) {
			return event{}, err
		}
		der, sn, err := s.deviceCA.IssueDeviceKey(en.key, req.DeviceID, deviceCertValidity)
		if err != nil {
			return event{}, err
		}
		out.Serial = sn.Text(16)
		out.Enrolled = api.Enrolled{DeviceID: req.DeviceID, Hardware: en.hardware, Certificate: string(pki.CertPEM(der))}
		if err := tx.CreateDevice(ctx, store.Device{ID: req.DeviceID, HardwareID: en.hardware, CertSerial: out.Serial, EnrolledAt: s.now()}); err != nil {
			return event{}, err
		}
		en.detail["hardware"], en.detail["serial"] = en.hardware, out.Serial
		return event{en.actor, "enroll", req.DeviceID, "ok", en.detail}, nil
	})
	if err != nil {
		if !authenticated {
			en = nil
		}
		return Enrolled{}, withActor(err, en)
	}
	return out, nil
}

// withActor names the accepted credential on a refusal.
func withActor(err error, en *enrollment) error {
	var r *Refusal
	if en != nil && errors.As(err, &r) {
		r.Actor = en.actor
	}
	return err
}

// tokenEnrollment checks a one-time token without spending it (a read:
// a flood of wrong tokens costs no write), and returns the enrollment
// that spends it in the enrollment's transaction, where the token is
// checked again. The token says the hardware id. When the request names
// the device's hardware, a token made for other hardware is refused (422
// wrong-hardware) and stays unspent, and the device id stays free.
func (s *Service) tokenEnrollment(ctx context.Context, req api.EnrollRequest) (*enrollment, error) {
	refused := func(err error) error {
		code := api.BadToken
		switch {
		case errors.Is(err, store.ErrUsed):
			code = api.TokenUsed
		case errors.Is(err, store.ErrExpired):
			code = api.TokenExpired
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		return refuse(Unauthenticated, code, "enrollment refused: %v", err)
	}
	if !strings.HasPrefix(req.Token, token.Prefix) {
		return nil, refused(fmt.Errorf("enrollment token: %w", store.ErrNotFound))
	}
	hash := token.Hash(req.Token)
	tok, err := s.store.EnrollToken(ctx, hash)
	switch {
	case err != nil:
		return nil, refused(err)
	case !tok.UsedAt.IsZero():
		return nil, refused(fmt.Errorf("enrollment token: %w", store.ErrUsed))
	case !s.now().Before(tok.Expires):
		return nil, refused(fmt.Errorf("enrollment token expired at %s: %w", tok.Expires.Format(time.RFC3339), store.ErrExpired))
	}
	en := &enrollment{actor: "enroll-token:" + enrollTokenID(hash), hardware: tok.HardwareID,
		detail: map[string]string{"method": "token", "token_id": enrollTokenID(hash)}}
	if req.Hardware != "" && req.Hardware != tok.HardwareID {
		return en, refuse(Unprocessable, api.WrongHardware, "this enrollment token is for hardware %s, the device is %s; the token was not spent: use a token made for %s (rampart device token --hardware %s)",
			tok.HardwareID, req.Hardware, req.Hardware, req.Hardware)
	}
	en.spend = func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.ConsumeEnrollToken(ctx, hash, req.DeviceID, s.now()); err != nil {
			return refused(err)
		}
		return nil
	}
	return en, nil
}

// manufacturerEnrollment checks a manufacturer certificate chain: it must
// chain to a configured manufacturer CA now, name the device in its
// subject, and certify the key that signed the CSR (the CSR's signature is
// the proof that the enrolling party holds the certificate's key, so a
// copied certificate is worthless). The device certificate then certifies
// that same key. The chain is bounded before any signature is checked
// (pki.VerifyManufacturerChain), and the CSR's key is compared with the
// certificate's before its signature is.
func (s *Service) manufacturerEnrollment(req api.EnrollRequest) (*enrollment, error) {
	if s.manufacturers == nil {
		return nil, refuse(Forbidden, api.NoManufacturerCA, "this server accepts no manufacturer certificates (rampart-server serve --manufacturer-ca); enroll with a token")
	}
	id, err := pki.VerifyManufacturerChain(req.ManufacturerCertificates, s.manufacturers, s.now())
	switch {
	case errors.Is(err, pki.ErrUnknownCA):
		return nil, refuse(Unauthenticated, api.ManufacturerUnknownCA, "%v", err)
	case errors.Is(err, pki.ErrCertExpired):
		return nil, refuse(Unauthenticated, api.ManufacturerCertExpired, "%v", err)
	case err != nil:
		return nil, refuse(Invalid, api.BadManufacturerCert, "%v", err)
	}
	if id.DeviceID != req.DeviceID {
		return nil, refuse(Forbidden, api.DeviceIDMismatch, "the manufacturer certificate names device %q (subject serialNumber, else CommonName), not %q", id.DeviceID, req.DeviceID)
	}
	if err := pki.CheckCSRKey(req.CSR, id.Leaf.PublicKey); err != nil {
		return nil, refuse(Unauthenticated, api.ManufacturerKeyMismatch, "the csr must be signed with the manufacturer certificate's key: %v", err)
	}
	// The credential is good from here on: a refusal names it (the
	// enrollment is returned with the refusal).
	en := &enrollment{actor: "manufacturer-cert:" + id.Leaf.SerialNumber.Text(16), key: id.Leaf.PublicKey, detail: map[string]string{
		"method":              "manufacturer-ca",
		"manufacturer_issuer": id.Leaf.Issuer.String(),
		"manufacturer_serial": id.Leaf.SerialNumber.Text(16),
	}}
	hw := id.HardwareID
	switch {
	case hw != "" && req.Hardware != "" && req.Hardware != hw:
		return en, refuse(Forbidden, api.HardwareMismatch, "the manufacturer certificate says hardware %q, the request %q", hw, req.Hardware)
	case hw == "":
		hw = req.Hardware
	}
	if err := release.ValidateHardware(hw); err != nil {
		return en, refuse(Invalid, api.BadHardware, "%v; give hardware in the request when the manufacturer certificate has no %s URI", err, pki.HardwareURI("ID"))
	}
	en.hardware = hw
	return en, nil
}
