package bundle

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/rampartfw/rampart/internal/chunkindex"
	"github.com/rampartfw/rampart/internal/verify"
)

// Options are what Verify needs beyond the bundle and the trusted root.
type Options struct {
	verify.Options
	// Name names the bundle in refusals (its path).
	Name string
	// Log, when set, checks the release's log proof once the release is
	// verified: proof is log-proof.json, nil in a format 1 bundle. Its
	// error is returned as it is. Nil skips the proof (it is still read
	// and bounded).
	Log func(proof []byte, res *verify.Result) error
	// Image, when set, wraps the image stream (a progress display); the
	// function it returns is called when the image has been read.
	Image func(r io.Reader, size int64) (io.Reader, func())
	// Workers hash image chunks in parallel (0: one per CPU).
	Workers int
}

// Verified is a bundle that passed every check.
type Verified struct {
	Manifest
	Result     *verify.Result
	Index      *chunkindex.Index
	IndexBytes []byte
	// ImageOffset and ImageSize locate the image in the bundle, for a
	// reader that installs it from the same (seekable) file afterwards.
	ImageOffset, ImageSize int64
	// Size is the bundle's length in bytes.
	Size int64
}

// Verify reads a whole bundle and decides whether it may be trusted. It is
// the one reader and the one order of checks for every program (rampart
// verify, rampart-agent install), so a bundle gets one answer wherever it
// is checked. The checks follow the bundle's member order, each member
// checked as it arrives and then dropped, and the first failure decides:
//
//  1. the structure of each member before its body is read: name, order,
//     type, declared size against its limit and the metadata budget
//     (malformed);
//  2. the manifest, strictly decoded (malformed);
//  3. each root newer than the trusted one, as it arrives; roots at or
//     below the trusted version are skipped unread;
//  4. timestamp, snapshot, targets and the product role; then the release
//     (custom metadata, hardware id, security version);
//  5. the log proof, when Options.Log is set;
//  6. the chunk index: its size against the signed length before it is
//     read, its hash while it is read, then its contents against the
//     target (mismatch, or malformed if it does not parse);
//  7. the image's declared size against the signed length (mismatch);
//  8. every chunk of the image (mismatch); a file cut inside it is
//     malformed;
//  9. the end of the archive: both end-of-archive blocks, nothing after
//     them but zero padding (malformed).
//
// A refusal is a *verify.Error. A failure to read the file is a
// *ReadError: the medium's fault, not a verdict on the bundle. Memory is
// the verified metadata, one member, the index and the chunk buffers of
// the image check, whatever the bundle carries.
func Verify(src io.Reader, trustedRoot []byte, opt Options) (*Verified, error) {
	chain, err := verify.NewChain(trustedRoot, opt.Options)
	if err != nil {
		return nil, err
	}
	br, err := NewReader(bufio.NewReaderSize(src, 64<<10))
	if err != nil {
		return nil, opt.refusal(err)
	}
	for {
		_, raw, ok, err := br.NextRoot(func(v int64) bool { return v > chain.RootVersion() })
		if err != nil {
			return nil, opt.refusal(err)
		}
		if !ok {
			break
		}
		if raw != nil {
			if err := chain.UpdateRoot(raw); err != nil {
				return nil, err
			}
		}
	}
	for _, step := range []struct {
		name   string
		update func([]byte) error
	}{
		{"metadata/timestamp.json", chain.UpdateTimestamp},
		{"metadata/snapshot.json", chain.UpdateSnapshot},
		{"metadata/targets.json", chain.UpdateTargets},
	} {
		raw, err := br.Metadata(step.name)
		if err != nil {
			return nil, opt.refusal(err)
		}
		if err := step.update(raw); err != nil {
			return nil, err
		}
	}
	role, err := br.Metadata("metadata/" + br.Role + ".json")
	if err != nil {
		return nil, opt.refusal(err)
	}
	res, err := chain.Target(br.Target, map[string][]byte{br.Role: role})
	if err != nil {
		return nil, err
	}
	proof, err := br.LogProof()
	if err != nil {
		return nil, opt.refusal(err)
	}
	if opt.Log != nil {
		if err := opt.Log(proof, res); err != nil {
			return nil, err
		}
	}
	sum, err := hex.DecodeString(res.Release.Index.SHA256)
	if err != nil {
		return nil, &verify.Error{Class: verify.Malformed, Role: res.Role, Msg: "the signed chunk index hash is not hex"}
	}
	ixBytes, err := br.Index(res.Release.Index.Length, sum)
	if err != nil {
		return nil, opt.refusal(withRole(err, res.Role))
	}
	ix, err := verify.Index(res, ixBytes)
	if err != nil {
		return nil, err
	}
	size, offset, err := br.Image()
	if err != nil {
		return nil, opt.refusal(err)
	}
	if size != res.File.Length {
		return nil, &verify.Error{Class: verify.Mismatch, Role: res.Role,
			Msg: fmt.Sprintf("%s: the bundle's image is %d bytes, the signed length is %d", opt.Name, size, res.File.Length)}
	}
	var img io.Reader = br.ImageReader()
	stop := func() {}
	if opt.Image != nil {
		img, stop = opt.Image(img, size)
	}
	err = verify.Image(ix, img, nil, opt.Workers)
	stop()
	if err != nil {
		return nil, opt.refusal(err)
	}
	if err := br.Finish(); err != nil {
		return nil, opt.refusal(err)
	}
	return &Verified{Manifest: br.Manifest, Result: res, Index: ix, IndexBytes: ixBytes,
		ImageOffset: offset, ImageSize: size, Size: br.Offset()}, nil
}

// refusal makes a format error a malformed refusal naming the bundle. A
// refusal is returned as it is, and so is a *ReadError: a medium that
// fails is not a hostile bundle.
func (opt *Options) refusal(err error) error {
	var ve *verify.Error
	var re *ReadError
	switch {
	case errors.As(err, &ve), errors.As(err, &re):
		return err
	}
	for _, s := range []error{ErrEscape, ErrTruncated, ErrTrailing, ErrMalformed} {
		if errors.Is(err, s) {
			return &verify.Error{Class: verify.Malformed, Msg: opt.Name, Err: err}
		}
	}
	return err
}

func withRole(err error, role string) error {
	var ve *verify.Error
	if errors.As(err, &ve) && ve.Role == "" {
		ve.Role = role
	}
	return err
}
