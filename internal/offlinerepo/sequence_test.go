package offlinerepo_test

import (
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/failure"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/offlinerepo"
	"github.com/rampartfw/rampart/internal/release"
)

// clearError reports whether err is one the CLI turns into a documented
// exit code and message: a repository, release or key sentinel, a typed
// refusal, or a missing file. Anything else would print as an
// unclassified environment error.
func clearError(err error) bool {
	var c failure.Classifier
	if errors.As(err, &c) {
		return true
	}
	for _, s := range []error{offlinerepo.ErrNotRepository, offlinerepo.ErrExists, offlinerepo.ErrNotAuthorised, offlinerepo.ErrAlreadySigned, offlinerepo.ErrBelowThreshold,
		offlinerepo.ErrNothingStaged, offlinerepo.ErrUnknownRole, offlinerepo.ErrSecurityLower, offlinerepo.ErrBadInput, offlinerepo.ErrExpired, offlinerepo.ErrCorruptStaging,
		offlinerepo.ErrUnverified, release.ErrInvalid, fs.ErrNotExist} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// No sequence of repository commands panics, and every refusal is a clear
// one: random sequences of delegate, release add, sign (by the right and
// the wrong keys), stage, unstage, publish and rotate, over every role.
func TestRandomCommandSequences(t *testing.T) {
	seeds := 8
	if testing.Short() {
		seeds = 2
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { commandSequence(t, uint64(seed), 60) })
	}
}

func commandSequence(t *testing.T, seed uint64, steps int) {
	rng := mrand.New(mrand.NewPCG(seed, 99))
	k := func() keys.Signer {
		s, err := keys.Generate(keys.Ed25519)
		if err != nil {
			t.Fatal(err)
		}
		return keys.InMemory(s)
	}
	root, targets, online := k(), k(), k()
	pool := []keys.Signer{root, targets, online, k(), k(), k()}
	dir := filepath.Join(t.TempDir(), "repo")
	r, err := offlinerepo.Init(dir, offlinerepo.InitOptions{RootKeys: []crypto.PublicKey{root.Public()}, RootThreshold: 1,
		TargetsKeys: []crypto.PublicKey{targets.Public()}, TargetsThreshold: 1, SnapshotKeys: []crypto.PublicKey{online.Public()}, TimestampKeys: []crypto.PublicKey{online.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	products := []string{"acme-gw", "acme-cam"}
	roles := []string{"root", "targets", "snapshot", "timestamp", "acme-gw", "acme-cam", "nope"}
	img := filepath.Join(t.TempDir(), "fw.img")
	b := make([]byte, 3000)
	rand.Read(b)
	os.WriteFile(img, b, 0o644)
	var history []string
	for step := 0; step < steps; step++ {
		var name string
		var err error
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("seed %d: panic at step %d (%s): %v\nhistory:\n  %s", seed, step, name, p, strings.Join(history, "\n  "))
				}
			}()
			switch rng.IntN(8) {
			case 0:
				p := products[rng.IntN(len(products))]
				name = "delegate " + p
				err = r.Delegate(p, []crypto.PublicKey{pool[3+rng.IntN(3)].Public()}, 1)
			case 1:
				p := products[rng.IntN(len(products))]
				v := fmt.Sprintf("1.%d.%d", rng.IntN(3), rng.IntN(3))
				name = "release add " + p + " " + v
				_, err = r.AddRelease(offlinerepo.ReleaseOptions{Image: img, Product: p, Version: v, SecurityVersion: uint64(rng.IntN(4)), Hardware: []string{"hw"}})
			case 2, 3:
				role := roles[rng.IntN(len(roles))]
				signer := pool[rng.IntN(len(pool))]
				name = "sign " + role
				_, err = r.Sign(role, signer)
			case 4:
				role := roles[rng.IntN(len(roles))]
				name = "stage " + role
				err = r.Stage(role)
			case 5:
				role := roles[rng.IntN(len(roles))]
				name = "unstage " + role
				err = r.Unstage(role)
			case 6:
				name = "publish"
				_, err = r.Publish([]keys.Signer{online})
			case 7:
				role := roles[rng.IntN(len(roles))]
				name = "rotate " + role
				opt := offlinerepo.RotateOptions{Threshold: rng.IntN(3)}
				if rng.IntN(2) == 0 {
					opt.Add = []crypto.PublicKey{pool[rng.IntN(len(pool))].Public()}
				} else {
					id, _ := keys.ID(pool[rng.IntN(len(pool))].Public())
					opt.Remove = []string{id}
				}
				err = r.Rotate(role, opt)
			}
			// Every state stays readable.
			if _, serr := r.Status(); serr != nil && !clearError(serr) {
				t.Fatalf("seed %d: status after %s: unclear error %v", seed, name, serr)
			}
		}()
		history = append(history, fmt.Sprintf("%s: %v", name, err))
		if err != nil && !clearError(err) {
			t.Fatalf("seed %d: %s: unclear error %q (%T)\nhistory:\n  %s", seed, name, err, err, strings.Join(history, "\n  "))
		}
	}
}
