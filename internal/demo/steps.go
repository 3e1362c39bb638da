package demo

import (
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/client"
	"github.com/rampartfw/rampart/internal/datadir"
	"github.com/rampartfw/rampart/internal/fleet"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/pki"
	"github.com/rampartfw/rampart/internal/server"
	"github.com/rampartfw/rampart/internal/sim"
)

// The ceremony's offline keys: name, type, role.
var ceremonyKeys = []struct {
	name string
	typ  keys.Type
}{
	{"root-a", keys.Ed25519}, {"root-b", keys.ECDSAP256}, {"targets", keys.Ed25519},
	{"rel-a", keys.Ed25519}, {"rel-b", keys.ECDSAP256}, {"rel-c", keys.Ed25519},
}

// ceremony is step 1: the server's data directory (its online keys),
// the offline keys, the image repository's root of trust with the
// product line delegated 2 of 3, and the director's root.
func ceremony(_ context.Context, d *Demo) error {
	d.srvDir = d.path("server")
	res, err := datadir.Init(d.srvDir, datadir.InitOptions{Hosts: []string{"127.0.0.1"}})
	if err != nil {
		return fmt.Errorf("rampart-server init: %w", err)
	}
	d.admin = res.AdminToken
	d.say("rampart-server init made the server's data directory (%s) and its online keys:", d.rel(d.srvDir))
	d.say("snapshot and timestamp for the image repository, targets, snapshot and timestamp for the director.")
	d.say("The offline roots below name them; the private halves never leave the server.")

	pubs := map[string]crypto.PublicKey{}
	for _, k := range ceremonyKeys {
		base := d.path("keys", k.name)
		pub, err := keys.GenerateFile(base, k.typ, "")
		if err != nil {
			return fmt.Errorf("generating key %s: %w", k.name, err)
		}
		priv, _ := keys.FilePaths(base)
		s, err := keys.OpenFile(priv, nil)
		if err != nil {
			return err
		}
		d.signers[k.name], pubs[k.name] = s, pub
	}
	d.say("Generated 6 offline keys in keys/: root-a and root-b (root, 2 of 2), targets, and rel-a, rel-b, rel-c")
	d.say("(the release signers of product line %s, 2 of 3). The demo stores them unencrypted; real ones are", Product)
	d.say("passphrase-encrypted files or live in an HSM (rampart key generate --pkcs11), one holder each.")

	online := func(name string) ([]crypto.PublicKey, error) {
		p, err := keys.ReadPublicFile(d.path("server", "online", name+".pub"))
		return []crypto.PublicKey{p}, err
	}
	snap, err1 := online("snapshot")
	ts, err2 := online("timestamp")
	dt, err3 := online("director-targets")
	ds, err4 := online("director-snapshot")
	dts, err5 := online("director-timestamp")
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return err
	}
	roots := []crypto.PublicKey{pubs["root-a"], pubs["root-b"]}

	d.repoDir = d.path("repo")
	repo, err := offlinerepo.Init(d.repoDir, offlinerepo.InitOptions{RootKeys: roots, RootThreshold: 2,
		TargetsKeys: []crypto.PublicKey{pubs["targets"]}, TargetsThreshold: 1, SnapshotKeys: snap, TimestampKeys: ts})
	if err != nil {
		return fmt.Errorf("repo init: %w", err)
	}
	defer repo.Close()
	for _, step := range []func() error{
		func() error { _, err := repo.Sign("root", d.signers["root-a"]); return err },
		func() error { _, err := repo.Sign("root", d.signers["root-b"]); return err },
		func() error {
			return repo.Delegate(Product, []crypto.PublicKey{pubs["rel-a"], pubs["rel-b"], pubs["rel-c"]}, 2)
		},
		func() error { _, err := repo.Sign("targets", d.signers["targets"]); return err },
		// The release signers sign their role, empty until the first
		// release, so that the repository can be pushed now.
		func() error { _, err := repo.Sign(Product, d.signers["rel-a"]); return err },
		func() error { _, err := repo.Sign(Product, d.signers["rel-c"]); return err },
	} {
		if err := step(); err != nil {
			return fmt.Errorf("image repository: %w", err)
		}
	}
	st, err := repo.Status()
	if err != nil {
		return err
	}
	for _, r := range st {
		if !r.Ready {
			return fmt.Errorf("image repository: role %s does not meet its threshold after signing", r.Role)
		}
	}
	// The same threshold refuses one signature too few: what a single
	// stolen root key is worth.
	d.say("Image repository (repo/): root signed by root-a and root-b (2 of 2); %s delegated to rel-a, rel-b, rel-c (2 of 3).", Product)

	d.directorDir = d.path("director")
	dr, err := offlinerepo.Init(d.directorDir, offlinerepo.InitOptions{RootKeys: roots, RootThreshold: 2,
		TargetsKeys: dt, TargetsThreshold: 1, SnapshotKeys: ds, TimestampKeys: dts})
	if err != nil {
		return fmt.Errorf("director repo init: %w", err)
	}
	defer dr.Close()
	if _, err := dr.Sign("root", d.signers["root-a"]); err != nil {
		return err
	}
	one, err := dr.Status()
	if err != nil {
		return err
	}
	if one[0].Ready {
		return errors.New("the director root met its 2-of-2 threshold with one signature")
	}
	if _, err := dr.Sign("root", d.signers["root-b"]); err != nil {
		return err
	}
	two, err := dr.Status()
	if err != nil {
		return err
	}
	if !two[0].Ready {
		return errors.New("the director root does not meet its threshold with both signatures")
	}
	d.say("Director root (director/): names the server's director keys; one signature was not enough, two are.")
	return nil
}

