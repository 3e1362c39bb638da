//go:build cgo && !nopkcs11

package keys

// Tokens are driven through github.com/miekg/pkcs11 directly rather than
// crypto11: crypto11 has no Ed25519, Rampart's default key type, so we would
// need raw miekg/pkcs11 for that anyway, and two libraries would mean two
// ideas of who calls C_Initialize/C_Finalize and who owns the login state of
// a token. One path keeps module lifetime, login and error mapping in one
// place for all three key types.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// PKCS#11 3.0 Edwards-curve constants, which miekg/pkcs11 v1.1.2 predates.
const (
	ckkECEdwards           = 0x40
	ckmECEdwardsKeyPairGen = 0x1055
	ckmEdDSA               = 0x1057
)

var (
	oidP256    = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidEd25519 = asn1.ObjectIdentifier{1, 3, 101, 112}
)

// p11Module is a loaded, initialized PKCS#11 library shared by every
// session on it. C_Initialize/C_Finalize are per process, so two Signers
// from the same module must not each finalize it under the other's feet.
type p11Module struct {
	key      string // cache key: the module path with symlinks resolved
	path     string // as given, for messages
	ctx      *pkcs11.Ctx
	refs     int  // guarded by p11Mu
	finalize bool // we initialized it, so we finalize it

	mu     sync.Mutex
	logins map[uint]*p11Login // by slot
}

// p11Login tracks a token's login. PKCS#11 login state belongs to the
// token, not the session: logging out when one Signer closes would log out
// every other Signer on the same token, so only the last one does.
type p11Login struct {
	n int
	// pinHash lets a second Open with a wrong PIN fail as it would in a
	// fresh process, instead of riding on the first Open's login (modules
	// answer CKR_USER_ALREADY_LOGGED_IN without checking the PIN). It
	// guards against mistakes, not against code in this process.
	pinHash [sha256.Size]byte
	ours    bool // we logged in, so we log out
}

var (
	p11Mu      sync.Mutex
	p11Modules = map[string]*p11Module{}
)

func acquireModule(path string) (*p11Module, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("pkcs11: cannot load module %s: %w; fix module-path in the URI or %s", path, err, envPKCS11Module)
	}
	key := path
	if real, err := filepath.EvalSymlinks(path); err == nil {
		key = real
	}
	p11Mu.Lock()
	defer p11Mu.Unlock()
	if m := p11Modules[key]; m != nil {
		m.refs++
		return m, nil
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("pkcs11: cannot load module %s: it is not a loadable PKCS#11 library (dlopen or C_GetFunctionList failed); fix module-path in the URI or %s", path, envPKCS11Module)
	}
	finalize := true
	if err := ctx.Initialize(); err != nil {
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			ctx.Destroy()
			return nil, fmt.Errorf("pkcs11: initializing module %s: %w", path, err)
		}
		// Someone else in this process initialized it; they finalize it.
		finalize = false
	}
	m := &p11Module{key: key, path: path, ctx: ctx, refs: 1, finalize: finalize, logins: map[uint]*p11Login{}}
	p11Modules[key] = m
	return m, nil
}

func (m *p11Module) release() error {
	p11Mu.Lock()
	defer p11Mu.Unlock()
	m.refs--
	if m.refs > 0 {
		return nil
	}
	delete(p11Modules, m.key)
	var err error
	if m.finalize {
		if err = m.ctx.Finalize(); err != nil {
			err = fmt.Errorf("pkcs11: finalizing module %s: %w", m.path, err)
		}
	}
	m.ctx.Destroy()
	return err
}

func (m *p11Module) login(slot uint, sh pkcs11.SessionHandle, pin, token string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := sha256.Sum256([]byte(pin))
	if l := m.logins[slot]; l != nil {
		if subtle.ConstantTimeCompare(h[:], l.pinHash[:]) != 1 {
			return fmt.Errorf("%w: token %q: wrong PIN (this process is already logged in to the token with a different one); check pin-source or %s", ErrTokenLogin, token, envPKCS11PIN)
		}
		l.n++
		return nil
	}
	ours := true
	if err := m.ctx.Login(sh, pkcs11.CKU_USER, pin); err != nil {
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
			return loginError(err, token)
		}
		ours = false
	}
	m.logins[slot] = &p11Login{n: 1, pinHash: h, ours: ours}
	return nil
}

