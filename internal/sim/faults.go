package sim

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/rampartfw/rampart/internal/fsys"
	"github.com/rampartfw/rampart/internal/powercut"
	"github.com/rampartfw/rampart/internal/release"
)

// Fault is the one fault a simulated device is given (the knobs pick
// disjoint sets of devices).
type Fault string

// Faults.
const (
	NoFault    Fault = ""
	FailHealth Fault = "fail-health"
	PowerCut   Fault = "power-cut"
	Tamper     Fault = "tamper"
	Drop       Fault = "drop"
)

// maxBody bounds what the hostile front end reads of one response to
// rewrite it (a chunk is at most a few MiB).
const maxBody = 64 << 20

// errDropped is the error a dropped connection gives the reader of the
// body, as a reset would.
var errDropped = errors.New("sim: connection dropped mid-download")

// front is the in-process hostile front end between one device and the
// server: for a tamper device it flips one byte of the first image (chunk)
// body it carries; for a drop device it cuts the first drops image bodies
// halfway. Everything else passes through untouched. Its counters say what
// it did since the last take.
type front struct {
	base  http.RoundTripper
	fault Fault

	mu       sync.Mutex
	tampers  int // left to do
	drops    int // left to do
	tampered int // done since take
	dropped  int // done since take
}

func newFront(base http.RoundTripper, f Fault) *front {
	fr := &front{base: base, fault: f}
	switch f {
	case Tamper:
		fr.tampers = 1
	case Drop:
		fr.drops = 2
	}
	return fr
}

// imageBody reports whether req fetches image bytes (not the chunk index).
func imageBody(req *http.Request) bool {
	p := req.URL.Path
	return req.Method == http.MethodGet &&
		(strings.HasPrefix(p, "/repo/targets/") && !strings.HasSuffix(p, release.IndexSuffix) || strings.HasPrefix(p, "/repo/chunks/"))
}

func (f *front) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.base.RoundTrip(req)
	if err != nil || !imageBody(req) || resp.StatusCode/100 != 2 {
		return resp, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.tampers > 0:
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if len(b) > 0 {
			b[len(b)/2] ^= 0x5a
		}
		f.tampers--
		f.tampered++
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
	case f.drops > 0:
		f.drops--
		f.dropped++
		n := resp.ContentLength / 2
		if n <= 0 {
			n = 1
		}
		resp.Body = &cutBody{r: io.LimitReader(resp.Body, n), c: resp.Body}
	}
	return resp, nil
}

// CloseIdleConnections passes http.Client.CloseIdleConnections on to the
// transport behind the front end.
func (f *front) CloseIdleConnections() {
	if c, ok := f.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// take returns and resets what the front end did.
func (f *front) take() (tampered, dropped int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	tampered, dropped = f.tampered, f.dropped
	f.tampered, f.dropped = 0, 0
	return
}

// cutBody ends with errDropped after the bytes it lets through.
type cutBody struct {
	r io.Reader
	c io.Closer
}

func (b *cutBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		err = errDropped
	}
	return n, err
}

func (b *cutBody) Close() error { return b.c.Close() }

// cutFS is a device's disk: a power-loss model (package powercut). For a
// power-cut device it can be armed to cut the power at a random operation
// of the install, counted from the moment the agent opens a slot to write
// it.
type cutFS struct {
	*powercut.Model
	slots [2]string
	// refuse, when set, fails every opening of a slot for writing with
	// its error (Config.SlotWrite); refused counts such failures.
	refuse  func() error
	refused atomic.Int64

	mu       sync.Mutex
	tracking bool // count the operations from the slot's opening
	armed    int  // cut this many operations after the slot is opened; 0 off
	opsAt    int  // Ops when the slot was opened for writing; -1 not yet
}

func (c *cutFS) OpenFile(name string, flag int, perm fs.FileMode) (fsys.File, error) {
	if c.refuse != nil && flag&(os.O_RDWR|os.O_WRONLY) != 0 && (name == c.slots[0] || name == c.slots[1]) {
		if err := c.refuse(); err != nil {
			c.refused.Add(1)
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
	}
	c.mu.Lock()
	if c.tracking && flag&(os.O_RDWR|os.O_WRONLY) != 0 && (name == c.slots[0] || name == c.slots[1]) && c.opsAt < 0 {
		c.opsAt = c.Ops()
		if c.armed > 0 {
			c.CutAt(c.opsAt + c.armed)
		}
	}
	c.mu.Unlock()
	return c.Model.OpenFile(name, flag, perm)
}

// arm starts counting the operations of the next install from the slot's
// opening and, when k > 0, cuts the power at the k-th of them.
func (c *cutFS) arm(k int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tracking, c.armed, c.opsAt = true, k, -1
}

// disarm cancels an armed cut and returns how many operations the install
// made after opening the slot (-1 when it never opened it).
func (c *cutFS) disarm() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := -1
	if c.opsAt >= 0 {
		n = c.Ops() - c.opsAt
	}
	c.tracking, c.armed, c.opsAt = false, 0, -1
	c.CutAt(0)
	return n
}

// pick is a random integer in [1, n].
func pick(r *rand.Rand, n int) int {
	if n < 1 {
		n = 1
	}
	return 1 + r.IntN(n)
}

func (f Fault) String() string {
	if f == NoFault {
		return "none"
	}
	return string(f)
}