// startServer is step 2: the server on a loopback port with its own CA,
// the image repository and the director root pushed to it.
func startServer(ctx context.Context, d *Demo) error {
	// The server's warnings and errors go to server.log in the work
	// directory (kept with --keep), not to the narration.
	logf, err := os.OpenFile(d.path("server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	quiet := slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sctx, cancel := context.WithCancel(context.Background())
	in, err := datadir.Open(sctx, d.srvDir, server.Config{Logger: quiet})
	if err != nil {
		cancel()
		logf.Close()
		return fmt.Errorf("opening the data directory: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		in.Close()
		logf.Close()
		return err
	}
	hs := in.Server.HTTPServer(in.TLS, log.New(io.Discard, "", 0))
	served := make(chan struct{})
	go func() { defer close(served); server.ServeTLS(hs, ln) }()
	ran := make(chan struct{})
	// The rollout engine steps often, so that soaks of a second mean a
	// second (rampart-server steps it every minute).
	go func() { defer close(ran); in.Server.Run(sctx, 200*time.Millisecond) }()
	d.stopServer = func() {
		hs.Close()
		cancel()
		<-served
		<-ran
		in.Close()
		logf.Close()
	}
	d.url = "https://" + ln.Addr().String()
	d.caFile = d.path("server", "ca.pem")
	if d.api, err = client.New(d.url, d.caFile, d.admin); err != nil {
		return err
	}
	d.say("rampart-server listens on %s: TLS with its own CA (%s); devices authenticate with client certificates.", d.url, d.rel(d.caFile))

	// mTLS: a device route without a device certificate is refused.
	ca, err := os.ReadFile(d.caFile)
	if err != nil {
		return err
	}
	pool, err := pki.CertPoolFromPEM(ca)
	if err != nil {
		return err
	}
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLSConfig(pool, nil)}, Timeout: 10 * time.Second}
	resp, err := anon.Get(d.url + "/director/1.root.json")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			return fmt.Errorf("a device route answered %s to a client without a device certificate", resp.Status)
		}
		d.say("A request to a device route without a device certificate: %s.", resp.Status)
	} else {
		d.say("A request to a device route without a device certificate: refused (%v).", err)
	}

	out, err := d.api.PushRepo(ctx, client.RepoPush{Open: func() (*offlinerepo.Repo, error) { return offlinerepo.Open(d.repoDir) }})
	if err != nil {
		return fmt.Errorf("rampart repo push: %w", err)
	}
	if out.Result == nil || out.Result.Versions["root"] != 1 {
		return fmt.Errorf("rampart repo push: the server did not take root version 1 (%+v)", out)
	}
	d.say("rampart repo push: the server checked the offline signatures and now serves the image repository")
	d.say("(root %d, targets %d), signing snapshot and timestamp online.", out.Result.Versions["root"], out.Result.Versions["targets"])

	dr, err := offlinerepo.Open(d.directorDir)
	if err != nil {
		return err
	}
	defer dr.Close()
	roots, err := dr.RootsAfter(0)
	if err != nil {
		return err
	}
	v, err := d.api.PushDirectorRoots(ctx, roots)
	if err != nil {
		return fmt.Errorf("rampart director push-root: %w", err)
	}
	if err := dr.AdoptPushedRoots(roots); err != nil {
		return err
	}
	if v != 1 {
		return fmt.Errorf("rampart director push-root: the server holds director root version %d, not 1", v)
	}
	d.say("rampart director push-root: the server builds each device's director metadata under that root.")
	return nil
}