func (m *p11Module) logout(slot uint, sh pkcs11.SessionHandle) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.logins[slot]
	if l == nil {
		return nil
	}
	if l.n--; l.n > 0 {
		return nil
	}
	delete(m.logins, slot)
	if !l.ours {
		return nil
	}
	if err := m.ctx.Logout(sh); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)) {
		return fmt.Errorf("pkcs11: logging out: %w", err)
	}
	return nil
}

func loginError(err error, token string) error {
	var code pkcs11.Error
	errors.As(err, &code)
	switch code {
	case pkcs11.CKR_PIN_INCORRECT:
		return fmt.Errorf("%w: token %q: wrong PIN; check pin-source or %s (%w)", ErrTokenLogin, token, envPKCS11PIN, err)
	case pkcs11.CKR_PIN_LOCKED:
		return fmt.Errorf("%w: token %q is locked after too many wrong PINs; unblock it with the SO PIN (e.g. pkcs11-tool --init-pin --login --login-type so) (%w)", ErrTokenLogin, token, err)
	case pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
		return fmt.Errorf("%w: token %q rejects the PIN's format or length; check pin-source or %s (%w)", ErrTokenLogin, token, envPKCS11PIN, err)
	case pkcs11.CKR_PIN_EXPIRED:
		return fmt.Errorf("%w: token %q: the PIN has expired; set a new one with the token's tools (%w)", ErrTokenLogin, token, err)
	case pkcs11.CKR_USER_PIN_NOT_INITIALIZED:
		return fmt.Errorf("%w: token %q has no user PIN yet; set one with the SO PIN (e.g. softhsm2-util or pkcs11-tool --init-pin) (%w)", ErrTokenLogin, token, err)
	}
	return fmt.Errorf("%w: token %q: %w", ErrTokenLogin, token, err)
}

// p11Session is a logged-in session on the token a URI names.
type p11Session struct {
	mod   *p11Module
	ctx   *pkcs11.Ctx
	slot  uint
	sh    pkcs11.SessionHandle
	token string // label, for messages
}

func openSession(u *pkcs11URI, rw bool) (_ *p11Session, err error) {
	modPath, err := u.resolvedModule()
	if err != nil {
		return nil, err
	}
	// The PIN is resolved before touching the module so that a missing PIN
	// file is reported as such, not as whatever the token says next.
	pin, err := u.resolvedPIN()
	if err != nil {
		return nil, err
	}
	mod, err := acquireModule(modPath)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			mod.release()
		}
	}()
	slot, label, err := findToken(mod, u)
	if err != nil {
		return nil, err
	}
	flags := uint(pkcs11.CKF_SERIAL_SESSION)
	if rw {
		flags |= pkcs11.CKF_RW_SESSION
	}
	sh, err := mod.ctx.OpenSession(slot, flags)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: opening a session on token %q: %w", label, err)
	}
	if err := mod.login(slot, sh, pin, label); err != nil {
		mod.ctx.CloseSession(sh)
		return nil, err
	}
	return &p11Session{mod: mod, ctx: mod.ctx, slot: slot, sh: sh, token: label}, nil
}

func (s *p11Session) close() error {
	err := s.mod.logout(s.slot, s.sh)
	if e := s.ctx.CloseSession(s.sh); e != nil {
		err = errors.Join(err, fmt.Errorf("pkcs11: closing session on token %q: %w", s.token, e))
	}
	return errors.Join(err, s.mod.release())
}

