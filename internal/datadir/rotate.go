package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/atomicfile"
	"github.com/rampartfw/rampart/internal/keys"
	"github.com/rampartfw/rampart/internal/server"
	"github.com/rampartfw/rampart/internal/tlog"
)

// Online key rotation (docs/incident-response.md).
//
// The online keys live in DATA/keys/ROLE.key with their public halves in
// DATA/online/ROLE.pub. RotateKeys replaces the keys of the given roles
// with fresh ones and keeps each replaced key in DATA/keys/previous/ (its
// public half in DATA/online/previous/). At its next start the server
// loads both; it signs with whichever the current root names: the
// previous keys until the root key holders push a root that names the
// new ones, the new keys alone from then on. A key the root no longer
// names is never used again, and a second rotation overwrites it.
//
// The log key is different: the log signs checkpoints with one key, so
// RotateLogKey replaces it at once and re-signs the log's current
// checkpoint with the new key; the root key holders then name the new
// key in the image repository's root (rampart repo set-log-key), which
// devices follow. It must run while the server is stopped.

// OnlineRoles are the roles whose keys RotateKeys rotates: the image
// repository's and the director's.
var OnlineRoles = []string{"snapshot", "timestamp", "director-targets", "director-snapshot", "director-timestamp"}

// ImageRoles and DirectorRoles group OnlineRoles by repository.
var (
	ImageRoles    = []string{"snapshot", "timestamp"}
	DirectorRoles = []string{"director-targets", "director-snapshot", "director-timestamp"}
)

const previousDir = "previous"

// Rotated is one rotated key: its role and the ids of the new key and of
// the one it replaced.
type Rotated struct {
	Role, NewID, PreviousID string
	// PublicFile is the new public key file (DATA/online/ROLE.pub).
	PublicFile string
}

