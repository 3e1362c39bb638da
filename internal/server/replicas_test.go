package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/datadir"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/server"
	"github.com/rampartfw/rampart/internal/store"
	"github.com/rampartfw/rampart/internal/store/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Test leases: short, so that takeovers happen within a test's second.
const (
	testLeaseTTL   = 600 * time.Millisecond
	testRunEvery   = 100 * time.Millisecond
	takeoverSlack  = 700 * time.Millisecond // a loaded two-core machine
	gracefulBound  = testLeaseTTL/3 + takeoverSlack
	takeoverBound  = testLeaseTTL + testLeaseTTL/3 + takeoverSlack
	revocationWait = testRunEvery + takeoverSlack
)

// cluster is one data directory (keys, CAs, the shared log) and one
// PostgreSQL database that several in-process replicas serve, each over
// its own cuttable connection to the database.
type cluster struct {
	t     *testing.T
	dir   string
	dsn   string
	admin string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	dir := filepath.Join(t.TempDir(), "srv")
	res, err := datadir.Init(dir, datadir.InitOptions{Store: dsn})
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, dir: dir, dsn: dsn, admin: res.AdminToken}
}

// replica is one server of a cluster: its TLS endpoint (env), the proxy
// between it and the database, and its background loop.
type replica struct {
	*tlsEnv
	name  string
	proxy *pgtest.CutProxy
	stop  context.CancelFunc // stops Run (a graceful stop: the lease is released)
	runs  *runLog
}

// runLog records the rounds of leased background work of a replica.
type runLog struct {
	mu     sync.Mutex
	rounds [][2]time.Time
}

func (l *runLog) add(start, end time.Time) {
	l.mu.Lock()
	l.rounds = append(l.rounds, [2]time.Time{start, end})
	l.mu.Unlock()
}

func (l *runLog) get() [][2]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][2]time.Time(nil), l.rounds...)
}

// replica opens a replica; run says whether its background loop runs.
func (c *cluster) replica(name string, run bool, configure ...func(*server.Config)) *replica {
	t := c.t
	t.Helper()
	p := pgtest.NewCutProxy(t)
	dsn := p.Through(c.dsn) + "&connect_timeout=2"
	e := &tlsEnv{t: t, admin: c.admin, now: time.Now(), dataDirPath: c.dir}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := server.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ReplicaID: name, LeaseTTL: testLeaseTTL}
	for _, f := range configure {
		f(&cfg)
	}
	in, err := datadir.OpenWith(ctx, c.dir, cfg, datadir.OpenOptions{Store: dsn})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e.srv, e.inst = in.Server, in
	e.ts = httptest.NewUnstartedServer(in.Server.Handler())
	e.ts.TLS = in.TLS
	e.ts.StartTLS()
	e.caPEM, _ = os.ReadFile(filepath.Join(c.dir, "ca.pem"))
	e.pool = e.client(nil)
	r := &replica{tlsEnv: e, name: name, proxy: p, runs: &runLog{}}
	runCtx, stop := context.WithCancel(ctx)
	r.stop = stop
	done := make(chan struct{})
	if run {
		server.OnBackgroundRound(in.Server, r.runs.add)
		go func() { defer close(done); in.Server.Run(runCtx, testRunEvery) }()
	} else {
		close(done)
	}
	e.close = func() { stop(); <-done; e.ts.Close(); cancel(); in.Close() }
	t.Cleanup(e.close)
	return r
}

