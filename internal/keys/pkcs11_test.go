//go:build cgo && !nopkcs11

package keys_test

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/keys/keystest"
)

const (
	tokenLabel = "release"
	userPIN    = "1234"
	soPIN      = "12345678"
)

// softHSM is a fresh SoftHSM2 token store holding one token, "release".
// SOFTHSM2_CONF is process-wide, hence t.Setenv and no t.Parallel.
type softHSM struct {
	module  string
	pinFile string
}

func newSoftHSM(t *testing.T) *softHSM {
	t.Helper()
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		t.Fatal("softhsm2-util not found: run make test (scripts/test-deps.sh installs softhsm2)")
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	cfg := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	// Keep a developer's own settings from changing what the tests see.
	t.Setenv("RAMPART_PKCS11_MODULE", "")
	t.Setenv("RAMPART_PKCS11_PIN", "")
	run(t, "softhsm2-util", "--init-token", "--free", "--label", tokenLabel, "--so-pin", soPIN, "--pin", userPIN)

	pinFile := filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte(userPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &softHSM{module: softHSMModule(t), pinFile: pinFile}
}

func softHSMModule(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("dpkg", "-L", "libsofthsm2").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasSuffix(line, "/libsofthsm2.so") {
				if _, err := os.Stat(line); err == nil {
					return line
				}
			}
		}
	}
	const fallback = "/usr/lib/softhsm/libsofthsm2.so"
	if _, err := os.Stat(fallback); err != nil {
		t.Fatalf("libsofthsm2.so not found (dpkg -L libsofthsm2, %s): run make test (scripts/test-deps.sh installs softhsm2)", fallback)
	}
	return fallback
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// uri names an object in the "release" token, with the PIN from a file.
// path and query are extra attributes.
func (h *softHSM) uri(path, query string) string {
	u := "pkcs11:token=" + tokenLabel
	if path != "" {
		u += ";" + path
	}
	u += "?module-path=" + h.module
	if !strings.Contains(query, "pin-") {
		u += "&pin-source=file:" + h.pinFile
	}
	if query != "" {
		u += "&" + query
	}
	return u
}

