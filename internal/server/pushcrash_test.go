package server_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/logproof"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/server"
	"github.com/rampartfw/rampart/internal/store"
)

// ceremonyKeys are the offline keys of one image repository.
type ceremonyKeys struct{ root, targets, rel keys.Signer }

func newCeremonyKeys(t *testing.T) ceremonyKeys {
	return ceremonyKeys{key(t), key(t), key(t)}
}

// ceremony makes an offline repository with these keys, naming the
// server's online keys, with one acme-gw release per version (random
// images), and returns its first push.
func (e *tlsEnv) ceremony(k ceremonyKeys, hw string, versions ...string) offlinePush {
	t := e.t
	snap, _ := keysFromFile(t, filepath.Join(e.dataDirPath, "online", "snapshot.pub"))
	ts, _ := keysFromFile(t, filepath.Join(e.dataDirPath, "online", "timestamp.pub"))
	dir := filepath.Join(t.TempDir(), "repo")
	r, err := offlinerepo.Init(dir, offlinerepo.InitOptions{RootKeys: []crypto.PublicKey{k.root.Public()}, RootThreshold: 1, TargetsKeys: []crypto.PublicKey{k.targets.Public()}, TargetsThreshold: 1, SnapshotKeys: []crypto.PublicKey{snap}, TimestampKeys: []crypto.PublicKey{ts}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Sign("root", k.root)
	r.Delegate("acme-gw", []crypto.PublicKey{k.rel.Public()}, 1)
	r.Sign("targets", k.targets)
	for _, v := range versions {
		img := filepath.Join(t.TempDir(), "fw.img")
		b := make([]byte, 1<<20+3)
		rand.Read(b)
		os.WriteFile(img, b, 0o644)
		if _, err := r.AddRelease(offlinerepo.ReleaseOptions{Image: img, Product: "acme-gw", Version: v, SecurityVersion: 1, Hardware: []string{hw}}); err != nil {
			t.Fatal(err)
		}
	}
	r.Sign("acme-gw", k.rel)
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, "staged", n))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	p := offlinePush{body: map[string]any{"roots": [][]byte{read("root.json")}, "targets": read("targets.json"), "roles": map[string][]byte{"acme-gw": read("roles/acme-gw.json")}}}
	entries, _ := os.ReadDir(filepath.Join(dir, "staged", "blobs"))
	for _, en := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, "staged", "blobs", en.Name()))
		sum := sha256.Sum256(data)
		p.blobs = append(p.blobs, blobData{hex.EncodeToString(sum[:]), data})
	}
	return p
}

func (e *tlsEnv) upload(p offlinePush) {
	for _, b := range p.blobs {
		code, body, err := e.callRaw(e.pool, "PUT", fmt.Sprintf("/api/v1/blobs/%s?length=%d", b.digest, len(b.data)), e.admin, b.data)
		if err != nil || code != 201 {
			e.t.Fatalf("upload %d %s %v", code, body, err)
		}
	}
}

// payloadOf returns the sha256 a push's role gives a target.
func payloadOf(t *testing.T, p offlinePush, target string) string {
	m, err := metadata.Targets().FromBytes(p.body["roles"].(map[string][]byte)["acme-gw"])
	if err != nil {
		t.Fatal(err)
	}
	return m.Signed.Targets[target].Hashes["sha256"].String()
}