// release adds a random image as version, has rel-a and rel-c sign it
// (2 of 3), and pushes it; the server logs it.
func (d *Demo) release(ctx context.Context, version string, size int) error {
	return d.releaseSignedBy(ctx, version, size, "rel-a", "rel-c")
}

// releaseSignedBy is release with the two release signers named.
func (d *Demo) releaseSignedBy(ctx context.Context, version string, size int, signer1, signer2 string) error {
	img := d.path("images", "fw-"+version+".img")
	if err := os.MkdirAll(d.path("images"), 0o755); err != nil {
		return err
	}
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(img, b, 0o644); err != nil {
		return err
	}
	repo, err := offlinerepo.Open(d.repoDir)
	if err != nil {
		return err
	}
	added, err := repo.AddRelease(offlinerepo.ReleaseOptions{Image: img, Product: Product, Version: version, SecurityVersion: 1,
		Hardware: []string{Hardware}, Filename: "fw.img", ChunkSize: 16 << 10})
	if err == nil {
		_, err = repo.Sign(Product, d.signers[signer1])
	}
	if err == nil {
		_, err = repo.Sign(Product, d.signers[signer2])
	}
	repo.Close()
	if err != nil {
		return fmt.Errorf("release %s: %w", version, err)
	}
	out, err := d.api.PushRepo(ctx, client.RepoPush{Open: func() (*offlinerepo.Repo, error) { return offlinerepo.Open(d.repoDir) }})
	if err != nil {
		return fmt.Errorf("pushing release %s: %w", version, err)
	}
	target := Product + "/" + version + "/fw.img"
	if out.Result == nil || !slices.Contains(out.Result.Releases, target) {
		return fmt.Errorf("pushing release %s: the server did not log %s", version, target)
	}
	d.say("Release %s: %d bytes in %d chunks, signed by %s and %s (2 of 3), pushed and logged in the transparency log.",
		version, added.Length, added.Chunks, signer1, signer2)
	return nil
}

// startSim runs a simulator until the demo ends.
func (d *Demo) startSim(cfg sim.Config) (*sim.Sim, error) {
	cfg.Server, cfg.CA, cfg.Token, cfg.Hardware, cfg.Poll = d.url, d.caFile, d.admin, Hardware, d.cfg.Poll
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	s, err := sim.New(cfg)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	d.simsDone[s] = done
	go func() {
		defer close(done)
		s.Run(context.Background())
	}()
	return s, nil
}