func openSigner(t *testing.T, uri string) keys.Signer {
	t.Helper()
	s, err := keys.Open(uri, nil)
	if err != nil {
		t.Fatalf("Open(%s): %v", uri, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestPKCS11GenerateAndSign(t *testing.T) {
	for _, typ := range []keys.Type{keys.ECDSAP256, keys.Ed25519, keys.RSA3072} {
		t.Run(string(typ), func(t *testing.T) {
			h := newSoftHSM(t)
			uri := h.uri("object=rel-a", "")
			pub, err := keys.GeneratePKCS11(uri, typ)
			if err != nil {
				t.Fatalf("GeneratePKCS11: %v", err)
			}
			if got := keys.TypeOf(pub); got != typ {
				t.Fatalf("generated a %s key, want %s", got, typ)
			}

			loaded, err := keys.LoadPublic(uri)
			if err != nil {
				t.Fatalf("LoadPublic: %v", err)
			}
			if !reflect.DeepEqual(loaded, pub) {
				t.Fatal("LoadPublic returns a different key than GeneratePKCS11")
			}

			s := openSigner(t, uri)
			if !reflect.DeepEqual(s.Public(), pub) {
				t.Fatal("Open returns a different public key than GeneratePKCS11")
			}
			keystest.TestSigner(t, s)

			// A second signer on the same token shares the module and the
			// token's login; closing it must leave the first one working.
			s2, err := keys.Open(uri, nil)
			if err != nil {
				t.Fatalf("second Open: %v", err)
			}
			if err := s2.Close(); err != nil {
				t.Fatalf("closing the second signer: %v", err)
			}
			if err := s2.Close(); err != nil {
				t.Fatalf("Close is not idempotent: %v", err)
			}
			keystest.TestSigner(t, s)
		})
	}
}

// TestPKCS11ExternalKey opens keys made by OpenSC's pkcs11-tool, which
// pairs objects by CKA_ID and, for Ed25519, writes CKA_EC_PARAMS as the
// printable string "edwards25519" rather than the OID we generate with.
func TestPKCS11ExternalKey(t *testing.T) {
	for _, tc := range []struct {
		keyType string
		want    keys.Type
		label   string
		id      string // hex, as pkcs11-tool takes it
		idURI   string // the same id, percent-encoded with mixed case
	}{
		{"EC:prime256v1", keys.ECDSAP256, "external-p256", "0a0b", "%0A%0b"},
		{"EC:edwards25519", keys.Ed25519, "external-ed25519", "0c", "%0c"},
	} {
		t.Run(tc.keyType, func(t *testing.T) {
			h := newSoftHSM(t)
			if _, err := exec.LookPath("pkcs11-tool"); err != nil {
				t.Fatal("pkcs11-tool not found: run make test (scripts/test-deps.sh installs opensc)")
			}
			run(t, "pkcs11-tool", "--module", h.module, "--token-label", tokenLabel, "--login", "--pin", userPIN,
				"--keypairgen", "--key-type", tc.keyType, "--label", tc.label, "--id", tc.id)

			byLabel := openSigner(t, h.uri("object="+tc.label, ""))
			if got := keys.TypeOf(byLabel.Public()); got != tc.want {
				t.Fatalf("opened a %s key, want %s", got, tc.want)
			}
			keystest.TestSigner(t, byLabel)

			byID := openSigner(t, h.uri("id="+tc.idURI, ""))
			if !reflect.DeepEqual(byID.Public(), byLabel.Public()) {
				t.Fatal("the key found by id differs from the one found by label")
			}
		})
	}
}

func TestPKCS11PINFromEnvironment(t *testing.T) {
	h := newSoftHSM(t)
	if _, err := keys.GeneratePKCS11(h.uri("object=k", "pin-value="+userPIN), keys.Ed25519); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RAMPART_PKCS11_MODULE", h.module)
	t.Setenv("RAMPART_PKCS11_PIN", userPIN)
	s := openSigner(t, "pkcs11:token=release;object=k")
	keystest.TestSigner(t, s)
}

func TestPKCS11TokenNotFound(t *testing.T) {
	h := newSoftHSM(t)
	uri := strings.Replace(h.uri("object=k", ""), "token="+tokenLabel, "token=staging", 1)
	_, err := keys.Open(uri, nil)
	if !errors.Is(err, keys.ErrTokenNotFound) {
		t.Fatalf("err = %v, want ErrTokenNotFound", err)
	}
	t.Log(err)
	for _, want := range []string{`"staging"`, `"release"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if _, err := keys.GeneratePKCS11(uri, keys.ECDSAP256); !errors.Is(err, keys.ErrTokenNotFound) {
		t.Fatalf("GeneratePKCS11: err = %v, want ErrTokenNotFound", err)
	}
	uri = strings.Replace(h.uri("object=k", ""), "token="+tokenLabel, "serial=0000", 1)
	if _, err := keys.Open(uri, nil); !errors.Is(err, keys.ErrTokenNotFound) {
		t.Fatalf("unknown serial: err = %v, want ErrTokenNotFound", err)
	}
}

func TestPKCS11WrongPIN(t *testing.T) {
	h := newSoftHSM(t)
	uri := h.uri("object=k", "")
	if _, err := keys.GeneratePKCS11(uri, keys.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	wrong := h.uri("object=k", "pin-value=9999")
	_, err := keys.Open(wrong, nil)
	if !errors.Is(err, keys.ErrTokenLogin) || !strings.Contains(err.Error(), "wrong PIN") {
		t.Fatalf("err = %v, want ErrTokenLogin saying wrong PIN", err)
	}
	t.Log(err)
	if strings.Contains(err.Error(), "9999") {
		t.Fatalf("error %q leaks the PIN", err)
	}
	if _, err := keys.GeneratePKCS11(h.uri("object=k2", "pin-value=9999"), keys.ECDSAP256); !errors.Is(err, keys.ErrTokenLogin) {
		t.Fatalf("GeneratePKCS11: err = %v, want ErrTokenLogin", err)
	}

	// While another signer holds the token's login, the module would let
	// any PIN through; we must not.
	openSigner(t, uri)
	if _, err := keys.Open(wrong, nil); !errors.Is(err, keys.ErrTokenLogin) {
		t.Fatalf("wrong PIN while logged in: err = %v, want ErrTokenLogin", err)
	}

	if _, err := keys.Open(h.uri("object=k", "pin-source=file:"+h.pinFile+".missing"), nil); err == nil || !strings.Contains(err.Error(), ".missing") {
		t.Fatalf("missing PIN file: err = %v, want it to name the file", err)
	}
}

func TestPKCS11ObjectNotFound(t *testing.T) {
	h := newSoftHSM(t)
	if _, err := keys.GeneratePKCS11(h.uri("object=rel-a", ""), keys.Ed25519); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"object=rel-b", "id=%99", "object=rel-a;id=%99"} {
		_, err := keys.Open(h.uri(path, ""), nil)
		if !errors.Is(err, keys.ErrObjectNotFound) {
			t.Fatalf("%s: err = %v, want ErrObjectNotFound", path, err)
		}
		t.Log(err)
		if !strings.Contains(err.Error(), `"rel-a"`) {
			t.Errorf("%s: error %q does not list the key that exists", path, err)
		}
	}
	if _, err := keys.LoadPublic(h.uri("object=rel-b", "")); !errors.Is(err, keys.ErrObjectNotFound) {
		t.Fatalf("LoadPublic: err = %v, want ErrObjectNotFound", err)
	}
	if _, err := keys.Open(h.uri("", ""), nil); err == nil || !strings.Contains(err.Error(), "object=") {
		t.Fatalf("URI without object or id: err = %v", err)
	}
}

func TestPKCS11GenerateRefusesExisting(t *testing.T) {
	h := newSoftHSM(t)
	uri := h.uri("object=rel-a", "")
	first, err := keys.GeneratePKCS11(uri, keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []keys.Type{keys.ECDSAP256, keys.Ed25519} {
		if _, err := keys.GeneratePKCS11(uri, typ); !errors.Is(err, fs.ErrExist) {
			t.Fatalf("generating %s over an existing label: err = %v, want fs.ErrExist", typ, err)
		}
	}
	// A fresh label with an id already in use would make id lookups
	// ambiguous.
	if _, err := keys.GeneratePKCS11(h.uri("object=other;id=%01", ""), keys.Ed25519); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.GeneratePKCS11(h.uri("object=third;id=%01", ""), keys.Ed25519); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("generating over an existing id: err = %v, want fs.ErrExist", err)
	}
	if _, err := keys.GeneratePKCS11(h.uri("", ""), keys.Ed25519); err == nil || !strings.Contains(err.Error(), "object=") {
		t.Fatalf("generating without a label: err = %v", err)
	}

	got, err := keys.LoadPublic(uri)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, first) {
		t.Fatal("the original key was replaced")
	}
}

// TestPKCS11KeyAttributes reads the generated private key's attributes
// back through a separate PKCS#11 session, as an auditor would.
func TestPKCS11KeyAttributes(t *testing.T) {
	for _, typ := range []keys.Type{keys.ECDSAP256, keys.Ed25519} {
		t.Run(string(typ), func(t *testing.T) {
			h := newSoftHSM(t)
			if _, err := keys.GeneratePKCS11(h.uri("object=rel-a", ""), typ); err != nil {
				t.Fatal(err)
			}
			ctx := pkcs11.New(h.module)
			if ctx == nil {
				t.Fatalf("loading %s failed", h.module)
			}
			defer ctx.Destroy()
			if err := ctx.Initialize(); err != nil {
				t.Fatal(err)
			}
			defer ctx.Finalize()
			slot := findSlot(t, ctx)
			sh, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
			if err != nil {
				t.Fatal(err)
			}
			defer ctx.CloseSession(sh)
			if err := ctx.Login(sh, pkcs11.CKU_USER, userPIN); err != nil {
				t.Fatal(err)
			}
			defer ctx.Logout(sh)

			if err := ctx.FindObjectsInit(sh, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, "rel-a"),
			}); err != nil {
				t.Fatal(err)
			}
			objs, _, err := ctx.FindObjects(sh, 10)
			ctx.FindObjectsFinal(sh)
			if err != nil || len(objs) != 1 {
				t.Fatalf("found %d private keys labelled rel-a (%v), want 1", len(objs), err)
			}
			want := map[uint]bool{
				pkcs11.CKA_TOKEN:             true,
				pkcs11.CKA_PRIVATE:           true,
				pkcs11.CKA_SENSITIVE:         true,
				pkcs11.CKA_ALWAYS_SENSITIVE:  true,
				pkcs11.CKA_EXTRACTABLE:       false,
				pkcs11.CKA_NEVER_EXTRACTABLE: true,
				pkcs11.CKA_SIGN:              true,
			}
			for typ, v := range want {
				a, err := ctx.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(typ, nil)})
				if err != nil {
					t.Fatalf("reading attribute 0x%x: %v", typ, err)
				}
				if got := len(a[0].Value) == 1 && a[0].Value[0] != 0; got != v {
					t.Errorf("attribute 0x%x = %v, want %v", typ, got, v)
				}
			}
			id, err := ctx.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, nil)})
			if err != nil || len(id[0].Value) == 0 {
				t.Errorf("generated key has no CKA_ID (%v)", err)
			}
			// The private value itself must be refused.
			_, err = ctx.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
			if !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)) {
				t.Errorf("reading CKA_VALUE: err = %v, want CKR_ATTRIBUTE_SENSITIVE", err)
			}
		})
	}
}

func findSlot(t *testing.T, ctx *pkcs11.Ctx) uint {
	t.Helper()
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if info, err := ctx.GetTokenInfo(s); err == nil && info.Label == tokenLabel {
			return s
		}
	}
	t.Fatalf("no token labelled %q", tokenLabel)
	return 0
}

func TestPKCS11BadModule(t *testing.T) {
	h := newSoftHSM(t)
	missing := filepath.Join(t.TempDir(), "nope.so")
	uri := strings.Replace(h.uri("object=k", ""), h.module, missing, 1)
	if _, err := keys.Open(uri, nil); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("missing module: err = %v, want it to name %s", err, missing)
	}
	// A file that exists but is not a shared library.
	uri = strings.Replace(h.uri("object=k", ""), h.module, h.pinFile, 1)
	_, err := keys.Open(uri, nil)
	if err == nil || !strings.Contains(err.Error(), h.pinFile) {
		t.Fatalf("non-library module: err = %v, want it to name %s", err, h.pinFile)
	}
	t.Log(err)
	if _, err := keys.Open("pkcs11:token=release;object=k?pin-value=1", nil); err == nil || !strings.Contains(err.Error(), "RAMPART_PKCS11_MODULE") {
		t.Fatalf("no module: err = %v", err)
	}
}

// TestPKCS11SignerErrors checks that misuse is reported, not panicked on.
func TestPKCS11SignerErrors(t *testing.T) {
	h := newSoftHSM(t)
	uri := h.uri("object=k", "")
	if _, err := keys.GeneratePKCS11(uri, keys.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	s, err := keys.Open(uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign(nil, []byte("short"), crypto.SHA256); err == nil {
		t.Error("ECDSA accepted a digest of the wrong length")
	}
	if _, err := s.Sign(nil, bytes.Repeat([]byte{1}, 32), crypto.Hash(0)); err == nil {
		t.Error("ECDSA accepted an unhashed message")
	}
	if _, err := s.Sign(nil, bytes.Repeat([]byte{1}, 32), crypto.Hash(999)); err == nil {
		t.Error("ECDSA accepted an unknown hash")
	}

	ed := h.uri("object=ed", "")
	if _, err := keys.GeneratePKCS11(ed, keys.Ed25519); err != nil {
		t.Fatal(err)
	}
	es := openSigner(t, ed)
	if _, err := es.Sign(nil, bytes.Repeat([]byte{1}, 32), crypto.SHA256); err == nil {
		t.Error("Ed25519 accepted a digest (Ed25519ph)")
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign(nil, bytes.Repeat([]byte{1}, 32), crypto.SHA256); err == nil || !strings.Contains(err.Error(), "after Close") {
		t.Errorf("Sign after Close: err = %v", err)
	}
}

// A real token that nobody can log in to: initialised by pkcs11-tool with
// an SO PIN but no user PIN. Opening a key in it fails with ErrTokenLogin
// and says what to do.
func TestPKCS11TokenWithoutUserPIN(t *testing.T) {
	if _, err := exec.LookPath("pkcs11-tool"); err != nil {
		t.Fatal("pkcs11-tool not found: run make test (scripts/test-deps.sh installs opensc)")
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.Mkdir(tokens, 0o700)
	conf := filepath.Join(dir, "softhsm2.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)), 0o600)
	t.Setenv("SOFTHSM2_CONF", conf)
	t.Setenv("RAMPART_PKCS11_MODULE", "")
	t.Setenv("RAMPART_PKCS11_PIN", "")
	module := softHSMModule(t)
	// With no token yet, pkcs11-tool initialises slot 0, the only one.
	run(t, "pkcs11-tool", "--module", module, "--init-token", "--label", "nopin", "--so-pin", soPIN)
	pin := filepath.Join(dir, "pin")
	os.WriteFile(pin, []byte(userPIN+"\n"), 0o600)
	_, err := keys.Open("pkcs11:token=nopin;object=k?module-path="+module+"&pin-source=file:"+pin, nil)
	if !errors.Is(err, keys.ErrTokenLogin) || !strings.Contains(err.Error(), "has no user PIN yet") {
		t.Fatalf("got %v", err)
	}
}
