package verify_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/rampartfw/rampart/internal/verify"
)

// dirFetcher serves a published repository's public/ directory to
// go-tuf's updater, as the server serves /repo/.
type dirFetcher struct{ dir, base string }

func (f dirFetcher) DownloadFile(u string, maxLength int64, _ time.Duration) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(f.dir, strings.TrimPrefix(u, f.base)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: 404, URL: u}
	}
	return b, err
}

// TestTargetLookupPinsGoTUFText pins the one place Rampart reads go-tuf's
// error text: go-tuf's updater answers a target its verified metadata does
// not list with an untyped error, which TargetLookup must still refuse as
// MissingTarget. A go-tuf upgrade that changes the text fails here, not on
// a device.
func TestTargetLookupPinsGoTUFText(t *testing.T) {
	f := newFixture(t, nil)
	const base = "https://repo.example/"
	uc, err := config.New(base, f.root1)
	if err != nil {
		t.Fatal(err)
	}
	uc.LocalMetadataDir = t.TempDir()
	uc.LocalTargetsDir = t.TempDir()
	uc.Fetcher = dirFetcher{dir: filepath.Join(f.dir, "public"), base: base}
	up, err := updater.New(uc)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Refresh(); err != nil {
		t.Fatal(err)
	}
	if _, err := up.GetTargetInfo(f.target); err != nil {
		t.Fatalf("the listed target: %v", err)
	}
	missing := "acme-gw/9.9.9/fw.img"
	_, err = up.GetTargetInfo(missing)
	if err == nil {
		t.Fatal("go-tuf found a target nobody signed")
	}
	refusal(t, verify.TargetLookup("image", missing, err), verify.MissingTarget, "image", "does not list")

	// Only go-tuf's exact answers are a missing target: an error that
	// merely says "not found" somewhere is mapped like any other.
	for _, other := range []error{
		fmt.Errorf("target %s not found: %w", missing, errors.New("wrapped")),
		errors.New("delegated role not found-ish"),
		&metadata.ErrUnsignedMetadata{Msg: "target " + missing + " not found"},
	} {
		var ve *verify.Error
		if errors.As(verify.TargetLookup("image", missing, other), &ve) && ve.Class == verify.MissingTarget {
			t.Errorf("%v: read as a missing target", other)
		}
	}
	// The snapshot's answer for a delegated role it does not name.
	refusal(t, verify.TargetLookup("image", missing, errors.New("role acme-x not found in snapshot")), verify.MissingTarget, "image", "does not list")
}

// TestFromTUFClasses maps each of go-tuf's typed errors onto its class, as
// both the offline verifier and the device's refresh use it.
func TestFromTUFClasses(t *testing.T) {
	for _, c := range []struct {
		err  error
		want verify.Class
	}{
		{&metadata.ErrUnsignedMetadata{Msg: "x"}, verify.BadSignature},
		{&metadata.ErrExpiredMetadata{Msg: "x"}, verify.Expired},
		{&metadata.ErrBadVersionNumber{Msg: "x"}, verify.Rollback},
		{&metadata.ErrEqualVersionNumber{Msg: "x"}, verify.Rollback},
		{&metadata.ErrLengthOrHashMismatch{Msg: "x"}, verify.Mismatch},
		{&metadata.ErrDownloadLengthMismatch{Msg: "x"}, verify.EndlessData},
		{fmt.Errorf("root version 2: %w", &metadata.ErrUnsignedMetadata{Msg: "x"}), verify.BadSignature},
		{&metadata.ErrValue{Msg: "x"}, verify.Malformed},
		{errors.New("anything else"), verify.Malformed},
	} {
		if got := verify.FromTUF("targets", c.err); got.Class != c.want || got.Role != "targets" {
			t.Errorf("FromTUF(%v) = %s (%s), want %s", c.err, got.Class, got.Role, c.want)
		}
	}
	prior := &verify.Error{Class: verify.WrongDevice, Role: "director"}
	if got := verify.FromTUF("targets", fmt.Errorf("wrapped: %w", prior)); got != prior {
		t.Errorf("a refusal was remapped: %v", got)
	}
}
