package client

// Tests against hostile servers: TLS servers the client trusts (their CA
// is pinned) that answer too much, too slowly, or with text meant for the
// operator's terminal. Each checks that the client stops and says why.

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/failure"
)

// hostile starts a TLS server with handler and returns a client that
// trusts it. stop is closed before the server is, so handlers that wait
// on it return and the server can shut down.
func hostile(t *testing.T, handler func(w http.ResponseWriter, r *http.Request, stop <-chan struct{})) *Client {
	t.Helper()
	stop := make(chan struct{})
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler(w, r, stop) }))
	ts.StartTLS()
	t.Cleanup(ts.Close)
	t.Cleanup(func() { close(stop) })
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := New(ts.URL, ca, "tok")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// endless writes chunks of filler until the client hangs up, stop is
// closed, or max bytes are written (so a client that never stops
// reading makes the test fail rather than hang). It adds what it wrote
// to *wrote.
func endless(w http.ResponseWriter, stop <-chan struct{}, max int64, wrote *atomic.Int64) {
	chunk := []byte(strings.Repeat("x", 32<<10))
	for n := int64(0); n < max; n += int64(len(chunk)) {
		select {
		case <-stop:
			return
		default:
		}
		k, err := w.Write(chunk)
		wrote.Add(int64(k))
		if err != nil {
			return
		}
	}
}

func TestOversizedAnswersAreCutWhileRead(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		path  string
		limit int64
		call  func(c *Client) error
	}{
		{"/repo/timestamp.json", MaxMetadata, func(c *Client) error { _, err := c.Metadata(ctx, "timestamp.json"); return err }},
		{"/log/checkpoint", MaxCheckpoint, func(c *Client) error { _, err := c.Checkpoint(ctx); return err }},
		{"/api/v1/log/proof/acme-gw/1.0/fw.img", MaxLogProof, func(c *Client) error { _, err := c.LogProofJSON(ctx, "acme-gw/1.0/fw.img"); return err }},
		{"/api/v1/log/proof/acme-gw/1.0/fw.img", MaxLogProof, func(c *Client) error { _, _, err := c.LogProof(ctx, "acme-gw/1.0/fw.img"); return err }},
		{"/api/v1/keys", MaxSmallAnswer, func(c *Client) error { _, err := c.Keys(ctx); return err }},
		{"/api/v1/repo/versions", MaxSmallAnswer, func(c *Client) error { _, err := c.Versions(ctx); return err }},
		{"/api/v1/repo/push", MaxSmallAnswer, func(c *Client) error { _, err := c.Push(ctx, nil, []byte("{}"), nil); return err }},
		{"/api/v1/tokens", MaxTokenList, func(c *Client) error { _, err := c.Tokens(ctx); return err }},
		{"/api/v1/audit?after=0&limit=10000", MaxAuditPage, func(c *Client) error { _, err := c.Audit(ctx); return err }},
	} {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			var wrote atomic.Int64
			done := make(chan struct{})
			c := hostile(t, func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
				defer close(done)
				// JSON answers start like JSON, so a client that decodes
				// as it reads would also have to keep going.
				io.WriteString(w, `{"versions":{"x":1},"statement":"`)
				endless(w, stop, 8*tc.limit+64<<20, &wrote)
			})
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			err := tc.call(c)
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			var tl *AnswerTooLargeError
			if !errors.Is(err, ErrAnswerTooLarge) || !errors.As(err, &tl) || tl.Limit != tc.limit || tl.Endpoint != tc.path {
				t.Fatalf("err = %v, want an AnswerTooLargeError for %s at %d bytes", err, tc.path, tc.limit)
			}
			if want := fmt.Sprintf("server answer for %s exceeds %s: the server or something between is misbehaving", tc.path, byteSize(tc.limit)); err.Error() != want {
				t.Errorf("message %q, want %q", err, want)
			}
			var cl failure.Classifier
			if !errors.As(err, &cl) || cl.FailureKind() != failure.Environment || failure.HintOf(err) == "" {
				t.Errorf("%v: want failure kind Environment and a hint", err)
			}
			<-done
			// Allocations are logged, not checked: they include the
			// server's, and sync.Pool drops buffers under the race detector.
			t.Logf("limit %d: the server wrote %d bytes, the test process allocated %d", tc.limit, wrote.Load(), after.TotalAlloc-before.TotalAlloc)
			// What the server got written before the client hung up: the
			// limit plus what socket and TLS buffers took in meanwhile.
			if n := wrote.Load(); n > tc.limit+32<<20 {
				t.Errorf("the server wrote %d bytes before the client stopped; limit %d", n, tc.limit)
			}
		})
	}
}

