// Command checkin measures rampart-server's device check-in rate: it
// creates a data directory, enrolls N devices (each with its own client
// certificate from the device CA), publishes a release and a director
// root, deploys the release to every device, and then has W workers run
// check-ins for D seconds over loopback mTLS: fetch the device's director
// timestamp, and its director targets when the timestamp changed. It prints
// check-ins per second and latency percentiles. With -compare it then
// starts a rollout of a second release over a CEL selector and measures
// again, then aborts it and measures a third time, so the cost of
// deciding check-ins against an active rollout is seen side by side with
// the same fleet without one, before and after. With -policy as well,
// the fleet policy of docs/policy.md's examples is set before the rollout
// starts, so every decision also evaluates its rules.
//
//	go run ./bench/checkin -devices 10000 -duration 10s -workers 64 [-compare [-policy]]
//
// The server is the real rampart-server binary in its own process (run from
// the module root); both share the machine's cores, as a loopback test
// must.
//
// With -ceiling it then stops rampart-server and loads, in the same way
// (the same devices and certificates, one kept-alive connection per
// device, the same workers and duration), a bare net/http server in a
// process of its own (this program re-executed) with TLS 1.3 and client
// certificates required and verified against the device CA, which
// answers every request with a fixed body the size of a director
// timestamp. It prints both rates and their ratio: the ceiling is what
// the machine allows for this traffic whatever the server does, so the
// ratio compares machines that differ in absolute speed. -compare and
// -ceiling can be given together; the rollout is measured first.
//
//	go run ./bench/checkin -devices 10000 -duration 10s -workers 64 -ceiling
//
// With -store DSN the server keeps its metadata in PostgreSQL (an empty
// database: init gives it the admin token, and the devices are enrolled
// there), so the same load measures the PostgreSQL store.
//
//	go run ./bench/checkin -devices 10000 -duration 10s -workers 64 -store postgres://USER@127.0.0.1:5432/DB?sslmode=disable
//
// With -replicas 2 as well, it measures one replica, then starts a second
// rampart-server process on the same data directory and database, sends
// every other device to it (the load balancer a fleet would have) and
// measures again: it prints both rates, their ratio, and the CPU per
// check-in of the replicas and of PostgreSQL (every process named
// postgres), so the bottleneck shows.
//
//	go run ./bench/checkin -devices 10000 -duration 10s -workers 64 -store DSN -replicas 2
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rampartfw/rampart/internal/datadir"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/postgres"
	"github.com/rampartfw/rampart/internal/store/sqlite"
)

// serving reads the server's JSON log until it says where it listens.
func serving(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var m struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.Msg == "serving" {
			// Errors the server logs afterwards are shown: a failed
			// check-in says only "internal error".
			go func() {
				for sc.Scan() {
					var m struct{ Level string }
					if json.Unmarshal(sc.Bytes(), &m) == nil && m.Level == "ERROR" {
						fmt.Fprintf(os.Stderr, "server: %s\n", sc.Bytes())
					}
				}
				io.Copy(io.Discard, r)
			}()
			return m.Addr, nil
		}
	}
	return "", fmt.Errorf("rampart-server exited before serving")
}

func main() {
	devices := flag.Int("devices", 10000, "enrolled devices")
	duration := flag.Duration("duration", 10*time.Second, "measurement time")
	workers := flag.Int("workers", 64, "concurrent check-ins")
	newConn := flag.Bool("new-conn", false, "open a new TLS connection (with session resumption, as rampart-agent does) for every check-in instead of keeping one per device")
	flag.BoolVar(&noResume, "no-resume", false, "with -new-conn: a full TLS handshake for every check-in (no session resumption)")
	compare := flag.Bool("compare", false, "then start a rollout of a second release (phases 1%,10%,50%,100% over a CEL selector on tags) and measure again, side by side")
	withPolicy := flag.Bool("policy", false, "with -compare: set the example fleet policy (docs/policy.md: three rules over tags, risk, signers and age) before starting the rollout")
	ceiling := flag.Bool("ceiling", false, "then load a bare net/http mTLS server answering a fixed body the same way, and print both rates and their ratio")
	ceilingServer := flag.String("ceiling-server", "", "(internal) serve the ceiling: DATA-DIR,BODY-FILE")
	flag.StringVar(&storeDSN, "store", "", "keep the server's metadata in this PostgreSQL database (an empty one) instead of SQLite")
	replicas := flag.Int("replicas", 1, "with -store: then measure again with this many rampart-server replicas (1 or 2), devices split between them")
	flag.Parse()
	if *ceilingServer != "" {
		if err := serveCeiling(*ceilingServer); err != nil {
			log.Fatal(err)
		}
		return
	}
	// Every device keeps its own connection, and the server holds the other
	// end: raise the open-files limit to what the system allows.
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < uint64(*devices+1000) {
		log.Fatalf("the open-files limit %d is too low for %d devices; raise it (ulimit -n)", lim.Cur, *devices)
	}
	if *withPolicy && !*compare {
		log.Fatal("-policy measures the rollout of -compare: give -compare too")
	}
	policy = *withPolicy
	switch {
	case *replicas != 1 && *replicas != 2:
		log.Fatalf("-replicas %d: want 1 or 2", *replicas)
	case *replicas == 2 && storeDSN == "":
		log.Fatal("-replicas 2 shares one database between the replicas: give -store postgres://...")
	}
	twoReplicas = *replicas == 2
	if err := run(*devices, *workers, *duration, *newConn, *compare, *ceiling); err != nil {
		log.Fatal(err)
	}
}

