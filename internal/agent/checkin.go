package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/rampartfw/rampart/internal/bootloader"
	"github.com/rampartfw/rampart/internal/install"
	"github.com/rampartfw/rampart/internal/uptane"
	"github.com/rampartfw/rampart/internal/verify"
)

// Run is one check-in: settle any pending trial, send queued reports, ask
// the director, verify, install and request the trial boot (rebooting
// through the configured command). A verification refusal is reported to
// the server with its attack class and returned as a *verify.Error.
func (a *Agent) Run(ctx context.Context) (*Outcome, error) {
	if a.Config.Server.URL == "" {
		// Not enrolling would not help: there is nothing to enroll with.
		return nil, &ConfigError{Msg: "no server to check in with: the configuration has no [server] section (server.url and server.ca); install BUNDLE works without one"}
	}
	if a.HTTP == nil {
		return nil, ErrNotEnrolled
	}
	st, err := a.open()
	if err != nil {
		return nil, err
	}
	if out, err := a.settle(ctx, st, false); out != nil || err != nil {
		return out, err
	}
	a.flush(ctx, st)

	d, err := uptane.Check(ctx, a.uptaneConfig(st))
	if err != nil {
		if errors.Is(err, uptane.ErrUnavailable) {
			err = withHint(fmt.Errorf("%w: %w", ErrUnavailable, err),
				"the server could not be reached or a transfer was cut short; this is not a refusal, nothing was installed, and the next check-in tries again")
		}
		return nil, a.refusedOrFailed(ctx, st, err)
	}
	if d.Nothing {
		return &Outcome{Action: "nothing"}, nil
	}
	res := d.Result
	rel := releaseOf(res)
	if st.Running != nil && st.Running.SHA256 == rel.SHA256 {
		return &Outcome{Action: "up-to-date", Target: rel.Target}, nil
	}
	if reason, ok := st.Failed[rel.SHA256]; ok {
		return &Outcome{Action: "not-retried", Target: rel.Target, Reason: reason}, nil
	}
	// Only now, acting on the release, does the device commit to the
	// log checkpoint it was proven under (see uptane.KeepCheckpoint).
	if err := d.KeepCheckpoint(); err != nil {
		return nil, err
	}
	index := func(ctx context.Context) ([]byte, error) {
		return a.fetchIndex(ctx, d.IndexURL, d.Release.Index.Length)
	}
	src := &install.HTTPSource{Client: a.HTTP, URL: d.ImageURL, MaxRetries: a.Config.Download.Retries}
	start := time.Now()
	out, err := a.install(ctx, st, rel, "server", res, index, src)
	if out != nil {
		out.InstallTime = time.Since(start)
	}
	return out, err
}

func (a *Agent) uptaneConfig(st *State) uptane.Config {
	c := a.Config
	var running string
	if st.Running != nil {
		running = st.Running.SHA256
	}
	return uptane.Config{
		Running:   running,
		ServerURL: c.Server.URL, HTTPClient: a.HTTP, StateDir: a.TUFDir, FS: a.FS,
		ImageRoot: a.ImageRoot, DirectorRoot: a.DirectorRoot,
		LogOrigin: a.LogOrigin, LogKey: a.LogKey,
		DeviceID: c.Device.ID, HardwareID: c.Device.HardwareID,
		MinSecurityVersion: st.SecurityCounter, Now: a.Now, Memo: &a.memo,
	}
}

// refusedOrFailed records err; a refusal is reported to the server.
func (a *Agent) refusedOrFailed(ctx context.Context, st *State, err error) error {
	a.lastError(st, err)
	var ve *verify.Error
	if errors.As(err, &ve) {
		a.Log.Warn("update refused", "class", ve.Class, "err", err)
		st.queue(Report{Status: "verification-refused", Reason: string(ve.Class)})
	} else {
		a.Log.Warn("check-in failed", "err", err)
	}
	if serr := a.save(st); serr != nil {
		return errors.Join(err, serr)
	}
	a.flush(ctx, st)
	return err
}

// refusedInstall records a refusal that came after install began: the
// target slot is out of the boot order (and may be partly written) and its
// release forgotten, so the error says so, and the pending record goes:
// nothing will resume a refused release, and status must not show one.
func (a *Agent) refusedInstall(ctx context.Context, st *State, target bootloader.Slot, err error) error {
	st.Pending = nil
	return a.refusedOrFailed(ctx, st, &SlotChangedError{Slot: string(target), Err: err})
}

// SlotChangedError is a refusal (Err, a *verify.Error) that came after the
// install into Slot began: that slot no longer holds a bootable release.
// The running slot is untouched.
type SlotChangedError struct {
	Slot string
	Err  error
}

func (e *SlotChangedError) Error() string { return e.Err.Error() }

func (e *SlotChangedError) Unwrap() error { return e.Err }

func (a *Agent) fetchIndex(ctx context.Context, u string, length int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := install.NoRedirects(a.HTTP).Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: fetching the chunk index: %v", ErrInstall, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: fetching the chunk index: HTTP %d", ErrInstall, resp.StatusCode)
	}
	// Never more than the signed length: a body that declares or carries
	// more is endless data, refused without reading past the length. One
	// that ends early is a failed download, resumed next time.
	if resp.ContentLength > length {
		return nil, endlessIndex(fmt.Sprintf("declares %d bytes", resp.ContentLength), length)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, length+1))
	if err != nil {
		return nil, fmt.Errorf("%w: fetching the chunk index: cut after %d of %d bytes: %w", ErrInstall, len(b), length, err)
	}
	if int64(len(b)) > length {
		return nil, endlessIndex("goes on", length)
	}
	return b, nil
}

func endlessIndex(what string, length int64) error {
	return &verify.Error{Class: verify.EndlessData, Role: "image",
		Msg: fmt.Sprintf("the chunk index %s past its signed length of %d bytes", what, length)}
}