// findToken picks the one initialized token matching the URI's token,
// serial and slot-id. With none of them given, a lone token is used.
func findToken(m *p11Module, u *pkcs11URI) (uint, string, error) {
	slots, err := m.ctx.GetSlotList(true)
	if err != nil {
		return 0, "", fmt.Errorf("pkcs11: listing slots of module %s: %w", m.path, err)
	}
	var labels []string
	var matches []uint
	var matchLabels []string
	for _, slot := range slots {
		info, err := m.ctx.GetTokenInfo(slot)
		if err != nil {
			continue // a slot we cannot read holds no token we could use
		}
		// Uninitialized tokens (SoftHSM always offers one) cannot hold keys.
		if info.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		label := strings.TrimRight(info.Label, " \x00")
		serial := strings.TrimRight(info.SerialNumber, " \x00")
		labels = append(labels, strconv.Quote(label))
		if u.token != "" && strings.TrimRight(u.token, " ") != label ||
			u.serial != "" && strings.TrimRight(u.serial, " ") != serial ||
			u.hasSlot && u.slotID != uint64(slot) {
			continue
		}
		matches = append(matches, slot)
		matchLabels = append(matchLabels, strconv.Quote(label))
	}
	want := describeToken(u)
	switch {
	case len(labels) == 0:
		return 0, "", fmt.Errorf("%w: module %s has no initialized token; initialize one first (e.g. softhsm2-util --init-token)", ErrTokenNotFound, m.path)
	case len(matches) == 0:
		return 0, "", fmt.Errorf("%w: no token with %s in module %s (tokens present: %s); fix token= in the URI", ErrTokenNotFound, want, m.path, strings.Join(labels, ", "))
	case len(matches) > 1:
		return 0, "", fmt.Errorf("pkcs11: %d tokens match %s (%s); add token=, serial= or slot-id= to the URI to pick one", len(matches), want, strings.Join(matchLabels, ", "))
	}
	info, _ := m.ctx.GetTokenInfo(matches[0])
	return matches[0], strings.TrimRight(info.Label, " \x00"), nil
}

func describeToken(u *pkcs11URI) string {
	var parts []string
	if u.token != "" {
		parts = append(parts, fmt.Sprintf("label %q", u.token))
	}
	if u.serial != "" {
		parts = append(parts, fmt.Sprintf("serial %q", u.serial))
	}
	if u.hasSlot {
		parts = append(parts, fmt.Sprintf("slot-id %d", u.slotID))
	}
	if len(parts) == 0 {
		return "any label"
	}
	return strings.Join(parts, " and ")
}

func describeObject(u *pkcs11URI) string {
	var parts []string
	if u.object != "" {
		parts = append(parts, fmt.Sprintf("label %q", u.object))
	}
	if u.hasID {
		parts = append(parts, "id "+hex.EncodeToString(u.id))
	}
	return strings.Join(parts, " and ")
}

func (s *p11Session) find(tmpl []*pkcs11.Attribute, max int) ([]pkcs11.ObjectHandle, error) {
	if err := s.ctx.FindObjectsInit(s.sh, tmpl); err != nil {
		return nil, fmt.Errorf("pkcs11: searching token %q: %w", s.token, err)
	}
	var all []pkcs11.ObjectHandle
	var err error
	for len(all) < max {
		var hs []pkcs11.ObjectHandle
		hs, _, err = s.ctx.FindObjects(s.sh, max-len(all))
		if err != nil || len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	if e := s.ctx.FindObjectsFinal(s.sh); err == nil {
		err = e
	}
	if err != nil {
		return nil, fmt.Errorf("pkcs11: searching token %q: %w", s.token, err)
	}
	return all, nil
}

// attr reads one attribute. Attributes are read one at a time because a
// single unsupported type makes C_GetAttributeValue fail for all of them.
func (s *p11Session) attr(o pkcs11.ObjectHandle, typ uint) ([]byte, error) {
	a, err := s.ctx.GetAttributeValue(s.sh, o, []*pkcs11.Attribute{pkcs11.NewAttribute(typ, nil)})
	if err != nil {
		return nil, err
	}
	return a[0].Value, nil
}

func (s *p11Session) attrUint(o pkcs11.ObjectHandle, typ uint) (uint64, error) {
	v, err := s.attr(o, typ)
	if err != nil {
		return 0, err
	}
	// A CK_ULONG in host byte order and width.
	switch len(v) {
	case 8:
		return binary.NativeEndian.Uint64(v), nil
	case 4:
		return uint64(binary.NativeEndian.Uint32(v)), nil
	}
	return 0, fmt.Errorf("pkcs11: attribute 0x%x has %d bytes, want a CK_ULONG", typ, len(v))
}

// labels lists the labels of objects of a class, for error messages.
func (s *p11Session) labels(class uint) string {
	hs, err := s.find([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}, 20)
	if err != nil || len(hs) == 0 {
		return "none"
	}
	var out []string
	for _, h := range hs {
		v, err := s.attr(h, pkcs11.CKA_LABEL)
		if err != nil {
			continue
		}
		out = append(out, strconv.Quote(string(v)))
	}
	return strings.Join(out, ", ")
}

// p11Signer signs with a private key that stays in the token.
type p11Signer struct {
	mu     sync.Mutex // a session runs one operation at a time
	s      *p11Session
	priv   pkcs11.ObjectHandle
	pub    crypto.PublicKey
	desc   string
	closed bool
}

func openPKCS11(uri string) (Signer, error) {
	u, err := parsePKCS11URI(uri)
	if err != nil {
		return nil, err
	}
	if u.object == "" && !u.hasID {
		return nil, fmt.Errorf("pkcs11: %s names no key; add object=<label> or id=<hex bytes, percent-encoded> to the path", u)
	}
	s, err := openSession(u, false)
	if err != nil {
		return nil, err
	}
	signer, err := newP11Signer(s, u)
	if err != nil {
		s.close()
		return nil, err
	}
	return signer, nil
}

func newP11Signer(s *p11Session, u *pkcs11URI) (*p11Signer, error) {
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY)}
	if u.object != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.object))
	}
	if u.hasID {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, u.id))
	}
	hs, err := s.find(tmpl, 2)
	if err != nil {
		return nil, err
	}
	desc := fmt.Sprintf("%s in token %q", describeObject(u), s.token)
	switch len(hs) {
	case 0:
		return nil, fmt.Errorf("%w: no private key with %s (private keys present: %s); fix object= or id= in the URI", ErrObjectNotFound, desc, s.labels(pkcs11.CKO_PRIVATE_KEY))
	case 1:
	default:
		return nil, fmt.Errorf("pkcs11: several private keys with %s; add id= to the URI to pick one", desc)
	}
	priv := hs[0]
	if v, err := s.attr(priv, pkcs11.CKA_ALWAYS_AUTHENTICATE); err == nil && len(v) == 1 && v[0] != 0 {
		return nil, fmt.Errorf("%w: the key with %s wants the PIN for every signature (CKA_ALWAYS_AUTHENTICATE), which rampart does not support; use a key without it", ErrUnsupportedKey, desc)
	}
	pub, err := s.publicKeyOf(priv, desc)
	if err != nil {
		return nil, err
	}
	if _, err := TUFKey(pub); err != nil {
		return nil, fmt.Errorf("key with %s: %w", desc, err)
	}
	signer := &p11Signer{s: s, priv: priv, pub: pub, desc: desc}
	if err := signer.selfTest(); err != nil {
		return nil, err
	}
	return signer, nil
}