// RotateKeys gives each of roles (OnlineRoles) a fresh Ed25519 key. It is
// crash-safe in the sense that matters: the previous key is copied to
// keys/previous/ before the new key replaces it, each write atomic and
// durable, so a cut at any point leaves a usable current key and never
// loses one the root may still name. The running server keeps signing
// with the keys it loaded until it is restarted.
func RotateKeys(dir string, roles []string) ([]Rotated, error) {
	if len(roles) == 0 {
		return nil, errors.New("no role to rotate")
	}
	for _, r := range roles {
		if !slices.Contains(OnlineRoles, r) {
			return nil, fmt.Errorf("unknown online role %q (one of %s)", r, strings.Join(OnlineRoles, ", "))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "rampart.db")); err != nil {
		return nil, fmt.Errorf("%s is not a data directory: %w", dir, err)
	}
	for _, d := range []string{filepath.Join(dir, "keys", previousDir), filepath.Join(dir, "online", previousDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	var out []Rotated
	for _, role := range roles {
		keyFile := filepath.Join(dir, "keys", role+".key")
		pubFile := filepath.Join(dir, "online", role+".pub")
		old, err := keys.OpenFile(keyFile, nil)
		if err != nil {
			return nil, fmt.Errorf("the current %s key: %w", role, err)
		}
		oldID, _ := keys.ID(old.Public())
		for _, f := range [][2]string{{keyFile, filepath.Join(dir, "keys", previousDir, role+".key")}, {pubFile, filepath.Join(dir, "online", previousDir, role+".pub")}} {
			b, err := os.ReadFile(f[0])
			if err != nil {
				return nil, err
			}
			if err := atomicfile.WriteFile(f[1], b, 0o600); err != nil {
				return nil, err
			}
		}
		priv, err := keys.Generate(keys.Ed25519)
		if err != nil {
			return nil, err
		}
		pem, err := keys.MarshalPrivate(priv, "")
		if err != nil {
			return nil, err
		}
		pub, err := keys.MarshalPublic(priv.Public())
		if err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(keyFile, pem, 0o600); err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(pubFile, pub, 0o644); err != nil {
			return nil, err
		}
		id, _ := keys.ID(priv.Public())
		out = append(out, Rotated{Role: role, NewID: id, PreviousID: oldID, PublicFile: pubFile})
	}
	return out, nil
}

// RotateLogKey gives the transparency log a fresh key under the same
// origin, keeps the replaced one in keys/previous/log.key (its verifier
// key in online/previous/log.pub), and re-signs the log's published
// checkpoint with the new key, so the log (tlog.Open) and every client
// that fetches it from now on see the new key. The tree is unchanged.
// The server must be stopped: a running one would go on signing with the
// old key. logDir is the log's directory (the server's log_dir), empty
// for dir/log. It returns the new verifier key.
//
// Each step is atomic, and a rotation cut short is finished by running
// it again: when the checkpoint verifies under the previous key and not
// under the current one, only the re-signing is left to do.
func RotateLogKey(dir, logDir string) (string, error) {
	if logDir == "" {
		logDir = filepath.Join(dir, "log")
	}
	cur, curV, curText, err := readLogKey(filepath.Join(dir, "keys", "log.key"), filepath.Join(dir, "online", "log.pub"))
	if err != nil {
		return "", err
	}
	if _, prevV, _, err := readLogKey(filepath.Join(dir, "keys", previousDir, "log.key"), filepath.Join(dir, "online", previousDir, "log.pub")); err == nil {
		if raw, err := os.ReadFile(filepath.Join(logDir, "checkpoint")); err == nil && verifies(raw, prevV) && !verifies(raw, curV) {
			if err := tlog.Resign(logDir, []note.Verifier{prevV}, cur); err != nil {
				return "", err
			}
			return curText, nil
		}
	}
	skey, vkey, err := tlog.GenerateKey(cur.Name())
	if err != nil {
		return "", err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return "", err
	}
	for _, d := range []string{filepath.Join(dir, "keys", previousDir), filepath.Join(dir, "online", previousDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", err
		}
	}
	for _, f := range [][2]string{{"keys/log.key", "keys/previous/log.key"}, {"online/log.pub", "online/previous/log.pub"}} {
		b, err := os.ReadFile(filepath.Join(dir, f[0]))
		if err != nil {
			return "", err
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, f[1]), b, 0o600); err != nil {
			return "", err
		}
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "keys", "log.key"), []byte(skey+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "online", "log.pub"), []byte(vkey+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := tlog.Resign(logDir, []note.Verifier{curV}, signer); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	return vkey, nil
}

func readLogKey(skeyFile, vkeyFile string) (note.Signer, note.Verifier, string, error) {
	skey, err := os.ReadFile(skeyFile)
	if err != nil {
		return nil, nil, "", err
	}
	vkey, err := os.ReadFile(vkeyFile)
	if err != nil {
		return nil, nil, "", err
	}
	s, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return nil, nil, "", fmt.Errorf("%s: %w", skeyFile, err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		return nil, nil, "", fmt.Errorf("%s: %w", vkeyFile, err)
	}
	// A pair that does not match (a rotation cut between the two
	// writes) is not guessed at.
	if msg, err := note.Sign(&note.Note{Text: "rampart log key check\n"}, s); err != nil || !verifies(msg, v) {
		return nil, nil, "", fmt.Errorf("%s and %s are not one key pair; restore them from a backup (or from keys/previous/ and online/previous/)", skeyFile, vkeyFile)
	}
	return s, v, strings.TrimSpace(string(vkey)), nil
}

func verifies(raw []byte, v note.Verifier) bool {
	_, err := note.Open(raw, note.VerifierList(v))
	return err == nil
}

// loadPrevious loads the keys a rotation replaced, when there are any.
func loadPrevious(dir string, c *server.Config) error {
	for _, r := range OnlineRoles {
		f := filepath.Join(dir, "keys", previousDir, r+".key")
		sg, err := keys.OpenFile(f, nil)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		switch r {
		case "snapshot", "timestamp":
			c.PreviousOnline = append(c.PreviousOnline, sg)
		case "director-targets":
			c.PreviousDirectorKeys.Targets = append(c.PreviousDirectorKeys.Targets, sg)
		case "director-snapshot":
			c.PreviousDirectorKeys.Snapshot = append(c.PreviousDirectorKeys.Snapshot, sg)
		case "director-timestamp":
			c.PreviousDirectorKeys.Timestamp = append(c.PreviousDirectorKeys.Timestamp, sg)
		}
	}
	return nil
}