// pollFor polls cond every 10 ms until it holds or d passes, and returns
// how long it took (d and false when it never held).
func pollFor(d time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > d {
			return d, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The background work runs on one replica at a time. A holder cut off
// from the database stops before the other takes over, and the other
// takes over within the lease's TTL and a third of it; back on the
// database the first stays a standby; a holder stopped gracefully hands
// the lease over within a third of the TTL.
func TestReplicasDoBackgroundWorkOnce(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	a := c.replica("replica-a", true)
	b := c.replica("replica-b", true)
	var first, second *replica
	if _, ok := pollFor(5*time.Second, func() bool { return len(a.runs.get())+len(b.runs.get()) > 0 }); !ok {
		t.Fatal("neither replica did the background work")
	}
	first, second = a, b
	if len(b.runs.get()) > 0 {
		first, second = b, a
	}
	// Several rounds: all on the holder.
	pollFor(5*time.Second, func() bool { return len(first.runs.get()) >= 4 })
	if n := len(second.runs.get()); n != 0 {
		t.Fatalf("both replicas did the background work: %s %d rounds, %s %d", first.name, len(first.runs.get()), second.name, n)
	}

	// The holder loses the database; it keeps running.
	cutAt := time.Now()
	first.proxy.Cut()
	took, ok := pollFor(5*time.Second, func() bool { return len(second.runs.get()) > 0 })
	if !ok {
		t.Fatalf("%s did not take over from %s, cut off from the database", second.name, first.name)
	}
	if took > takeoverBound {
		t.Fatalf("takeover after %v, bound %v (TTL %v + TTL/3 + slack)", took, takeoverBound, testLeaseTTL)
	}
	t.Logf("takeover %v after the holder lost the database (bound %v)", took, takeoverBound)
	takeover := second.runs.get()[0][0]
	for _, r := range first.runs.get() {
		if !r[1].Before(takeover) {
			t.Fatalf("%s ran a round (%v to %v after the cut) after %s took over (%v after the cut): the work was done twice",
				first.name, r[0].Sub(cutAt), r[1].Sub(cutAt), second.name, takeover.Sub(cutAt))
		}
	}

	// Back on the database, the first replica is a standby.
	first.proxy.Restore()
	before := len(first.runs.get())
	time.Sleep(2 * testLeaseTTL) // the absence of rounds over two TTLs is the assertion
	if n := len(first.runs.get()); n != before {
		t.Fatalf("%s did %d rounds after it came back, while %s holds the lease", first.name, n-before, second.name)
	}

	// The holder stops gracefully: it releases the lease.
	stoppedAt := time.Now()
	second.stop()
	last := second.runs.get()
	took, ok = pollFor(5*time.Second, func() bool {
		rs := first.runs.get()
		return len(rs) > before && rs[len(rs)-1][0].After(stoppedAt)
	})
	if !ok || took > gracefulBound {
		t.Fatalf("%s took over %v after a graceful stop (ok %v), bound %v", first.name, took, ok, gracefulBound)
	}
	for _, r := range last {
		for _, f := range first.runs.get()[before:] {
			if f[0].Before(r[1]) {
				t.Fatalf("rounds overlap: %v..%v and %v", r[0], r[1], f[0])
			}
		}
	}
}

// Two replicas push the same release at once: exactly one push wins,
// the other is refused 409 conflict naming the replica that holds the
// repository's lease; the release is then served by the other replica
// with a log proof that verifies under the log key.
func TestReplicasPushOnceAndShareTheLog(t *testing.T) {
	c, a, b, push := twoReplicasAndRelease(t, "1.0.0")

	// Were the other replica's push let through (the bug this test is
	// for), it must not hang the test: only the first pauses.
	reached, let := pauseFirstPushAt(t, func(step string) bool { return step == "pending" }, nil)
	ans := a.pushInBackground(c.admin, push.body)
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatal("replica-a's push never became pending")
	}
	code, body, _ := b.call(b.pool, "POST", "/api/v1/repo/push", c.admin, push.body)
	wantCode(t, code, body, 409, "conflict")
	if !strings.Contains(string(body), "replica-a holds the repository's lease") {
		t.Fatalf("the refusal does not name the pushing replica: %s", body)
	}
	let()
	if got := <-ans; got.code != 200 {
		t.Fatalf("replica-a's push: %d %s", got.code, got.body)
	}
	// The release, pushed through replica-a, is proved by replica-b.
	vkey, err := os.ReadFile(filepath.Join(c.dir, "online", "log.pub"))
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		t.Fatal(err)
	}
	env, err := logproof.ParseEnvelope(b.mustCall(b.pool, "GET", "/api/v1/log/proof/acme-gw/1.0.0/fw.img", "", nil, 200))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := logproof.VerifyInclusion(b.inst.Log.Origin(), verifier, env.Statement, env.Proof); err != nil {
		t.Fatalf("replica-b's proof of the release replica-a pushed: %v", err)
	}
	// And its checkpoint, served from the shared directory, is that one.
	cp := b.mustCall(b.pool, "GET", "/log/checkpoint", "", nil, 200)
	if string(cp) != string(env.Proof.Checkpoint) {
		t.Fatalf("replica-b serves checkpoint\n%s\nbut proved under\n%s", cp, env.Proof.Checkpoint)
	}
	if got := b.agreement(); len(got) != 1 || got[0] != "acme-gw/1.0.0/fw.img" {
		t.Fatalf("logged %v", got)
	}
}

