package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rampartfw/rampart/internal/bundle"
	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/verify"
)

var verifyCmd = &cmdSpec{
	name:    "verify",
	summary: "verify an offline bundle against a trusted root",
	usage: `
Usage: rampart verify BUNDLE --root ROOT.json [--hardware ID]
                      [--min-security-version N] [--at TIME] [--log-key FILE] [--json]

Checks, in this order and without a network: the root chain from the
trusted ROOT.json (thresholds of old and new keys at every rotation), the
timestamp, snapshot, targets and product role (signatures, thresholds,
expiry, version consistency), the release's hardware ids and security
version, the chunk index against its signed hash, and every chunk of the
image against the index. The image is streamed: memory use does not grow
with its size. With --log-key, also the bundle's transparency-log proof
(rampart bundle --server): its statement must be this release, included
under a checkpoint signed by that key. Exit status 1 means the bundle was
refused.

Flags:
    --root FILE                 the root you trust (e.g. 1.root.json)
    --hardware ID               require the release to support ID
    --min-security-version N    refuse releases whose security version is below N
    --at TIME                   check expiry at TIME (RFC 3339) instead of now
    --log-key FILE              require and check the log proof (the log.pub of rampart server keys)
    --json                      print the result (or the refusal) as JSON

Example:
    rampart verify acme-gw-2.4.1.rbundle --root repo/public/1.root.json --hardware acme-gw-rev2
`,
	run: runVerify,
}

type verifyOutput struct {
	Verified        bool                 `json:"verified"`
	Target          string               `json:"target,omitempty"`
	Product         string               `json:"product,omitempty"`
	Version         string               `json:"version,omitempty"`
	SecurityVersion *uint64              `json:"security_version,omitempty"`
	HardwareIDs     []string             `json:"hardware_ids,omitempty"`
	Length          int64                `json:"length,omitempty"`
	SHA256          string               `json:"sha256,omitempty"`
	Chunks          int                  `json:"chunks,omitempty"`
	Role            string               `json:"role,omitempty"`
	Signers         []string             `json:"signers,omitempty"`
	Threshold       int                  `json:"threshold,omitempty"`
	Versions        map[string]int64     `json:"versions,omitempty"`
	Expires         map[string]time.Time `json:"expires,omitempty"`
	Log             *verifiedLog         `json:"log,omitempty"`
	Class           verify.Class         `json:"class,omitempty"`
	RefusedRole     string               `json:"refused_role,omitempty"`
	Error           string               `json:"error,omitempty"`
}

// verifiedLog is where a verified log proof puts the release.
type verifiedLog struct {
	Origin   string `json:"origin"`
	Index    uint64 `json:"index"`
	TreeSize uint64 `json:"tree_size"`
}

func runVerify(e *env, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	rootPath := fs.String("root", "", "")
	hw := fs.String("hardware", "", "")
	minSV := fs.String("min-security-version", "0", "")
	at := fs.String("at", "", "")
	asJSON := fs.Bool("json", false, "")
	logKeyFile := fs.String("log-key", "", "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *rootPath == "" {
		return usagef("example: rampart verify fw.rbundle --root 1.root.json", "verify takes BUNDLE and --root")
	}
	opt := verify.Options{Hardware: *hw}
	if opt.MinSecurityVersion, err = strconv.ParseUint(*minSV, 10, 64); err != nil {
		return usagef("", "--min-security-version %q is not a non-negative integer", *minSV)
	}
	if *at != "" {
		if opt.Time, err = time.Parse(time.RFC3339, *at); err != nil {
			return usagef("example: --at 2027-01-31T12:00:00Z", "--at %q is not an RFC 3339 time", *at)
		}
	}
	root, err := readBounded(*rootPath, bundle.MaxMetadata)
	if err != nil {
		return err
	}
	var logKey note.Verifier
	if *logKeyFile != "" {
		if logKey, err = readLogKey(*logKeyFile); err != nil {
			return err
		}
	}
	out, err := verifyBundle(e, pos[0], root, opt, logKey)
	if err != nil {
		var ve *verify.Error
		if *asJSON && errors.As(err, &ve) {
			json.NewEncoder(e.stdout).Encode(verifyOutput{Class: ve.Class, RefusedRole: ve.Role, Error: ve.Error()})
		}
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(e.stdout, "verified %s\n", out.Target)
	fmt.Fprintf(e.stdout, "  version %s, security version %d, hardware %s\n", out.Version, *out.SecurityVersion, strings.Join(out.HardwareIDs, ", "))
	fmt.Fprintf(e.stdout, "  %d bytes in %d chunks, sha256 %s\n", out.Length, out.Chunks, out.SHA256)
	fmt.Fprintf(e.stdout, "  signed by %d %s keys (threshold %d): %s\n", len(out.Signers), out.Role, out.Threshold, strings.Join(out.Signers, ", "))
	fmt.Fprintf(e.stdout, "  root version %d; timestamp expires %s\n", out.Versions["root"], out.Expires["timestamp"].Format(time.RFC3339))
	if out.Log != nil {
		fmt.Fprintf(e.stdout, "  in the log %s at index %d (checkpoint size %d)\n", out.Log.Origin, out.Log.Index, out.Log.TreeSize)
	}
	return nil
}

func verifyBundle(e *env, path string, root []byte, opt verify.Options, logKey note.Verifier) (*verifyOutput, error) {
	f, err := openBundle(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var logged *verifiedLog
	bopt := bundle.Options{Options: opt, Name: path,
		Image: func(r io.Reader, size int64) (io.Reader, func()) { return startProgress(e, "verifying", r, size) }}
	if logKey != nil {
		bopt.Log = func(proof []byte, res *verify.Result) error {
			cp, index, err := verify.OfflineLogProof(logKey, proof, res)
			if err != nil {
				return err
			}
			logged = &verifiedLog{Origin: cp.Origin, Index: index, TreeSize: cp.Size}
			return nil
		}
	}
	v, err := bundle.Verify(f, root, bopt)
	if err != nil {
		return nil, err
	}
	res := v.Result
	sv := res.Release.SecurityVersion
	return &verifyOutput{
		Verified: true, Target: res.Target, Product: res.Release.Product, Version: res.Release.Version,
		SecurityVersion: &sv, HardwareIDs: res.Release.HardwareIDs, Length: res.File.Length,
		SHA256: hex.EncodeToString(res.File.Hashes["sha256"]), Chunks: len(v.Index.Chunks), Role: res.Role,
		Signers: res.Signers, Threshold: res.Threshold, Versions: res.Versions, Expires: res.Expires,
		Log: logged,
	}, nil
}

// openBundle opens BUNDLE for reading. A path that does not exist or
// cannot be opened, and a directory, are usage errors (exit 2): the bundle
// was never judged. verify reads the bundle once, front to back, so a
// pipe will do (the device, which reads it twice, needs a file).
func openBundle(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("name the bundle file (rampart bundle writes one)", "%v", err)
	}
	fi, err := f.Stat()
	if err == nil && fi.IsDir() {
		err = fmt.Errorf("%s is a directory", path)
	}
	if err != nil {
		f.Close()
		return nil, usagef("name the bundle file itself (rampart bundle writes one)", "%v", err)
	}
	return f, nil
}

func readBounded(path string, limit int64) ([]byte, error) {
	b, err := fsys.ReadFile(fsys.OS, path, limit)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission) {
		return nil, usagef("", "%v; it is not a metadata file", err)
	}
	return b, err
}
