package agent

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/strictjson"
)

// EnrollError is the server refusing an enrollment, with its error code.
type EnrollError struct {
	Status int
	Code   string
	Msg    string
}

func (e *EnrollError) Error() string {
	return fmt.Sprintf("enrollment refused (HTTP %d %s): %s", e.Status, e.Code, e.Msg)
}

// Credential is what a device shows the server to enroll: a one-time
// token from the operator, or the certificate chain its manufacturer gave
// it (PEM, the device's certificate first, then any intermediates), whose
// key the device holds in device.key. Exactly one is set.
type Credential struct {
	Token             string
	ManufacturerChain []byte
}

// maxManufacturerChain is the server's limit on a chain's length.
const maxManufacturerChain = 4

// Enroll obtains the device's certificate from the server and stores it.
// With a token, it makes the device key here, on the device, if there is
// none yet, and sends only a CSR. With a manufacturer chain, the key is
// the one the manufacturer certified, which must already be in
// device.key; the server certifies that same key. Enroll never overwrites
// an existing key: a device enrolls once.
func Enroll(ctx context.Context, cfg *Config, cred Credential) (*Enrolled, error) {
	if cfg.Server.URL == "" {
		return nil, &ConfigError{Msg: "server.url is required to enroll"}
	}
	if (cred.Token == "") == (cred.ManufacturerChain == nil) {
		return nil, errors.New("enroll: give either a token or a manufacturer certificate chain")
	}
	if _, err := os.Stat(cfg.Device.Certificate); err == nil {
		return nil, fmt.Errorf("%s exists: this device is already enrolled", cfg.Device.Certificate)
	}
	// A key without a certificate is a device whose earlier enrollment
	// was cut short, or one provisioned at the factory: enroll that key
	// rather than strand it.
	var key crypto.Signer
	fresh := false
	b, err := os.ReadFile(cfg.Device.Key)
	switch {
	case err == nil:
		if key, err = pki.ParseKeyPEM(b); err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Device.Key, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	case cred.ManufacturerChain != nil:
		return nil, &ConfigError{Msg: fmt.Sprintf("device.key %s does not exist: enrolling with a manufacturer certificate needs the key it certifies there", cfg.Device.Key)}
	default:
		if key, err = pki.GenerateDeviceKey(); err != nil {
			return nil, err
		}
		fresh = true
	}
	// The hardware id goes with either credential: the server refuses a
	// token made for other hardware (wrong-hardware) before it spends the
	// token or creates the device, so neither is lost to a mix-up.
	req := api.EnrollRequest{DeviceID: cfg.Device.ID, Hardware: cfg.Device.HardwareID}
	if cred.Token != "" {
		req.Token = cred.Token
	} else {
		chain, err := manufacturerChain(cred.ManufacturerChain, key)
		if err != nil {
			return nil, err
		}
		req.ManufacturerCertificates = chain
	}
	csr, err := pki.NewDeviceCSR(key, cfg.Device.ID)
	if err != nil {
		return nil, err
	}
	req.CSR = csr
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	noCert := *cfg
	noCert.Device.Certificate = ""
	client, err := NewHTTPClient(&noCert)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.Server.URL+"/api/v1/enroll", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("enrolling with %s: %w", cfg.Server.URL, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	// Both answers are parsed strictly (internal/strictjson): an error
	// body that does not parse is shown as it is, without a code.
	if resp.StatusCode != http.StatusCreated {
		var e api.ErrorBody
		ee := &EnrollError{Status: resp.StatusCode}
		if strictjson.Unmarshal(rb, &e) == nil {
			ee.Code, ee.Msg = string(e.Error.Code), e.Error.Message
		}
		if ee.Msg == "" {
			ee.Msg = string(bytes.TrimSpace(rb))
		}
		return nil, ee
	}
	var out api.Enrolled
	if err := strictjson.Unmarshal(rb, &out); err != nil {
		return nil, fmt.Errorf("enrollment answer: %w", err)
	}
	cert, err := pki.ParseCertPEM([]byte(out.Certificate))
	if err != nil {
		return nil, fmt.Errorf("enrollment answer: %w", err)
	}
	if id, err := pki.DeviceIDFromCert(cert); err != nil || id != cfg.Device.ID {
		return nil, fmt.Errorf("the server issued a certificate for %q, this device is %q", id, cfg.Device.ID)
	}
	if !sameKey(key, cert.PublicKey) {
		return nil, errors.New("the server's certificate does not certify this device's key")
	}
	if out.Hardware != cfg.Device.HardwareID {
		what := "the token is"
		if cred.Token == "" {
			what = "the manufacturer certificate is"
		}
		return nil, fmt.Errorf("%s for hardware %q, this device is %q (device.hardware_id)", what, out.Hardware, cfg.Device.HardwareID)
	}
	for _, d := range []string{filepath.Dir(cfg.Device.Key), filepath.Dir(cfg.Device.Certificate)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if fresh {
		if err := atomicfile.CreateNew(cfg.Device.Key, keyPEM, 0o600); err != nil {
			return nil, err
		}
	}
	if err := atomicfile.WriteFile(cfg.Device.Certificate, []byte(out.Certificate), 0o644); err != nil {
		return nil, err
	}
	return &Enrolled{DeviceID: out.DeviceID, Hardware: out.Hardware, NotAfter: cert.NotAfter}, nil
}

// manufacturerChain returns the DER certificates of a PEM chain, checking
// here what the device can know before asking the server: the file holds
// certificates only, at most as many as the server accepts, and the first
// certifies the device's key (a chain copied from another device, or the
// wrong file, is refused without a round trip).
func manufacturerChain(pemData []byte, key crypto.Signer) ([][]byte, error) {
	certs, err := pki.ParseCertsPEM(pemData)
	if err != nil {
		return nil, &ConfigError{Msg: fmt.Sprintf("manufacturer certificate file: %v", err)}
	}
	if len(certs) > maxManufacturerChain {
		return nil, &ConfigError{Msg: fmt.Sprintf("manufacturer certificate file: %d certificates, at most %d (the device's and its intermediates, not the root)", len(certs), maxManufacturerChain)}
	}
	if !sameKey(key, certs[0].PublicKey) {
		return nil, &ConfigError{Msg: fmt.Sprintf("the manufacturer certificate (subject %q) does not certify the key in device.key", certs[0].Subject.String())}
	}
	chain := make([][]byte, len(certs))
	for i, c := range certs {
		chain[i] = c.Raw
	}
	return chain, nil
}

func sameKey(key crypto.Signer, pub crypto.PublicKey) bool {
	k, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(pub)
}

// Enrolled is the identity the server certified.
type Enrolled struct {
	DeviceID string    `json:"device_id"`
	Hardware string    `json:"hardware"`
	NotAfter time.Time `json:"not_after"`
}