// simOK fails when a simulator saw something no fault explains.
func simOK(s *sim.Sim) error {
	if r := s.Snapshot(); r.Errors > 0 {
		return fmt.Errorf("the simulated devices saw %d errors; the first: %s", r.Errors, strings.Join(r.ErrorSamples, "; "))
	}
	return nil
}

// devices lists every device the server knows.
func (d *Demo) devices(ctx context.Context) ([]api.DeviceSummary, error) {
	var all []api.DeviceSummary
	err := d.api.Devices(ctx, "", func(page []api.DeviceSummary) error {
		all = append(all, page...)
		return nil
	})
	return all, err
}

// fleetSelector picks every device of the fleet's hardware, simSelector
// the simulated fleet without the man-in-the-middle's device (stopped
// after its step).
const (
	fleetSelector = `hardware == "` + Hardware + `"`
	simSelector   = `id.startsWith("` + sim.DefaultPrefix + `")`
)

// fleetOn100 is step 3: release 1.0.0, the fleet enrolled, and every
// device running 1.0.0.
func fleetOn100(ctx context.Context, d *Demo) error {
	if err := d.release(ctx, "1.0.0", 48<<10); err != nil {
		return err
	}
	var err error
	d.fleet, err = d.startSim(sim.Config{Devices: d.cfg.Devices, Dir: d.path("devices"), Seed: 1, HealthCheck: d.healthCheck})
	if err != nil {
		return err
	}
	d.say("%d simulated devices start: each is the real rampart-agent on a simulated A/B bootloader, with its own", d.cfg.Devices)
	d.say("key and a certificate from the server's device CA (a one-time enrollment token each); they check in every %s.", d.cfg.Poll)
	t0 := time.Now()
	ro, err := d.api.CreateRollout(ctx, api.RolloutRequest{Release: Product + "/1.0.0", Select: fleetSelector, Phases: "100%", Soak: "0s"})
	if err != nil {
		return fmt.Errorf("rollout of 1.0.0: %w", err)
	}
	n := d.cfg.Devices
	err = d.waitFor(ctx, "the fleet enrolling and installing 1.0.0", func(ctx context.Context) (string, bool, error) {
		if err := simOK(d.fleet); err != nil {
			return "", false, err
		}
		ds, err := d.devices(ctx)
		if err != nil {
			return "", false, err
		}
		on := count(ds, func(s api.DeviceSummary) bool { return s.Version == "1.0.0" && s.State == string(api.Installed) })
		return fmt.Sprintf("%d/%d enrolled, %d/%d run 1.0.0", len(ds), n, on, n), len(ds) == n && on == n, nil
	})
	if err != nil {
		return err
	}
	d.rollouts = append(d.rollouts, rolloutRun{release: "1.0.0", id: ro.ID, took: time.Since(t0)})
	d.say("All %d devices enrolled and run 1.0.0, as their signed reports after boot say (%s).", n, time.Since(t0).Round(100*time.Millisecond))
	return nil
}

func count[T any](xs []T, f func(T) bool) int {
	n := 0
	for _, x := range xs {
		if f(x) {
			n++
		}
	}
	return n
}

// firstPhase is the size of the first phase of the demo's rollouts: a
// tenth of the fleet, as a device count so that it holds that many
// devices whatever the rollout's buckets.
func (d *Demo) firstPhase() int { return max(2, d.cfg.Devices/10) }