// selfTest signs once and checks the result against the public key. The
// public key comes from a separate object found by CKA_ID, so a token
// holding mismatched objects would otherwise produce metadata whose key id
// names one key and whose signature is by another, which only fails later,
// on clients.
func (p *p11Signer) selfTest() error {
	msg := []byte("rampart pkcs11 self-test")
	d := sha256.Sum256(msg)
	var ok bool
	switch pub := p.pub.(type) {
	case ed25519.PublicKey:
		sig, err := p.Sign(nil, msg, crypto.Hash(0))
		if err != nil {
			return err
		}
		ok = ed25519.Verify(pub, msg, sig)
	case *ecdsa.PublicKey:
		sig, err := p.Sign(nil, d[:], crypto.SHA256)
		if err != nil {
			return err
		}
		ok = ecdsa.VerifyASN1(pub, d[:], sig)
	case *rsa.PublicKey:
		opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
		sig, err := p.Sign(nil, d[:], opts)
		if err != nil {
			return err
		}
		ok = rsa.VerifyPSS(pub, crypto.SHA256, d[:], sig, opts) == nil
	}
	if !ok {
		return fmt.Errorf("%w: the public key object for the key with %s does not match its private key; the token's objects are inconsistent", ErrMalformedKey, p.desc)
	}
	return nil
}

