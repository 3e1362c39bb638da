package main

import (
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/rogpeppe/go-internal/txtar"

	"github.com/rampartfw/rampart/internal/testbin"
)

// The by-hand walkthrough of docs/quickstart.md is run by
// TestQuickstartByHand from testdata/quickstart/byhand.txtar; this test
// keeps the two the same.
const (
	quickstartScript  = "testdata/quickstart/byhand.txtar"
	quickstartSection = "## The same by hand: a server, a device, a rollout"
	// The page's server address; the script's is a free port.
	quickstartListen = "127.0.0.1:8443"
)

// quickstartCommands returns the rampart, rampart-server and
// rampart-agent commands of the page's by-hand section (its ```sh
// blocks, continuation lines joined, comments and double quotes
// removed, the page's address written $LISTEN), and its ```toml block.
func quickstartCommands(t *testing.T) (cmds []string, toml string) {
	page, err := os.ReadFile("../../docs/quickstart.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(page), "\n"+quickstartSection+"\n")
	if !ok {
		t.Fatalf("docs/quickstart.md has no section %q", quickstartSection)
	}
	for {
		_, rest, ok := strings.Cut(section, "\n```")
		if !ok {
			break
		}
		lang, rest, _ := strings.Cut(rest, "\n")
		block, after, ok := strings.Cut(rest, "```\n")
		if !ok {
			t.Fatal("docs/quickstart.md: a fenced block is not closed")
		}
		section = after
		switch lang {
		case "toml":
			if toml != "" {
				t.Fatal("docs/quickstart.md: more than one toml block in the by-hand section")
			}
			toml = block
		case "sh":
			block = strings.ReplaceAll(block, "\\\n", " ")
			for _, line := range strings.Split(block, "\n") {
				line, _, _ = strings.Cut(line, "#")
				line = strings.ReplaceAll(line, `"`, "")
				line = strings.ReplaceAll(line, quickstartListen, "$LISTEN")
				line = strings.Join(strings.Fields(line), " ")
				if strings.HasPrefix(line, "rampart ") || strings.HasPrefix(line, "rampart-server ") || strings.HasPrefix(line, "rampart-agent ") {
					cmds = append(cmds, line)
				}
			}
		}
	}
	return cmds, toml
}

// Every command of the page's by-hand walkthrough is in the script, in
// the page's order, and the device configuration is the page's.
func TestQuickstartDoc(t *testing.T) {
	cmds, toml := quickstartCommands(t)
	if len(cmds) < 40 {
		t.Fatalf("found %d commands in the by-hand section of docs/quickstart.md", len(cmds))
	}
	ar, err := txtar.ParseFile(quickstartScript)
	if err != nil {
		t.Fatal(err)
	}
	script := string(ar.Comment)
	i := 0
	var lines []string
	for _, l := range strings.Split(script, "\n") {
		if c, ok := strings.CutPrefix(strings.TrimPrefix(l, "! "), "exec "); ok {
			lines = append(lines, c)
		}
	}
	for _, c := range cmds {
		j := i
		for j < len(lines) && lines[j] != c {
			j++
		}
		if j == len(lines) {
			t.Errorf("%s does not run the page's %q (after its command %d)", quickstartScript, c, i)
			continue
		}
		i = j + 1
	}
	var agentTOML string
	for _, f := range ar.Files {
		if f.Name == "agent.toml" {
			agentTOML = string(f.Data)
		}
	}
	if toml == "" || toml != agentTOML {
		t.Errorf("the page's agent.toml and the script's differ:\npage:\n%s\nscript:\n%s", toml, agentTOML)
	}
}

// The walkthrough of docs/quickstart.md, run: the real rampart-server
// and rampart-agent (built here) and this rampart, a server on a free
// loopback port, one simulated device.
func TestQuickstartByHand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds rampart-server and rampart-agent and runs the quickstart walkthrough")
	}
	// Parallel: one of the package's longest tests, and it shares no
	// process state (no chdir, no environment).
	t.Parallel()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build rampart-server and rampart-agent")
	}
	// The two programs alone in bin: the scripts' rampart is this test
	// binary (scriptPath), not the rampart program built beside them.
	bin := t.TempDir()
	for _, c := range []string{"rampart-server", "rampart-agent"} {
		built, err := testbin.Program(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(built, filepath.Join(bin, c)); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	testscript.Run(t, testscript.Params{
		Files:               []string{quickstartScript},
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			e.Setenv("PATH", bin+string(os.PathListSeparator)+e.Getenv("PATH"))
			e.Setenv("RAMPART_PASSPHRASE", "correct-horse")
			e.Setenv("GORACE", "atexit_sleep_ms=0")
			e.Setenv("LISTEN", listen)
			return scriptPath(e)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkimage":  cmdMkimage,
			"truncate": cmdTruncate,
			"replace":  cmdReplace,
			// lastline NAME: NAME is the last line of the last command's stdout.
			"lastline": func(ts *testscript.TestScript, neg bool, args []string) {
				out := strings.Split(strings.TrimSpace(ts.ReadFile("stdout")), "\n")
				ts.Setenv(args[0], strings.TrimSpace(out[len(out)-1]))
			},
			// waitserver: until $LISTEN answers a TLS handshake (30 s at most).
			"waitserver": func(ts *testscript.TestScript, neg bool, args []string) {
				deadline := time.Now().Add(30 * time.Second)
				for {
					c, err := tls.Dial("tcp", ts.Getenv("LISTEN"), &tls.Config{InsecureSkipVerify: true})
					if err == nil {
						c.Close()
						return
					}
					if time.Now().After(deadline) {
						ts.Fatalf("the server on %s did not answer: %v", ts.Getenv("LISTEN"), err)
					}
					time.Sleep(100 * time.Millisecond)
				}
			},
		},
	})
}