// rollout110 is step 4: release 1.1.0 rolled out in phases to the whole
// fleet; every device converges.
func rollout110(ctx context.Context, d *Demo) error {
	if err := d.release(ctx, "1.1.0", 48<<10); err != nil {
		return err
	}
	phases := fmt.Sprintf("%d,50%%,100%%", d.firstPhase())
	t0 := time.Now()
	ro, err := d.api.CreateRollout(ctx, api.RolloutRequest{Release: Product + "/1.1.0", Select: fleetSelector, Phases: phases,
		Soak: d.cfg.Soak.String(), MaxFailureRate: "10%"})
	if err != nil {
		return fmt.Errorf("rollout of 1.1.0: %w", err)
	}
	d.say("rampart rollout create %s/1.1.0 --phases %s --soak %s --max-failure-rate 10%%", Product, phases, d.cfg.Soak)
	d.say("(a short soak for the demo; hours in production). Each phase must install and soak before the next.")
	n := d.cfg.Devices
	seen := 0
	err = d.waitFor(ctx, "the rollout of 1.1.0 reaching every device", func(ctx context.Context) (string, bool, error) {
		if err := simOK(d.fleet); err != nil {
			return "", false, err
		}
		r, err := d.api.Rollout(ctx, ro.ID)
		if err != nil {
			return "", false, err
		}
		if r.State != api.RolloutRunning && r.State != api.RolloutCompleted {
			return "", false, fmt.Errorf("the rollout is %s (%s)", r.State, r.PausedReason)
		}
		for ; seen < r.Phase; seen++ {
			d.say("Phase %d of %d (%s) started at %s.", seen+1, len(r.Phases), r.Phases[seen], time.Since(t0).Round(100*time.Millisecond))
		}
		ds, err := d.devices(ctx)
		if err != nil {
			return "", false, err
		}
		on := count(ds, func(s api.DeviceSummary) bool { return s.Version == "1.1.0" && s.State == string(api.Installed) })
		line := fmt.Sprintf("phase %d of %d (%s): %d/%d devices run 1.1.0", r.Phase, len(r.Phases), r.Phases[r.Phase-1], on, n)
		return line, r.State == api.RolloutCompleted && on == n, nil
	})
	if err != nil {
		return err
	}
	if seen != 3 {
		return fmt.Errorf("the rollout completed after %d phases, not 3", seen)
	}
	took := time.Since(t0)
	d.rollouts = append(d.rollouts, rolloutRun{release: "1.1.0", id: ro.ID, took: took})
	d.say("Rollout completed: all %d devices run 1.1.0, each committed after a healthy trial boot (%s).", n, took.Round(100*time.Millisecond))
	return nil
}

// mitm is step 5: a device behind a man-in-the-middle that alters a
// chunk of 1.1.0 in transit refuses it, its running slot untouched, and
// the server counts the tamper detection.
func mitm(ctx context.Context, d *Demo) error {
	var err error
	d.mitmSim, err = d.startSim(sim.Config{Devices: 1, IDPrefix: "mitm-", Tamper: 1, Dir: d.path("mitm"), Seed: 2})
	if err != nil {
		return err
	}
	const id = "mitm-1"
	d.say("A new device, %s, joins behind a man-in-the-middle: the completed 1.1.0 rollout reaches it, and the", id)
	d.say("attacker changes a byte of a chunk of 1.1.0 in transit (TLS is not what stops it: a CDN or mirror could do the same).")
	var dev api.Device
	err = d.waitFor(ctx, "the tampered chunk refused and reported", func(ctx context.Context) (string, bool, error) {
		if err := simOK(d.mitmSim); err != nil {
			return "", false, err
		}
		ok, dv, err := d.device(ctx, id)
		if err != nil || !ok {
			return "waiting for " + id + " to enroll", false, err
		}
		dev = dv
		refused := d.mitmSim.Snapshot().TamperRefusals
		return fmt.Sprintf("%s: %s, refusals seen %d", id, dv.LastStatus, refused), refused >= 1 && refusals(dv)[string(api.RefusedMismatch)] >= 1, nil
	})
	if err != nil {
		return err
	}
	d.say("%s refused the chunk before writing a byte of it: its hash is not the one in the signed chunk index", id)
	d.say("(refusal class %q). Its running slot is untouched and the bootloader still boots it (checked on the device).", api.RefusedMismatch)
	d.say("The server recorded the detection: %s reported verification-refused (%s); last refusal %q.", id, api.RefusedMismatch, dev.LastRefusal)
	err = d.waitFor(ctx, "the device installing 1.1.0 from a clean transfer", func(ctx context.Context) (string, bool, error) {
		if err := simOK(d.mitmSim); err != nil {
			return "", false, err
		}
		_, dv, err := d.device(ctx, id)
		if err != nil {
			return "", false, err
		}
		return fmt.Sprintf("%s: %s %s", id, dv.LastStatus, dv.Version), dv.Version == "1.1.0" && dv.LastStatus == string(api.Installed), nil
	})
	if err != nil {
		return err
	}
	d.say("The next transfer, untouched, installed 1.1.0: an attacker on the path can delay an update, never alter it.")
	d.stopSim(d.mitmSim)
	return simOK(d.mitmSim)
}