// storeDSN is -store: the server's PostgreSQL database, or "" for SQLite.
var storeDSN string

// policy is -policy.
var policy bool

// noResume is -no-resume.
var noResume bool

// twoReplicas is -replicas 2.
var twoReplicas bool

// examplePolicy is docs/policy.md's example fleet policy
// (internal/fleet/testdata/policy/examples.yaml).
const examplePolicy = `default: allow
rules:
  - name: lab-takes-anything
    allow: device.tags.site == "lab"
  - name: high-risk-needs-three-signers
    deny: device.risk == "high" && release.signer_count < 3
  - name: no-stale-releases
    deny: release.age > duration("720h") && !release.critical
`

func run(nDevices, workers int, duration time.Duration, newConn, compare, ceiling bool) error {
	tmp, err := os.MkdirTemp("", "rampart-checkin-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	data := filepath.Join(tmp, "srv")
	res, err := datadir.Init(data, datadir.InitOptions{Store: storeDSN})
	if err != nil {
		return err
	}
	// Enroll devices directly in the store with certificates from the
	// device CA: the same records enrollment creates, without 10,000 HTTP
	// round trips before the measurement.
	dca, err := pki.LoadCA(filepath.Join(data, "device-ca.pem"), filepath.Join(data, "keys", "device-ca.key"))
	if err != nil {
		return err
	}
	var db store.Store
	if storeDSN != "" {
		db, err = postgres.Open(context.Background(), storeDSN)
	} else {
		db, err = sqlite.Open(filepath.Join(data, "rampart.db"))
	}
	if err != nil {
		return err
	}
	certs := make([]tls.Certificate, nDevices)
	ids := make([]string, nDevices)
	dkey, _ := pki.GenerateDeviceKey() // one key for all: signing cost is the server's, not the device's
	dkeyPEM, _ := pki.MarshalKeyPEM(dkey)
	start := time.Now()
	for i := range nDevices {
		ids[i] = fmt.Sprintf("dev-%05d", i)
		csr, err := pki.NewDeviceCSR(dkey, ids[i])
		if err != nil {
			return err
		}
		der, serial, err := dca.IssueDevice(csr, ids[i], 24*time.Hour)
		if err != nil {
			return err
		}
		if certs[i], err = tls.X509KeyPair(pki.CertPEM(der), dkeyPEM); err != nil {
			return err
		}
		if err := db.CreateDevice(context.Background(), store.Device{ID: ids[i], HardwareID: "hw", CertSerial: serial.Text(16), EnrolledAt: time.Now()}); err != nil {
			return err
		}
		if i%10 == 0 { // for the selector of -compare
			if _, err := db.SetDeviceTags(context.Background(), ids[i], map[string]string{"site": "lab"}, nil); err != nil {
				return err
			}
		}
	}
	db.Close()
	fmt.Printf("enrolled %d devices in %s\n", nDevices, time.Since(start).Round(time.Millisecond))

	// The server is the real binary in its own process, as in production.
	bin := filepath.Join(tmp, "rampart-server")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/rampart-server").CombinedOutput(); err != nil {
		return fmt.Errorf("building rampart-server: %v\n%s", err, out)
	}
	var servers []*exec.Cmd
	startServer := func() (string, error) {
		srv := exec.Command(bin, "serve", "--data", data, "--listen", "127.0.0.1:0", "--store", storeDSN)
		stderr, _ := srv.StderrPipe()
		if err := srv.Start(); err != nil {
			return "", err
		}
		servers = append(servers, srv)
		addr, err := serving(stderr)
		return "https://" + addr, err
	}
	stopServer := func() {
		for _, srv := range servers {
			srv.Process.Signal(syscall.SIGTERM)
			srv.Wait()
		}
		servers = nil
	}
	defer stopServer()
	url0, err := startServer()
	if err != nil {
		return err
	}
	ts := struct{ URL string }{url0}
	caPEM, _ := os.ReadFile(filepath.Join(data, "ca.pem"))
	pool, _ := pki.CertPoolFromPEM(caPEM)
	admin := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLSConfig(pool, nil)}}
	var lastBody []byte // the answer of the last call
	call := func(method, path string, body any) error {
		var r io.Reader
		if b, ok := body.([]byte); ok {
			r = bytes.NewReader(b)
		} else if body != nil {
			b, _ := json.Marshal(body)
			r = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, ts.URL+path, r)
		req.Header.Set("Authorization", "Bearer "+res.AdminToken)
		resp, err := admin.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		lastBody = b
		return err
	}
	if err := publish(data, call); err != nil {
		return err
	}
	if err := call("POST", "/api/v1/deploy", map[string]string{"target": "acme-gw/1.0.0", "hardware": "hw"}); err != nil {
		return err
	}

	// Each device has its own client (its own certificate and kept-alive
	// connection), as real devices have.
	clients := make([]*http.Client, nDevices)
	for i := range clients {
		c := certs[i]
		cfg := pki.ClientTLSConfig(pool, &c)
		tr := &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 1}
		if newConn {
			if !noResume {
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			tr.DisableKeepAlives = true
		}
		clients[i] = &http.Client{Transport: tr}
	}
	// Device i checks in with bases[i % len(bases)].
	bases := []string{ts.URL}
	var tsBody []byte // one device's director timestamp, for -ceiling
	checkin := func(i int, last *int64) error {
		base := bases[i%len(bases)]
		resp, err := clients[i].Get(base + "/director/timestamp.json")
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("timestamp: %d %v %s", resp.StatusCode, err, b)
		}
		var tsDoc struct {
			Signed struct {
				Version int64
				Meta    map[string]struct{ Version int64 }
			}
		}
		if err := json.Unmarshal(b, &tsDoc); err != nil {
			return err
		}
		if i == 0 && tsBody == nil {
			tsBody = b
		}
		if tsDoc.Signed.Version == *last {
			return nil
		}
		*last = tsDoc.Signed.Version
		// Changed: fetch the snapshot and the targets it names.
		sv := tsDoc.Signed.Meta["snapshot.json"].Version
		for _, f := range []string{fmt.Sprintf("%d.snapshot.json", sv), fmt.Sprintf("%d.targets.json", sv)} {
			resp, err := clients[i].Get(base + "/director/" + f)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return nil
	}
	last := make([]int64, nDevices)
	// The server's CPU time per check-in in the last timed phase: on a
	// shared machine the rate follows the other load, its cost per
	// check-in much less.
	serverPids := func() []int {
		var pids []int
		for _, srv := range servers {
			pids = append(pids, srv.Process.Pid)
		}
		return pids
	}
	var lastCPU time.Duration
	// measure runs every device's first check-in (for Rampart it builds
	// and stores the device's director repository; it opens the
	// device's connection), then check-ins for duration.
	measure := func(what string) (rate float64, p99 time.Duration, err error) {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		// The server closes a connection idle for 2 minutes: after a
		// first round that long, the connections it opened first are
		// closed, and the timed phase would measure their new TLS
		// handshakes. Another round, short now that every device's
		// director repository is built, opens them again, so every
		// configuration is measured with its connections open.
		for round := 1; ; round++ {
			var warmRetries atomic.Int64
			start := time.Now()
			for w := range workers {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := w; i < nDevices; i += workers {
						// A device whose first check-in fails tries again,
						// as a real one would at its next poll; the
						// retries are counted and printed.
						err := checkin(i, &last[i])
						for try := 1; err != nil && try < 5; try++ {
							warmRetries.Add(1)
							time.Sleep(time.Duration(try) * 100 * time.Millisecond)
							err = checkin(i, &last[i])
						}
						if err != nil {
							errs <- err
							return
						}
					}
				}(w)
			}
			wg.Wait()
			select {
			case err := <-errs:
				return 0, 0, err
			default:
			}
			took := time.Since(start)
			if round == 1 {
				fmt.Printf("%s: first check-in of every device: %s (%d failed and were tried again)\n", what, took.Round(time.Millisecond), warmRetries.Load())
			} else {
				fmt.Printf("%s: check-in round %d of every device (connections closed while idle opened again): %s (%d failed and were tried again)\n", what, round, took.Round(time.Millisecond), warmRetries.Load())
			}
			if took < 100*time.Second || round == 3 { // the first connections are still open when the timed phase ends
				break
			}
		}

		var count atomic.Int64
		lat := make([][]time.Duration, workers)
		cpu0, cpuErr := processesCPU(serverPids())
		db0 := databaseCPU()
		gen0, _ := processCPU(os.Getpid())
		deadline := time.Now().Add(duration)
		start = time.Now()
		for w := range workers {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				i := w
				for time.Now().Before(deadline) {
					t0 := time.Now()
					if err := checkin(i, &last[i]); err != nil {
						errs <- err
						return
					}
					lat[w] = append(lat[w], time.Since(t0))
					count.Add(1)
					i = (i + workers) % nDevices
				}
			}(w)
		}
		wg.Wait()
		elapsed := time.Since(start)
		cpu1, err := processesCPU(serverPids())
		dbUsed := databaseCPU() - db0
		gen1, _ := processCPU(os.Getpid())
		lastCPU = 0
		if cpuErr == nil && err == nil && count.Load() > 0 {
			lastCPU = (cpu1 - cpu0) / time.Duration(count.Load())
		}
		select {
		case err := <-errs:
			return 0, 0, err
		default:
		}
		var all []time.Duration
		for _, l := range lat {
			all = append(all, l...)
		}
		sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
		pct := func(p float64) time.Duration { return all[int(p*float64(len(all)-1))] }
		mode := "one kept-alive connection per device"
		if newConn {
			mode = "a new TLS connection per check-in, with session resumption"
			if noResume {
				mode = "a new TLS connection per check-in, full handshake"
			}
		}
		rate = float64(count.Load()) / elapsed.Seconds()
		fmt.Printf("%s: check-ins: %d in %s = %.0f/s with %d workers over %d devices (%s)\n", what, count.Load(), elapsed.Round(time.Millisecond), rate, workers, nDevices, mode)
		fmt.Printf("%s: latency: p50 %s  p90 %s  p99 %s  max %s\n", what, pct(.5), pct(.9), pct(.99), all[len(all)-1])
		if lastCPU > 0 {
			fmt.Printf("%s: server CPU (user+system, %d process(es)) %s in the timed phase: %s per check-in\n", what, len(servers), (cpu1 - cpu0).Round(10*time.Millisecond), lastCPU.Round(time.Microsecond))
		}
		if count.Load() > 0 {
			fmt.Printf("%s: this load generator's CPU %s in the timed phase: %s per check-in\n", what, (gen1 - gen0).Round(10*time.Millisecond), ((gen1 - gen0) / time.Duration(count.Load())).Round(time.Microsecond))
		}
		if storeDSN != "" && count.Load() > 0 {
			fmt.Printf("%s: PostgreSQL CPU (every postgres process) %s in the timed phase: %s per check-in\n", what, dbUsed.Round(10*time.Millisecond), (dbUsed / time.Duration(count.Load())).Round(time.Microsecond))
		}
		return rate, pct(.99), nil
	}
	rampart, rampartP99, err := measure("rampart")
	if err != nil {
		return err
	}
	if twoReplicas {
		url1, err := startServer()
		if err != nil {
			return err
		}
		bases = []string{ts.URL, url1}
		two, twoP99, err := measure("rampart, 2 replicas")
		if err != nil {
			return err
		}
		fmt.Printf("2 replicas %.0f/s (p99 %s), 1 replica %.0f/s (p99 %s): ratio %.2f\n", two, twoP99, rampart, rampartP99, two/rampart)
		bases = bases[:1]
	}
	if compare {
		// The same fleet with an active rollout: each check-in is decided
		// against it (the selector, the phase's bucket, the device's
		// progress), and the first phase hands out the second release.
		what := "rampart, active rollout (1% phase, max 500 in flight)"
		if policy {
			if err := call("POST", "/api/v1/policy", map[string]string{"source": examplePolicy}); err != nil {
				return err
			}
			what = "rampart, active rollout (1% phase, max 500 in flight) and policy (3 rules)"
		}
		if err := call("POST", "/api/v1/rollouts", map[string]any{"release": "acme-gw/2.0.0", "select": `hardware == "hw" && tags.site != "lab"`,
			"phases": "1%,10%,50%,100%", "soak": "1h", "max_concurrent": 500}); err != nil {
			return err
		}
		var created struct{ ID string }
		if err := json.Unmarshal(lastBody, &created); err != nil || created.ID == "" {
			return fmt.Errorf("rollout created: %q %v", lastBody, err)
		}
		beforeCPU := lastCPU
		withRollout, p99, err := measure(what)
		if err != nil {
			return err
		}
		withCPU := lastCPU
		// Then without again (the rollout aborted: nothing offers), so
		// that a drift of the machine's load or of the server's state
		// over the run shows, and the rollout is compared with the
		// mean of the runs before and after it.
		if err := call("POST", "/api/v1/rollouts/"+created.ID+"/abort", map[string]string{"reason": "bench"}); err != nil {
			return err
		}
		after, afterP99, err := measure("rampart, rollout aborted (nothing offers)")
		if err != nil {
			return err
		}
		fmt.Printf("%s: %.0f/s (p99 %s) against %.0f/s (p99 %s) before it and %.0f/s (p99 %s) after it: ratio %.2f to their mean\n",
			what, withRollout, p99, rampart, rampartP99, after, afterP99, withRollout/((rampart+after)/2))
		if beforeCPU > 0 && withCPU > 0 && lastCPU > 0 {
			fmt.Printf("%s: server CPU per check-in %s against %s before it and %s after it: ratio %.2f to their mean\n",
				what, withCPU.Round(time.Microsecond), beforeCPU.Round(time.Microsecond), lastCPU.Round(time.Microsecond),
				float64(withCPU)/(float64(beforeCPU+lastCPU)/2))
		}
	}
	if !ceiling {
		return nil
	}

	// The ceiling: Rampart stopped, a bare server in its own process.
	stopServer()
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	bodyFile := filepath.Join(tmp, "timestamp.json")
	if err := os.WriteFile(bodyFile, tsBody, 0o644); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cs := exec.Command(self, "-ceiling-server", data+","+bodyFile)
	cerr, _ := cs.StderrPipe()
	if err := cs.Start(); err != nil {
		return err
	}
	// The deferred stopServer stops it with the rest.
	servers = []*exec.Cmd{cs}
	caddr, err := serving(cerr)
	if err != nil {
		return err
	}
	bases = []string{"https://" + caddr}
	ceil, ceilP99, err := measure("ceiling")
	if err != nil {
		return err
	}
	fmt.Printf("ceiling: bare net/http, TLS 1.3, client certificates required, fixed %d-byte body (one director timestamp)\n", len(tsBody))
	fmt.Printf("rampart %.0f/s (p99 %s), ceiling %.0f/s (p99 %s): ratio %.2f\n", rampart, rampartP99, ceil, ceilP99, rampart/ceil)
	return nil
}