func TestDeclaredOversizedAnswerIsNotRead(t *testing.T) {
	// The server declares 1 GiB, sends a little and waits: a client that
	// read before judging the declared length would wait with it.
	c := hostile(t, func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
		w.Header().Set("Content-Length", fmt.Sprint(int64(1)<<30))
		io.WriteString(w, strings.Repeat("x", 1<<10))
		w.(http.Flusher).Flush()
		select {
		case <-stop:
		case <-time.After(10 * time.Second):
		}
	})
	c.Timeout = 2 * time.Second
	_, err := c.Metadata(context.Background(), "1.root.json")
	if !errors.Is(err, ErrAnswerTooLarge) || !strings.Contains(err.Error(), "/repo/1.root.json exceeds 8 MiB") {
		t.Fatalf("err = %v, want an answer too large", err)
	}
}

func TestAnswerAtTheLimitIsRead(t *testing.T) {
	c := hostile(t, func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
		io.WriteString(w, strings.Repeat("x", MaxCheckpoint))
	})
	b, err := c.Checkpoint(context.Background())
	if err != nil || len(b) != MaxCheckpoint {
		t.Fatalf("%d bytes, %v; want %d bytes", len(b), err, MaxCheckpoint)
	}
}

// trickle writes one byte every 100 ms, for at most 5 s.
func trickle(w http.ResponseWriter, stop <-chan struct{}) {
	w.WriteHeader(http.StatusOK)
	for range 50 {
		if _, err := w.Write([]byte("{")); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestTricklingAnswerIsCutByTheDeadline(t *testing.T) {
	c := hostile(t, func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) { trickle(w, stop) })
	c.Timeout = 500 * time.Millisecond
	start := time.Now()
	_, err := c.Metadata(context.Background(), "timestamp.json")
	took := time.Since(start)
	var te *TimeoutError
	if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a TimeoutError", err)
	}
	if want := "GET /repo/timestamp.json: no answer within 500ms"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if took > 3*time.Second {
		t.Errorf("cut after %v; the deadline was 500ms", took)
	}
	var cl failure.Classifier
	if !errors.As(err, &cl) || cl.FailureKind() != failure.Environment {
		t.Errorf("%v: want failure kind Environment", err)
	}
}

func TestPushHasItsOwnDeadline(t *testing.T) {
	delay := 600 * time.Millisecond
	c := hostile(t, func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(delay)
		io.WriteString(w, `{"versions":{"root":1},"releases":["acme-gw/1.0"]}`)
	})
	c.Timeout, c.PushTimeout = 200*time.Millisecond, 5*time.Second
	if res, err := c.Push(context.Background(), nil, []byte("{}"), nil); err != nil || res.Versions["root"] != 1 {
		t.Fatalf("a push answered within PushTimeout: %+v, %v", res, err)
	}
	c.PushTimeout = 200 * time.Millisecond
	_, err := c.Push(context.Background(), nil, []byte("{}"), nil)
	if want := "POST /api/v1/repo/push: no answer within 200ms"; err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// zeros is an endless upload body that costs no memory.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

const blobDigest = "0000000000000000000000000000000000000000000000000000000000000000"