// A replica dies mid-push, after its release reached the log and before
// the push committed, holding the repository's lease. Once the lease
// expires the other replica takes it and finishes the push: the release
// is published and logged once, and the log and the repository agree.
func TestReplicaKilledMidPushIsFinishedByAnother(t *testing.T) {
	c, a, b, push := twoReplicasAndRelease(t, "1.0.0")
	var once sync.Once
	server.SetPushStep(func(step string) error {
		if strings.HasPrefix(step, "appended ") {
			var err error
			once.Do(func() {
				// replica-a dies: it cannot reach the database any more,
				// so its lease is neither renewed nor released.
				a.proxy.Cut()
				err = errors.New("killed")
			})
			return err
		}
		return nil
	})
	t.Cleanup(func() { server.SetPushStep(nil) })
	code, body, _ := a.call(a.pool, "POST", "/api/v1/repo/push", c.admin, push.body)
	if code < 500 {
		t.Fatalf("the killed push answered %d %s", code, body)
	}
	server.SetPushStep(nil)
	ctx := context.Background()
	if _, err := b.inst.Store.PendingPush(ctx); err != nil {
		t.Fatalf("no pending push after the kill: %v", err)
	}
	// While replica-a's lease runs, replica-b does not touch the push.
	code, body, _ = b.call(b.pool, "POST", "/api/v1/repo/push", c.admin, push.body)
	wantCode(t, code, body, 409, "conflict")
	took := b.finishPendingPush(t)
	if took > takeoverBound {
		t.Fatalf("finished after %v, bound %v", took, takeoverBound)
	}
	if got := b.agreement(); len(got) != 1 || got[0] != "acme-gw/1.0.0/fw.img" {
		t.Fatalf("logged %v", got)
	}
	b.mustCall(b.pool, "GET", "/api/v1/log/proof/acme-gw/1.0.0/fw.img", "", nil, 200)
	es, err := b.inst.Store.AuditEntries(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	pushes := 0
	for _, e := range es {
		if e.Action == "push" && e.Outcome == "accepted" {
			pushes++
			if e.Detail["finished"] != "after an interruption" {
				t.Fatalf("the finished push's audit entry: %+v", e)
			}
		}
	}
	if pushes != 1 {
		t.Fatalf("%d accepted pushes audited, want 1", pushes)
	}
}

// twoReplicasAndRelease starts two replicas over one database and data
// directory, and signs releases of acme-gw-rev2 at versions, uploaded
// through replica-a (the blob store is the shared data directory's) but
// not pushed.
func twoReplicasAndRelease(t *testing.T, versions ...string) (c *cluster, a, b *replica, push offlinePush) {
	c = newCluster(t)
	a = c.replica("replica-a", false)
	b = c.replica("replica-b", false)
	push = a.ceremony(newCeremonyKeys(t), "acme-gw-rev2", versions...)
	a.upload(push)
	return c, a, b, push
}

// pauseFirstPushAt pauses the first push to reach a step that match
// accepts: it calls onPause (if not nil), closes paused and waits for
// wake. Later pushes pass. The test's cleanup removes the hook and wakes
// the push, before the replicas close (they wait for it).
func pauseFirstPushAt(t *testing.T, match func(step string) bool, onPause func()) (paused <-chan struct{}, wake func()) {
	reached, resume := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	server.SetPushStep(func(step string) error {
		if match(step) && first.CompareAndSwap(false, true) {
			if onPause != nil {
				onPause()
			}
			close(reached)
			<-resume
		}
		return nil
	})
	var once sync.Once
	wake = func() { once.Do(func() { close(resume) }) }
	t.Cleanup(func() { server.SetPushStep(nil); wake() })
	return reached, wake
}

// finishPendingPush runs r's refresh until it has finished the pending
// push (once another replica's lease on the repository has run out), and
// returns how long that took.
func (r *replica) finishPendingPush(t *testing.T) time.Duration {
	t.Helper()
	ctx := context.Background()
	took, ok := pollFor(10*time.Second, func() bool {
		if _, err := r.srv.RefreshOnline(ctx); err != nil {
			t.Logf("refresh: %v", err)
		}
		_, err := r.inst.Store.PendingPush(ctx)
		return errors.Is(err, store.ErrNotFound)
	})
	if !ok {
		t.Fatalf("%s never finished the pending push", r.name)
	}
	return took
}

// pushAnswer is the answer to a push made in the background.
type pushAnswer struct {
	code int
	body []byte
}

// pushInBackground pushes body through r and sends the answer on the
// channel it returns.
func (r *replica) pushInBackground(admin string, body any) <-chan pushAnswer {
	ans := make(chan pushAnswer, 1)
	go func() {
		code, b, _ := r.call(r.pool, "POST", "/api/v1/repo/push", admin, body)
		ans <- pushAnswer{code, b}
	}()
	return ans
}

// A replica paused between its last check of the lease and its append
// to the log (a long garbage collection, a stopped virtual machine)
// wakes after its lease ran out and another replica finished its push:
// the shared log refuses the paused replica's append, because a later
// lease term has claimed it, so the release is logged once. (Without the
// log's fence it was logged twice.)
func TestReplicaPausedBeforeAppendIsFenced(t *testing.T) {
	c, a, b, push := twoReplicasAndRelease(t, "1.0.0")

	// Only replica-a's append pauses; replica-b's goes through. Cut off
	// from the database, replica-a's lease runs out while it is paused.
	paused, wake := pauseFirstPushAt(t, func(step string) bool { return strings.HasPrefix(step, "appending ") }, a.proxy.Cut)
	ans := a.pushInBackground(c.admin, push.body)
	select {
	case <-paused:
	case r := <-ans:
		t.Fatalf("replica-a's push never reached its append: %d %s", r.code, r.body)
	}
	b.finishPendingPush(t)
	wake()
	r := <-ans
	if r.code < 500 {
		t.Fatalf("the paused replica's push answered %d %s", r.code, r.body)
	}
	// One statement, published: agreement refuses a release logged twice.
	if got := b.agreement(); len(got) != 1 || got[0] != "acme-gw/1.0.0/fw.img" {
		t.Fatalf("logged %v", got)
	}
}

// An assignment changed on one replica reaches a device checking in at
// another on its next check-in, and the device's director metadata never
// goes backwards whichever replica it asks, even when the assignment
// changes there and back (X, Y, X) while one replica does not see it.
func TestReplicasDirectorFollowsAssignments(t *testing.T) {
	c, a, b, push := twoReplicasAndRelease(t, "1.0.0", "1.1.0")
	a.mustCall(a.pool, "POST", "/api/v1/repo/push", c.admin, push.body, 200)
	root := a.directorRoot(t)
	a.mustCall(a.pool, "POST", "/api/v1/director/root", c.admin, map[string]any{"roots": [][]byte{root}}, 200)
	cert, code, body := a.enroll("gw-1", a.enrollToken("acme-gw-rev2", 60))
	if code != 201 {
		t.Fatalf("enroll: %d %s", code, body)
	}
	// The device keeps its trusted metadata across check-ins, whichever
	// replica it reaches: go-tuf refuses any version going backwards.
	local := t.TempDir()
	checkIn := func(r *replica) map[string]bool {
		t.Helper()
		cfg, err := config.New(r.ts.URL+"/director/", root)
		if err != nil {
			t.Fatal(err)
		}
		cfg.LocalMetadataDir, cfg.LocalTargetsDir = local, t.TempDir()
		if err := cfg.SetDefaultFetcherHTTPClient(r.client(cert)); err != nil {
			t.Fatal(err)
		}
		up, err := updater.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := up.Refresh(); err != nil {
			t.Fatalf("check-in at %s: %v", r.name, err)
		}
		got := map[string]bool{}
		for name := range up.GetTopLevelTargets() {
			got[name] = true
		}
		return got
	}
	deploy := func(r *replica, version string) {
		r.mustCall(r.pool, "POST", "/api/v1/deploy", c.admin, map[string]string{"target": "acme-gw/" + version, "hardware": "acme-gw-rev2"}, 200)
	}
	if got := checkIn(b); len(got) != 0 {
		t.Fatalf("before any deployment: %v", got)
	}
	deploy(a, "1.0.0")
	if got := checkIn(b); !got["acme-gw/1.0.0/fw.img"] || len(got) != 1 {
		t.Fatalf("replica-b after a deployment on replica-a: %v", got)
	}
	// X, Y, X on replica-a, the device checking in there each time;
	// replica-b still caches its repository for X.
	deploy(a, "1.1.0")
	if got := checkIn(a); !got["acme-gw/1.1.0/fw.img"] {
		t.Fatalf("replica-a after 1.1.0: %v", got)
	}
	deploy(a, "1.0.0")
	if got := checkIn(a); !got["acme-gw/1.0.0/fw.img"] {
		t.Fatalf("replica-a after 1.0.0 again: %v", got)
	}
	if got := checkIn(b); !got["acme-gw/1.0.0/fw.img"] || len(got) != 1 {
		t.Fatalf("replica-b after X, Y, X: %v", got)
	}
	deploy(b, "1.1.0")
	if got := checkIn(a); !got["acme-gw/1.1.0/fw.img"] || len(got) != 1 {
		t.Fatalf("replica-a after a deployment on replica-b: %v", got)
	}
}

// A device revoked through one replica is refused by another within its
// revocation reload interval (Run's).
func TestReplicasRevocationBound(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	a := c.replica("replica-a", true)
	b := c.replica("replica-b", true)
	cert, code, body := a.enroll("gw-1", a.enrollToken("acme-gw-rev2", 60))
	if code != 201 {
		t.Fatalf("enroll: %d %s", code, body)
	}
	if refused := b.handshakes(cert, 2); refused != 0 {
		t.Fatalf("replica-b refused an enrolled device %d times", refused)
	}
	revokedAt := time.Now()
	a.mustCall(a.pool, "POST", "/api/v1/devices/gw-1/revoke", c.admin, nil, 204)
	if refused := a.handshakes(cert, 1); refused != 1 {
		t.Fatal("replica-a accepted the device it revoked")
	}
	took, ok := pollFor(5*time.Second, func() bool { return b.handshakes(cert, 1) == 1 })
	if !ok {
		t.Fatal("replica-b never refused the device revoked on replica-a")
	}
	t.Logf("replica-b refused the device %v after the revocation (bound %v)", time.Since(revokedAt), revocationWait)
	if took > revocationWait {
		t.Fatalf("replica-b refused the revoked device after %v, bound %v (the reload interval + slack)", took, revocationWait)
	}
	// Its device API too, not just a fresh handshake.
	if _, _, err := b.call(b.client(cert), "GET", "/director/timestamp.json", "", nil); err == nil {
		t.Fatal("replica-b served the revoked device's director")
	}
}

// The database unreachable mid-request: the request is answered 503
// store-unavailable with Retry-After, not 500, nothing is half-written,
// and the server answers again once the database is back, without a
// restart.
func TestStoreOutageAnswers503(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	r := c.replica("replica-a", false)
	push := r.ceremony(newCeremonyKeys(t), "acme-gw-rev2", "1.0.0")
	r.upload(push)
	want503 := func(code int, body []byte, hdr string) {
		t.Helper()
		wantCode(t, code, body, 503, "store-unavailable")
		if hdr != "5" {
			t.Fatalf("Retry-After %q, want 5", hdr)
		}
		var e struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(body, &e); err != nil || !strings.Contains(e.Error.Message, "nothing was changed") {
			t.Fatalf("the 503's body: %s %v", body, err)
		}
	}
	// Cut mid-push: after its release is logged and recorded, before the
	// metadata commits.
	var once sync.Once
	server.SetPushStep(func(step string) error {
		if strings.HasPrefix(step, "recorded ") {
			once.Do(r.proxy.Cut)
		}
		return nil
	})
	t.Cleanup(func() { server.SetPushStep(nil) })
	resp, body := r.do("POST", "/api/v1/repo/push", push.body)
	want503(resp.code, body, resp.retryAfter)
	server.SetPushStep(nil)
	// Down at the start of a request: the operator token cannot be read.
	resp, body = r.do("POST", "/api/v1/tokens", map[string]string{"name": "during-outage", "role": "auditor"})
	want503(resp.code, body, resp.retryAfter)

	r.proxy.Restore()
	if _, ok := pollFor(10*time.Second, func() bool {
		code, _, _ := r.call(r.pool, "GET", "/api/v1/tokens", c.admin, nil)
		return code == 200
	}); !ok {
		t.Fatal("the server did not recover when the database came back")
	}
	if b := r.mustCall(r.pool, "GET", "/api/v1/tokens", c.admin, nil, 200); strings.Contains(string(b), "during-outage") {
		t.Fatalf("a token created during the outage exists: %s", b)
	}
	// The cut push is pending, not half-published: the next writer of
	// the repository finishes it, and the log and the repository agree.
	if _, err := r.srv.RefreshOnline(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.agreement(); len(got) != 1 {
		t.Fatalf("logged %v", got)
	}
}

type httpAnswer struct {
	code       int
	retryAfter string
}

// do sends an admin request and returns its status, Retry-After and body.
func (e *tlsEnv) do(method, path string, body any) (httpAnswer, []byte) {
	e.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, e.ts.URL+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+e.admin)
	resp, err := e.pool.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return httpAnswer{resp.StatusCode, resp.Header.Get("Retry-After")}, out
}