// agreement checks that the transparency log and the published repository
// agree: every statement in the log names a published release with its
// content, no release is logged twice, every published release is logged
// and its recorded log entry is the log's, and no push is pending. It
// returns the logged targets.
func (e *tlsEnv) agreement() []string {
	t := e.t
	t.Helper()
	ctx := context.Background()
	st, lg := e.inst.Store, e.inst.Log
	if _, err := st.PendingPush(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a push is still pending: %v", err)
	}
	published := map[string][2]string{} // target -> sha256, length
	if d, err := st.Doc(ctx, "image", "targets", 0); err == nil {
		tm, err := metadata.Targets().FromBytes(d.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, dr := range tm.Signed.Delegations.Roles {
			rd, err := st.Doc(ctx, "image", dr.Name, 0)
			if err != nil {
				t.Fatal(err)
			}
			rm, _ := metadata.Targets().FromBytes(rd.Data)
			for name, tf := range rm.Signed.Targets {
				published[name] = [2]string{tf.Hashes["sha256"].String(), fmt.Sprint(tf.Length)}
			}
		}
	}
	size, err := lg.Settle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logged := map[string]uint64{}
	err = lg.Scan(ctx, 0, size, func(i uint64, leaf []byte) error {
		s, err := logproof.ParseStatement(leaf)
		if err != nil {
			return err
		}
		if j, dup := logged[s.Target]; dup {
			return fmt.Errorf("%s is logged twice, at %d and %d", s.Target, j, i)
		}
		logged[s.Target] = i
		p, ok := published[s.Target]
		if !ok {
			return fmt.Errorf("the log names %s (entry %d), which is not published", s.Target, i)
		}
		if p != [2]string{s.SHA256, fmt.Sprint(s.Length)} {
			return fmt.Errorf("%s: logged %s/%d, published %v", s.Target, s.SHA256, s.Length, p)
		}
		rec, err := st.LogEntry(ctx, s.Target)
		if err != nil || rec.Index != i || string(rec.Leaf) != string(leaf) {
			return fmt.Errorf("%s: recorded entry %+v, %v; the log has it at %d", s.Target, rec, err, i)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for name := range published {
		if _, ok := logged[name]; !ok {
			t.Fatalf("%s is published but not logged", name)
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

var errCrash = errors.New("injected crash")

// A push is interrupted at every one of its steps, as by a crash: the
// server instance is abandoned there and the data directory opened again.
// Afterwards the log and the repository agree (the push is finished at
// start-up when anything of it may be in the log, or has left no trace),
// and a later push that gives a logged release name other content is
// refused with the logged digest.
func TestPushCrashConsistency(t *testing.T) {
	defer server.SetPushStep(nil)
	targets := []string{"acme-gw/1.0.0/fw.img", "acme-gw/1.1.0/fw.img"}

	// The steps of a push, recorded on an uninterrupted one.
	var steps []string
	{
		e := newTLSEnv(t)
		p := e.ceremony(newCeremonyKeys(t), "acme-gw-rev2", "1.0.0", "1.1.0")
		e.upload(p)
		server.SetPushStep(func(step string) error { steps = append(steps, step); return nil })
		e.mustCall(e.pool, "POST", "/api/v1/repo/push", e.admin, p.body, 200)
		server.SetPushStep(nil)
		if got := e.agreement(); !slices.Equal(got, targets) {
			t.Fatalf("published %v", got)
		}
	}
	want := []string{"checked", "pending"}
	for _, tg := range targets {
		want = append(want, "appending "+tg, "appended "+tg, "recorded "+tg)
	}
	want = append(want, "committed")
	if !slices.Equal(steps, want) {
		t.Fatalf("steps %q, want %q", steps, want)
	}

	for _, crashAt := range steps {
		t.Run(strings.ReplaceAll(crashAt, "/", "_"), func(t *testing.T) {
			e := newTLSEnv(t)
			k := newCeremonyKeys(t)
			p := e.ceremony(k, "acme-gw-rev2", "1.0.0", "1.1.0")
			e.upload(p)
			server.SetPushStep(func(step string) error {
				if step == crashAt {
					return errCrash
				}
				return nil
			})
			code, b, _ := e.call(e.pool, "POST", "/api/v1/repo/push", e.admin, p.body)
			server.SetPushStep(nil)
			refused(t, code, b, 500, "internal")

			// Crash: abandon the instance, open the data directory again.
			dir, admin := e.dataDirPath, e.admin
			e.close()
			e = openTLSEnv(t, dir, admin)
			t.Cleanup(e.close)
			got := e.agreement()

			// A release 1.0.0 with other bytes, from a new ceremony.
			other := e.ceremony(k, "acme-gw-rev2", "1.0.0")
			e.upload(other)
			if crashAt == "checked" {
				// Nothing was logged or made durable: no trace.
				if len(got) != 0 {
					t.Fatalf("a push interrupted before it was pending published %v", got)
				}
				e.mustCall(e.pool, "POST", "/api/v1/repo/push", e.admin, other.body, 200)
				if got := e.agreement(); !slices.Equal(got, targets[:1]) {
					t.Fatalf("published %v", got)
				}
				return
			}
			// Finished at start-up, audited once, as accepted.
			if !slices.Equal(got, targets) {
				t.Fatalf("published %v after the crash, want %v", got, targets)
			}
			var accepted []string
			for _, a := range e.audit() {
				if a.Action == "push" && a.Outcome == "accepted" {
					accepted = append(accepted, a.Detail["finished"])
				}
			}
			wantFinished := "after an interruption"
			if crashAt == "committed" {
				wantFinished = ""
			}
			if !slices.Equal(accepted, []string{wantFinished}) {
				t.Fatalf("audited accepted pushes %q, want [%q]", accepted, wantFinished)
			}
			// The release's content is fixed by its statement.
			code, b, _ = e.call(e.pool, "POST", "/api/v1/repo/push", e.admin, other.body)
			logged := payloadOf(t, p, targets[0])
			refused(t, code, b, 409, "release-logged", "release acme-gw/1.0.0/fw.img is in the transparency log", "with sha256 "+logged, payloadOf(t, other, targets[0]))
			code, b, _ = e.call(e.pool, "POST", "/api/v1/repo/push", e.admin, p.body)
			refused(t, code, b, 409, "version-not-next")
			if got := e.agreement(); !slices.Equal(got, targets) {
				t.Fatalf("published %v", got)
			}
		})
	}
}

// The first statement of a release name fixes its content whatever the
// rest of a push is: here another repository altogether (its own root,
// which pushaccept would refuse for other reasons) gives the name other
// bytes, and the answer is the log's digest.
func TestLoggedNameKeepsItsContent(t *testing.T) {
	defer server.SetPushStep(nil)
	e := newTLSEnv(t)
	k := newCeremonyKeys(t)
	p := e.ceremony(k, "acme-gw-rev2", "1.0.0")
	e.upload(p)
	other := e.ceremony(newCeremonyKeys(t), "acme-gw-rev2", "1.0.0")
	e.upload(other)
	e.mustCall(e.pool, "POST", "/api/v1/repo/push", e.admin, p.body, 200)
	code, b, _ := e.call(e.pool, "POST", "/api/v1/repo/push", e.admin, other.body)
	refused(t, code, b, 409, "release-logged", "with sha256 "+payloadOf(t, p, "acme-gw/1.0.0/fw.img"))
	e.agreement()
}