func TestStalledUploadIsCut(t *testing.T) {
	// The server takes the request and never reads its body: once the
	// socket buffers are full, no byte moves.
	c := hostile(t, func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
		select {
		case <-stop:
		case <-time.After(10 * time.Second):
		}
	})
	c.UploadStall, c.UploadGrace = 300*time.Millisecond, time.Hour
	start := time.Now()
	err := c.PutBlob(context.Background(), blobDigest, 1<<40, io.LimitReader(zeros{}, 1<<40))
	took := time.Since(start)
	var te *TimeoutError
	if !errors.As(err, &te) || !strings.HasPrefix(err.Error(), "PUT /api/v1/blobs/"+blobDigest+": upload stalled: no byte moved for 300ms (") {
		t.Fatalf("err = %v, want a stalled upload", err)
	}
	if took > 5*time.Second {
		t.Errorf("cut after %v; the stall rule was 300ms", took)
	}
}

func TestSlowUploadIsCut(t *testing.T) {
	// The server reads 4 KiB every 10 ms (400 KiB/s): bytes keep moving,
	// but far below the minimum rate this test sets.
	c := hostile(t, func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
		buf := make([]byte, 4<<10)
		deadline := time.After(10 * time.Second)
		for {
			if _, err := io.ReadFull(r.Body, buf); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-deadline:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	// Socket buffers take in a few MiB at once: the minimum rate is set
	// well above what they can make the average look like after 1 s.
	c.UploadStall, c.UploadGrace, c.UploadMinRate = time.Hour, time.Second, 64<<20
	start := time.Now()
	err := c.PutBlob(context.Background(), blobDigest, 1<<40, io.LimitReader(zeros{}, 1<<40))
	took := time.Since(start)
	var te *TimeoutError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), ": upload too slow: ") || !strings.Contains(err.Error(), "below the minimum average of 64 MiB/s") {
		t.Fatalf("err = %v, want an upload too slow", err)
	}
	if took > 6*time.Second {
		t.Errorf("cut after %v; the rate is checked from 1s on", took)
	}
}

func TestUploadAnswerHasADeadline(t *testing.T) {
	c := hostile(t, func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-stop:
		case <-time.After(10 * time.Second):
		}
	})
	c.Timeout = 300 * time.Millisecond
	err := c.PutBlob(context.Background(), blobDigest, 1<<20, io.LimitReader(zeros{}, 1<<20))
	if want := "PUT /api/v1/blobs/" + blobDigest + ": no answer within 300ms of sending the last byte"; err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// chain returns a genuine audit chain of n entries.
func chain(t *testing.T, n int) []audit.Entry {
	t.Helper()
	var es []audit.Entry
	var prev *audit.Entry
	for i := range n {
		e, err := audit.Append(prev, audit.Entry{Time: time.Unix(int64(i), 0), Actor: "admin", Action: "token.create", Outcome: "accepted"})
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
		prev = &es[len(es)-1]
	}
	return es
}

func writeEntries(w io.Writer, es []audit.Entry) {
	enc := json.NewEncoder(w)
	for _, e := range es {
		enc.Encode(e)
	}
}

func TestAuditRefusesAServerThatDoesNotAdvance(t *testing.T) {
	es := chain(t, 3)
	for _, tc := range []struct {
		name string
		page func(after uint64) []audit.Entry
		want string
	}{
		// The same full page, whatever is asked: a client that pages
		// while pages are full would never stop.
		{"repeats a full page", func(uint64) []audit.Entry { return es }, "entry 0 of the page after seq 3 has seq 1, not 4"},
		{"skips a seq", func(uint64) []audit.Entry { return []audit.Entry{es[0], es[2]} }, "entry 1 of the page after seq 0 has seq 3, not 2"},
		{"does not start after the last", func(uint64) []audit.Entry { return es[1:] }, "entry 0 of the page after seq 0 has seq 2, not 1"},
		{"goes back", func(uint64) []audit.Entry { return []audit.Entry{es[0], es[1], es[0]} }, "entry 2 of the page after seq 0 has seq 1, not 3"},
		{"gives more than asked", func(uint64) []audit.Entry { return append(chain(t, 4), chain(t, 1)...) }, "the page after seq 0 holds more than the 3 entries asked for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int64
			c := hostile(t, func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
				if requests.Add(1) > 100 {
					return // an empty page: the end
				}
				var after uint64
				fmt.Sscan(r.URL.Query().Get("after"), &after)
				writeEntries(w, tc.page(after))
			})
			c.AuditPageSize = 3
			pages := 0
			err := c.AuditPages(context.Background(), func(page []audit.Entry) error { pages++; return nil })
			if !errors.Is(err, audit.ErrBroken) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v after %d pages, want audit.ErrBroken: %s", err, pages, tc.want)
			}
			var cl failure.Classifier
			if !errors.As(err, &cl) || cl.FailureKind() != failure.Refused {
				t.Errorf("%v: want failure kind Refused", err)
			}
			if n := requests.Load(); n > 2 {
				t.Errorf("%d requests; want the client to stop at the first bad page", n)
			}
		})
	}
}

