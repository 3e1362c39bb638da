package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rampartfw/rampart/internal/agent"
)

func TestProgressText(t *testing.T) {
	p := agent.InstallProgress{Source: "server", Target: "acme-gw/1.1.0/fw.img", Chunks: 30, Done: 12, Resumed: 4, Size: 30 << 20, Bytes: 12 << 20}
	got := progressText(p, 2*time.Second, 8<<20)
	want := "downloading acme-gw/1.1.0/fw.img:  40% (12.0 MiB of 30.0 MiB), 12 of 30 chunks verified and written (4 resumed), 4.0 MiB/s"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	p.Source, p.Resumed = "bundle", 0
	if got := progressText(p, 0, 0); !strings.HasPrefix(got, "installing from bundle acme-gw/1.1.0/fw.img:") || strings.Contains(got, "/s") {
		t.Fatalf("bundle line: %q", got)
	}
	// A target is printed escaped: it came over the network.
	p.Target = "x\x1b[2Jy"
	if got := progressText(p, 0, 0); strings.Contains(got, "\x1b") {
		t.Fatalf("control bytes printed: %q", got)
	}
}

// Scripts and logs get no progress line: only a terminal does.
func TestProgressOnlyOnTerminal(t *testing.T) {
	var buf bytes.Buffer
	draw, clear := progressLine(&buf, time.Now)
	if draw != nil {
		t.Fatal("a progress line for a buffer")
	}
	clear()
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if draw, _ := progressLine(f, time.Now); draw != nil {
		t.Fatal("a progress line for a regular file")
	}
}