// publish runs an offline ceremony with the data directory's online keys,
// uploads the blobs, pushes the image repository, and pushes a director
// root naming the director keys.
func publish(data string, call func(method, path string, body any) error) error {
	pub := func(name string) []crypto.PublicKey {
		p, err := keys.ReadPublicFile(filepath.Join(data, "online", name))
		if err != nil {
			log.Fatal(err)
		}
		return []crypto.PublicKey{p}
	}
	rk, _ := keys.Generate(keys.Ed25519)
	root := keys.InMemory(rk)
	tmp, _ := os.MkdirTemp("", "rampart-checkin-repo-*")
	defer os.RemoveAll(tmp)
	r, err := offlinerepo.Init(filepath.Join(tmp, "image"), offlinerepo.InitOptions{RootKeys: []crypto.PublicKey{root.Public()}, RootThreshold: 1,
		TargetsKeys: []crypto.PublicKey{root.Public()}, TargetsThreshold: 1, SnapshotKeys: pub("snapshot.pub"), TimestampKeys: pub("timestamp.pub")})
	if err != nil {
		return err
	}
	r.Sign("root", root)
	r.Delegate("acme-gw", []crypto.PublicKey{root.Public()}, 1)
	r.Sign("targets", root)
	img := filepath.Join(tmp, "fw.img")
	b := make([]byte, 4<<20)
	rand.Read(b)
	os.WriteFile(img, b, 0o644)
	if _, err := r.AddRelease(offlinerepo.ReleaseOptions{Image: img, Product: "acme-gw", Version: "1.0.0", SecurityVersion: 1, Hardware: []string{"hw"}}); err != nil {
		return err
	}
	// A second release, for the rollout of -compare.
	rand.Read(b[:4096])
	os.WriteFile(img, b, 0o644)
	if _, err := r.AddRelease(offlinerepo.ReleaseOptions{Image: img, Product: "acme-gw", Version: "2.0.0", SecurityVersion: 2, Hardware: []string{"hw"}}); err != nil {
		return err
	}
	r.Sign("acme-gw", root)
	r.Close()
	blobs, _ := os.ReadDir(filepath.Join(tmp, "image", "staged", "blobs"))
	for _, e := range blobs {
		data, _ := os.ReadFile(filepath.Join(tmp, "image", "staged", "blobs", e.Name()))
		sum := sha256.Sum256(data)
		if err := call("PUT", fmt.Sprintf("/api/v1/blobs/%s?length=%d", hex.EncodeToString(sum[:]), len(data)), data); err != nil {
			return err
		}
	}
	read := func(n string) []byte { b, _ := os.ReadFile(filepath.Join(tmp, "image", "staged", n)); return b }
	if err := call("POST", "/api/v1/repo/push", map[string]any{"roots": [][]byte{read("root.json")}, "targets": read("targets.json"), "roles": map[string][]byte{"acme-gw": read("roles/acme-gw.json")}}); err != nil {
		return err
	}
	d, err := offlinerepo.Init(filepath.Join(tmp, "director"), offlinerepo.InitOptions{RootKeys: []crypto.PublicKey{root.Public()}, RootThreshold: 1,
		TargetsKeys: pub("director-targets.pub"), TargetsThreshold: 1, SnapshotKeys: pub("director-snapshot.pub"), TimestampKeys: pub("director-timestamp.pub")})
	if err != nil {
		return err
	}
	d.Sign("root", root)
	d.Close()
	droot, _ := os.ReadFile(filepath.Join(tmp, "director", "staged", "root.json"))
	return call("POST", "/api/v1/director/root", map[string]any{"roots": [][]byte{droot}})
}