func TestAuditPagesStopsAtTheCallersError(t *testing.T) {
	es := chain(t, 5)
	c := hostile(t, func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
		var after uint64
		fmt.Sscan(r.URL.Query().Get("after"), &after)
		writeEntries(w, es[after:min(after+2, 5)])
	})
	c.AuditPageSize = 2
	stopHere := errors.New("stop here")
	var got []uint64
	err := c.AuditPages(context.Background(), func(page []audit.Entry) error {
		for _, e := range page {
			got = append(got, e.Seq)
		}
		if len(got) == 4 {
			return stopHere
		}
		return nil
	})
	if err != stopHere || fmt.Sprint(got) != "[1 2 3 4]" {
		t.Fatalf("%v, %v; want the caller's error after seqs 1-4", got, err)
	}
	all, err := c.Audit(context.Background())
	if err != nil || len(all) != 5 || audit.Verify(nil, all) != nil {
		t.Fatalf("Audit: %d entries, %v", len(all), err)
	}
}

func TestAPIErrorTextIsMadeSafe(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"json", `{"error":{"code":"bad\u001b[2K","message":"refused \u001b]0;pwned\u0007 \u001b[2K\rdone\n\u202eok","role":"\u009badmin"}}`,
			`server refused (422 bad\x1b[2K): refused \x1b]0;pwned\x07 \x1b[2K\rdone\n\u202eok`},
		{"text", "proxy says \x1b]0;pwned\x07\x1b[1A\x1b[2K\xff", `server refused (422 http): proxy says \x1b]0;pwned\x07\x1b[1A\x1b[2K\xff`},
		{"long", strings.Repeat("\x1b[2K", 1<<18), `server refused (422 http): ` + strings.Repeat(`\x1b[2K`, 511/7) + `…`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := hostile(t, func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
				w.WriteHeader(http.StatusUnprocessableEntity)
				io.WriteString(w, tc.body)
			})
			_, err := c.Versions(context.Background())
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v, want an APIError", err)
			}
			if err.Error() != tc.want {
				t.Errorf("message\n%q\nwant\n%q", err, tc.want)
			}
			if strings.ContainsAny(ae.Code+ae.Message+ae.Role, "\x1b\x07\r\n\u202e\u009b") {
				t.Errorf("control characters left in %+v", ae)
			}
		})
	}
}

func TestPushReleasesAreMadeSafe(t *testing.T) {
	c := hostile(t, func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
		io.WriteString(w, `{"versions":{"root":1},"releases":["acme-gw/1.0\u001b[1A\u001b[2K"]}`)
	})
	res, err := c.Push(context.Background(), nil, []byte("{}"), nil)
	if err != nil || len(res.Releases) != 1 || res.Releases[0] != `acme-gw/1.0\x1b[1A\x1b[2K` {
		t.Fatalf("%+v, %v", res, err)
	}
}

func TestZeroDeadlinesMeanTheDefaults(t *testing.T) {
	c := hostile(t, func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"versions":{"root":1}}`)
	})
	c.Timeout, c.PushTimeout, c.UploadStall, c.UploadGrace, c.UploadMinRate = 0, 0, 0, 0, 0
	if _, err := c.Versions(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Push(context.Background(), nil, []byte("{}"), nil); err != nil {
		t.Fatal(err)
	}
	if err := c.PutBlob(context.Background(), blobDigest, 1<<20, io.LimitReader(zeros{}, 1<<20)); err != nil {
		t.Fatal(err)
	}
}