// publicKeyOf finds the public half of a private key: the public key
// object with the same CKA_ID (or label, if the key has no id), which is how
// pkcs11-tool, p11tool and our own generation pair them. RSA private keys
// also carry their modulus, so they work without a public object.
func (s *p11Session) publicKeyOf(priv pkcs11.ObjectHandle, desc string) (crypto.PublicKey, error) {
	kt, err := s.attrUint(priv, pkcs11.CKA_KEY_TYPE)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: reading the key type of the key with %s: %w", desc, err)
	}
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, uint(kt)),
	}
	if id, err := s.attr(priv, pkcs11.CKA_ID); err == nil && len(id) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	} else if label, err := s.attr(priv, pkcs11.CKA_LABEL); err == nil && len(label) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
	} else {
		return nil, fmt.Errorf("%w: the key with %s has neither id nor label, so its public key cannot be found", ErrObjectNotFound, desc)
	}
	hs, err := s.find(tmpl, 2)
	if err != nil {
		return nil, err
	}
	switch {
	case len(hs) == 1:
		return s.readPublic(hs[0], kt, desc)
	case len(hs) > 1:
		return nil, fmt.Errorf("pkcs11: several public key objects pair with the key with %s; remove the stale ones", desc)
	case kt == pkcs11.CKK_RSA:
		return s.readPublic(priv, kt, desc)
	}
	return nil, fmt.Errorf("%w: no public key object pairs with the private key with %s; import the public key with the same id", ErrObjectNotFound, desc)
}

// readPublic decodes the public key held by a key object.
func (s *p11Session) readPublic(o pkcs11.ObjectHandle, kt uint64, desc string) (crypto.PublicKey, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: key with %s: %s", ErrMalformedKey, desc, fmt.Sprintf(format, args...))
	}
	switch kt {
	case pkcs11.CKK_EC, ckkECEdwards:
		params, err := s.attr(o, pkcs11.CKA_EC_PARAMS)
		if err != nil {
			return nil, fmt.Errorf("pkcs11: reading CKA_EC_PARAMS of the key with %s: %w", desc, err)
		}
		curve, err := curveOf(params)
		if err != nil {
			return nil, fmt.Errorf("key with %s: %w", desc, err)
		}
		point, err := s.attr(o, pkcs11.CKA_EC_POINT)
		if err != nil {
			return nil, fmt.Errorf("pkcs11: reading CKA_EC_POINT of the key with %s: %w", desc, err)
		}
		// The standard says DER OCTET STRING; some modules return the bare
		// point, which is recognisable by its length.
		var raw []byte
		if rest, err := asn1.Unmarshal(point, &raw); err != nil || len(rest) != 0 {
			raw = point
		}
		if curve == Ed25519 {
			if len(raw) != ed25519.PublicKeySize {
				return nil, bad("Ed25519 public key has %d bytes, want %d", len(raw), ed25519.PublicKeySize)
			}
			return ed25519.PublicKey(raw), nil
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
		if err != nil {
			return nil, bad("P-256 public point: %v", err)
		}
		return pub, nil
	case pkcs11.CKK_RSA:
		n, err := s.attr(o, pkcs11.CKA_MODULUS)
		if err != nil {
			return nil, fmt.Errorf("pkcs11: reading the RSA modulus of the key with %s: %w", desc, err)
		}
		e, err := s.attr(o, pkcs11.CKA_PUBLIC_EXPONENT)
		if err != nil {
			return nil, fmt.Errorf("pkcs11: reading the RSA exponent of the key with %s: %w", desc, err)
		}
		exp := new(big.Int).SetBytes(e)
		if !exp.IsInt64() || exp.Int64() < 3 || exp.Int64() > 1<<31-1 || exp.Bit(0) == 0 {
			return nil, bad("unusable RSA public exponent %v", exp)
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp.Int64())}, nil
	}
	return nil, fmt.Errorf("%w: the key with %s has PKCS#11 key type 0x%x; rampart supports ed25519, ecdsa-p256 and rsa-3072", ErrUnsupportedKey, desc, kt)
}

// curveOf maps CKA_EC_PARAMS to a key type. Ed25519 comes either as its
// RFC 8410 OID or, from older tools, as the printable string "edwards25519".
func curveOf(params []byte) (Type, error) {
	var oid asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(params, &oid); err == nil && len(rest) == 0 {
		switch {
		case oid.Equal(oidP256):
			return ECDSAP256, nil
		case oid.Equal(oidEd25519):
			return Ed25519, nil
		}
		return "", fmt.Errorf("%w: elliptic curve %v; rampart supports P-256 and Ed25519", ErrUnsupportedKey, oid)
	}
	var name string
	if rest, err := asn1.UnmarshalWithParams(params, &name, "printable"); err == nil && len(rest) == 0 {
		if name == "edwards25519" {
			return Ed25519, nil
		}
		return "", fmt.Errorf("%w: elliptic curve %q; rampart supports P-256 and Ed25519", ErrUnsupportedKey, name)
	}
	return "", fmt.Errorf("%w: unreadable CKA_EC_PARAMS %x", ErrMalformedKey, params)
}

