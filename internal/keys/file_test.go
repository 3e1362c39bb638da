package keys_test

import (
	"crypto"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/keys/keystest"
)

func TestMain(m *testing.M) {
	// scrypt at age's default cost takes about a second per key file.
	keys.SetTestOnlyWorkFactor(10)
	os.Exit(m.Run())
}

type memSigner struct{ crypto.Signer }

func (memSigner) Close() error { return nil }

func passphrase(p string) keys.Passphrase {
	return func() (string, error) { return p, nil }
}

func TestInMemorySigners(t *testing.T) {
	for _, typ := range keys.Types {
		t.Run(string(typ), func(t *testing.T) {
			priv, err := keys.Generate(typ)
			if err != nil {
				t.Fatal(err)
			}
			if got := keys.TypeOf(priv.Public()); got != typ {
				t.Fatalf("TypeOf = %q, want %q", got, typ)
			}
			keystest.TestSigner(t, memSigner{priv})
		})
	}
}

func TestFileSigners(t *testing.T) {
	for _, typ := range keys.Types {
		for _, pass := range []string{"correct horse", ""} {
			name := string(typ) + "/encrypted"
			if pass == "" {
				name = string(typ) + "/unencrypted"
			}
			t.Run(name, func(t *testing.T) {
				base := filepath.Join(t.TempDir(), "k")
				pub, err := keys.GenerateFile(base, typ, pass)
				if err != nil {
					t.Fatal(err)
				}
				privPath, pubPath := keys.FilePaths(base)
				s, err := keys.Open(privPath, passphrase(pass))
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if !reflect.DeepEqual(s.Public(), pub) {
					t.Fatal("opened key's public key differs from the generated one")
				}
				filePub, err := keys.LoadPublic(pubPath)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(filePub, pub) {
					t.Fatal(".pub file holds a different key than the generated one")
				}
				keystest.TestSigner(t, s)
			})
		}
	}
}

func TestGenerateFileModes(t *testing.T) {
	base := filepath.Join(t.TempDir(), "sub", "k")
	if _, err := keys.GenerateFile(base, keys.Ed25519, "pw"); err != nil {
		t.Fatal(err)
	}
	privPath, pubPath := keys.FilePaths(base)
	st, err := os.Stat(privPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", privPath, st.Mode().Perm())
	}
	if _, err := os.Stat(pubPath); err != nil {
		t.Errorf("public key file: %v", err)
	}
}

func TestGenerateFileRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	for _, existing := range []string{".key", ".pub"} {
		t.Run(existing, func(t *testing.T) {
			base := filepath.Join(dir, "k"+existing[1:])
			const content = "precious"
			if err := os.WriteFile(base+existing, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := keys.GenerateFile(base, keys.ECDSAP256, "pw")
			if !errors.Is(err, fs.ErrExist) {
				t.Fatalf("GenerateFile over an existing %s file: err = %v, want fs.ErrExist", existing, err)
			}
			got, err := os.ReadFile(base + existing)
			if err != nil || string(got) != content {
				t.Fatalf("existing file changed: %q, %v", got, err)
			}
			other := map[string]string{".key": ".pub", ".pub": ".key"}[existing]
			if _, err := os.Stat(base + other); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("GenerateFile left a %s file behind after refusing: %v", other, err)
			}
		})
	}
}

func TestWrongPassphrase(t *testing.T) {
	base := filepath.Join(t.TempDir(), "k")
	if _, err := keys.GenerateFile(base, keys.Ed25519, "right"); err != nil {
		t.Fatal(err)
	}
	privPath, _ := keys.FilePaths(base)
	if _, err := keys.Open(privPath, passphrase("wrong")); !errors.Is(err, keys.ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: err = %v, want ErrWrongPassphrase", err)
	}
	for name, p := range map[string]keys.Passphrase{"nil": nil, "empty": passphrase("")} {
		if _, err := keys.Open(privPath, p); !errors.Is(err, keys.ErrNoPassphrase) {
			t.Errorf("%s passphrase: err = %v, want ErrNoPassphrase", name, err)
		}
	}
}

func TestUnencryptedRoundTrip(t *testing.T) {
	for _, typ := range keys.Types {
		t.Run(string(typ), func(t *testing.T) {
			priv, err := keys.Generate(typ)
			if err != nil {
				t.Fatal(err)
			}
			data, err := keys.MarshalPrivate(priv, "")
			if err != nil {
				t.Fatal(err)
			}
			// No passphrase callback at all: an unencrypted file must not ask.
			back, err := keys.ParsePrivate(data, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, priv) {
				t.Fatal("unencrypted key does not round-trip")
			}
		})
	}
}

func TestMalformedPublicKeyFiles(t *testing.T) {
	good, err := keys.Generate(keys.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	goodPEM, err := keys.MarshalPublic(good.Public())
	if err != nil {
		t.Fatal(err)
	}
	privPEM, err := keys.MarshalPrivate(good, "")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"empty":          nil,
		"not pem":        []byte("hello"),
		"private key":    privPEM,
		"trailing data":  append(append([]byte{}, goodPEM...), "extra"...),
		"garbage in pem": []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
		"wrong type":     []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
	}
	dir := t.TempDir()
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, filepath.Base(name)+".pub")
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := keys.LoadPublic(p); !errors.Is(err, keys.ErrMalformedKey) {
				t.Fatalf("err = %v, want ErrMalformedKey", err)
			}
		})
	}
	t.Run("too large", func(t *testing.T) {
		p := filepath.Join(dir, "big.pub")
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := keys.LoadPublic(p); !errors.Is(err, keys.ErrMalformedKey) {
			t.Fatalf("err = %v, want ErrMalformedKey", err)
		}
	})
}
