package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/rampartfw/rampart/internal/install"
)

// flush sends queued reports in order, dropping each once the server has
// it (or refused it as a replay, which means it already had it). Failure to
// reach the server is not an error: the reports wait for the next check-in.
func (a *Agent) flush(ctx context.Context, st *State) {
	if a.HTTP == nil || len(st.Outbox) == 0 {
		return
	}
	sent := 0
	for _, r := range st.Outbox {
		if err := a.send(ctx, r); err != nil {
			a.Log.Info("report not delivered; will retry", "status", r.Status, "err", err)
			break
		}
		sent++
	}
	if sent == 0 {
		return
	}
	st.Outbox = st.Outbox[sent:]
	if err := a.save(st); err != nil {
		a.Log.Warn("saving the outbox", "err", err)
	}
}

func (a *Agent) send(ctx context.Context, r Report) error {
	body, _ := json.Marshal(r)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.Config.Server.URL+"/api/v1/device/report", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := install.NoRedirects(a.HTTP).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode == http.StatusConflict, resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusUnprocessableEntity:
		// A replay (the server has it), a counter jump, or a report it
		// will never take (an installed release it never published, a
		// security version other than the release's): retrying would
		// block every later report. The server counts the anomaly.
		a.Log.Warn("report dropped by the server", "status", r.Status, "http", resp.StatusCode)
		return nil
	}
	return fmt.Errorf("HTTP %d", resp.StatusCode)
}
