package pki

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
)

// deviceScheme and devicePrefix make up a device identity URI:
// "rampart:device:<id>".
//
// Why an opaque URI of our own and not spiffe://trust-domain/path: a SPIFFE
// ID promises interoperation with SPIFFE tooling and trust-domain semantics
// we do not have, and it has a host part, which name constraints and URL
// handling treat as a DNS name. "rampart:device:<id>" has no host, cannot
// be mistaken for something fetchable, and says what it is. Devices are
// authorised by this URI only, never by the certificate's CN (the CN merely
// repeats the id for people reading the certificate).
const (
	deviceScheme = "rampart"
	devicePrefix = "device:"
	// MaxDeviceIDLen bounds a device id: enough for a UUID or any
	// manufacturer serial, short enough for a certificate CN (64) and a
	// file name.
	MaxDeviceIDLen = 64
)

// DeviceURI returns the URI SAN that carries deviceID in a device
// certificate: rampart:device:<id>. deviceID should be valid
// (ValidateDeviceID); the valid charset needs no escaping.
func DeviceURI(deviceID string) *url.URL {
	return &url.URL{Scheme: deviceScheme, Opaque: devicePrefix + deviceID}
}

// ValidateDeviceID checks a device id: 1 to 64 characters from [a-z0-9._-],
// beginning with a letter or digit.
//
// The charset is deliberately small. A device id ends up in a URI, a
// certificate CN, file and repository names ("director/<id>"), log lines
// and URLs, so it must need no escaping anywhere: no '/', no leading '.',
// no spaces or control characters. Lower case only, so two ids never differ
// only by case (on case-insensitive file systems or in people's heads).
func ValidateDeviceID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrBadDeviceID)
	}
	if len(id) > MaxDeviceIDLen {
		return fmt.Errorf("%w: %d characters, limit %d", ErrBadDeviceID, len(id), MaxDeviceIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return fmt.Errorf("%w: %q: character %q at %d; allowed are a-z 0-9 and . _ - (not first)", ErrBadDeviceID, id, c, i)
		}
	}
	return nil
}

// DeviceIDFromCert returns the device id of a device certificate. The
// certificate must carry exactly one URI SAN, and it must be a well-formed
// device URI with a valid id; anything else is ErrNoDeviceID. It does not
// verify the certificate: callers use verified chains (see DeviceFromRequest
// and ServerTLSConfig).
func DeviceIDFromCert(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", fmt.Errorf("%w: no certificate", ErrNoDeviceID)
	}
	// Exactly one: a certificate naming two devices would let whichever
	// one a caller happens to read win.
	if len(cert.URIs) != 1 {
		return "", fmt.Errorf("%w: %d uri sans, want 1", ErrNoDeviceID, len(cert.URIs))
	}
	u := cert.URIs[0]
	id, ok := strings.CutPrefix(u.Opaque, devicePrefix)
	if u.Scheme != deviceScheme || !ok {
		return "", fmt.Errorf("%w: uri san %q is not %s:%s<id>", ErrNoDeviceID, u, deviceScheme, devicePrefix)
	}
	if err := ValidateDeviceID(id); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoDeviceID, err)
	}
	// Round-trip to refuse queries, fragments or other decoration that
	// url.Parse tolerates around an opaque part.
	if u.String() != DeviceURI(id).String() {
		return "", fmt.Errorf("%w: uri san %q is not canonical", ErrNoDeviceID, u)
	}
	return id, nil
}