func (p *p11Signer) Public() crypto.PublicKey { return p.pub }

// Sign follows crypto.Signer: Ed25519 signs the message itself (opts must
// be crypto.Hash(0)), ECDSA signs a digest and returns ASN.1 DER, RSA signs
// a digest with PSS (opts must be *rsa.PSSOptions). The token's random
// number generator is used, so rand is ignored.
func (p *p11Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	var mech *pkcs11.Mechanism
	var ecdsaSig bool
	switch pub := p.pub.(type) {
	case ed25519.PublicKey:
		if opts.HashFunc() != crypto.Hash(0) {
			return nil, fmt.Errorf("pkcs11: ed25519 signs the message itself; pass crypto.Hash(0), not %v (Ed25519ph is not supported)", opts.HashFunc())
		}
		if o, ok := opts.(*ed25519.Options); ok && o.Context != "" {
			return nil, errors.New("pkcs11: ed25519 contexts (Ed25519ctx) are not supported")
		}
		mech = pkcs11.NewMechanism(ckmEdDSA, nil)
	case *ecdsa.PublicKey:
		h := opts.HashFunc()
		if n := digestSize(h); n == 0 || len(digest) != n {
			return nil, fmt.Errorf("pkcs11: ecdsa signs a SHA-256, SHA-384 or SHA-512 digest; got %d bytes for hash %v", len(digest), h)
		}
		mech = pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)
		ecdsaSig = true
	case *rsa.PublicKey:
		pss, ok := opts.(*rsa.PSSOptions)
		if !ok {
			return nil, errors.New("pkcs11: rsa keys sign with PSS only; pass *rsa.PSSOptions")
		}
		h := pss.HashFunc()
		var hashMech, mgf uint
		switch h {
		case crypto.SHA256:
			hashMech, mgf = pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256
		case crypto.SHA384:
			hashMech, mgf = pkcs11.CKM_SHA384, pkcs11.CKG_MGF1_SHA384
		case crypto.SHA512:
			hashMech, mgf = pkcs11.CKM_SHA512, pkcs11.CKG_MGF1_SHA512
		default:
			return nil, fmt.Errorf("pkcs11: rsa-pss with hash %v is not supported; use SHA-256, SHA-384 or SHA-512", h)
		}
		if len(digest) != digestSize(h) {
			return nil, fmt.Errorf("pkcs11: rsa-pss signs a digest; got %d bytes for hash %v", len(digest), h)
		}
		salt := pss.SaltLength
		switch salt {
		case rsa.PSSSaltLengthEqualsHash:
			salt = digestSize(h)
		case rsa.PSSSaltLengthAuto:
			// As crypto/rsa does: the largest salt that fits.
			salt = (pub.N.BitLen()-1+7)/8 - 2 - digestSize(h)
		}
		if salt < 0 {
			return nil, fmt.Errorf("pkcs11: invalid rsa-pss salt length %d", pss.SaltLength)
		}
		mech = pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, pkcs11.NewPSSParams(hashMech, mgf, uint(salt)))
	default:
		return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, p.pub)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("pkcs11: signing with the key with %s after Close", p.desc)
	}
	if err := p.s.ctx.SignInit(p.s.sh, []*pkcs11.Mechanism{mech}, p.priv); err != nil {
		return nil, fmt.Errorf("pkcs11: signing with the key with %s: %w", p.desc, err)
	}
	sig, err := p.s.ctx.Sign(p.s.sh, digest)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: signing with the key with %s: %w", p.desc, err)
	}
	if ecdsaSig {
		return ecdsaRawToASN1(sig)
	}
	return sig, nil
}

// digestSize is h.Size() for the hashes we sign, and 0 for the rest:
// crypto.Hash.Size panics on values it does not know, and callers choose h.
func digestSize(h crypto.Hash) int {
	switch h {
	case crypto.SHA256:
		return 32
	case crypto.SHA384:
		return 48
	case crypto.SHA512:
		return 64
	}
	return 0
}

// ecdsaRawToASN1 converts CKM_ECDSA's r||s into the DER SEQUENCE that
// crypto.Signer, TUF and ecdsa.VerifyASN1 expect.
func ecdsaRawToASN1(raw []byte) ([]byte, error) {
	if len(raw) != 64 {
		return nil, fmt.Errorf("pkcs11: P-256 signature from the token has %d bytes, want 64", len(raw))
	}
	return asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(raw[:32]),
		new(big.Int).SetBytes(raw[32:]),
	})
}

