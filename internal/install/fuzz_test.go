package install

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/chunkindex"
)

// fuzzTransport answers every request with the same crafted response: a
// hostile server or proxy, without the network.
type fuzzTransport struct {
	status        int
	contentRange  string
	contentLength int64
	body          []byte
}

func (t fuzzTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	h := http.Header{}
	if t.contentRange != "" {
		h.Set("Content-Range", t.contentRange)
	}
	return &http.Response{
		StatusCode:    t.status,
		Status:        strconv.Itoa(t.status),
		Header:        h,
		ContentLength: t.contentLength,
		Body:          io.NopCloser(bytes.NewReader(t.body)),
		Request:       r,
	}, nil
}

// FuzzReadSpan feeds HTTPSource.ReadSpan any status, Content-Range,
// Content-Length and body for a span of three 16-byte chunks. Whatever
// comes back, chunks are delivered in order, whole, at most once each, and
// only as the leading bytes of the body; a span is complete only for a
// body of exactly the span's length; every failure is a FetchError.
func FuzzReadSpan(f *testing.F) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 3)
	f.Add(206, "bytes 32-79/100", int64(48), body, int64(32))
	f.Add(206, "bytes 32-79/*", int64(-1), body, int64(32))
	f.Add(206, "bytes 32-79/100", int64(48), body[:47], int64(32))
	f.Add(206, "bytes 32-79/100", int64(-1), append(body, 'x'), int64(32))
	f.Add(206, "bytes 32-79/79", int64(48), body, int64(32))
	f.Add(206, "bytes 32-80/100", int64(48), body, int64(32))
	f.Add(200, "", int64(48), body, int64(0))
	f.Add(200, "", int64(-1), append(body, body...), int64(0))
	f.Add(200, "", int64(48), body, int64(32))
	f.Add(503, "", int64(0), []byte{}, int64(32))
	f.Add(404, "", int64(9), []byte("not found"), int64(32))
	f.Add(206, "bytes 0-47/48", int64(48), body, int64(0))
	f.Fuzz(func(t *testing.T, status int, cr string, cl int64, body []byte, off int64) {
		if off < 0 || off > 1<<40 {
			return
		}
		cs := []chunkindex.Chunk{{Offset: off, Length: 16}, {Offset: off + 16, Length: 16}, {Offset: off + 32, Length: 16}}
		src := &HTTPSource{
			Client:     &http.Client{Transport: fuzzTransport{status, cr, cl, body}},
			URL:        "https://updates.example/image",
			MaxRetries: 1,
			Backoff:    func(int) time.Duration { return 0 },
		}
		var got []int
		var data []byte
		err := src.ReadSpan(context.Background(), 7, cs, make([]byte, 16), func(i int, d []byte) error {
			if i != 7+len(got) {
				t.Fatalf("delivered chunk %d after %v", i, got)
			}
			if len(d) != 16 {
				t.Fatalf("chunk %d delivered with %d bytes", i, len(d))
			}
			got = append(got, i)
			data = append(data, d...)
			return nil
		})
		// Retries resend the same body from the start, so what was
		// delivered is a prefix of the body, chunk by chunk.
		if len(data) > 0 && !bytes.HasPrefix(body, data) {
			t.Fatalf("delivered bytes %q are not the body %q", data, body)
		}
		if err == nil {
			if len(got) != 3 || len(body) != 48 {
				t.Fatalf("success with %d chunks from a %d-byte body", len(got), len(body))
			}
			return
		}
		var fe *FetchError
		if !errors.As(err, &fe) || fe.Chunk != 7+len(got) {
			t.Fatalf("err = %v after %d chunks, want a FetchError for chunk %d", err, len(got), 7+len(got))
		}
	})
}