// device fetches one device; ok is false while the server does not know it.
func (d *Demo) device(ctx context.Context, id string) (bool, api.Device, error) {
	dv, err := d.api.Device(ctx, id)
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return false, dv, nil
	}
	return err == nil, dv, err
}

// refusals counts a device's kept verification-refused reports by class.
func refusals(dv api.Device) map[string]int {
	m := map[string]int{}
	for _, r := range dv.Reports {
		if r.Status == string(api.VerificationRefused) {
			m[r.Reason]++
		}
	}
	return m
}

// healthCheck is the fleet's health check of a trial boot: release
// 1.2.0 fails on the devices failing120 picks, once its rollout exists.
func (d *Demo) healthCheck(id, version string) error {
	if version != "1.2.0" {
		return nil
	}
	select {
	case <-d.failReady:
	case <-time.After(30 * time.Second):
	}
	d.failMu.Lock()
	defer d.failMu.Unlock()
	if d.failing[id] {
		return errors.New("simulated health check failure: the application did not come up on 1.2.0")
	}
	return nil
}

// failing120 is step 6: release 1.2.0 fails its health check on some
// devices of its first phase; they roll back to 1.1.0 and report it, and
// the rollout's gate pauses it in its first phase.
func failing120(ctx context.Context, d *Demo) error {
	if err := d.release(ctx, "1.2.0", 48<<10); err != nil {
		return err
	}
	first := d.firstPhase()
	phases := fmt.Sprintf("%d,50%%,100%%", first)
	t0 := time.Now()
	// min-success: the gate judges the first phase once every device of
	// it has an outcome.
	ro, err := d.api.CreateRollout(ctx, api.RolloutRequest{Release: Product + "/1.2.0", Select: simSelector, Phases: phases,
		Soak: d.cfg.Soak.String(), MaxFailureRate: "10%", MinSuccess: first})
	if err != nil {
		return fmt.Errorf("rollout of 1.2.0: %w", err)
	}
	// The first phase holds the devices of the lowest buckets; 1.2.0
	// fails on about a third of them.
	all, err := d.devices(ctx)
	if err != nil {
		return err
	}
	var ds []api.DeviceSummary
	for _, dv := range all {
		if strings.HasPrefix(dv.ID, sim.DefaultPrefix) {
			ds = append(ds, dv)
		}
	}
	sort.Slice(ds, func(i, j int) bool { return fleet.Bucket(ro.ID, ds[i].ID) < fleet.Bucket(ro.ID, ds[j].ID) })
	inFirst := map[string]bool{}
	var failing []string
	for i, dv := range ds[:first] {
		inFirst[dv.ID] = true
		if i%3 == 0 {
			failing = append(failing, dv.ID)
		}
	}
	d.failMu.Lock()
	d.failing = map[string]bool{}
	for _, id := range failing {
		d.failing[id] = true
	}
	d.failMu.Unlock()
	close(d.failReady)
	d.say("rampart rollout create %s/1.2.0 --select '%s' --phases %s --soak %s --max-failure-rate 10%% --min-success %d",
		Product, simSelector, phases, d.cfg.Soak, first)
	d.say("1.2.0 has a bug: on %d of the %d devices of the first phase its application does not come up after the trial boot.", len(failing), first)

	var r api.Rollout
	err = d.waitFor(ctx, "the gate pausing 1.2.0 with its failed devices rolled back", func(ctx context.Context) (string, bool, error) {
		if err := simOK(d.fleet); err != nil {
			return "", false, err
		}
		if r, err = d.api.Rollout(ctx, ro.ID); err != nil {
			return "", false, err
		}
		if r.State == api.RolloutCompleted || r.Phase > 1 {
			return "", false, fmt.Errorf("the rollout went on to phase %d (%s) despite the failures", r.Phase, r.State)
		}
		back := 0
		for _, id := range failing {
			_, dv, err := d.device(ctx, id)
			if err != nil {
				return "", false, err
			}
			if dv.LastStatus == string(api.RolledBack) && dv.Version == "1.1.0" {
				back++
			}
		}
		line := fmt.Sprintf("rollout %s, phase 1: %d installed, %d rolled back of %d failing", r.State, r.Counts.Installed, back, len(failing))
		return line, r.State == api.RolloutPaused && back == len(failing), nil
	})
	if err != nil {
		return err
	}
	d.rollouts = append(d.rollouts, rolloutRun{release: "1.2.0", id: ro.ID, took: time.Since(t0)})
	if !strings.Contains(r.PausedReason, "gate") {
		return fmt.Errorf("the rollout is paused, but not by its gate: %q", r.PausedReason)
	}
	d.say("The gate paused the rollout automatically in phase 1: %s.", r.PausedReason)
	reason := ""
	for _, id := range failing {
		_, dv, err := d.device(ctx, id)
		if err != nil {
			return err
		}
		r := ""
		for _, rep := range dv.Reports {
			if rep.Status == string(api.RolledBack) {
				r = rep.Reason
			}
		}
		if r == "" {
			return fmt.Errorf("%s runs 1.1.0 but kept no rolled-back report with a reason", id)
		}
		reason = r
	}
	d.say("The failed devices (%d) fell back to 1.1.0 on their own (bootloader trial boot) and reported rolled-back,", len(failing))
	d.say("reason %q (e.g. %s).", reason, failing[0])

	// Later phases never start: wait a few soaks and look again.
	time.Sleep(3 * d.cfg.Soak)
	if r, err = d.api.Rollout(ctx, ro.ID); err != nil {
		return err
	}
	if r.State != api.RolloutPaused || r.Phase != 1 {
		return fmt.Errorf("after the pause the rollout is %s in phase %d", r.State, r.Phase)
	}
	if ds, err = d.devices(ctx); err != nil {
		return err
	}
	for _, s := range ds {
		if s.Version == "1.2.0" && !inFirst[s.ID] {
			return fmt.Errorf("%s, outside the first phase, runs 1.2.0", s.ID)
		}
	}
	outside := d.cfg.Devices - first
	d.say("Three soaks later it is still paused in phase 1: the other %d devices of the fleet never saw 1.2.0 and run 1.1.0.", outside)
	return nil
}

