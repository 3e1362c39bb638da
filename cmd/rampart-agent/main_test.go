package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/rampartfw/rampart/internal/agent/agenttest"
	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/bundle/bundletest"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/server/servertest"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"rampart-agent": func() {
			os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
		},
	})
}

const hw = "acme-gw-rev2"

// TestScripts runs each CLI script against its own real server. The custom commands act
// as the operator and the device's hardware:
//
//	mkdevice DIR ID          a simulated device: agent.toml, trust files, slots (sim bootloader)
//	devtoken NAME [HW]       a one-time enrollment token into $NAME (for acme-gw-rev2,
//	                         or hardware HW)
//	release VERSION SV [MiB] a signed, pushed, logged release of acme-gw
//	deploy VERSION           assign acme-gw/VERSION to every acme-gw-rev2 device
//	mkbundle [-nolog] VERSION FILE
//	                         an offline bundle of a published release, with
//	                         its log proof (a format 1 bundle without, -nolog)
//	hostile-bundle SHAPE IN OUT
//	                         a hostile rewrite of bundle IN: longname (a 1 MiB GNU
//	                         long name before the index), lastbyte (the image's
//	                         last byte changed), extra (a member after the image),
//	                         cut (cut inside the image)
//	powercycle DIR           the simulated bootloader boots; writes DIR/cmdline
//	slotis DIR SLOT VERSION  the slot holds that release's image
//	hostile DIR FAULT PATH   puts a hostile front end (internal/agent/agenttest)
//	                         between enrolled device DIR and the server: answers to
//	                         paths matching the regexp PATH get FAULT (cut, reset,
//	                         append, ignore-range, pass); DIR/agent.toml points at it
//	idevid [-untrusted] [-intermediate] [-expired] DIR ID HW
//	                         a factory-provisioned device identity: DIR/device.key and
//	                         DIR/idevid.pem, the certificate (subject serialNumber ID,
//	                         hardware HW) from the factory CA the server trusts (from
//	                         another CA with -untrusted; through an intermediate, which
//	                         the file then holds too, with -intermediate)
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/script/*.txtar")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txtar"), func(t *testing.T) {
			t.Parallel()
			runScript(t, f)
		})
	}
}

func runScript(t *testing.T, file string) {
	factory, untrusted := newCA(t, "Acme Factory CA"), newCA(t, "Someone Else's CA")
	pool := x509.NewCertPool()
	pool.AddCert(factory.Cert)
	e := servertest.New(t, servertest.WithManufacturerCAs(pool))
	var mu sync.Mutex
	images := map[string][]byte{}
	testscript.Run(t, testscript.Params{
		Files:               []string{file},
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("SERVER", e.TS.URL)
			// Each command would otherwise idle a second at exit under
			// -race (the race runtime's atexit_sleep_ms).
			env.Setenv("GORACE", "atexit_sleep_ms=0")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkdevice": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: mkdevice DIR ID")
				}
				mkdevice(ts, e, ts.MkAbs(args[0]), args[1])
			},
			"devtoken": func(ts *testscript.TestScript, neg bool, args []string) {
				var tok struct{ Token string }
				for_ := hw
				if len(args) > 1 {
					for_ = args[1]
				}
				mu.Lock()
				json.Unmarshal(e.Call(e.Pool, "POST", "/api/v1/devices/tokens", e.Admin, map[string]any{"hardware": for_, "ttl_seconds": 600}, 201), &tok)
				mu.Unlock()
				ts.Setenv(args[0], tok.Token)
			},
			"release": func(ts *testscript.TestScript, neg bool, args []string) {
				sv, _ := strconv.ParseUint(args[1], 10, 64)
				size := 1
				if len(args) > 2 {
					size, _ = strconv.Atoi(args[2])
				}
				img := make([]byte, size<<20+17)
				rand.Read(img)
				mu.Lock()
				defer mu.Unlock()
				e.ReleaseImage(args[0], sv, img, hw)
				images[args[0]] = img
			},
			"deploy": func(ts *testscript.TestScript, neg bool, args []string) {
				mu.Lock()
				defer mu.Unlock()
				e.Deploy(servertest.Product+"/"+args[0], hw)
			},
			"mkbundle": func(ts *testscript.TestScript, neg bool, args []string) {
				mu.Lock()
				defer mu.Unlock()
				nolog := len(args) > 0 && args[0] == "-nolog"
				if nolog {
					args = args[1:]
				}
				if len(args) != 2 {
					ts.Fatalf("usage: mkbundle [-nolog] VERSION FILE")
				}
				var proof []byte
				if !nolog {
					proof = e.LogProof(args[0])
				}
				e.WriteBundle(ts.MkAbs(args[1]), args[0], proof)
			},
			"hostile-bundle": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 3 {
					ts.Fatalf("usage: hostile-bundle SHAPE IN OUT")
				}
				b, err := os.ReadFile(ts.MkAbs(args[1]))
				ts.Check(err)
				ts.Check(os.WriteFile(ts.MkAbs(args[2]), hostileBundle(ts, args[0], b), 0o644))
			},
			"powercycle": func(ts *testscript.TestScript, neg bool, args []string) {
				dir := ts.MkAbs(args[0])
				sim, err := bootloader.OpenSim(filepath.Join(dir, "boot.json"), 0)
				ts.Check(err)
				s, err := sim.Boot()
				ts.Check(err)
				ts.Check(os.WriteFile(filepath.Join(dir, "cmdline"), []byte("console=ttyS0 rauc.slot="+string(s)+"\n"), 0o644))
				fmt.Fprintf(ts.Stdout(), "booted %s\n", s)
			},
			"idevid": func(ts *testscript.TestScript, neg bool, args []string) {
				ca, chain, notAfter := factory, [][]byte(nil), time.Now().Add(24*time.Hour)
				for len(args) > 0 && strings.HasPrefix(args[0], "-") {
					switch args[0] {
					case "-untrusted":
						ca = untrusted
					case "-intermediate":
						ca = subCA(t, ca, "Acme Line 3")
						chain = append(chain, ca.Cert.Raw)
					case "-expired":
						notAfter = time.Now().Add(-time.Hour)
					default:
						ts.Fatalf("idevid: unknown flag %s", args[0])
					}
					args = args[1:]
				}
				if len(args) != 3 {
					ts.Fatalf("usage: idevid [-untrusted] [-intermediate] [-expired] DIR ID HW")
				}
				dir := ts.MkAbs(args[0])
				key, err := pki.GenerateDeviceKey()
				ts.Check(err)
				tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
					Subject:   pkix.Name{Organization: []string{"Acme Devices"}, SerialNumber: args[1]},
					URIs:      []*url.URL{pki.HardwareURI(args[2])},
					NotBefore: notAfter.Add(-365 * 24 * time.Hour), NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature}
				der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
				ts.Check(err)
				var out []byte
				for _, c := range append([][]byte{der}, chain...) {
					out = append(out, pki.CertPEM(c)...)
				}
				keyPEM, err := pki.MarshalKeyPEM(key)
				ts.Check(err)
				ts.Check(os.WriteFile(filepath.Join(dir, "device.key"), keyPEM, 0o600))
				ts.Check(os.WriteFile(filepath.Join(dir, "idevid.pem"), out, 0o644))
			},
			"hostile": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 3 {
					ts.Fatalf("usage: hostile DIR FAULT PATH")
				}
				dir := ts.MkAbs(args[0])
				fault, ok := map[string]agenttest.Fault{"pass": agenttest.Pass, "cut": agenttest.Cut, "reset": agenttest.Reset,
					"append": agenttest.Append, "ignore-range": agenttest.IgnoreRange}[args[1]]
				if !ok {
					ts.Fatalf("hostile: unknown fault %s", args[1])
				}
				re, err := regexp.Compile(args[2])
				ts.Check(err)
				cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "device.crt"), filepath.Join(dir, "device.key"))
				ts.Check(err)
				f := agenttest.New(t, e, &cert)
				f.Set(func(r *http.Request) agenttest.Fault {
					if re.MatchString(r.URL.Path) {
						return fault
					}
					return agenttest.Pass
				})
				cfg, err := os.ReadFile(filepath.Join(dir, "agent.toml"))
				ts.Check(err)
				cfg = regexp.MustCompile(`(?m)^url = .*$`).ReplaceAllLiteral(cfg, []byte("url = "+strconv.Quote(f.URL)))
				ts.Check(os.WriteFile(filepath.Join(dir, "agent.toml"), cfg, 0o644))
			},
			"slotis": func(ts *testscript.TestScript, neg bool, args []string) {
				b, err := os.ReadFile(filepath.Join(ts.MkAbs(args[0]), "slot-"+strings.ToLower(args[1])))
				ts.Check(err)
				mu.Lock()
				img := images[args[2]]
				mu.Unlock()
				ok := len(img) > 0 && len(b) >= len(img) && string(b[:len(img)]) == string(img)
				if ok == neg {
					ts.Fatalf("slot %s holding %s: %v", args[1], args[2], ok)
				}
			},
		},
	})
}

// newCA is a manufacturer's root CA; unlike pki.NewCA's, it may have
// intermediates under it.
func newCA(t *testing.T, name string) *pki.CA {
	return subCA(t, nil, name)
}

// subCA is an intermediate CA under parent, or a root when parent is nil.
func subCA(t *testing.T, parent *pki.CA, name string) *pki.CA {
	key, err := pki.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(5 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pki.CA{Cert: cert, Key: key}
}

func mkdevice(ts *testscript.TestScript, e *servertest.Env, dir, id string) {
	ts.Check(writeDevice(e, dir, id))
}

func mkdeviceFiles(t *testing.T, e *servertest.Env, dir, id string) {
	if err := writeDevice(e, dir, id); err != nil {
		t.Fatal(err)
	}
}

// writeDevice writes a simulated acme-gw-rev2: agent.toml, trust files,
// slots, a sim bootloader and a kernel command line naming slot A.
func writeDevice(e *servertest.Env, dir, id string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var werr error
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil && werr == nil {
			werr = err
		}
	}
	write("agent.toml", fmt.Appendf(nil, `# a simulated acme-gw-rev2
[server]
url = %q
ca = "ca.pem"

[device]
id = %q
hardware_id = %q
key = "device.key"
certificate = "device.crt"

[trust]
image_root = "image-root.json"
director_root = "director-root.json"
log_key = "log.pub"

[slots]
a = "slot-a"
b = "slot-b"

[bootloader]
backend = "sim"
env = "boot.json"
cmdline = "cmdline"

[health]
command = ["sh", "-c", "test ! -e unhealthy"]
timeout = "5s"

[reboot]
command = ["true"]

[state]
dir = "state"
`, e.TS.URL, id, hw))
	write("ca.pem", e.CAPEM)
	write("image-root.json", e.ImageRoot)
	write("director-root.json", e.DirectorRoot)
	write("log.pub", e.Read("online/log.pub"))
	factory := make([]byte, 64<<10)
	rand.Read(factory)
	write("slot-a", factory)
	write("slot-b", nil)
	write("cmdline", []byte("rauc.slot=A\n"))
	// Slots stand for partitions: files of their full size (sparse).
	for _, s := range []string{"slot-a", "slot-b"} {
		if err := os.Truncate(filepath.Join(dir, s), 8<<20); err != nil && werr == nil {
			werr = err
		}
	}
	return werr
}

// hostileBundle rewrites a genuine bundle into one of the shapes of
// hostile-bundle (internal/bundle/bundletest writes them).
func hostileBundle(ts *testscript.TestScript, shape string, good []byte) []byte {
	ms, err := bundletest.Split(good)
	ts.Check(err)
	members := bundletest.Members(ms)
	image := ms[len(ms)-1].Body
	end := len(good) - 1024
	var buf bytes.Buffer
	w := &bundletest.Writer{W: &buf}
	switch shape {
	case "longname":
		members.Before(w, "index")
		w.GNULongName(strings.Repeat("\x1b[2J", 256<<10))
		members.From(w, "index")
		w.End()
	case "extra":
		members.From(w, "rampart-bundle.json")
		w.File("payload.sh", []byte("#!/bin/sh\n"))
		w.End()
	case "lastbyte":
		b := bytes.Clone(good)
		b[end-1-(512-len(image)%512)%512] ^= 1
		return b
	case "cut":
		return good[:end-len(image)/2]
	default:
		ts.Fatalf("unknown shape %q", shape)
	}
	return buf.Bytes()
}
