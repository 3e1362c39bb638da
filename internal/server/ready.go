package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/rampartfw/rampart/internal/api"
)

// readiness decides /readyz: the store answers and the data directory can
// be written (the store, blobs and the log all live there, so a full or
// read-only disk fails every write the server would accept work for).
// Writing is probed by creating, filling, syncing and removing a small
// file, at most once a second whatever the probe rate, and in the
// background: a request answers from the last probe, so an fsync that a
// busy disk holds for a second never holds /readyz (a probe under load
// once took 1.45 s). Only the first probe is waited for.
type readiness struct {
	dir    string
	logger *slog.Logger

	mu      sync.Mutex
	at      time.Time // when the last probe started
	probing bool
	err     error
}

const readyProbeEvery = time.Second

// writable returns why the data directory cannot be written, or nil, as
// of the last probe; it starts the next one when the last is a second old.
func (rd *readiness) writable() error {
	if rd.dir == "" {
		return nil
	}
	rd.mu.Lock()
	defer rd.mu.Unlock()
	now := time.Now()
	switch {
	case rd.at.IsZero():
		rd.at = now
		rd.record(probeWrite(rd.dir))
	case !rd.probing && now.Sub(rd.at) >= readyProbeEvery:
		rd.at, rd.probing = now, true
		go func() {
			err := probeWrite(rd.dir)
			rd.mu.Lock()
			defer rd.mu.Unlock()
			rd.probing = false
			rd.record(err)
		}()
	}
	return rd.err
}

// record keeps a probe's result, logging each change; rd.mu is held.
func (rd *readiness) record(err error) {
	switch {
	case err != nil && rd.err == nil:
		rd.logger.Error("data directory not writable: not ready", "dir", rd.dir, "err", err)
	case err == nil && rd.err != nil:
		rd.logger.Info("data directory writable again: ready", "dir", rd.dir)
	}
	rd.err = err
}

// probeWrite writes a block, not an empty file: a full file system still
// has room for an empty one.
func probeWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".readyz-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(make([]byte, 4096))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// handleReady answers 200 {"ready": true}, or 503 with the reason (and
// the usual error object) when the store or the data directory fails.
// The reason names the failure, not paths: /readyz needs no credentials.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	var reason string
	if _, err := s.store.CountDevices(r.Context()); err != nil {
		s.logger.Error("store unavailable: not ready", "err", err)
		reason = "the store is unavailable"
	} else if err := s.ready.writable(); err != nil {
		reason = "the data directory cannot be written: " + withoutPath(err)
	}
	if reason == "" {
		writeJSON(w, http.StatusOK, api.Ready{Ready: true})
		return
	}
	e := errorf(http.StatusServiceUnavailable, "not-ready", "%s", reason).wire()
	writeJSON(w, http.StatusServiceUnavailable, api.Ready{Reason: reason, Error: &e})
}

// withoutPath is err's text without the file name of a *PathError.
func withoutPath(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Sprintf("%s: %v", pe.Op, pe.Err)
	}
	return err.Error()
}