// summary is the closing table, read from the server's fleet
// statistics (GET /api/v1/fleet/stats, rampart fleet stats): devices per
// release, the update success rate, the time to install (p50, p95), the
// mean time to recover from the revoked key, and the tamper detections
// by class; and each rollout's outcome with its own statistics (rampart
// rollout show).
func summary(ctx context.Context, d *Demo) error {
	d.stopSims()
	for _, s := range []*sim.Sim{d.fleet, d.mitmSim} {
		if err := simOK(s); err != nil {
			return err
		}
	}
	// The last recovery closes when the server takes the device's
	// confirmed-boot report: the drill waited for that already, so the
	// statistics hold it.
	st, err := d.api.FleetStats(ctx)
	if err != nil {
		return fmt.Errorf("rampart fleet stats: %w", err)
	}
	w := d.cfg.Out
	d.say("rampart fleet stats:")
	fmt.Fprintf(w, "  %-10s %s\n", "RELEASE", "DEVICES")
	for _, v := range slices.Sorted(maps.Keys(st.ByVersion)) {
		fmt.Fprintf(w, "  %-10s %d\n", v, st.ByVersion[v])
	}
	fmt.Fprintln(w)
	// TOOK: to the end of the rollout, to 1.2.0's pause, to 1.1.1's
	// first phase installed.
	fmt.Fprintf(w, "  %-10s %-15s %-10s %-9s %-12s %-8s %s\n", "ROLLOUT", "ID", "STATE", "INSTALLED", "ROLLED BACK", "SUCCESS", "TOOK")
	for _, ro := range d.rollouts {
		r, err := d.api.Rollout(ctx, ro.id)
		if err != nil {
			return err
		}
		success := "-"
		if r.Stats != nil {
			success = percent(r.Stats.UpdateSuccessRate)
		}
		// Failures by reason: a device's current status in the
		// rollout may have moved on since its rollback.
		fails := 0
		for _, n := range r.FailureReasons {
			fails += n
		}
		fmt.Fprintf(w, "  %-10s %-15s %-10s %-9d %-12d %-8s %s\n", ro.release, r.ID, r.State, r.Counts.Installed, fails,
			success, ro.took.Round(100*time.Millisecond))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  devices                 %d\n", st.Devices)
	fmt.Fprintf(w, "  update success rate     %s (confirmed installs over installs and rollbacks, every rollout)\n", percent(st.UpdateSuccessRate))
	fmt.Fprintf(w, "  time to install         p50 %s, p95 %s (hand-out to confirmed boot)\n", seconds(st.TimeToInstallP50), seconds(st.TimeToInstallP95))
	fmt.Fprintf(w, "  time to recover (MTTR)  %s mean per device; the drill's %d affected devices all back in %s\n",
		seconds(st.MTTR), d.drillAffected, d.drillRecover.Round(100*time.Millisecond))
	var classes []string
	for _, c := range slices.Sorted(maps.Keys(st.TamperDetections)) {
		if st.TamperDetections[c] > 0 {
			classes = append(classes, c+" "+strconv.Itoa(st.TamperDetections[c]))
		}
	}
	fmt.Fprintf(w, "  tamper detections       %s (verification refusals by class)\n", orNone(strings.Join(classes, ", ")))

	switch {
	case st.Devices != d.cfg.Devices+1:
		return fmt.Errorf("fleet stats count %d devices, not %d", st.Devices, d.cfg.Devices+1)
	case st.ByVersion["1.0.0"] != 0 || st.ByVersion["1.2.0"] == 0 || st.ByVersion[goodVersion] == 0 || st.ByVersion[drillVersion] != 0:
		return fmt.Errorf("fleet stats' devices per release are not what the story left: %v", st.ByVersion)
	case st.TamperDetections[string(api.RefusedMismatch)] < 1:
		return fmt.Errorf("fleet stats count no tamper detection of class %s: %v", api.RefusedMismatch, st.TamperDetections)
	case st.UpdateSuccessRate == nil || *st.UpdateSuccessRate >= 1:
		return fmt.Errorf("fleet stats' update success rate (%s) does not count 1.2.0's rollbacks", percent(st.UpdateSuccessRate))
	case st.TimeToInstallP50 == nil || st.TimeToInstallP95 == nil:
		return errors.New("fleet stats have no time to install")
	case st.MTTR == nil:
		return errors.New("fleet stats have no time to recover after the key revocation drill")
	}
	return nil
}

// percent shows a rate of fleet stats ("-" while nothing was measured).
func percent(f *float64) string {
	if f == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100**f)
}

// seconds shows a duration of fleet stats, in seconds.
func seconds(f *float64) string {
	if f == nil {
		return "-"
	}
	return (time.Duration(*f * float64(time.Second))).Round(time.Millisecond).String()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
