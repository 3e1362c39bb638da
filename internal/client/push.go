package client

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/rampartfw/rampart/internal/offlinerepo"
)

// RepoPush says how PushRepo reaches the offline repository.
type RepoPush struct {
	// Open opens the repository. It is called once the server's
	// versions are known; PushRepo closes what it returns.
	Open func() (*offlinerepo.Repo, error)
	// Upload, when set, wraps the reader of each blob uploaded (the
	// CLI's progress display); done is called once the upload ends.
	Upload func(path string, r io.Reader, length int64) (wrapped io.Reader, done func())
}

// PushOutcome is what PushRepo did.
type PushOutcome struct {
	// Result is the server's answer to the push; nil when there was
	// nothing to push.
	Result *PushResult
	// Adopted reports, when there was nothing to push, that the server
	// already published what the repository had staged (a push whose
	// answer was lost or refused) and the repository's public/ now
	// mirrors it.
	Adopted bool
}

// PushRepo runs the push protocol of an offline repository: it asks the
// server which versions it holds, computes the push (every newer root,
// targets and product role, each meeting its thresholds), uploads the
// payloads and chunk indexes of new releases the server lacks, pushes
// the metadata, and makes the repository's public/ mirror what the
// server published, once it verifies (offlinerepo.AdoptPublished). When there
// is nothing to push it only adopts what the server published.
func (c *Client) PushRepo(ctx context.Context, p RepoPush) (*PushOutcome, error) {
	before, err := c.Versions(ctx)
	if err != nil {
		return nil, err
	}
	r, err := p.Open()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	ps, err := r.PushSet(before)
	if err != nil {
		return nil, err
	}
	fetch := func(name string) ([]byte, error) { return c.Metadata(ctx, name) }
	if ps.Empty() {
		adopted, err := r.AdoptPublished(fetch)
		if err != nil {
			return nil, err
		}
		return &PushOutcome{Adopted: adopted}, nil
	}
	for _, b := range ps.Blobs {
		has, err := c.HasBlob(ctx, b.SHA256)
		if err != nil {
			return nil, err
		}
		if has {
			continue
		}
		if err := c.uploadFile(ctx, b, p.Upload); err != nil {
			return nil, err
		}
	}
	res, err := c.Push(ctx, ps.Roots, ps.Targets, ps.Roles)
	if err != nil {
		return nil, err
	}
	if _, err := r.AdoptPublished(fetch); err != nil {
		return nil, err
	}
	return &PushOutcome{Result: res}, nil
}

func (c *Client) uploadFile(ctx context.Context, b offlinerepo.BlobFile, wrap func(string, io.Reader, int64) (io.Reader, func())) error {
	f, err := os.Open(b.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	var src io.Reader = f
	if wrap != nil {
		var done func()
		src, done = wrap(b.Path, f, b.Length)
		defer done()
	}
	if err := c.PutBlob(ctx, b.SHA256, b.Length, src); err != nil {
		return fmt.Errorf("uploading %s: %w", b.Path, err)
	}
	return nil
}