// Close logs out (when no other Signer still uses the token), closes the
// session and finalizes the module after its last user. It is idempotent.
func (p *p11Signer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return p.s.close()
}

func generatePKCS11(uri string, t Type) (_ crypto.PublicKey, err error) {
	u, err := parsePKCS11URI(uri)
	if err != nil {
		return nil, err
	}
	if u.object == "" {
		return nil, fmt.Errorf("pkcs11: %s has no object=<label>; name the new key in the path, e.g. pkcs11:token=...;object=release-2025", u)
	}
	mech, pubTmpl, privTmpl, err := keyPairTemplates(t)
	if err != nil {
		return nil, err
	}
	s, err := openSession(u, true)
	if err != nil {
		return nil, err
	}
	defer func() {
		if e := s.close(); e != nil && err == nil {
			err = e
		}
	}()
	existing, err := s.find([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.object)}, 1)
	if err != nil {
		return nil, err
	}
	if len(existing) > 0 {
		return nil, fmt.Errorf("pkcs11: token %q already holds an object labelled %q: %w; choose another object= label (rampart never replaces a key)", s.token, u.object, fs.ErrExist)
	}
	id := u.id
	if u.hasID {
		existing, err := s.find([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, id)}, 1)
		if err != nil {
			return nil, err
		}
		if len(existing) > 0 {
			return nil, fmt.Errorf("pkcs11: token %q already holds an object with id %x: %w; choose another id= or leave it out", s.token, id, fs.ErrExist)
		}
	} else {
		// Tools find a key pair's public half by CKA_ID, so every pair
		// needs a distinct one; 64 random bits make collisions a non-issue.
		id = make([]byte, 8)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
	}
	common := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.object),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	pubTmpl = append(append(pubTmpl, common...),
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
	)
	privTmpl = append(append(privTmpl, common...),
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
	)
	pubH, privH, err := s.ctx.GenerateKeyPair(s.sh, []*pkcs11.Mechanism{mech}, pubTmpl, privTmpl)
	if err != nil {
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID)) {
			return nil, fmt.Errorf("%w: token %q cannot generate %s keys (%w)", ErrUnsupportedKey, s.token, t, err)
		}
		return nil, fmt.Errorf("pkcs11: generating a %s key in token %q: %w", t, s.token, err)
	}
	desc := fmt.Sprintf("label %q in token %q", u.object, s.token)
	pub, err := s.readPublic(pubH, keyTypeOf(t), desc)
	if err == nil {
		// Another process may have generated under the same label between
		// our check and now; with two keys the label would be ambiguous.
		var same []pkcs11.ObjectHandle
		same, err = s.find([]*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.object),
		}, 2)
		if err == nil && len(same) != 1 {
			err = fmt.Errorf("pkcs11: another key labelled %q appeared in token %q while generating: %w; choose another object= label", u.object, s.token, fs.ErrExist)
		}
	}
	if err != nil {
		// Leave no half-made key behind under a label the user will retry.
		s.ctx.DestroyObject(s.sh, privH)
		s.ctx.DestroyObject(s.sh, pubH)
		return nil, err
	}
	return pub, nil
}

func keyTypeOf(t Type) uint64 {
	switch t {
	case Ed25519:
		return ckkECEdwards
	case ECDSAP256:
		return pkcs11.CKK_EC
	}
	return pkcs11.CKK_RSA
}

func keyPairTemplates(t Type) (mech *pkcs11.Mechanism, pub, priv []*pkcs11.Attribute, err error) {
	switch t {
	case Ed25519:
		params, _ := asn1.Marshal(oidEd25519)
		return pkcs11.NewMechanism(ckmECEdwardsKeyPairGen, nil),
			[]*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards),
				pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params),
			},
			[]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards)},
			nil
	case ECDSAP256:
		params, _ := asn1.Marshal(oidP256)
		return pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil),
			[]*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
				pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params),
			},
			[]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC)},
			nil
	case RSA3072:
		return pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil),
			[]*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
				pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, 3072),
				pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
			},
			[]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA)},
			nil
	}
	return nil, nil, nil, fmt.Errorf("%w: %q", ErrUnsupportedKey, t)
}