// serveCeiling serves the ceiling: every request is answered with the
// body file's content, over TLS 1.3 with the data directory's serving
// certificate, client certificates required and verified against its
// device CA. It logs where it listens as rampart-server does.
func serveCeiling(arg string) error {
	data, bodyFile, ok := strings.Cut(arg, ",")
	if !ok {
		return fmt.Errorf("-ceiling-server %q is not DATA-DIR,BODY-FILE", arg)
	}
	body, err := os.ReadFile(bodyFile)
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(data, "tls.crt"), filepath.Join(data, "keys", "tls.key"))
	if err != nil {
		return err
	}
	dcaPEM, err := os.ReadFile(filepath.Join(data, "device-ca.pem"))
	if err != nil {
		return err
	}
	pool, err := pki.CertPoolFromPEM(dcaPEM)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		}),
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	line, _ := json.Marshal(map[string]string{"msg": "serving", "addr": ln.Addr().String()})
	fmt.Fprintf(os.Stderr, "%s\n", line)
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
		<-c
		hs.Close()
	}()
	if err := hs.ServeTLS(ln, "", ""); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// processesCPU is the CPU time so far of the processes pids.
func processesCPU(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		d, err := processCPU(pid)
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}

// databaseCPU is the CPU time so far of every process named postgres
// (the server and its backends; a backend that exited meanwhile is not
// counted, and the benchmark's stay connected).
func databaseCPU() time.Duration {
	procs, _ := filepath.Glob("/proc/[0-9]*/comm")
	var sum time.Duration
	for _, comm := range procs {
		b, err := os.ReadFile(comm)
		if err != nil || strings.TrimSpace(string(b)) != "postgres" {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(comm)))
		if err != nil {
			continue
		}
		if d, err := processCPU(pid); err == nil {
			sum += d
		}
	}
	return sum
}

// processCPU is a process's CPU time so far (user and system, from
// /proc/PID/stat, in clock ticks of 1/100 s: Linux's USER_HZ).
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command's name (which may hold spaces),
	// from the state (field 3): utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}
